"""Inputs users get wrong or push to the edge: gradients asked of labels/weights, forward
mode and torch.func transforms, signed softmax targets, infinite scores, padding holding
anything, out-of-range labels, [N, 1] scores, numpy scalars. Expected values are derived
by hand in the comments."""
import math
import os
import sys
import warnings

import numpy as np
import pytest
import torch

import rankops
from rankops import reference

KERNEL_LOSSES = {
    "ranknet": rankops.ranknet_loss,
    "lambdarank": rankops.lambdarank_loss,
    "hinge": rankops.pairwise_hinge_loss,
    "softmax": rankops.softmax_loss,
    "listnet": rankops.listnet_loss,
    "poly1_softmax": rankops.poly1_softmax_loss,
    "listmle": rankops.listmle_loss,
    "plistmle": rankops.plistmle_loss,
    "unique_softmax": rankops.unique_softmax_loss,
    "approx_ndcg": rankops.approx_ndcg_loss,
}


def _batch(dtype=torch.float64):
    s = torch.tensor([0.3, -1.2, 2.0, 0.5, 0.1, -0.4], dtype=dtype)
    y = torch.tensor([2.0, 0.0, 1.0, 0.0, 1.0, 3.0])
    return s, y, torch.tensor([0, 3, 6])


# ---- autograd: only scores, reverse mode --------------------------------------------

@pytest.mark.parametrize("name", sorted(KERNEL_LOSSES))
@pytest.mark.parametrize("which", ["labels", "weights"])
def test_grad_of_labels_or_weights_is_a_clear_error(name, which):
    s, y, off = _batch()
    w = torch.rand(6, dtype=torch.float64) + 0.5
    if which == "labels":
        y = y.double().requires_grad_()
    else:
        w.requires_grad_()
    for scores in (s, s.clone().requires_grad_()):  # also when scores need no grad
        with pytest.raises(ValueError, match=f"{which} requires grad.*{which}.detach"):
            KERNEL_LOSSES[name](scores, y, offsets=off, weights=w)
    with torch.no_grad():  # no autograd, nothing to refuse
        KERNEL_LOSSES[name](s, y, offsets=off, weights=w)


def test_pointwise_losses_differentiate_labels_and_weights():
    # plain PyTorch: d/dw sum w (s - y)^2 = (s - y)^2, d/dy = -2 w (s - y)
    s = torch.tensor([1.0, 3.0], dtype=torch.float64)
    y = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([2.0, 0.5], dtype=torch.float64, requires_grad=True)
    rankops.mse_loss(s, y, weights=w, reduction="sum").backward()
    assert w.grad.tolist() == [1.0, 4.0]
    assert y.grad.tolist() == [-4.0, -2.0]


@pytest.mark.parametrize("name", sorted(KERNEL_LOSSES))
def test_forward_mode_and_func_transforms_are_clear_errors(name):
    s, y, off = _batch()
    fn = KERNEL_LOSSES[name]
    with pytest.raises(NotImplementedError, match="reverse-mode"):
        torch.func.jvp(lambda x: fn(x, y, offsets=off), (s,), (torch.ones_like(s),))
    with pytest.raises(NotImplementedError, match="reverse-mode"):
        with torch.autograd.forward_ad.dual_level():
            fn(torch.autograd.forward_ad.make_dual(s, torch.ones_like(s)), y, offsets=off)
    with pytest.raises(NotImplementedError, match="reverse-mode"):
        torch.func.grad(lambda x: fn(x, y, offsets=off))(s)
    # what the message recommends works: the Jacobian of the per-list losses
    jac = torch.autograd.functional.jacobian(lambda x: fn(x, y, offsets=off, reduction="none"), s)
    ref = torch.autograd.functional.jacobian(
        lambda x: getattr(reference, fn.__name__)(x, y, offsets=off, reduction="none"), s)
    torch.testing.assert_close(jac, ref)


def _python_frames_during(fn):
    """Files of the Python functions called while fn() runs."""
    files = set()

    def profile(frame, event, arg):
        if event == "call":
            files.add(frame.f_code.co_filename)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return files


