"""pairwise_mse_loss: every ordered pair's squared error, computed in O(n) per list.

Expected values come from explicit loops over the pairs (hand), from the ``[B, L, L]``
reference, and (tests/test_rax.py) from Rax's ``pairwise_mse_loss``.
"""
import math

import pytest
import torch

import rankops
from rankops import reference
from lists import EDGE_LENGTHS, assert_close_per_list, random_batch, random_masked


def _hand(s, y, w):
    """Loss and gradient of one list by the definition: a double loop over the pairs."""
    n = len(s)
    d = [a - b for a, b in zip(s, y)]
    loss = sum(w[i] * (d[i] - d[j]) ** 2 for i in range(n) for j in range(n))
    # d/ds_k: the pairs (k, j) give 2 w_k (d_k - d_j), the pairs (i, k) give -2 w_i (d_i - d_k)
    grad = [sum(2 * w[k] * (d[k] - d[j]) for j in range(n))
            - sum(2 * w[i] * (d[i] - d[k]) for i in range(n)) for k in range(n)]
    return loss, grad


def test_hand_values(device):
    s, y, w = [0.8, -0.4, 1.5, 0.1], [3.0, 2.0, 1.0, 0.0], [1.0, 2.0, 0.5, 3.0]
    for weights in (None, w):
        ww = [1.0] * 4 if weights is None else weights
        want_loss, want_grad = _hand(s, y, ww)
        scores = torch.tensor(s, dtype=torch.float64, device=device, requires_grad=True)
        kw = {} if weights is None else {"weights": torch.tensor(weights, dtype=torch.float64, device=device)}
        loss = rankops.pairwise_mse_loss(scores, torch.tensor(y, dtype=torch.float64, device=device),
                                         reduction="sum", **kw)
        loss.backward()
        assert loss.item() == pytest.approx(want_loss, rel=1e-13)
        assert scores.grad.tolist() == pytest.approx(want_grad, rel=1e-12)
    # unweighted by hand: d = (-2.2, -2.4, 0.5, 0.1), 2 (n sum d^2 - (sum d)^2) = 54.88;
    # "mean" divides by the 16 ordered pairs (self pairs included, as Rax)
    scores = torch.tensor(s, dtype=torch.float64, device=device)
    labels = torch.tensor(y, dtype=torch.float64, device=device)
    assert rankops.pairwise_mse_loss(scores, labels, reduction="sum").item() == pytest.approx(54.88, rel=1e-13)
    assert rankops.pairwise_mse_loss(scores, labels).item() == pytest.approx(54.88 / 16, rel=1e-13)


