"""The pairwise family (RankNet, hinge, soft 0-1, LambdaRank, LambdaLoss) on every device."""
import math

import pytest
import torch

import rankops
from rankops import reference
from lists import EDGE_LENGTHS, assert_close_per_list, random_batch, random_masked

PAIR_FNS = ["logistic", "hinge", "soft_zero_one"]
WEIGHTS = ["none", "label_diff", "ndcg", "ndcg2", "ndcg2pp"]

# unit roundoff of the dtype: one rounding to nearest is within u * |x| (plus half the
# subnormal spacing near 0: 2^-25 for float16; bfloat16's is below any value here)
ROUNDOFF = {torch.float16: (2.0 ** -11, 2.0 ** -25), torch.bfloat16: (2.0 ** -8, 0.0)}
# float32 accuracy per list: the worst error measured on the lists of the low-precision
# test below (up to 300 items, 45,000 pairs) is ~1e-6 of the list's scale (its loss;
# its largest |gradient|); 1e-5 leaves room for other summation orders and stays 50x
# below float16's roundoff (a kernel accumulating in float16/bfloat16 is off by ~1e-3)
F32_RTOL = 1e-5


# --------------------------------------------------------------------------------------
# A 4-item list worked by hand: scores (0.8, -0.4, 1.5, 0.1), labels (3, 2, 1, 0).
# Sorted by score: 1.5 (item 2), 0.8 (item 0), 0.1 (item 3), -0.4 (item 1), so the
# 1-based ranks are (2, 4, 1, 3). Every pair (i, j) with i < j has y_i > y_j.
HAND_SCORES = [0.8, -0.4, 1.5, 0.1]
HAND_LABELS = [3.0, 2.0, 1.0, 0.0]
HAND_RANKS = [2, 4, 1, 3]


def _D(r):
    return 1.0 / math.log2(1.0 + r)


def _phi_and_slope(fn, d, sigma=1.0, margin=1.0):
    if fn == "logistic":
        return math.log1p(math.exp(-sigma * d)), -sigma / (1.0 + math.exp(sigma * d))
    if fn == "hinge":
        return max(0.0, margin - d), (-1.0 if margin - d > 0 else 0.0)
    p = 1.0 / (1.0 + math.exp(sigma * d))  # sigmoid(-sigma d)
    return p, -sigma * p * (1.0 - p)


def _hand_loss_and_grad(fn, weight, k=None, w=(1.0, 1.0, 1.0, 1.0), mu=5.0):
    s, y, r = HAND_SCORES, HAND_LABELS, HAND_RANKS
    G = [2.0 ** v - 1.0 for v in y]  # (7, 3, 1, 0)
    ideal = sorted((wi * gi for wi, gi in zip(w, G)), reverse=True)
    cut = 4 if k is None else min(k, 4)
    idcg = sum(ideal[p] * _D(p + 1) for p in range(cut))
    Dk = [(_D(ri) if k is None or ri <= k else 0.0) for ri in r]
    loss, grad = 0.0, [0.0] * 4
    for i in range(4):
        for j in range(i + 1, 4):  # y_i > y_j for every i < j here
            if k is not None and min(r[i], r[j]) > k:
                continue
            dist = abs(r[i] - r[j])
            ndcg = abs(G[i] - G[j]) * abs(Dk[i] - Dk[j]) / idcg
            ndcg2 = abs(G[i] - G[j]) * abs(_D(dist) - _D(dist + 1)) / idcg
            lam = {"none": 1.0, "label_diff": y[i] - y[j], "ndcg": ndcg, "ndcg2": ndcg2,
                   "ndcg2pp": ndcg + mu * ndcg2}[weight]
            phi, slope = _phi_and_slope(fn, s[i] - s[j])
            loss += w[i] * lam * phi
            grad[i] += w[i] * lam * slope
            grad[j] -= w[i] * lam * slope
    return loss, grad


@pytest.mark.parametrize("fn", PAIR_FNS)
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("k", [None, 2])
@pytest.mark.parametrize("with_weights", [False, True])
def test_hand_worked_list(device, fn, weight, k, with_weights):
    w = (1.0, 2.0, 0.5, 3.0) if with_weights else (1.0, 1.0, 1.0, 1.0)
    expected_loss, expected_grad = _hand_loss_and_grad(fn, weight, k, w)
    s = torch.tensor(HAND_SCORES, dtype=torch.float64, device=device, requires_grad=True)
    y = torch.tensor(HAND_LABELS, dtype=torch.float64, device=device)
    kw = {"weights": torch.tensor(w, dtype=torch.float64, device=device)} if with_weights else {}
    loss = rankops.pairwise_loss(s, y, pair_fn=fn, weight=weight, k=k, reduction="sum", **kw)
    loss.backward()
    assert loss.item() == pytest.approx(expected_loss, rel=1e-12, abs=1e-14)
    assert s.grad.tolist() == pytest.approx(expected_grad, rel=1e-12, abs=1e-14)
    # 6 pairs with y_i > y_j, whatever k leaves out
    mean = rankops.pairwise_loss(s.detach(), y, pair_fn=fn, weight=weight, k=k, **kw)
    assert mean.item() == pytest.approx(expected_loss / 6, rel=1e-12, abs=1e-14)