@pytest.mark.parametrize("name", sorted(KERNEL_LOSSES))
def test_kernel_autograd_runs_no_python(name, device):
    """The loss ops' autograd is C++ (csrc/autograd.cpp): calling the op with scores that
    require grad, and its backward, enter no Python (torch.library's Python autograd
    wrapper cost ~100 us per step). The gradient is still the reference's."""
    s, y, off = (t.to(device) for t in _batch())
    s.requires_grad_()
    fn = KERNEL_LOSSES[name]
    op, args = {
        "ranknet": (torch.ops.rankops.pairwise_loss,
                    (s, y, off, None, "logistic", "none", 1.0, 1.0, None, 5.0, "exp2", True)),
        "lambdarank": (torch.ops.rankops.pairwise_loss,
                       (s, y, off, None, "logistic", "ndcg", 1.0, 1.0, None, 5.0, "exp2", True)),
        "hinge": (torch.ops.rankops.pairwise_loss,
                  (s, y, off, None, "hinge", "none", 1.0, 1.0, None, 5.0, "exp2", True)),
        "softmax": (torch.ops.rankops.softmax_loss, (s, y, off, None, False, 0.0, False, True)),
        "listnet": (torch.ops.rankops.softmax_loss, (s, y, off, None, False, 0.0, True, True)),
        "poly1_softmax": (torch.ops.rankops.softmax_loss, (s, y, off, None, False, 1.0, False, True)),
        "listmle": (torch.ops.rankops.listmle_loss, (s, y, off, None, "none", True)),
        "plistmle": (torch.ops.rankops.listmle_loss, (s, y, off, None, "exp2", True)),
        "unique_softmax": (torch.ops.rankops.unique_softmax_loss, (s, y, off, None, "exp2", True)),
        "approx_ndcg": (torch.ops.rankops.approx_ndcg_loss, (s, y, off, None, 1.0, None, "exp2", True)),
    }[name]
    watched = (os.path.dirname(rankops.__file__), os.path.join(os.path.dirname(torch.__file__), "_library"))
    out = []
    called = _python_frames_during(lambda: out.append(op(*args)))
    assert not [f for f in called if f.startswith(watched)]
    loss = out[0][0].sum()
    called = _python_frames_during(lambda: torch.autograd.grad(loss, s))
    assert not [f for f in called if f.startswith(watched)]
    (got,) = torch.autograd.grad(fn(s, y, offsets=off, reduction="sum"), s)
    (want,) = torch.autograd.grad(
        getattr(reference, fn.__name__)(s, y, offsets=off, reduction="sum"), s)
    torch.testing.assert_close(got, want)
    # the gradient is computed in the forward: changing the scores in place afterwards
    # neither trips autograd's version check nor changes it
    x = s * 1.0
    loss = fn(x, y, offsets=off, reduction="sum")
    x.data.mul_(-2.0)  # reverses the order: a recomputed gradient would differ
    x.add_(0.0)
    (after,) = torch.autograd.grad(loss, s)
    torch.testing.assert_close(after, want)


# ---- softmax with signed targets ----------------------------------------------------

@pytest.mark.parametrize("impl", [rankops.softmax_loss, reference.softmax_loss])
def test_softmax_signed_targets_by_hand(impl):
    # s = [0, 3], t = w y = [1, -1]: loss = -(log p0 - log p1) = s1 - s0 = 3 although
    # sum t = 0 (the list is not skipped); gradient (sum t) p - t = [-1, 1].
    # label_norm divides t by sum |t| = 2: loss 1.5, gradient [-0.5, 0.5].
    y, w = torch.tensor([1.0, 1.0], dtype=torch.float64), torch.tensor([1.0, -1.0], dtype=torch.float64)
    for label_norm, loss_want, grad_want in ((False, 3.0, [-1.0, 1.0]), (True, 1.5, [-0.5, 0.5])):
        s = torch.tensor([0.0, 3.0], dtype=torch.float64, requires_grad=True)
        loss = impl(s, y, weights=w, label_norm=label_norm)
        loss.backward()
        assert loss.item() == pytest.approx(loss_want, rel=1e-12)
        assert s.grad.tolist() == pytest.approx(grad_want, rel=1e-12)
    # s = [0, ln 3]: p = [1/4, 3/4]; t = [2, -1]: loss = -(2 ln 1/4 - ln 3/4) = ln 12,
    # gradient (sum t) p - t = [1/4 - 2, 3/4 + 1] = [-1.75, 1.75]; label_norm: / sum|t| = 3
    y2, w2 = torch.tensor([2.0, 1.0], dtype=torch.float64), torch.tensor([1.0, -1.0], dtype=torch.float64)
    for label_norm, scale in ((False, 1.0), (True, 1 / 3)):
        s = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64, requires_grad=True)
        loss = impl(s, y2, weights=w2, label_norm=label_norm)
        loss.backward()
        assert loss.item() == pytest.approx(math.log(12.0) * scale, rel=1e-12)
        assert s.grad.tolist() == pytest.approx([-1.75 * scale, 1.75 * scale], rel=1e-12)