@pytest.mark.parametrize("weights", [False, True], ids=["", "weights"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_matches_reference(device, weights, reduction):
    batch = random_batch(EDGE_LENGTHS, device=device, weights=weights, seed=4)
    s, y, off = batch[:3]
    kw = {"weights": batch[3]} if weights else {}
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    got = rankops.pairwise_mse_loss(s1, y, offsets=off, reduction=reduction, **kw)
    want = reference.pairwise_mse_loss(s2, y, offsets=off, reduction=reduction, **kw)
    if reduction == "none":
        assert_close_per_list(got, want, rtol=1e-12, atol=1e-12)
    else:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    v = torch.rand(got.shape, dtype=torch.float64, device=device)
    (got * v).sum().backward()
    (want * v).sum().backward()
    assert_close_per_list(s1.grad, s2.grad, off, rtol=1e-11, atol=1e-12)


def test_every_layout_is_the_same_loss(device, packing):
    s, y, off, w = random_batch([3, 0, 5, 1, 4], device=device, weights=True, seed=3)
    lengths = off[1:] - off[:-1]
    want = reference.pairwise_mse_loss(s, y, offsets=off, weights=w, reduction="none")
    qid = torch.repeat_interleave(torch.arange(5, device=device) * 7, lengths)
    S, mask = rankops.segments.unpack(s, off)
    Y, _ = rankops.segments.unpack(y, off)
    W, _ = rankops.segments.unpack(w, off)
    for got in (rankops.pairwise_mse_loss(s, y, lengths=lengths, weights=w, reduction="none"),
                rankops.pairwise_mse_loss(S, Y, lengths=lengths, weights=W, reduction="none"),
                rankops.pairwise_mse_loss(S, Y, mask=mask, weights=W, reduction="none")):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    nonempty = lengths > 0  # group_ids cannot express an empty list
    torch.testing.assert_close(rankops.pairwise_mse_loss(s, y, group_ids=qid, weights=w, reduction="none"),
                               want[nonempty], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fill", [-math.inf, math.inf, math.nan])
def test_padding_never_matters(device, fill, packing):
    S, Y, W, mask = (t.to(device) for t in random_masked(12, 40, seed=6))
    S = torch.where(mask, S, torch.full_like(S, fill))
    S1 = S.clone().requires_grad_()
    got = rankops.pairwise_mse_loss(S1, Y, mask=mask, weights=W, reduction="mean")
    want = reference.pairwise_mse_loss(S.nan_to_num(0.0, 0.0, 0.0), Y, mask=mask, weights=W)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    got.backward()
    assert S1.grad[~mask].eq(0).all()
    assert S1.grad.isfinite().all()


def test_gradcheck(device):
    s, y, off, w = random_batch([4, 0, 1, 6], device=device, weights=True, seed=1)
    s = s.clone().requires_grad_()
    for weights in (None, w):
        for reduction in ("none", "mean"):
            assert torch.autograd.gradcheck(
                lambda x: rankops.pairwise_mse_loss(x, y, offsets=off, weights=weights, reduction=reduction),
                (s,))


def test_empty_and_single_item_lists(device):
    off = torch.tensor([0, 0, 1, 1], device=device)
    s = torch.tensor([2.5], dtype=torch.float64, device=device, requires_grad=True)
    y = torch.tensor([1.0], dtype=torch.float64, device=device)
    per_list = rankops.pairwise_mse_loss(s, y, offsets=off, reduction="none")
    assert per_list.tolist() == [0.0, 0.0, 0.0]
    mean = rankops.pairwise_mse_loss(s, y, offsets=off)
    mean.backward()
    assert mean.item() == 0.0 and s.grad.tolist() == [0.0]
    none = torch.empty(0, dtype=torch.float64, device=device, requires_grad=True)
    loss = rankops.pairwise_mse_loss(none, torch.empty(0, device=device),
                                     offsets=torch.zeros(3, dtype=torch.int64, device=device))
    assert loss.item() == 0.0 and not loss.isnan()


def test_shift_invariance_and_no_cancellation(device):
    # The loss depends on s - y only through differences: shifting a list's scores leaves it
    # unchanged. Scores near 1e4 with labels 0-4 (a model with a large constant in its
    # output): the naive 2 n sum d^2 - 2 (sum d)^2 cancels ~8 digits there, more than
    # float32 has; the centred form keeps float32 accuracy.
    s, y, off = random_batch([50, 7, 300], device=device, seed=2)
    base = reference.pairwise_mse_loss(s, y, offsets=off, reduction="none")
    shifted = torch.cat([s[:50] + 3.0, s[50:57] - 40.0, s[57:] + 0.5])
    torch.testing.assert_close(rankops.pairwise_mse_loss(shifted, y, offsets=off, reduction="none"),
                               base, rtol=1e-12, atol=0)
    big = (s + 1e4).float().requires_grad_()
    exact = big.detach().double().requires_grad_()  # the same float32 values, in float64
    got = rankops.pairwise_mse_loss(big, y, offsets=off, reduction="none")
    want = reference.pairwise_mse_loss(exact, y, offsets=off, reduction="none")
    assert_close_per_list(got, want, rtol=1e-5)
    got.sum().backward()
    want.sum().backward()
    assert_close_per_list(big.grad, exact.grad, off, rtol=1e-5)
    d = exact.detach() - y  # what the naive form gives in float32, for contrast
    n = 300
    tail = d[57:].float()
    naive = 2 * (n * (tail * tail).sum() - tail.sum() ** 2)
    assert abs(naive.item() - want[2].item()) > 1e-2 * want[2].item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(device, dtype):
    # float32 accumulation: as accurate as the rounding of the inputs allows; the loss is
    # float32, the gradient comes back in the dtype of the scores.
    s, y, off = random_batch([0, 1, 9, 40, 130], device=device, seed=5)
    s_low = s.to(dtype).requires_grad_()
    got = rankops.pairwise_mse_loss(s_low, y, offsets=off, reduction="none")
    assert got.dtype == torch.float32
    s_exact = s.to(dtype).double().requires_grad_()  # the same rounded scores, exactly
    want = reference.pairwise_mse_loss(s_exact, y, offsets=off, reduction="none")
    assert_close_per_list(got, want, rtol=1e-5)
    got.sum().backward()
    want.sum().backward()
    assert s_low.grad.dtype == dtype
    ulp = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}[dtype]
    assert_close_per_list(s_low.grad, s_exact.grad, off, rtol=2 * ulp)


def test_huge_gaps_are_finite_or_inf_never_nan(device):
    s = torch.tensor([1e30, -1e30, 0.0], device=device, requires_grad=True)  # float32
    y = torch.tensor([0.0, 1.0, 2.0], device=device)
    loss = rankops.pairwise_mse_loss(s, y, reduction="sum")
    assert loss.item() == math.inf  # (2e30)^2 is beyond float32: the true value overflows
    s64 = s.detach().double().requires_grad_()
    loss64 = rankops.pairwise_mse_loss(s64, y.double(), reduction="sum")
    loss64.backward()
    want, want_grad = _hand(s64.tolist(), y.tolist(), [1.0] * 3)
    assert loss64.item() == pytest.approx(want, rel=1e-12)
    # gradients ~4e30: the small one is lost in their rounding (in the hand loop too), so
    # each is checked against the list's scale
    assert_close_per_list(s64.grad, torch.tensor(want_grad, dtype=torch.float64), torch.tensor([0, 3]),
                          rtol=1e-12)


def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    s, y, off, w = random_batch([5, 0, 7, 1], device=device, weights=True, seed=7)
    X = torch.randn(3, 6, dtype=torch.float64, device=device)
    Y = torch.randint(0, 3, (3, 6), device=device).double()
    lengths = torch.tensor([6, 2, 4], device=device)

    def step(s, X):
        return (rankops.pairwise_mse_loss(s, y, offsets=off, weights=w)
                + rankops.pairwise_mse_loss(X, Y, lengths=lengths, reduction="sum")
                + rankops.pairwise_mse_loss(X, Y, lengths=lengths))  # the padding list's n^2 left out

    s1, X1 = s.clone().requires_grad_(), X.clone().requires_grad_()
    s2, X2 = s.clone().requires_grad_(), X.clone().requires_grad_()
    got = torch.compile(step, fullgraph=True)(s1, X1)
    want = step(s2, X2)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    got.backward()
    want.backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(X1.grad, X2.grad, rtol=1e-12, atol=1e-14)


def test_deterministic(device):
    s, y, off, w = random_batch(EDGE_LENGTHS * 3, device=device, weights=True, seed=8)
    grads = []
    for _ in range(2):
        x = s.float().clone().requires_grad_()
        rankops.pairwise_mse_loss(x, y, offsets=off, weights=w).backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])


