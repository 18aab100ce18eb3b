"""Random packed batches for the tests."""
import torch

# lengths that cover the edge cases: empty, one item, warp/block boundaries, long lists
EDGE_LENGTHS = [0, 1, 2, 3, 7, 8, 31, 32, 33, 64, 100, 255]


def random_batch(lengths, *, dtype=torch.float64, device="cpu", grades=5, ties=False,
                 weights=False, seed=0):
    """scores, labels, offsets (and weights) for lists of the given lengths."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    n = int(lengths.sum())
    scores = torch.randn(n, generator=g, dtype=torch.float64)
    if ties:  # few distinct scores: many ties, exercise the position tie-break
        scores = torch.round(scores * 2) / 2
    labels = torch.randint(0, grades, (n,), generator=g).to(torch.float64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    out = [scores.to(dtype).to(device), labels.to(device), offsets.to(device)]
    if weights:
        out.append((torch.rand(n, generator=g, dtype=torch.float64) + 0.1).to(device))
    return out


def random_masked(B, L, *, seed=0, grades=4, special=False, dtype=torch.float64):
    """Padded scores, labels, weights [B, L] with a random mask [B, L] whose padding is
    scattered through the rows (not only at their end): a row with no valid item, a full
    row, padding before and after real items. With ``special``, two valid items of each
    later row score -inf with one shared label (0 in some rows, positive in others: equal
    labels make no pair between them, so no inf - inf), with more padding before them,
    and every third such row holds a NaN at a valid position (ranked as -inf, by
    position). Padding holds score 5 (above every real score) and label 3."""
    g = torch.Generator().manual_seed(seed)
    S = torch.randn(B, L, generator=g, dtype=torch.float64)
    Y = torch.randint(0, grades, (B, L), generator=g).to(torch.float64)
    W = torch.rand(B, L, generator=g, dtype=torch.float64) + 0.1
    mask = torch.rand(B, L, generator=g) < 0.6
    mask[0] = False  # an empty row
    mask[1] = True  # a full row
    mask[2, 0], mask[2, -1] = False, True  # padding first, a real item last
    if special:
        for b in range(3, B):
            real = mask[b].nonzero().flatten()
            if real.numel() < 4:
                continue
            pick = real[torch.randperm(real.numel(), generator=g)[:3]]
            S[b, pick[:2]] = -float("inf")
            Y[b, pick[:2]] = float(b % grades)
            if b % 3 == 0:  # a NaN too: ranks as -inf, by position among them
                S[b, pick[2]] = float("nan")
            first = int(pick.min())  # more padding before the first special item
            mask[b, :first] &= torch.rand(first, generator=g) < 0.5
    S = torch.where(mask, S, torch.full_like(S, 5.0))
    Y = torch.where(mask, Y, torch.full_like(Y, 3.0))
    return S.to(dtype), Y, W, mask


def assert_close_per_list(got, want, offsets=None, *, rtol, list_rtol=None, atol=0.0, msg=""):
    """``|got - want| <= rtol * |want| + list_rtol * scale + atol`` elementwise (list_rtol
    defaults to rtol), where scale is the largest finite ``|want|`` of the element's own
    list (``offsets``: the elements are items of those lists) or 0 (no ``offsets``: each
    element is a per-list value, e.g. a loss).

    A tolerance scaled by the batch's largest value would leave a short list beside a
    long one (small values) effectively unchecked; this one follows each list's scale.
    NaN must match NaN, inf the same inf."""
    got = got.detach().to("cpu", torch.float64)
    want = want.detach().to("cpu", torch.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    same = (got == want) | (got.isnan() & want.isnan())  # also equal infinities
    scale = torch.zeros_like(want)
    if offsets is not None:
        offsets = offsets.cpu()
        lengths = offsets[1:] - offsets[:-1]
        list_of = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
        finite = torch.where(torch.isfinite(want), want.abs(), torch.zeros_like(want))
        per_list = torch.zeros(lengths.numel(), dtype=torch.float64).scatter_reduce(
            0, list_of, finite, "amax")
        scale = per_list[list_of]
    err = (got - want).abs()
    list_rtol = rtol if list_rtol is None else list_rtol
    allowed = rtol * want.abs() + list_rtol * scale + atol
    bad = ~same & ~(err <= allowed)  # a NaN err (NaN on one side only) is bad
    if bad.any():
        ratio = torch.where(bad, err / allowed, torch.zeros_like(err)).nan_to_num(float("inf"))
        worst = int(ratio.argmax())
        where = f"item {worst} (list {int(list_of[worst])})" if offsets is not None else f"list {worst}"
        raise AssertionError(
            f"{msg}{int(bad.sum())} of {bad.numel()} values off; worst at {where}: got "
            f"{float(got[worst])!r}, want {float(want[worst])!r}, err/allowed {float(ratio[worst]):.3g}")