def test_softmax_all_zero_targets_give_zero():
    s = torch.tensor([0.0, 3.0, -1.0], requires_grad=True)
    loss = rankops.softmax_loss(s, torch.tensor([1.0, 0.0, 2.0]), weights=torch.tensor([0.0, 4.0, 0.0]),
                                label_norm=True)
    loss.backward()
    assert loss.item() == 0.0 and s.grad.tolist() == [0.0, 0.0, 0.0]


# ---- infinite and NaN scores in the pairwise family ---------------------------------

INF = float("inf")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weight", ["none", "ndcg"])
def test_pairwise_infinite_scores_take_their_limits(dtype, weight):
    # one pair y0 > y1 (lambda = 1 for "none"; for "ndcg" the same value times
    # |G0 - G1| |D(1) - D(2)| / IDCG = (1 - 1/log2 3) / 1 when the ranks are (1, 2) or (2, 1))
    lam = 1.0 if weight == "none" else 1.0 - 1.0 / math.log2(3.0)
    y = torch.tensor([1.0, 0.0])
    cases = [  # (scores, pair_fn, loss, gradient): limits of phi(d) and phi'(d) at d = +-inf
        ([INF, 0.0], "logistic", 0.0, [0.0, 0.0]),
        ([-INF, 0.0], "logistic", INF, [-1.0, 1.0]),
        ([0.0, INF], "logistic", INF, [-1.0, 1.0]),
        ([INF, 0.0], "soft_zero_one", 0.0, [0.0, 0.0]),
        ([-INF, 0.0], "soft_zero_one", 1.0, [0.0, 0.0]),
        ([INF, 0.0], "hinge", 0.0, [0.0, 0.0]),
        ([-INF, 0.0], "hinge", INF, [-1.0, 1.0]),
    ]
    rel = 1e-6 if dtype == torch.float32 else 1e-12
    for scores, fn, loss_want, grad_want in cases:
        s = torch.tensor(scores, dtype=dtype, requires_grad=True)
        loss = rankops.pairwise_loss(s, y, pair_fn=fn, weight=weight)
        loss.backward()
        assert loss.item() == pytest.approx(lam * loss_want, rel=rel, abs=1e-30), (scores, fn)
        assert s.grad.tolist() == pytest.approx([lam * g for g in grad_want], rel=rel, abs=1e-30), \
            (scores, fn)