def test_golden_ranknet_value_from_design_notes(device):
    # shared/notes/kernel_design.md appendix: scores (0.5, 1.2, -0.3, 0.0), labels
    # (3, 0, 1, 2): RankNet (sigma 1) loss 5.667415, gradient confirmed by finite differences.
    s = torch.tensor([0.5, 1.2, -0.3, 0.0], dtype=torch.float64, device=device, requires_grad=True)
    y = torch.tensor([3.0, 0.0, 1.0, 2.0], dtype=torch.float64, device=device)
    loss = rankops.ranknet_loss(s, y, reduction="sum")
    loss.backward()
    assert loss.item() == pytest.approx(5.667415, abs=1e-6)
    assert s.grad.tolist() == pytest.approx([-1.355754, 2.254287, -0.081991, -0.816542], abs=1e-6)


@pytest.mark.parametrize("k", [None, 30])
def test_golden_lambdarank_lightgbm_without_normalisation(device, k):
    # shared/notes/kernel_design.md appendix, four-item case, row "LGB, norm=false":
    # LightGBM's lambdarank objective (sigma 1, exp2 label gain 2^y - 1, discount
    # 1/log2(1 + r), truncation level 30 >= n, so all pairs; lambdarank_norm=false) on
    # scores (0.5, 1.2, -0.3, 0.0), labels (3, 0, 1, 2) gives g = (-0.244494, 0.356072,
    # -0.003616, -0.107962): the gradient of sum_pairs |dNDCG_ij| log(1 + exp(-(s_i - s_j)))
    # with the weights held constant, i.e. LambdaRank's "ndcg" weight, summed per list.
    s = torch.tensor([0.5, 1.2, -0.3, 0.0], dtype=torch.float64, device=device, requires_grad=True)
    y = torch.tensor([3.0, 0.0, 1.0, 2.0], dtype=torch.float64, device=device)
    rankops.lambdarank_loss(s, y, k=k, reduction="sum").backward()
    assert s.grad.tolist() == pytest.approx([-0.244494, 0.356072, -0.003616, -0.107962], abs=1e-6)


def test_named_shortcuts_match_the_general_op(device):
    s, y, off = random_batch([5, 9, 1, 12], device=device)
    pl = rankops.pairwise_loss
    assert torch.equal(rankops.ranknet_loss(s, y, offsets=off), pl(s, y, offsets=off))
    assert torch.equal(rankops.pairwise_hinge_loss(s, y, offsets=off, margin=0.5),
                       pl(s, y, offsets=off, pair_fn="hinge", margin=0.5))
    assert torch.equal(rankops.pairwise_soft_zero_one_loss(s, y, offsets=off),
                       pl(s, y, offsets=off, pair_fn="soft_zero_one"))
    assert torch.equal(rankops.lambdarank_loss(s, y, offsets=off, k=3),
                       pl(s, y, offsets=off, weight="ndcg", k=3))
    assert torch.equal(rankops.lambdaloss(s, y, offsets=off, variant="ndcg2"),
                       pl(s, y, offsets=off, weight="ndcg2"))
    assert torch.equal(rankops.lambdaloss(s, y, offsets=off, mu=2.0),
                       pl(s, y, offsets=off, weight="ndcg2pp", mu=2.0))


# --------------------------------------------------------------------------------------
# Agreement with rankops.reference on random layouts.

def _compare(device, dtype, lengths, fn, weight, k, *, ties=False, weights=False, grades=5,
             rtol=1e-9, atol=1e-11, sigma=1.0, gain="exp2"):
    batch = random_batch(lengths, dtype=dtype, device=device, ties=ties, weights=weights,
                         grades=grades, seed=len(lengths) + (k or 0))
    s, y, off = batch[:3]
    kw = {"weights": batch[3]} if weights else {}
    opts = dict(pair_fn=fn, weight=weight, k=k, sigma=sigma, gain=gain, reduction="none", **kw)
    s1 = s.clone().requires_grad_()
    s2 = s.clone().requires_grad_()
    got = rankops.pairwise_loss(s1, y, offsets=off, **opts)
    want = reference.pairwise_loss(s2, y, offsets=off, **opts)
    v = torch.rand(got.shape, dtype=torch.float64, device=device)  # honour grad_output
    (got.double() * v).sum().backward()
    (want.double() * v).sum().backward()
    scale = want.abs().max().item() if want.numel() else 1.0
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol * max(scale, 1.0))
    gscale = s2.grad.abs().max().item() if s2.numel() else 1.0
    torch.testing.assert_close(s1.grad.double(), s2.grad.double(), rtol=rtol,
                               atol=atol * max(gscale, 1.0))


@pytest.mark.parametrize("fn", PAIR_FNS)
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("k", [None, 1, 3, 40])
def test_matches_reference_edge_lengths(device, fn, weight, k):
    _compare(device, torch.float64, EDGE_LENGTHS, fn, weight, k, weights=True)


