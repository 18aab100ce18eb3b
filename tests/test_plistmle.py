"""plistmle_loss: position-aware ListMLE (Lan et al. 2014), ListMLE's kernel with
per-position weights.

Expected values come from explicit sums over positions (hand), from the definition as
sentence-transformers' ``PListMLELoss`` computes it (inputs sorted by relevance, its
``respect_input_order`` default), and from ``rankops.reference``.
"""
import math

import pytest
import torch

import rankops
from rankops import reference
from lists import EDGE_LENGTHS, assert_close_per_list, random_batch


def _hand(s, y, w, alpha_fn):
    """Loss and gradient of one list by the definition, in plain Python."""
    n = len(s)
    order = sorted(range(n), key=lambda i: -y[i])  # stable: label ties by position
    raw = [alpha_fn(r, n) for r in range(n)]
    alpha = [a / sum(raw) for a in raw]
    sp = [s[i] for i in order]
    c = [alpha[r] * w[order[r]] for r in range(n)]
    lse = [math.log(sum(math.exp(v) for v in sp[k:])) for k in range(n)]
    loss = sum(c[k] * (lse[k] - sp[k]) for k in range(n))
    grad_pi = [sum(c[k] * math.exp(sp[j] - lse[k]) for k in range(j + 1)) - c[j] for j in range(n)]
    grad = [0.0] * n
    for r, i in enumerate(order):
        grad[i] = grad_pi[r]
    return loss, grad


def exp2_alpha(r, n):
    return 2.0 ** (n - r) - 1.0


def _run(s, y, device, **kw):
    scores = torch.tensor(s, dtype=torch.float64, device=device, requires_grad=True)
    if "weights" in kw:
        kw["weights"] = torch.tensor(kw["weights"], dtype=torch.float64, device=device)
    loss = rankops.plistmle_loss(scores, torch.tensor(y, dtype=torch.float64, device=device),
                                 reduction="sum", **kw)
    loss.backward()
    return loss.item(), scores.grad.tolist()


def test_hand_values(device):
    s, y, w = [0.8, -0.4, 1.5, 0.1, 0.3], [1.0, 3.0, 0.0, 1.0, 2.0], [1.0, 2.0, 0.5, 3.0, 1.5]
    for weights in (None, w):
        kw = {} if weights is None else {"weights": weights}
        want_loss, want_grad = _hand(s, y, weights or [1.0] * 5, exp2_alpha)
        loss, grad = _run(s, y, device, **kw)
        assert loss == pytest.approx(want_loss, rel=1e-12)
        assert grad == pytest.approx(want_grad, rel=1e-10, abs=1e-14)
    # a three-item list by hand: alpha = (7, 3, 1) / 11 on the label order (2, 1, 0)
    sv = [0.5, 1.0, -0.3]
    terms = [math.log(sum(math.exp(v) for v in sv[k:])) - sv[k] for k in range(3)]
    loss, _ = _run(sv, [2.0, 1.0, 0.0], device)
    assert loss == pytest.approx((7 * terms[0] + 3 * terms[1] + terms[2]) / 11, rel=1e-13)