@pytest.mark.parametrize("fn", ["logistic", "hinge", "soft_zero_one"])
def test_pairwise_infinite_score_next_to_tied_labels(fn):
    # s = [inf, 0, 1], y = [1, 1, 0]: the tied pair (0, 1) weighs 0 and must not turn
    # 0 * (inf - 0) into NaN; pairs (0, 2): d = inf, phi = 0; (1, 2): d = -1
    s = torch.tensor([INF, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    loss = rankops.pairwise_loss(s, torch.tensor([1.0, 1.0, 0.0]), pair_fn=fn, reduction="sum")
    loss.backward()
    sig = 1 / (1 + math.exp(-1.0))  # sigmoid(1)
    value, slope = {"logistic": (math.log1p(math.e), -sig),      # phi(-1), phi'(-1)
                    "hinge": (2.0, -1.0),
                    "soft_zero_one": (sig, -sig * (1 - sig))}[fn]
    assert loss.item() == pytest.approx(value, rel=1e-12)
    assert s.grad.tolist() == pytest.approx([0.0, slope, -slope], rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("fn", ["logistic", "hinge", "soft_zero_one"])
def test_pairwise_nan_score_gives_nan(fn):
    s = torch.tensor([float("nan"), 0.0])
    assert rankops.pairwise_loss(s, torch.tensor([1.0, 0.0]), pair_fn=fn).isnan()


# ---- layouts: padding may hold anything, pointwise lists stay apart -----------------

@pytest.mark.parametrize("name", sorted(KERNEL_LOSSES) + ["mse", "sigmoid"])
@pytest.mark.parametrize("pad_label", [-1.0, float("nan"), float("inf")])
def test_padding_labels_are_never_validated(name, pad_label, packing):
    fn = KERNEL_LOSSES.get(name) or getattr(rankops, f"{name}_loss")
    S = torch.tensor([[0.5, -0.2, 1.0, 0.0], [0.3, 0.8, 0.0, 0.0]], dtype=torch.float64)
    Y = torch.tensor([[2.0, 0.0, 1.0, pad_label], [1.0, 0.0, pad_label, pad_label]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    got = fn(S, Y, mask=mask, reduction="none")
    packed = fn(S[mask], Y[mask], offsets=torch.tensor([0, 3, 5]), reduction="none")
    torch.testing.assert_close(got, packed)
    # a bad label at a valid position is still an error
    Y[0, 0] = pad_label
    with pytest.raises(ValueError, match="labels must"):
        fn(S, Y, mask=mask)


@pytest.mark.parametrize("name", ["mse", "sigmoid"])
def test_pointwise_per_list_values_do_not_leak_between_lists(name):
    fn = getattr(rankops, f"{name}_loss")
    y = torch.zeros(3)
    off = torch.tensor([0, 1, 3])
    # MSE: list 0 = (1e9)^2 = 1e18, list 1 = 0.1^2 + 0.2^2 = 0.05
    for big in (1e9, 1e20, float("nan")):
        got = fn(torch.tensor([big, 0.1, 0.2]), y, offsets=off, reduction="none")
        want = fn(torch.tensor([0.1, 0.2]), y[:2], reduction="sum")
        assert got[1].item() == pytest.approx(want.item(), rel=1e-6)
    if name == "mse":
        assert want.item() == pytest.approx(0.05, rel=1e-6)


# ---- labels out of range ------------------------------------------------------------

def test_infinite_labels_are_an_error():
    s = torch.randn(3)
    for fn in (rankops.ranknet_loss, rankops.softmax_loss, rankops.mse_loss):
        with pytest.raises(ValueError, match="labels must be finite"):
            fn(s, torch.tensor([0.0, INF, 1.0]))
    with pytest.raises(ValueError, match="labels must be finite"):
        rankops.metrics.ndcg(s, torch.tensor([0.0, INF, 1.0]))


@pytest.mark.parametrize("bad", [float("nan"), INF, -INF])
def test_non_finite_weights_are_an_error(bad, packing):
    s, y, off = torch.randn(6), torch.tensor([0.0, 1, 2, 0, 1, 2]), torch.tensor([0, 3, 6])
    w = torch.ones(6)
    w[4] = bad
    for name in ("ranknet", "lambdarank", "softmax", "listnet", "poly1_softmax", "listmle",
                 "unique_softmax", "approx_ndcg", "mse", "sigmoid"):
        with pytest.raises(ValueError, match="weights must be finite"):
            getattr(rankops, f"{name}_loss")(s, y, offsets=off, weights=w)
    # padded: only valid items are checked, padding may hold anything
    S, Y, W = s.reshape(2, 3), y.reshape(2, 3), w.reshape(2, 3)
    assert torch.isfinite(rankops.lambdarank_loss(S, Y, weights=W, lengths=torch.tensor([3, 1])))
    with pytest.raises(ValueError, match="weights must be finite"):
        rankops.lambdarank_loss(S, Y, weights=W, lengths=torch.tensor([3, 2]))
    # validate=False skips the check (the caller vouches for the data)
    rankops.ranknet_loss(s, y, offsets=off, weights=w, validate=False)


def test_unvalidated_bad_offsets_raise_or_stay_in_bounds(device):
    """validate=False with offsets past N and decreasing: the CPU kernels and the CUDA
    pairwise op raise; the CUDA listwise and metrics kernels (no host read) clamp the
    offsets into [0, N], so they return values (wrong, but finite) without touching memory
    outside the items, and the device stays usable (compute-sanitizer: gpu_sanitize.py)."""
    s = torch.randn(10, device=device, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (10,), device=device).double()
    bad = torch.tensor([0, 9, 3, 10_000], device=device)
    calls = [lambda: torch.autograd.grad(rankops.softmax_loss(s, y, offsets=bad, validate=False), s),
             lambda: torch.autograd.grad(rankops.listmle_loss(s, y, offsets=bad, validate=False), s),
             lambda: torch.autograd.grad(rankops.unique_softmax_loss(s, y, offsets=bad, validate=False), s),
             lambda: torch.autograd.grad(rankops.approx_ndcg_loss(s, y, offsets=bad, validate=False), s),
             lambda: tuple(rankops.metrics.evaluate(s.detach(), y, offsets=bad, validate=False,
                                                    metrics=["ndcg@3", "map"]).values())]
    for call in calls:
        if device == "cpu":
            with pytest.raises(RuntimeError, match="offsets must be non-decreasing"):
                call()
        else:
            assert all(torch.isfinite(t).all() for t in call())
    with pytest.raises(RuntimeError, match="offsets must"):
        rankops.ranknet_loss(s, y, offsets=bad, validate=False)
    good = torch.tensor([0, 4, 10], device=device)  # the device still computes right
    torch.testing.assert_close(rankops.softmax_loss(s, y, offsets=good).cpu(),
                               rankops.softmax_loss(s.detach().cpu(), y.cpu(), offsets=good.cpu()))


def test_exp2_gain_labels_must_not_overflow():
    s = torch.randn(3)
    y = torch.tensor([0.0, 65.0, 1.0])  # beyond the float32 bound of 64
    for call in (lambda: rankops.lambdarank_loss(s, y),
                 lambda: rankops.lambdaloss(s, y),
                 lambda: rankops.approx_ndcg_loss(s, y),
                 lambda: rankops.unique_softmax_loss(s, y),
                 lambda: rankops.nn.CombinedLoss({"ranknet": 1.0, "unique_softmax": 1.0})(s, y),
                 lambda: rankops.nn.CombinedLoss({"ranknet": 1.0, "lambdarank": 1.0})(s, y),
                 lambda: rankops.metrics.dcg(s, y)):
        with pytest.raises(ValueError, match="labels must be <= 64 with gain='exp2'"):
            call()
    # no exp2 gain, or float64 (bound 512): fine and finite
    assert torch.isfinite(rankops.lambdarank_loss(s, y, gain="linear"))
    assert torch.isfinite(rankops.unique_softmax_loss(s, y, gain="linear"))
    assert torch.isfinite(rankops.ranknet_loss(s, y))
    assert torch.isfinite(rankops.nn.CombinedLoss({"ranknet": 1.0, "softmax": 1.0})(s, y))
    assert torch.isfinite(rankops.lambdarank_loss(s.double(), y))
    with pytest.raises(ValueError, match="labels must be <= 512"):
        rankops.lambdarank_loss(s.double(), torch.tensor([0.0, 513.0, 1.0]))
    rankops.metrics.mrr(s, torch.tensor([0.0, 2000.0, 1.0]))  # no gain taken


@pytest.mark.parametrize("dtype, top", [(torch.float32, 64.0), (torch.float64, 512.0)])
def test_exp2_gain_at_the_label_bound_stays_finite(dtype, top):
    # the bound leaves room for sums of gains (the ideal DCG of many top-grade items) and
    # their differences: every loss and DCG stays finite and equals the reference
    n = 1000
    s = torch.linspace(-1, 1, n, dtype=torch.float64).to(dtype)
    y = torch.zeros(n, dtype=torch.float64)
    y[::3] = top
    for name, kwargs in (("lambdarank_loss", {}), ("lambdaloss", {}), ("approx_ndcg_loss", {})):
        x = s.clone().requires_grad_()
        loss = getattr(rankops, name)(x, y, **kwargs)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all(), name
        torch.testing.assert_close(loss.double(), getattr(reference, name)(s.double(), y, **kwargs),
                                   rtol=1e-4, atol=0)
    assert torch.isfinite(rankops.metrics.dcg(s, y)) and torch.isfinite(rankops.metrics.ndcg(s, y))


# ---- metrics are values, not graph nodes --------------------------------------------

def test_metric_values_carry_no_grad_fn():
    s = torch.randn(6, requires_grad=True)
    y = torch.tensor([2.0, 0.0, 1.0, 0.0, 1.0, 3.0])
    assert not rankops.metrics.ndcg(s, y, k=3).requires_grad
    values = rankops.metrics.evaluate(s, y, offsets=torch.tensor([0, 2, 6]), metrics=["map", "mrr"],
                                      reduction="none")
    assert not any(v.requires_grad for v in values.values())


# ---- arguments ----------------------------------------------------------------------

def test_numpy_scalars_are_accepted():
    s, y, off = _batch()
    want = rankops.lambdarank_loss(s, y, offsets=off, k=2, sigma=1.5)
    got = rankops.lambdarank_loss(s, y, offsets=off, k=np.int64(2), sigma=np.float32(1.5))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(rankops.metrics.ndcg(s, y, offsets=off, k=np.int32(2)),
                               rankops.metrics.ndcg(s, y, offsets=off, k=2))
    torch.testing.assert_close(rankops.metrics.mrr(s, y, offsets=off, relevance_threshold=np.float32(2)),
                               rankops.metrics.mrr(s, y, offsets=off, relevance_threshold=2.0))
    combined = rankops.nn.CombinedLoss({"ranknet": np.float64(0.5)})
    torch.testing.assert_close(combined(s, y, offsets=off), 0.5 * rankops.ranknet_loss(s, y, offsets=off))


@pytest.mark.parametrize("kwargs, match", [
    (dict(sigma=0.0), "sigma must be > 0"),
    (dict(sigma=-1.0), "sigma must be > 0"),
    (dict(margin=-0.5, pair_fn="hinge"), "margin must be >= 0"),
    (dict(mu=-1.0, weight="ndcg2pp"), "mu must be >= 0"),
])
def test_nonsensical_pairwise_knobs_are_errors(kwargs, match):
    s, y, off = _batch()
    with pytest.raises(ValueError, match=match):
        rankops.pairwise_loss(s, y, offsets=off, **kwargs)


def test_column_scores_without_layout_warn():
    s, y = torch.randn(5, 1), torch.tensor([[2.0], [0.0], [1.0], [0.0], [1.0]])
    for fn in (rankops.ranknet_loss, rankops.pairwise_loss, rankops.metrics.ndcg):
        with pytest.warns(UserWarning, match=r"squeeze\(-1\)") as record:
            fn(s, y)
        assert record[0].filename == __file__  # points at the caller's line, not rankops'
    with pytest.warns(UserWarning):
        assert rankops.ranknet_loss(s, y).item() == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rankops.ranknet_loss(s.squeeze(-1), y.squeeze(-1))  # the fix: one list, no warning
        rankops.ranknet_loss(s, y, lengths=torch.ones(5, dtype=torch.int64))  # explicit layout


# ---- modules: options checked at construction ---------------------------------------

@pytest.mark.parametrize("make, error, match", [
    (lambda: rankops.nn.LambdaLoss(variant="bogus"), ValueError, "variant must be one of"),
    (lambda: rankops.nn.LambdaRankLoss(k=0), ValueError, "k must be >= 1"),
    (lambda: rankops.nn.RankNetLoss(sigmaa=2.0), TypeError, "sigmaa"),
    (lambda: rankops.nn.ApproxNDCGLoss(temperature=0.0), ValueError, "temperature must be > 0"),
    (lambda: rankops.nn.CombinedLoss({"lambdarank": 1.0}, k=0), ValueError, "k must be >= 1"),
    (lambda: rankops.nn.CombinedLoss({"softmax": (1.0, {"label_norm": 1})}), TypeError, "label_norm"),
])
def test_modules_check_options_at_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_modules_build_on_any_default_device():
    with torch.device("meta"):
        for make in (rankops.nn.LambdaRankLoss, rankops.nn.SoftmaxLoss, rankops.nn.MSELoss,
                     lambda: rankops.nn.CombinedLoss({"lambdarank": 1.0, "softmax": 1.0})):
            make()


def test_combined_loss_takes_function_names_and_shows_shared_options():
    s, y, off = _batch()
    full_names = rankops.nn.CombinedLoss({"ranknet_loss": 1.0, "approx_ndcg_loss": 1.0,
                                          "pairwise_soft_zero_one_loss": 1.0})
    torch.testing.assert_close(full_names(s, y, offsets=off),
                               rankops.ranknet_loss(s, y, offsets=off)
                               + rankops.approx_ndcg_loss(s, y, offsets=off)
                               + rankops.pairwise_soft_zero_one_loss(s, y, offsets=off))
    by_alias = rankops.nn.CombinedLoss({"lambdaloss": 1.0, "pairwise_hinge": 0.5}, k=2)
    by_name = rankops.nn.CombinedLoss({"ndcg2pp": 1.0, "hinge": 0.5}, k=2)
    torch.testing.assert_close(by_alias(s, y, offsets=off), by_name(s, y, offsets=off))
    want = rankops.lambdaloss(s, y, offsets=off, k=2) + 0.5 * rankops.pairwise_hinge_loss(s, y, offsets=off)
    torch.testing.assert_close(by_alias(s, y, offsets=off), want)
    assert "k=2" in repr(by_alias) and "ndcg2pp=1.0" in repr(by_alias)


def test_labels_check_reads_min_and_max():
    s = torch.randn(4)
    for labels, match in ((torch.tensor([0.0, -float("inf"), 1.0, 2.0]), "finite"),
                          (torch.tensor([0.0, 1.0, float("nan"), 2.0]), "NaN"),
                          (torch.tensor([0, -1, 2, 1]), ">= 0")):
        with pytest.raises(ValueError, match=match):
            rankops.softmax_loss(s, labels)
    torch.testing.assert_close(rankops.softmax_loss(s, torch.tensor([True, False, True, False])),
                               rankops.softmax_loss(s, torch.tensor([1.0, 0.0, 1.0, 0.0])))


@pytest.mark.parametrize("name", sorted(KERNEL_LOSSES))
@pytest.mark.parametrize("loss_compiled", [False, True])
def test_compiled_autograd(name, loss_compiled, device):
    """torch.compile's compiled autograd traces the backward graph, C++ autograd nodes
    included (it refuses a C++ Function that marks outputs non-differentiable)."""
    torch._dynamo.reset()
    fn = KERNEL_LOSSES[name]
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double().to(device)
    X = torch.randn(12, 3, dtype=torch.float64, device=device)
    y = torch.randint(0, 4, (12,), device=device).double()
    off = torch.tensor([0, 4, 9, 12], device=device)
    loss_fn = (lambda s: fn(s, y, offsets=off)) if loss_compiled else \
        torch.compiler.disable(lambda s: fn(s, y, offsets=off))

    def step():
        loss = loss_fn(model(X).squeeze(-1))
        loss.backward()
        return loss

    with torch._dynamo.config.patch(compiled_autograd=True):
        got = torch.compile(step, backend="aot_eager")()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    want = step()
    torch.testing.assert_close(got, want)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)


@pytest.mark.parametrize("name", sorted(KERNEL_LOSSES))
def test_backward_of_an_op_run_without_its_gradient_is_a_clear_error(name, device):
    """A direct op call with compute_grad=False keeps no item gradient: its backward says
    so on every device (checked on the host; the CUDA kernel cannot read offsets[-1])."""
    s, y, off = (t.to(device) for t in _batch())
    s.requires_grad_()
    ops = torch.ops.rankops
    loss = {
        "ranknet": lambda: ops.pairwise_loss(s, y, off, None, "logistic", "none", 1.0, 1.0, None, 5.0,
                                             "exp2", False),
        "lambdarank": lambda: ops.pairwise_loss(s, y, off, None, "logistic", "ndcg", 1.0, 1.0, None,
                                                5.0, "exp2", False),
        "hinge": lambda: ops.pairwise_loss(s, y, off, None, "hinge", "none", 1.0, 1.0, None, 5.0,
                                           "exp2", False),
        "softmax": lambda: ops.softmax_loss(s, y, off, None, False, 0.0, False, False),
        "listnet": lambda: ops.softmax_loss(s, y, off, None, False, 0.0, True, False),
        "poly1_softmax": lambda: ops.softmax_loss(s, y, off, None, False, 1.0, False, False),
        "listmle": lambda: ops.listmle_loss(s, y, off, None, "none", False),
        "plistmle": lambda: ops.listmle_loss(s, y, off, None, "exp2", False),
        "unique_softmax": lambda: ops.unique_softmax_loss(s, y, off, None, "exp2", False),
        "approx_ndcg": lambda: ops.approx_ndcg_loss(s, y, off, None, 1.0, None, "exp2", False),
    }[name]()[0]
    assert loss.requires_grad
    with pytest.raises(RuntimeError, match="computed with compute_grad=False"):
        loss.sum().backward()