@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("k", [None, 3])
def test_signed_weights_match_reference(device, weight, k):
    # Negative item weights (DESIGN puts no sign on them): a pair takes the weight of its
    # more relevant item, and the ideal DCG orders negative w*G last within the list.
    lengths = [5, 7, 1, 12, 40]
    s, y, off = random_batch(lengths, device=device, seed=22)
    g = torch.Generator().manual_seed(22)
    w = (torch.randn(sum(lengths), generator=g, dtype=torch.float64) * 2).to(device)
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    opts = dict(weight=weight, k=k, weights=w, reduction="none")
    got = rankops.pairwise_loss(s1, y, offsets=off, **opts)
    want = reference.pairwise_loss(s2, y, offsets=off, **opts)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    got.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("k", [None, 2, 7])
def test_matches_reference_with_score_and_label_ties(device, weight, k):
    _compare(device, torch.float64, [6, 17, 33, 50], "logistic", weight, k, ties=True, grades=2)


@pytest.mark.parametrize("weight", ["none", "ndcg", "ndcg2pp"])
def test_all_equal_labels_give_zero(device, weight):
    s = torch.randn(10, dtype=torch.float64, device=device, requires_grad=True)
    y = torch.full((10,), 2.0, dtype=torch.float64, device=device)
    loss = rankops.pairwise_loss(s, y, weight=weight)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(s.grad) == 0


@pytest.mark.parametrize("weight", ["none", "ndcg", "ndcg2pp"])
@pytest.mark.parametrize("k", [None, 1, 10, 500, 2000])
def test_long_list_matches_reference(device, weight, k):
    _compare(device, torch.float64, [2000], "logistic", weight, k, rtol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight", ["ndcg", "ndcg2pp"])
@pytest.mark.parametrize("k", [None, 10])
def test_long_lists_with_tied_and_infinite_scores_match_reference(device, dtype, weight, k):
    # Lists of more than 64 items rank their scores (and count their label pairs) with the
    # CPU's radix sort: ties by position, -0.0 tied with +0.0, -inf after every finite
    # score; lists of 65 and 64 items sit on both sides of the insertion-sort cut.
    lengths = [65, 64, 300, 1000, 129]
    g = torch.Generator().manual_seed(21)
    n = sum(lengths)
    s64 = torch.round(torch.randn(n, generator=g, dtype=torch.float64) * 4) / 4
    zeros = (s64 == 0).nonzero().flatten()
    s64[zeros[::2]] = -0.0
    y = torch.randint(0, 5, (n,), generator=g).double()
    off = torch.tensor([0] + lengths).cumsum(0)
    for b in range(len(lengths)):  # two -inf scores of one label per list: no inf - inf
        i = int(off[b]) + torch.randperm(lengths[b], generator=g)[:2]
        s64[i], y[i] = -math.inf, 0.0
    assert torch.signbit(s64[s64 == 0]).any() and (~torch.signbit(s64[s64 == 0])).any()
    s64, y, off = s64.to(device), y.to(device), off.to(device)
    s = s64.to(dtype).clone().requires_grad_()
    opts = dict(pair_fn="logistic", weight=weight, k=k, reduction="none")
    got = rankops.pairwise_loss(s, y, offsets=off, **opts)
    got.sum().backward()
    x = s64.clone().requires_grad_()  # quarter steps: exact in both dtypes
    want = reference.pairwise_loss(x, y, offsets=off, **opts)
    want.sum().backward()
    assert torch.isfinite(got).all() and torch.isfinite(s.grad).all()
    tol = 1e-10 if dtype == torch.float64 else F32_RTOL
    assert_close_per_list(got, want, rtol=tol, msg="loss: ")
    # The reference's autograd gives NaN at a -inf score (0 * inf inside its [B, L, L]
    # graph); the limit there is 0: every pair of it has a gap of +-inf, where phi' = 0
    # (float32's vectorised exp stops at e^-87, so there its slope is ~1e-38, not 0).
    at_inf = torch.isinf(s64)
    limit_err = 0.0 if dtype == torch.float64 else 1e-37
    assert torch.isnan(x.grad[at_inf]).all() and s.grad[at_inf].abs().max() <= limit_err
    x_grad = torch.where(at_inf, torch.zeros_like(x.grad), x.grad)
    assert_close_per_list(s.grad, x_grad, off, rtol=tol, msg="gradient: ")


@pytest.mark.parametrize("k", [None, 5])
def test_chunked_long_list_matches_reference(device, k):
    # 2900 items: 4.2e6 pairs, more than one chunk of rows on the CPU
    _compare(device, torch.float64, [2900], "logistic", "ndcg", k, rtol=1e-8)


@pytest.mark.parametrize("fn", PAIR_FNS)
@pytest.mark.parametrize("weight", ["none", "ndcg", "ndcg2pp"])
def test_float32_matches_float64_reference(device, fn, weight):
    lengths = [1, 5, 30, 120, 0, 300]
    s, y, off = random_batch(lengths, dtype=torch.float32, device=device)
    s1 = s.clone().requires_grad_()
    got = rankops.pairwise_loss(s1, y, offsets=off, pair_fn=fn, weight=weight, reduction="sum")
    got.backward()
    s2 = s.double().requires_grad_()
    want = reference.pairwise_loss(s2, y, offsets=off, pair_fn=fn, weight=weight, reduction="sum")
    want.backward()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=1e-5)
    torch.testing.assert_close(s1.grad.double(), s2.grad, rtol=1e-4, atol=1e-5 * s2.grad.abs().max().item())