def test_module_and_combined_loss(device):
    s, y, off = random_batch([4, 6], device=device, seed=9)
    want = rankops.pairwise_mse_loss(s, y, offsets=off)
    torch.testing.assert_close(rankops.nn.PairwiseMSELoss()(s, y, offsets=off), want)
    combined = rankops.nn.CombinedLoss({"pairwise_mse_loss": 0.5, "ranknet": 1.0})
    torch.testing.assert_close(combined(s, y, offsets=off),
                               0.5 * want + rankops.ranknet_loss(s, y, offsets=off))
    with pytest.raises(TypeError, match="'pairwise_mse' does not take option"):
        rankops.nn.CombinedLoss({"pairwise_mse": (1.0, {"sigma": 2.0})})


def test_bad_arguments_name_themselves():
    s, y = torch.randn(4), torch.tensor([1.0, 0.0, 2.0, 0.0])
    with pytest.raises(ValueError, match="reduction"):
        rankops.pairwise_mse_loss(s, y, reduction="avg")
    with pytest.raises(ValueError, match="labels"):
        rankops.pairwise_mse_loss(s, y[:3])
    with pytest.raises(ValueError, match="weights"):
        rankops.pairwise_mse_loss(s, y, weights=torch.ones(3))
    with pytest.raises(ValueError, match="labels"):
        rankops.pairwise_mse_loss(s, torch.tensor([1.0, float("nan"), 0.0, 0.0]))


def test_infinite_score_gives_nan_to_its_own_list_only(device):
    # documented: inf - inf in the list's own sums (as in Rax's pair of the item with
    # itself); the other lists keep their values and gradients
    s, y, off = random_batch([4, 5], device=device, seed=10)
    want = reference.pairwise_mse_loss(s, y, offsets=off, reduction="none")
    s = s.clone()
    s[1] = math.inf
    s.requires_grad_()
    got = rankops.pairwise_mse_loss(s, y, offsets=off, reduction="none")
    assert got[0].isnan() and got[1].item() == pytest.approx(want[1].item(), rel=1e-12)
    got.sum().backward()
    assert s.grad[4:].isfinite().all()