def test_custom_position_weight(device):
    s, y = [0.8, -0.4, 1.5, 0.1, 0.3, 0.0], [1.0, 3.0, 0.0, 1.0, 2.0, 2.0]

    def dcg_like(position, n):  # tensors: each item's position and its list's length
        return 1.0 / torch.log2(position.double() + 2.0)

    want_loss, want_grad = _hand(s, y, [1.0] * 6, lambda r, n: 1.0 / math.log2(r + 2.0))
    loss, grad = _run(s, y, device, position_weight=dcg_like)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert grad == pytest.approx(want_grad, rel=1e-10, abs=1e-14)
    # constant weights: ListMLE divided by n
    loss, _ = _run(s, y, device, position_weight=lambda p, n: torch.ones_like(p, dtype=torch.float64))
    plain = rankops.listmle_loss(torch.tensor(s, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
    assert loss == pytest.approx(plain.item() / 6, rel=1e-13)


def test_kernel_and_python_paths_agree(device):
    # "exp2" runs in the ListMLE kernel; the same weights as a function take the Python
    # path (positions by two stable sorts, the weights passed as item weights)
    s, y, off, w = random_batch([0, 1, 2, 7, 33, 64, 100], device=device, weights=True, grades=3,
                                seed=57)

    def exp2_fn(position, n):
        return torch.exp2((n - position).double()) - 1.0

    for weights in (None, w):
        x1, x2 = s.clone().requires_grad_(), s.clone().requires_grad_()
        a = rankops.plistmle_loss(x1, y, offsets=off, weights=weights, reduction="none")
        b = rankops.plistmle_loss(x2, y, offsets=off, weights=weights, position_weight=exp2_fn,
                                  reduction="none")
        assert_close_per_list(a, b, rtol=1e-12, atol=1e-15)
        a.sum().backward()
        b.sum().backward()
        assert_close_per_list(x1.grad, x2.grad, off, rtol=1e-11, atol=1e-15)
    with pytest.raises(RuntimeError, match="position_weight must be 'none' or 'exp2'"):
        torch.ops.rankops.listmle_loss(s, y, off, None, "linear", False)


def _sentence_transformers_definition(S, Y_sorted_mask):
    """PListMLELoss's value as sentence-transformers defines it, for lists already sorted by
    relevance (its default respect_input_order=True): weights 2^(n - r) - 1 over 0-based
    positions, normalised per list, times the Plackett-Luce log-probabilities; mean over
    lists. Its eps (1e-10) is left out: it moves values by ~1e-10."""
    mask = Y_sorted_mask
    n = mask.sum(1, keepdim=True)
    r = torch.arange(S.shape[1]).expand_as(S)
    alpha = (torch.pow(2.0, (n - r).double()) - 1.0) * mask
    alpha = alpha / alpha.sum(1, keepdim=True)
    exp_s = torch.where(mask, S.exp(), torch.zeros_like(S))
    log_probs = S - torch.log(torch.flip(torch.cumsum(torch.flip(exp_s, [1]), 1), [1]))
    return -(torch.where(mask, log_probs * alpha, torch.zeros_like(S))).sum(1).mean()


def test_matches_the_sentence_transformers_definition(device):
    g = torch.Generator().manual_seed(50)
    lengths = torch.tensor([5, 2, 9, 1, 7])
    B, L = len(lengths), int(lengths.max())
    mask = torch.arange(L)[None, :] < lengths[:, None]
    S = torch.randn(B, L, generator=g, dtype=torch.float64)
    # labels descending along each row (graded, with ties): the input order is the label order
    Y = torch.sort(torch.randint(0, 4, (B, L), generator=g).double(), dim=1, descending=True).values
    want = _sentence_transformers_definition(S, mask)
    got = rankops.plistmle_loss(S.to(device), Y.to(device), mask=mask.to(device))
    assert got.item() == pytest.approx(want.item(), rel=1e-12)


@pytest.mark.parametrize("weights", [False, True], ids=["", "weights"])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_matches_reference(device, weights, reduction, packing):
    batch = random_batch(EDGE_LENGTHS, device=device, weights=weights, grades=4, seed=51)
    s, y, off = batch[:3]
    kw = {"weights": batch[3]} if weights else {}
    S, mask = rankops.segments.unpack(s, off)
    Y, _ = rankops.segments.unpack(y, off)
    extra = {}
    if weights:
        extra["weights"], _ = rankops.segments.unpack(batch[3], off)
    for got_args, got_layout, got_extra in ((s, {"offsets": off}, kw), (S, {"mask": mask}, extra)):
        x1, x2 = got_args.clone().requires_grad_(), got_args.clone().requires_grad_()
        labels = y if got_args is s else Y
        got = rankops.plistmle_loss(x1, labels, reduction=reduction, **got_layout, **got_extra)
        want = reference.plistmle_loss(x2, labels, reduction=reduction, **got_layout, **got_extra)
        assert_close_per_list(got, want, rtol=1e-11, atol=1e-13)
        v = torch.rand(got.shape, dtype=torch.float64, device=device)
        (got * v).sum().backward()
        (want * v).sum().backward()
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)


def test_long_lists_stay_finite(device):
    # 2^(n - r) overflows float64 beyond n = 1023 (and float32 beyond 127: the padded
    # computation above gives inf / inf = NaN there); rankops's weights never form 2^n.
    n = 2000
    g = torch.Generator().manual_seed(52)
    s = torch.randn(n, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (n,), generator=g).double()
    x = s.to(device).requires_grad_()
    got = rankops.plistmle_loss(x, y.to(device), reduction="sum")
    got.backward()
    assert math.isfinite(got.item()) and x.grad.isfinite().all()
    # at this n the normalised weights are 2^-(r+1) to float64's precision
    order = torch.sort(-y, stable=True).indices
    w = torch.empty(n, dtype=torch.float64)
    w[order] = torch.exp2(-(torch.arange(n, dtype=torch.float64) + 1.0))
    want = rankops.listmle_loss(s, y, weights=w, reduction="sum")
    assert got.item() == pytest.approx(want.item(), rel=1e-13)
    # the reference normalises in log space (a softmax of log(2^(n-r) - 1)): the same
    assert reference.plistmle_loss(s, y, reduction="sum").item() == pytest.approx(want.item(), rel=1e-12)
    got32 = rankops.plistmle_loss(s.float().to(device), y.to(device))
    assert math.isfinite(got32.item())
    assert got32.item() == pytest.approx(want.item(), rel=1e-5)


def test_gradcheck(device):
    s, y, off, w = random_batch([4, 0, 1, 6, 3], device=device, weights=True, grades=3, seed=53)
    s = s.clone().requires_grad_()
    for weights in (None, w):
        assert torch.autograd.gradcheck(
            lambda x: rankops.plistmle_loss(x, y, offsets=off, weights=weights, reduction="none"), (s,))


def test_low_precision(device):
    s, y, off = random_batch([0, 1, 9, 40, 130], device=device, seed=54)
    for dtype in (torch.float16, torch.bfloat16):
        low = s.to(dtype).requires_grad_()
        exact = s.to(dtype).double().requires_grad_()
        got = rankops.plistmle_loss(low, y, offsets=off, reduction="none")
        want = reference.plistmle_loss(exact, y, offsets=off, reduction="none")
        assert got.dtype == torch.float32
        assert_close_per_list(got, want, rtol=1e-5)
        got.sum().backward()
        want.sum().backward()
        assert low.grad.dtype == dtype


def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    s, y, off, w = random_batch([5, 0, 7, 1], device=device, weights=True, seed=55)
    X = torch.randn(3, 6, dtype=torch.float64, device=device)
    Y = torch.randint(0, 3, (3, 6), device=device).double()
    lengths = torch.tensor([6, 2, 4], device=device)

    def step(s, X):
        return (rankops.plistmle_loss(s, y, offsets=off, weights=w)
                + rankops.plistmle_loss(X, Y, lengths=lengths, reduction="sum"))

    s1, X1 = s.clone().requires_grad_(), X.clone().requires_grad_()
    s2, X2 = s.clone().requires_grad_(), X.clone().requires_grad_()
    got = torch.compile(step, fullgraph=True)(s1, X1)
    want = step(s2, X2)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    got.backward()
    want.backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(X1.grad, X2.grad, rtol=1e-12, atol=1e-14)


def test_module_and_combined_loss(device):
    s, y, off = random_batch([4, 6], device=device, seed=56)
    want = rankops.plistmle_loss(s, y, offsets=off)
    torch.testing.assert_close(rankops.nn.PListMLELoss()(s, y, offsets=off), want)
    combined = rankops.nn.CombinedLoss({"plistmle_loss": 0.5, "softmax": 1.0})
    torch.testing.assert_close(combined(s, y, offsets=off),
                               0.5 * want + rankops.softmax_loss(s, y, offsets=off))


def test_bad_position_weight_names_itself():
    s, y = torch.randn(4), torch.tensor([1.0, 0.0, 2.0, 0.0])
    with pytest.raises(ValueError, match="position_weight"):
        rankops.plistmle_loss(s, y, position_weight="linear")
    with pytest.raises(ValueError, match="position_weight"):
        rankops.plistmle_loss(s, y, position_weight=lambda p, n: -torch.ones(4))
    with pytest.raises(ValueError, match="position_weight"):
        rankops.plistmle_loss(s, y, position_weight=lambda p, n: torch.ones(3))
    with pytest.raises(ValueError, match="position_weight"):
        rankops.plistmle_loss(s, y, position_weight=lambda p, n: torch.full((4,), float("nan")))
    with pytest.raises(ValueError, match="position_weight"):
        rankops.nn.CombinedLoss({"plistmle": (1.0, {"position_weight": "linear"})})