def test_linear_gain_and_sigma(device):
    _compare(device, torch.float64, [9, 4, 20], "logistic", "ndcg", 4, gain="linear", sigma=2.5)
    _compare(device, torch.float64, [9, 4, 20], "soft_zero_one", "ndcg2pp", None, gain="linear", sigma=0.3)


# --------------------------------------------------------------------------------------
# Reductions, edge cases, layouts.

def test_reductions(device):
    s, y, off = random_batch([4, 0, 6, 1], device=device)
    per_list = rankops.pairwise_loss(s, y, offsets=off, reduction="none")
    assert per_list.shape == (4,)
    assert per_list[1].item() == 0.0 and per_list[3].item() == 0.0
    total = rankops.pairwise_loss(s, y, offsets=off, reduction="sum")
    mean = rankops.pairwise_loss(s, y, offsets=off)
    yy = y.tolist()
    pairs = sum(
        1 for a, b in ((0, 4), (4, 10)) for i in range(a, b) for j in range(a, b) if yy[i] > yy[j]
    )
    torch.testing.assert_close(total, per_list.sum())
    torch.testing.assert_close(mean, total / pairs)


@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("k", [None, 2])
def test_zero_item_weights_still_count_their_pairs_in_the_mean(device, weight, k):
    # DESIGN §3: "mean" divides by every valid pair (y_i > y_j) of the batch, also the
    # pairs a zero weight (or the top-k cut) leaves out. List 1 has weight 0 throughout,
    # the others on every third item.
    lengths = [6, 5, 9, 1, 7]
    s, y, off, w = random_batch(lengths, device=device, weights=True, seed=31)
    w = w.clone()
    w[::3] = 0.0
    w[off[1]:off[2]] = 0.0
    opts = dict(offsets=off, weights=w, weight=weight, k=k)
    yy, bounds = y.tolist(), off.tolist()
    pairs = sum(1 for a, b in zip(bounds[:-1], bounds[1:]) for i in range(a, b) for j in range(a, b)
                if yy[i] > yy[j])
    weighted_pairs = sum(1 for a, b in zip(bounds[:-1], bounds[1:]) for i in range(a, b)
                         for j in range(a, b) if yy[i] > yy[j] and w[i] != 0)
    assert weighted_pairs < pairs  # the zero weights do leave pairs out
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    got = rankops.pairwise_loss(s1, y, **opts)  # reduction="mean", the default
    want = reference.pairwise_loss(s2, y, **opts)
    total = reference.pairwise_loss(s, y, reduction="sum", **opts)
    assert total.item() > 0
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(got, total / pairs, rtol=1e-12, atol=0)
    got.backward()
    want.backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-12, atol=1e-15)
    # an all-zero-weight batch: loss 0 (not NaN), zero gradient
    s3 = s.clone().requires_grad_()
    zero = rankops.pairwise_loss(s3, y, **dict(opts, weights=torch.zeros_like(w)))
    zero.backward()
    assert zero.item() == 0.0 and s3.grad.eq(0).all()


@pytest.mark.parametrize("lengths", [[], [0], [0, 0, 1], [1]])
def test_no_pairs_gives_zero_not_nan(device, lengths):
    s, y, off = random_batch(lengths, device=device)
    for fn in PAIR_FNS:
        for weight in WEIGHTS:
            for reduction in ("mean", "sum", "none"):
                x = s.clone().requires_grad_()
                loss = rankops.pairwise_loss(x, y, offsets=off, pair_fn=fn, weight=weight, k=2,
                                             reduction=reduction)
                assert loss.shape == ((len(lengths),) if reduction == "none" else ())
                assert loss.eq(0).all(), (fn, weight, reduction, loss)
                loss.sum().backward()
                assert x.grad is not None and x.grad.shape == s.shape
                assert torch.isfinite(x.grad).all() and x.grad.eq(0).all(), (fn, weight, reduction, x.grad)


def test_no_relevant_item_gives_zero_lambda(device):
    s = torch.randn(5, dtype=torch.float64, device=device, requires_grad=True)
    y = torch.zeros(5, dtype=torch.float64, device=device)
    loss = rankops.lambdarank_loss(s, y)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(s.grad) == 0


@pytest.mark.parametrize("fn", PAIR_FNS)
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_huge_score_gaps_match_reference(device, fn, weight, dtype):
    # gaps of 5e3..2e4 (exp overflows in float32 beyond ~88) and an exact tie at 1e4;
    # the float64 reference on the same (cast) scores is the truth
    s = torch.tensor([1e4, -1e4, 0.0, 5e3, -5e3, 1e4], device=device).to(dtype)
    y = torch.tensor([0.0, 3.0, 1.0, 2.0, 4.0, 1.0], device=device)
    s_req = s.clone().requires_grad_()
    loss = rankops.pairwise_loss(s_req, y, pair_fn=fn, weight=weight, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss).all() and torch.isfinite(s_req.grad.float()).all()
    x = s.double().requires_grad_()
    want = reference.pairwise_loss(x, y, pair_fn=fn, weight=weight, reduction="sum")
    want.backward()
    if dtype == torch.float64:
        torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(s_req.grad, x.grad, rtol=1e-12, atol=1e-12)
        return
    assert_close_per_list(loss, want, rtol=F32_RTOL, msg="loss: ")
    off = torch.tensor([0, 6])
    u, tiny = ROUNDOFF.get(dtype, (0.0, 0.0))  # float32: no rounding after the kernel
    assert_close_per_list(s_req.grad, x.grad, off, rtol=u, list_rtol=F32_RTOL, atol=tiny, msg="gradient: ")


@pytest.mark.parametrize("fn", PAIR_FNS)
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("k", [None, 3])
def test_per_list_gradients_sum_to_zero(device, fn, weight, k):
    # each pair term w_i lambda_ij phi(s_i - s_j) (lambda held constant) adds +c to item
    # i's gradient and -c to item j's, so every list's gradient sums to 0 (item weights
    # included); checked against the list's gradient scale
    lengths = [5, 0, 8, 1, 30, 100]
    s, y, off, w = random_batch(lengths, device=device, weights=True, seed=12)
    x = s.clone().requires_grad_()
    rankops.pairwise_loss(x, y, offsets=off, weights=w, pair_fn=fn, weight=weight, k=k,
                          reduction="none").sum().backward()
    bounds = off.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        g = x.grad[a:b]
        if b - a >= 2 and fn != "hinge":
            assert g.abs().max() > 0  # not trivially 0
        assert abs(g.sum().item()) <= 1e-13 * max(g.abs().sum().item(), 1e-300), (a, b, g.sum().item())


@pytest.mark.parametrize("fn", PAIR_FNS)
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("k", [None, 3])
def test_permutation_equivariance_without_score_ties(device, fn, weight, k):
    # Shuffling the items within each list (distinct scores: the ranks move with the
    # items) leaves each list's loss unchanged and permutes the gradient with the items.
    lengths = [5, 0, 8, 1, 30]
    s, y, off, w = random_batch(lengths, device=device, weights=True, seed=13)
    assert s.unique().numel() == s.numel()
    g = torch.Generator().manual_seed(13)
    perm = torch.cat([a + torch.randperm(b - a, generator=g)
                      for a, b in zip(off[:-1].tolist(), off[1:].tolist())]).to(device)
    assert not torch.equal(perm, torch.arange(len(perm), device=device))
    opts = dict(offsets=off, pair_fn=fn, weight=weight, k=k, reduction="none")
    x1, x2 = s.clone().requires_grad_(), s[perm].clone().requires_grad_()
    a = rankops.pairwise_loss(x1, y, weights=w, **opts)
    b = rankops.pairwise_loss(x2, y[perm], weights=w[perm], **opts)
    torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-13)
    a.sum().backward()
    b.sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad[perm], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("label_dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_and_bool_labels_equal_float_labels(device, weight, label_dtype):
    # labels of any real dtype (DESIGN §2): the same loss and gradient as float labels
    s, y, off, w = random_batch([5, 0, 8, 1, 30], device=device, grades=3, weights=True, seed=9)
    y_int = (y > 0) if label_dtype == torch.bool else y.to(label_dtype)
    for fn in PAIR_FNS:
        results = []
        for labels in (y_int, y_int.to(torch.float64)):
            x = s.clone().requires_grad_()
            loss = rankops.pairwise_loss(x, labels, offsets=off, weights=w, pair_fn=fn, weight=weight,
                                         k=3, reduction="none")
            loss.sum().backward()
            results.append((loss.detach(), x.grad))
        assert results[0][0].abs().sum() > 0
        assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_k_at_least_n_equals_no_truncation(device):
    s, y, off = random_batch([3, 8, 5], device=device)
    for weight in WEIGHTS:
        a = rankops.pairwise_loss(s, y, offsets=off, weight=weight, reduction="none")
        b = rankops.pairwise_loss(s, y, offsets=off, weight=weight, k=8, reduction="none")
        c = rankops.pairwise_loss(s, y, offsets=off, weight=weight, k=100, reduction="none")
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("weight", ["none", "ndcg2pp"])
def test_layouts_agree(device, weight):
    lengths = torch.tensor([3, 0, 5, 1, 4], device=device)
    s, y, off = random_batch(lengths.tolist(), device=device)
    w = torch.rand_like(s) + 0.5
    opts = dict(weight=weight, k=3, reduction="none")
    packed = rankops.pairwise_loss(s, y, offsets=off, weights=w, **opts)
    by_lengths = rankops.pairwise_loss(s, y, lengths=lengths, weights=w, **opts)
    ids = torch.repeat_interleave(torch.tensor([10, 11, 12, 13, 14], device=device), lengths)
    by_ids = rankops.pairwise_loss(s, y, group_ids=ids, weights=w, **opts)
    S, mask = rankops.segments.unpack(s, off, fill=123.0)
    Y, _ = rankops.segments.unpack(y, off, fill=-5.0)  # padding values must not matter
    W, _ = rankops.segments.unpack(w, off)
    padded_mask = rankops.pairwise_loss(S, Y.abs(), mask=mask, weights=W, **opts)
    padded_len = rankops.pairwise_loss(S, Y.abs(), lengths=lengths, weights=W, **opts)
    one_by_one = torch.stack([
        rankops.pairwise_loss(s[a:b], y[a:b], weights=w[a:b], **opts)[0]
        for a, b in zip(off[:-1].tolist(), off[1:].tolist())
    ])
    by_ids_expected = packed[lengths > 0]  # empty groups have no ids
    for other in (by_lengths, padded_mask, padded_len, one_by_one):
        torch.testing.assert_close(other, packed, rtol=0, atol=0)
    torch.testing.assert_close(by_ids, by_ids_expected, rtol=0, atol=0)


def test_padded_gradients_reach_only_valid_items(device, packing):
    S = torch.randn(2, 4, dtype=torch.float64, device=device, requires_grad=True)
    Y = torch.tensor([[2.0, 0.0, 1.0, 9.0], [0.0, 1.0, 7.0, 7.0]], dtype=torch.float64, device=device)
    lengths = torch.tensor([3, 2], device=device)
    rankops.lambdarank_loss(S, Y, lengths=lengths).backward()
    assert S.grad[0, 3].item() == 0.0 and S.grad[1, 2:].abs().sum().item() == 0.0
    S2 = S.detach().clone().requires_grad_()
    reference.lambdarank_loss(S2, Y, lengths=lengths).backward()
    torch.testing.assert_close(S.grad, S2.grad)


@pytest.mark.parametrize("pair_fn", PAIR_FNS)
@pytest.mark.parametrize("fill", [-math.inf, math.nan])
def test_padding_scores_never_matter(device, pair_fn, fill, packing):
    # masked_fill(~mask, -inf) padding, without weights: the padding list keeps weight 1.
    s, y, off = random_batch([3, 0, 5, 1, 4], device=device, seed=3)
    S, mask = rankops.segments.unpack(s, off, fill=fill)
    Y, _ = rankops.segments.unpack(y, off)
    S_req = S.clone().requires_grad_()
    s_req = s.clone().requires_grad_()
    opts = dict(pair_fn=pair_fn, weight="ndcg2pp", k=3)
    padded = rankops.pairwise_loss(S_req, Y, mask=mask, **opts)
    packed = rankops.pairwise_loss(s_req, y, offsets=off, **opts)
    torch.testing.assert_close(padded, packed, rtol=0, atol=0)
    padded.backward()
    packed.backward()
    assert S_req.grad[~mask].eq(0).all(), S_req.grad
    torch.testing.assert_close(S_req.grad[mask], s_req.grad, rtol=0, atol=0)


@pytest.mark.parametrize("fn", PAIR_FNS)
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("special", [False, True])
def test_random_masks_match_reference(device, fn, weight, k, special, packing):
    # Padding scattered through the rows (not only at their end). With special, valid
    # items also score -inf (label 0) or NaN, so the rank of a real -inf/NaN item
    # against the padding before it matters: the ndcg weights use it.
    S, Y, W, mask = (t.to(device) for t in random_masked(12, 40, seed=5, special=special))
    opts = dict(pair_fn=fn, weight=weight, k=k, weights=W, reduction="none")
    S1, S2 = S.clone().requires_grad_(), S.clone().requires_grad_()
    got = rankops.pairwise_loss(S1, Y, mask=mask, **opts)
    want = reference.pairwise_loss(S2, Y, mask=mask, **opts)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)
    got.sum().backward()
    want.sum().backward()
    assert S1.grad[~mask].eq(0).all()
    # A NaN makes its whole list NaN. A label-0 -inf item is only ever the less relevant
    # item of a pair, at d = +inf where every pair function is flat: gradient exactly 0.
    # The dense reference meets inf - inf (NaN) at the -inf items' own gradients, so the
    # gradients are compared at the finite items of the lists without NaN.
    nan_row = (S.isnan() & mask).any(1, keepdim=True)
    assert nan_row.any() == special
    finite = mask & torch.isfinite(S) & ~nan_row
    assert torch.isfinite(S1.grad[mask & ~nan_row]).all()
    assert S1.grad[mask & S.isneginf() & (Y == 0)].eq(0).all()
    torch.testing.assert_close(S1.grad[finite], S2.grad[finite], rtol=1e-12, atol=1e-12)
    if not special:
        torch.testing.assert_close(S1.grad, S2.grad, rtol=1e-12, atol=1e-12)


def test_padded_full_rows_without_lengths(device, packing):
    S = torch.randn(3, 5, dtype=torch.float64, device=device)
    Y = torch.randint(0, 3, (3, 5), device=device).double()
    got = rankops.ranknet_loss(S, Y, reduction="none")
    want = torch.stack([rankops.ranknet_loss(S[b], Y[b], reduction="sum") for b in range(3)])
    torch.testing.assert_close(got, want)


def test_ties_broken_by_position(device):
    # Scores tie: item order decides ranks, so the ndcg weights differ by input order
    # (the example of shared/notes/kernel_design.md).
    s = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64, device=device)
    a = rankops.lambdarank_loss(s, torch.tensor([0.0, 2.0, 1.0], device=device), reduction="sum")
    b = rankops.lambdarank_loss(s, torch.tensor([2.0, 0.0, 1.0], device=device), reduction="sum")
    ra = reference.lambdarank_loss(s, torch.tensor([0.0, 2.0, 1.0], device=device), reduction="sum")
    rb = reference.lambdarank_loss(s, torch.tensor([2.0, 0.0, 1.0], device=device), reduction="sum")
    assert a.item() != pytest.approx(b.item())
    torch.testing.assert_close(a, ra)
    torch.testing.assert_close(b, rb)


def test_deterministic_and_thread_count_independent():
    s, y, off = random_batch([2900, 40, 700, 3], dtype=torch.float32)
    s.requires_grad_()
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 1, 2):
            torch.set_num_threads(n)
            s.grad = None
            loss = rankops.lambdaloss(s, y, offsets=off, reduction="none")
            loss.sum().backward()
            results.append((loss.detach().clone(), s.grad.clone()))
    finally:
        torch.set_num_threads(threads)
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


def test_no_grad_and_detached_inputs(device):
    s, y, off = random_batch([5, 6], device=device)
    with torch.no_grad():
        a = rankops.ranknet_loss(s.clone().requires_grad_(), y, offsets=off)
    b = rankops.ranknet_loss(s, y, offsets=off)
    assert not a.requires_grad and torch.equal(a, b)


def test_double_backward_is_a_clear_error(device):
    s, y, off = random_batch([5, 6], device=device)
    s.requires_grad_()
    loss = rankops.ranknet_loss(s, y, offsets=off)
    (g,) = torch.autograd.grad(loss, s, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


# --------------------------------------------------------------------------------------
# Low precision (float16, bfloat16 scores): the kernels widen the scores to float32 and
# accumulate in float32 (DESIGN §4), so on the same rounded scores their loss and their
# float32 item gradient match the float64 reference at float32 accuracy; the gradient
# autograd hands back is that float32 gradient rounded once to the scores' dtype.

LOW_LENGTHS = [20, 50, 7, 100, 0, 1, 300]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fn", PAIR_FNS)
@pytest.mark.parametrize("weight", WEIGHTS)
def test_low_precision_matches_float64_reference(device, dtype, fn, weight):
    s64, y, off, w = random_batch(LOW_LENGTHS, device=device, weights=True)
    s_low = s64.to(dtype)
    for k in (None, 5):
        opts = dict(offsets=off, weights=w, pair_fn=fn, weight=weight, k=k, reduction="none")
        x = s_low.double().requires_grad_()  # the same rounded scores, in float64
        truth = reference.pairwise_loss(x, y, **opts)
        truth.sum().backward()
        # the op itself: float32 loss and float32 item gradient
        loss32, grad32, _ = torch.ops.rankops.pairwise_loss(s_low, y, off, w, fn, weight, 1.0, 1.0, k,
                                                            5.0, "exp2", True)
        assert loss32.dtype == torch.float32 and grad32.dtype == torch.float32
        assert_close_per_list(loss32, truth, rtol=F32_RTOL, msg=f"loss k={k}: ")
        assert_close_per_list(grad32, x.grad, off, rtol=F32_RTOL, msg=f"float32 gradient k={k}: ")
        # the public function: float32 loss; autograd's gradient in the scores' dtype
        s_req = s_low.clone().requires_grad_()
        got = rankops.pairwise_loss(s_req, y, **opts)
        got.sum().backward()
        assert got.dtype == torch.float32 and s_req.grad.dtype == dtype
        assert_close_per_list(got, truth, rtol=F32_RTOL, msg=f"loss k={k}: ")
        u, tiny = ROUNDOFF[dtype]
        assert_close_per_list(s_req.grad, x.grad, off, rtol=u, list_rtol=F32_RTOL, atol=tiny,
                              msg=f"gradient k={k}: ")
        # and no worse than the reference run in the same dtype (DESIGN §7)
        ref_low = reference.pairwise_loss(s_low, y.to(dtype), **dict(opts, weights=w.to(dtype)))
        err_got = (got.double() - truth).abs().max().item()
        err_ref = (ref_low.double() - truth).abs().max().item()
        assert err_got <= err_ref


# --------------------------------------------------------------------------------------
# Gradients and registration.

@pytest.mark.parametrize("fn", PAIR_FNS)
@pytest.mark.parametrize("weight", WEIGHTS)
def test_gradcheck(device, fn, weight):
    s, y, off, w = random_batch([4, 0, 7, 1, 5], device=device, weights=True)
    s = (s * 3).requires_grad_()  # well separated: eps never reorders a list

    def f(x):
        return rankops.pairwise_loss(x, y, offsets=off, weights=w, pair_fn=fn, weight=weight,
                                     k=3, reduction="none")

    assert torch.autograd.gradcheck(f, (s,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("requires_grad", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(device, requires_grad, dtype):
    s, y, off, w = random_batch([3, 0, 6, 1], device=device, dtype=dtype, weights=True)
    s.requires_grad_(requires_grad)
    for fn, weight, k in (("logistic", "ndcg", None), ("hinge", "none", 2), ("soft_zero_one", "ndcg2pp", 1)):
        args = (s, y, off, w if weight == "none" else None, fn, weight, 1.0, 1.0, k, 5.0, "exp2",
                requires_grad)
        torch.library.opcheck(torch.ops.rankops.pairwise_loss.default, args)
    grad = torch.rand(4, dtype=dtype, device=device)
    item = torch.rand(10, dtype=dtype, device=device)
    torch.library.opcheck(torch.ops.rankops.pairwise_loss_backward.default, (grad, item, off))


def test_torch_compile_fullgraph_model_and_loss(device):
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).to(device)
    x = torch.randn(20, 6, device=device)
    y = torch.randint(0, 3, (20,), device=device).float()
    off = torch.tensor([0, 5, 5, 12, 20], device=device)
    X = torch.randn(3, 7, 6, device=device)
    Y = torch.randint(0, 3, (3, 7), device=device).float()
    lengths = torch.tensor([7, 2, 5], device=device)

    def step(x, y, off, X, Y, lengths):
        packed = rankops.lambdarank_loss(model(x).squeeze(-1), y, offsets=off, k=5)
        padded = rankops.ranknet_loss(model(X).squeeze(-1), Y, lengths=lengths)
        return packed + padded

    compiled = torch.compile(step, fullgraph=True)
    eager = step(x, y, off, X, Y, lengths)
    got = compiled(x, y, off, X, Y, lengths)
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-6)
    got.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eager.backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# Bad input: clear errors that name the argument.

def _ok():
    return torch.randn(6), torch.tensor([0.0, 1, 2, 0, 1, 0]), torch.tensor([0, 3, 6])


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(offsets=torch.tensor([0, 3, 6], dtype=torch.int32)), TypeError, "offsets must be int64"),
        (dict(offsets=torch.tensor([1, 3, 6])), ValueError, "offsets must start at 0"),
        (dict(offsets=torch.tensor([0, 4, 3, 6])), ValueError, "offsets must be non-decreasing"),
        (dict(offsets=torch.tensor([0, 3, 5])), ValueError, "offsets must end at N = 6"),
        (dict(labels=torch.tensor([0.0, 1, 2])), ValueError, "labels must have the shape of scores"),
        (dict(labels=torch.tensor([0.0, -1, 2, 0, 1, 0])), ValueError, "labels must be >= 0"),
        (dict(labels=torch.tensor([0.0, float("nan"), 2, 0, 1, 0])), ValueError, "labels must not contain NaN"),
        (dict(scores=torch.arange(6)), TypeError, "scores must be a floating tensor"),
        (dict(scores=torch.randn(1, 2, 3)), ValueError, "scores must be packed"),
        (dict(weights=torch.ones(5)), ValueError, "weights must have the shape of scores"),
        (dict(labels=torch.zeros(6, device="meta")), ValueError, "labels must be on the device of scores"),
        (dict(offsets=torch.tensor([0, 3, 6], device="meta")), ValueError, "offsets must be on the device of scores"),
        (dict(weights=torch.ones(6, device="meta")), ValueError, "weights must be on the device of scores"),
        (dict(k=0), ValueError, "k must be >= 1"),
        (dict(k=2.5), TypeError, "k must be an int"),
        (dict(pair_fn="exp"), ValueError, "pair_fn must be one of"),
        (dict(weight="dcg"), ValueError, "weight must be one of"),
        (dict(gain="log"), ValueError, "gain must be one of"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
        (dict(lengths=torch.tensor([3, 3])), ValueError, "at most one of offsets, lengths"),
        (dict(mask=torch.ones(6, dtype=torch.bool), offsets=None), ValueError, "mask= goes with padded"),
    ],
)
def test_bad_input(change, error, match):
    s, y, off = _ok()
    kwargs = dict(scores=s, labels=y, offsets=off)
    kwargs.update(change)
    with pytest.raises(error, match=match):
        rankops.pairwise_loss(kwargs.pop("scores"), kwargs.pop("labels"), **kwargs)


def test_bad_padded_input():
    S, Y = torch.randn(2, 3), torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, L\]"):
        rankops.ranknet_loss(S, Y, lengths=torch.tensor([4, 1]))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        rankops.ranknet_loss(S, Y, mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="padded .* take lengths= or mask="):
        rankops.ranknet_loss(S, Y, offsets=torch.tensor([0, 6]))


def test_direct_op_call_checks_offsets_in_cpp():
    s, y, _ = _ok()
    with pytest.raises(RuntimeError, match="offsets must end at N"):
        torch.ops.rankops.pairwise_loss(s, y, torch.tensor([0, 3, 5]), None, "logistic", "none",
                                        1.0, 1.0, None, 5.0, "exp2", False)
    with pytest.raises(RuntimeError, match="pair_fn must be"):
        torch.ops.rankops.pairwise_loss(s, y, torch.tensor([0, 6]), None, "bogus", "none",
                                        1.0, 1.0, None, 5.0, "exp2", False)


def test_nn_modules_match_functions(device):
    s, y, off = random_batch([4, 7], device=device)
    assert torch.equal(rankops.nn.LambdaRankLoss(k=3)(s, y, offsets=off),
                       rankops.lambdarank_loss(s, y, offsets=off, k=3))
    assert torch.equal(rankops.nn.PairwiseLoss(pair_fn="hinge", reduction="sum")(s, y, offsets=off),
                       rankops.pairwise_loss(s, y, offsets=off, pair_fn="hinge", reduction="sum"))
    assert torch.equal(rankops.nn.LambdaLoss(variant="ndcg2")(s, y, offsets=off),
                       rankops.lambdaloss(s, y, offsets=off, variant="ndcg2"))
    assert torch.equal(rankops.nn.RankNetLoss()(s, y, offsets=off), rankops.ranknet_loss(s, y, offsets=off))
    assert "k=3" in repr(rankops.nn.LambdaRankLoss(k=3))
