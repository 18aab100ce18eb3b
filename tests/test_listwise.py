"""Listwise (softmax, ListMLE, unique softmax, ApproxNDCG) and pointwise (sigmoid, MSE) losses, and CombinedLoss."""
import math

import pytest
import torch

import rankops
from rankops import reference
from lists import EDGE_LENGTHS, assert_close_per_list, random_batch, random_masked

LISTWISE = ["softmax_loss", "listnet_loss", "poly1_softmax_loss", "listmle_loss", "plistmle_loss",
            "unique_softmax_loss", "approx_ndcg_loss"]
POINTWISE = ["sigmoid_loss", "mse_loss"]
ALL = LISTWISE + POINTWISE
# option sets exercised for every loss
OPTIONS = {
    "softmax_loss": [{}, {"label_norm": True}],
    "poly1_softmax_loss": [{}, {"epsilon": -0.5, "label_norm": True}, {"epsilon": 3.0}],
    "listnet_loss": [{}],
    "listmle_loss": [{}],
    "plistmle_loss": [{}],
    "unique_softmax_loss": [{}, {"gain": "linear"}],
    "approx_ndcg_loss": [{}, {"temperature": 0.5}, {"k": 3}, {"k": 10, "gain": "linear", "temperature": 2.0}],
    "sigmoid_loss": [{}],
    "mse_loss": [{}],
}
CASES = [(name, opts) for name in ALL for opts in OPTIONS[name]]

# unit roundoff of the dtype: one rounding to nearest is within u * |x| (plus half the
# subnormal spacing near 0: 2^-25 for float16; bfloat16's is below any value here)
ROUNDOFF = {torch.float16: (2.0 ** -11, 2.0 ** -25), torch.bfloat16: (2.0 ** -8, 0.0)}
# float32 accuracy per list: the worst error measured on the lists of the low-precision
# test below (up to 300 items) is ~1e-6 of the list's scale (its loss; its largest
# |gradient|); 1e-5 leaves room for other summation orders and stays 50x below float16's
# roundoff (a kernel accumulating in float16/bfloat16 is off by ~1e-3)
F32_RTOL = 1e-5


def _ids(case):
    name, opts = case
    return name + ("-" + "-".join(f"{k}={v}" for k, v in opts.items()) if opts else "")


# --------------------------------------------------------------------------------------
# Hand-worked 4-item list: scores (0.8, -0.4, 1.5, 0.1), labels (3, 2, 1, 0), weights w.
HAND_S = [0.8, -0.4, 1.5, 0.1]
HAND_Y = [3.0, 2.0, 1.0, 0.0]
HAND_W = [1.0, 2.0, 0.5, 3.0]


def _sig(z):
    return 1.0 / (1.0 + math.exp(-z))


def _hand_softmax(s, y, w, label_norm):
    t = [wi * yi for wi, yi in zip(w, y)]
    if label_norm:
        t = [ti / sum(t) for ti in t]
    lse = math.log(sum(math.exp(v) for v in s))
    loss = -sum(ti * (si - lse) for ti, si in zip(t, s))
    grad = [sum(t) * math.exp(si - lse) - ti for ti, si in zip(t, s)]
    return loss, grad


def _hand_listnet(s, y, w):
    # allRank's listNet, with item weights: -sum w softmax(y) log softmax(s)
    zy = sum(math.exp(v) for v in y)
    zs = sum(math.exp(v) for v in s)
    t = [wi * math.exp(yi) / zy for wi, yi in zip(w, y)]
    loss = -sum(ti * (si - math.log(zs)) for ti, si in zip(t, s))
    return loss, [sum(t) * math.exp(si) / zs - ti for ti, si in zip(t, s)]


def _hand_poly1_softmax(s, y, w, epsilon, label_norm):
    loss, grad = _hand_softmax(s, y, w, label_norm)
    t = [wi * yi for wi, yi in zip(w, y)]
    q = [ti / sum(abs(v) for v in t) for ti in t]
    z = sum(math.exp(v) for v in s)
    p = [math.exp(v) / z for v in s]
    pt = sum(qi * pi for qi, pi in zip(q, p))
    # d pt / d s_i = p_i (q_i - pt)
    return (loss + epsilon * (1 - pt),
            [g - epsilon * pi * (qi - pt) for g, pi, qi in zip(grad, p, q)])


def _hand_listmle(s, y, w):
    n = len(s)
    pi = sorted(range(n), key=lambda i: (-y[i], i))  # labels descending, ties by position
    loss, grad = 0.0, [0.0] * n
    for k in range(n):
        z = sum(math.exp(s[pi[m]]) for m in range(k, n))
        loss += w[pi[k]] * (math.log(z) - s[pi[k]])
        for m in range(k, n):
            grad[pi[m]] += w[pi[k]] * math.exp(s[pi[m]]) / z
        grad[pi[k]] -= w[pi[k]]
    return loss, grad


def _hand_unique_softmax(s, y, w, gain="exp2"):
    # each item i against itself and the items of smaller label: p_i = e^s_i / z_i
    n = len(s)
    loss, grad = 0.0, [0.0] * n
    for i in range(n):
        lower = [j for j in range(n) if y[j] < y[i]]
        a = w[i] * (2.0 ** y[i] - 1.0 if gain == "exp2" else y[i])
        z = math.exp(s[i]) + sum(math.exp(s[j]) for j in lower)
        loss -= a * (s[i] - math.log(z))
        for j in [i] + lower:
            grad[j] += a * math.exp(s[j]) / z
        grad[i] -= a
    return loss, grad


def _hand_approx_ndcg(s, y, w, T=1.0, k=None):
    n = len(s)
    wg = [wi * (2.0 ** yi - 1.0) for wi, yi in zip(w, y)]
    ideal = sorted(wg, reverse=True)[: (n if k is None else k)]
    idcg = sum(g / math.log2(2.0 + r) for r, g in enumerate(ideal))
    rank = [1.0 + sum(_sig((s[j] - s[i]) / T) for j in range(n) if j != i) for i in range(n)]
    active = [k is None or r <= k for r in rank]
    loss = -sum(g / math.log2(1.0 + r) for g, r, a in zip(wg, rank, active) if a) / idcg
    # a_i = d loss / d r_i = w G ln2 / ((1 + r) ln(1 + r)^2) / IDCG
    a = [g * math.log(2) / ((1 + r) * math.log(1 + r) ** 2) / idcg if act else 0.0
         for g, r, act in zip(wg, rank, active)]
    slope = lambda z: _sig(z) * (1 - _sig(z))  # noqa: E731
    grad = [sum(slope((s[j] - s[m]) / T) * (a[j] - a[m]) for j in range(n) if j != m) / T
            for m in range(n)]
    return loss, grad, rank


def _run(name, s, y, device, reduction="sum", **kw):
    s = torch.tensor(s, dtype=torch.float64, device=device, requires_grad=True)
    y = torch.tensor(y, dtype=torch.float64, device=device)
    if "weights" in kw:
        kw["weights"] = torch.tensor(kw["weights"], dtype=torch.float64, device=device)
    loss = getattr(rankops, name)(s, y, reduction=reduction, **kw)
    loss.backward()
    return loss.item(), s.grad.tolist()


@pytest.mark.parametrize("label_norm", [False, True])
@pytest.mark.parametrize("with_weights", [False, True])
def test_hand_softmax(device, label_norm, with_weights):
    w = HAND_W if with_weights else [1.0] * 4
    want_loss, want_grad = _hand_softmax(HAND_S, HAND_Y, w, label_norm)
    kw = {"weights": w} if with_weights else {}
    loss, grad = _run("softmax_loss", HAND_S, HAND_Y, device, label_norm=label_norm, **kw)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert grad == pytest.approx(want_grad, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("labels", [HAND_Y, [0.0, 0.0, 0.0, 0.0], [40.0, 0.0, 1.0, 39.5]])
@pytest.mark.parametrize("with_weights", [False, True])
def test_hand_listnet(device, labels, with_weights):
    w = HAND_W if with_weights else [1.0] * 4
    want_loss, want_grad = _hand_listnet(HAND_S, labels, w)
    kw = {"weights": w} if with_weights else {}
    loss, grad = _run("listnet_loss", HAND_S, labels, device, **kw)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert grad == pytest.approx(want_grad, rel=1e-12, abs=1e-14)
    if labels == [0.0] * 4:  # a uniform target: a real loss (not 0, unlike softmax_loss)
        assert loss > 0.1 and _run("softmax_loss", HAND_S, labels, device, **kw)[0] == 0.0


@pytest.mark.parametrize("epsilon", [1.0, -0.7, 0.0])
@pytest.mark.parametrize("label_norm", [False, True])
@pytest.mark.parametrize("with_weights", [False, True])
def test_hand_poly1_softmax(device, epsilon, label_norm, with_weights):
    w = HAND_W if with_weights else [1.0] * 4
    want_loss, want_grad = _hand_poly1_softmax(HAND_S, HAND_Y, w, epsilon, label_norm)
    kw = {"weights": w} if with_weights else {}
    loss, grad = _run("poly1_softmax_loss", HAND_S, HAND_Y, device, epsilon=epsilon,
                      label_norm=label_norm, **kw)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert grad == pytest.approx(want_grad, rel=1e-12, abs=1e-14)
    if epsilon == 0.0:  # exactly the softmax loss, bit for bit
        assert (loss, grad) == _run("softmax_loss", HAND_S, HAND_Y, device, label_norm=label_norm, **kw)


def test_poly1_single_item_gives_zero_even_with_a_negative_weight(device):
    # q = t / |t| = -1 there, but a single item's loss is 0 as in every loss (and in Rax,
    # whose normalised target is +1); the gradient is exactly 0
    for w in (-2.0, 3.0):
        loss, grad = _run("poly1_softmax_loss", [0.7], [2.0], device, weights=[w], epsilon=1.5)
        assert loss == 0.0 and grad == [0.0]


@pytest.mark.parametrize("labels", [HAND_Y, [1.0, 2.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
@pytest.mark.parametrize("with_weights", [False, True])
def test_hand_listmle(device, labels, with_weights):
    w = HAND_W if with_weights else [1.0] * 4
    want_loss, want_grad = _hand_listmle(HAND_S, labels, w)
    kw = {"weights": w} if with_weights else {}
    loss, grad = _run("listmle_loss", HAND_S, labels, device, **kw)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert grad == pytest.approx(want_grad, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("labels", [HAND_Y, [1.0, 2.0, 1.0, 0.0], [2.0, 0.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
@pytest.mark.parametrize("with_weights", [False, True])
@pytest.mark.parametrize("gain", ["exp2", "linear"])
def test_hand_unique_softmax(device, labels, with_weights, gain):
    w = HAND_W if with_weights else [1.0] * 4
    want_loss, want_grad = _hand_unique_softmax(HAND_S, labels, w, gain)
    kw = {"weights": w} if with_weights else {}
    loss, grad = _run("unique_softmax_loss", HAND_S, labels, device, gain=gain, **kw)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert grad == pytest.approx(want_grad, rel=1e-12, abs=1e-14)
    if len(set(labels)) == 1:  # one label group: nobody competes
        assert loss == 0.0 and grad == [0.0] * 4


@pytest.mark.parametrize("n", [2, 127, 128, 129, 300])
def test_hand_unique_softmax_many_groups_across_scan_tiles(device, n):
    """Continuous labels (every item its own group) and lists across the gradient scan's
    tiles of 128 items (CPU and CUDA): the hand formula, term by term."""
    g = torch.Generator().manual_seed(n)
    s = (torch.randn(n, generator=g, dtype=torch.float64) * 2).tolist()
    y = (torch.rand(n, generator=g, dtype=torch.float64) * 3).tolist()
    y[n // 2] = y[0]  # and one tie
    w = (torch.rand(n, generator=g, dtype=torch.float64) + 0.5).tolist()
    want_loss, want_grad = _hand_unique_softmax(s, y, w, "linear")
    loss, grad = _run("unique_softmax_loss", s, y, device, gain="linear", weights=w)
    assert loss == pytest.approx(want_loss, rel=1e-11)
    assert grad == pytest.approx(want_grad, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("T, k", [(1.0, None), (0.5, None), (3.0, 2), (0.5, 2), (1.0, 3)])
@pytest.mark.parametrize("with_weights", [False, True])
def test_hand_approx_ndcg(device, T, k, with_weights):
    w = HAND_W if with_weights else [1.0] * 4
    want_loss, want_grad, rank = _hand_approx_ndcg(HAND_S, HAND_Y, w, T, k)
    if k is not None:
        assert min(abs(r - k) for r in rank) > 0.05  # the cut is not ambiguous here
    kw = {"weights": w} if with_weights else {}
    loss, grad = _run("approx_ndcg_loss", HAND_S, HAND_Y, device, temperature=T, k=k, **kw)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert grad == pytest.approx(want_grad, rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("n", [5, 6, 9, 16, 17, 48, 49])
def test_hand_approx_ndcg_lengths_of_both_cpu_paths(device, n):
    """Lists of 6..48 items take the CPU's full-row pair passes, the others the triangle:
    both give the formula's values (the hand loop sums each full row in Python)."""
    g = torch.Generator().manual_seed(n)
    s = (torch.randn(n, generator=g, dtype=torch.float64) * 2).tolist()
    y = torch.randint(0, 4, (n,), generator=g).double().tolist()
    w = (torch.rand(n, generator=g, dtype=torch.float64) + 0.5).tolist()
    want_loss, want_grad, _ = _hand_approx_ndcg(s, y, w, 0.7)
    loss, grad = _run("approx_ndcg_loss", s, y, device, temperature=0.7, weights=w)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert grad == pytest.approx(want_grad, rel=1e-10, abs=1e-14)


def test_hand_pointwise(device):
    s, y = [0.8, -0.4, 1.5, 0.1], [3.0, 0.5, 0.0, 1.0]
    bce = [math.log1p(math.exp(si)) - min(yi, 1.0) * si for si, yi in zip(s, y)]
    dbce = [_sig(si) - min(yi, 1.0) for si, yi in zip(s, y)]
    loss, grad = _run("sigmoid_loss", s, y, device, weights=HAND_W)
    assert loss == pytest.approx(sum(w * v for w, v in zip(HAND_W, bce)), rel=1e-12)
    assert grad == pytest.approx([w * g for w, g in zip(HAND_W, dbce)], rel=1e-12)
    loss, grad = _run("mse_loss", s, y, device, reduction="mean")
    assert loss == pytest.approx(sum((a - b) ** 2 for a, b in zip(s, y)) / 4, rel=1e-12)
    assert grad == pytest.approx([2 * (a - b) / 4 for a, b in zip(s, y)], rel=1e-12)


# --------------------------------------------------------------------------------------
# Agreement with rankops.reference on random layouts.

def _compare(device, name, opts, lengths, *, dtype=torch.float64, ties=False, weights=True,
             grades=5, rtol=1e-9, atol=1e-11, seed=0, scale=1.0):
    batch = random_batch(lengths, dtype=dtype, device=device, ties=ties, weights=weights,
                         grades=grades, seed=seed)
    s, y, off = batch[:3]
    s = s * scale
    kw = {"weights": batch[3]} if weights else {}
    s1 = s.clone().requires_grad_()
    s2 = s.clone().requires_grad_()
    got = getattr(rankops, name)(s1, y, offsets=off, reduction="none", **opts, **kw)
    want = getattr(reference, name)(s2, y, offsets=off, reduction="none", **opts, **kw)
    assert got.shape == (len(lengths),)
    v = torch.rand(got.shape, dtype=torch.float64, device=device)  # honour grad_output
    (got.double() * v).sum().backward()
    (want.double() * v).sum().backward()
    scale_l = want.abs().max().item() if want.numel() else 1.0
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol * max(scale_l, 1.0))
    gscale = s2.grad.abs().max().item() if s2.numel() else 1.0
    torch.testing.assert_close(s1.grad.double(), s2.grad.double(), rtol=rtol, atol=atol * max(gscale, 1.0))
    assert torch.isfinite(s1.grad).all()


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("weights", [False, True])
def test_matches_reference_edge_lengths(device, case, weights):
    name, opts = case
    _compare(device, name, opts, EDGE_LENGTHS, weights=weights)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_matches_reference_with_ties(device, case):
    name, opts = case
    _compare(device, name, opts, [6, 17, 1, 33, 0, 50], ties=True, grades=2, seed=3)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_all_zero_labels(device, case):
    name, opts = case
    s = torch.randn(12, dtype=torch.float64, device=device, requires_grad=True)
    y = torch.zeros(12, dtype=torch.float64, device=device)
    off = torch.tensor([0, 5, 12], device=device)
    loss = getattr(rankops, name)(s, y, offsets=off, reduction="none", **opts)
    want = getattr(reference, name)(s, y, offsets=off, reduction="none", **opts)
    loss.sum().backward()
    torch.testing.assert_close(loss, want)
    if name in ("softmax_loss", "poly1_softmax_loss", "unique_softmax_loss", "approx_ndcg_loss"):
        # no target mass / every G(y) = 0 / IDCG = 0: exactly 0
        assert loss.abs().sum().item() == 0.0 and torch.count_nonzero(s.grad) == 0
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in LISTWISE], ids=_ids)
def test_long_list_matches_reference(device, case):
    name, opts = case
    _compare(device, name, opts, [2000, 3], rtol=1e-8, seed=1)


@pytest.mark.parametrize("k", [None, 5])
def test_chunked_long_list_matches_reference(device, k):
    # 2900 items: 4.2e6 pairs, more than one chunk of rows on the CPU
    _compare(device, "approx_ndcg_loss", {"k": k}, [2900], rtol=1e-8, weights=False)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_float32_matches_float64_reference(device, case):
    name, opts = case
    lengths = [1, 5, 30, 120, 0, 300]
    s, y, off = random_batch(lengths, dtype=torch.float32, device=device)
    s1 = s.clone().requires_grad_()
    got = getattr(rankops, name)(s1, y, offsets=off, reduction="sum", **opts)
    got.backward()
    s2 = s.double().requires_grad_()
    want = getattr(reference, name)(s2, y, offsets=off, reduction="sum", **opts)
    want.backward()
    assert got.dtype == torch.float32 and s1.grad.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=1e-5)
    torch.testing.assert_close(s1.grad.double(), s2.grad, rtol=1e-4, atol=1e-5 * s2.grad.abs().max().item())


@pytest.mark.parametrize("name", ["softmax_loss", "listnet_loss", "poly1_softmax_loss"])
def test_float32_long_list_sums_do_not_drift(device, name):
    # one list of 65,536 items: ListNet's sum of exps of the labels, and the sums of the
    # targets, add tiny terms into one sum, which float32 had rounded by 1.7e-4 of the loss
    s, y, off = random_batch([65536], dtype=torch.float32, device=device, seed=4)
    x = s.clone().requires_grad_()
    got = getattr(rankops, name)(x, y, offsets=off, reduction="sum")
    got.backward()
    x64 = s.double().requires_grad_()
    want = getattr(reference, name)(x64, y, offsets=off, reduction="sum")
    want.backward()
    assert abs(got.item() - want.item()) <= 2e-5 * abs(want.item())
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-5 * x64.grad.abs().max().item())


# --------------------------------------------------------------------------------------
# Reductions, edge cases, layouts.

@pytest.mark.parametrize("name", ALL)
def test_reductions(device, name):
    s, y, off = random_batch([4, 0, 6, 1], device=device)
    fn = getattr(rankops, name)
    per_list = fn(s, y, offsets=off, reduction="none")
    assert per_list.shape == (4,) and per_list[1].item() == 0.0
    total = fn(s, y, offsets=off, reduction="sum")
    mean = fn(s, y, offsets=off)
    torch.testing.assert_close(total, per_list.sum())
    denominator = 3 if name in LISTWISE else 11  # non-empty lists / items
    torch.testing.assert_close(mean, total / denominator)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("lengths", [[], [0], [0, 0, 1], [1]])
def test_empty_and_single_lists_give_zero_not_nan(device, name, lengths):
    s, y, off = random_batch(lengths, device=device)
    s.requires_grad_()
    fn = getattr(rankops, name)
    for reduction in ("mean", "sum"):
        loss = fn(s, y, offsets=off, reduction=reduction)
        assert torch.isfinite(loss)
        if name in LISTWISE:
            assert loss.item() == 0.0  # DESIGN §3, also for ApproxNDCG's single relevant item
        loss.backward()
        assert torch.isfinite(s.grad).all()
        if name in LISTWISE:
            assert torch.count_nonzero(s.grad) == 0
    assert fn(s, y, offsets=off, reduction="none").shape == (len(lengths),)


@pytest.mark.parametrize("name", ALL + ["pairwise_loss"])
@pytest.mark.parametrize("shape", [[0], [0, 0], [0, 0, 0], (2, 0), (0, 3)], ids=str)
def test_batch_of_empty_lists_kernel_and_reference(device, name, shape):
    # No item at all (offsets [0], [0, 0], ... or padded [B, 0] / [0, L]): 0 for "mean"
    # and "sum", B zeros for "none", in the kernels and in the reference alike.
    if isinstance(shape, list):
        s = torch.zeros(0, dtype=torch.float64, device=device)
        args, kw, B = (s, s.clone()), dict(offsets=torch.tensor(shape, device=device)), len(shape) - 1
    else:
        S = torch.zeros(shape, dtype=torch.float64, device=device)
        args, kw, B = (S, S.clone()), dict(mask=torch.zeros(shape, dtype=torch.bool, device=device)), shape[0]
    for impl in (getattr(rankops, name), getattr(reference, name)):
        for reduction in ("mean", "sum", "none"):
            x = args[0].clone().requires_grad_()
            out = impl(x, args[1], reduction=reduction, **kw)
            assert out.shape == ((B,) if reduction == "none" else ())
            assert out.eq(0).all(), (impl.__module__, reduction, out)
            out.sum().backward()
            assert x.grad is None or x.grad.eq(0).all()


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("label_dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_and_bool_labels_equal_float_labels(device, case, label_dtype):
    # labels of any real dtype (DESIGN §2): the same loss and gradient as float labels
    name, opts = case
    s, y, off, w = random_batch([5, 0, 8, 1, 30], device=device, grades=3, weights=True, seed=9)
    y_int = (y > 0) if label_dtype == torch.bool else y.to(label_dtype)
    results = []
    for labels in (y_int, y_int.to(torch.float64)):
        x = s.clone().requires_grad_()
        loss = getattr(rankops, name)(x, labels, offsets=off, weights=w, reduction="none", **opts)
        loss.sum().backward()
        results.append((loss.detach(), x.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    if label_dtype == torch.bool:  # not all 0: the bool labels do carry information
        assert results[0][0].ne(getattr(rankops, name)(s, torch.zeros_like(y), offsets=off, weights=w,
                                                       reduction="none", **opts)).any()


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_layouts_agree(device, case):
    name, opts = case
    lengths = torch.tensor([3, 0, 5, 1, 4], device=device)
    s, y, off = random_batch(lengths.tolist(), device=device)
    w = torch.rand_like(s) + 0.5
    fn = getattr(rankops, name)
    opts = dict(opts, reduction="none")
    packed = fn(s, y, offsets=off, weights=w, **opts)
    by_lengths = fn(s, y, lengths=lengths, weights=w, **opts)
    ids = torch.repeat_interleave(torch.tensor([10, 11, 12, 13, 14], device=device), lengths)
    by_ids = fn(s, y, group_ids=ids, weights=w, **opts)
    S, mask = rankops.segments.unpack(s, off, fill=123.0)
    Y, _ = rankops.segments.unpack(y, off, fill=-5.0)  # padding values must not matter
    W, _ = rankops.segments.unpack(w, off)
    padded_mask = fn(S, Y.abs(), mask=mask, weights=W, **opts)
    padded_len = fn(S, Y.abs(), lengths=lengths, weights=W, **opts)
    one_by_one = torch.stack([
        fn(s[a:b], y[a:b], weights=w[a:b], **opts)[0]
        for a, b in zip(off[:-1].tolist(), off[1:].tolist())
    ])
    exact = name in LISTWISE  # pointwise per-list sums are prefix-sum differences
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-12, atol=1e-12)
    for other in (by_lengths, padded_mask, padded_len, one_by_one):
        torch.testing.assert_close(other, packed, **tol)
    torch.testing.assert_close(by_ids, packed[lengths > 0], **tol)
    # scalar reductions too, and gradients reach only valid padded items
    S_req = S.clone().requires_grad_()
    mean_padded = fn(S_req, Y.abs(), mask=mask, weights=W, **dict(opts, reduction="mean"))
    torch.testing.assert_close(mean_padded, fn(s, y, offsets=off, weights=w, **dict(opts, reduction="mean")),
                               rtol=1e-12, atol=1e-12)
    mean_padded.backward()
    assert S_req.grad[~mask].abs().sum().item() == 0.0


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_signed_weights_match_reference(device, case):
    # Item weights may be negative (DESIGN puts no sign on them; some debiasing estimators
    # need it): the ideal DCG then orders negative w*G last, within the list's own items.
    name, opts = case
    lengths = [5, 7, 1, 12]
    s, y, off = random_batch(lengths, device=device, seed=21)
    g = torch.Generator().manual_seed(21)
    w = (torch.randn(sum(lengths), generator=g, dtype=torch.float64) * 2).to(device)
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    got = getattr(rankops, name)(s1, y, offsets=off, weights=w, reduction="none", **opts)
    want = getattr(reference, name)(s2, y, offsets=off, weights=w, reduction="none", **opts)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    got.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("fill", [-math.inf, math.inf, math.nan])
def test_padding_scores_never_matter(device, case, fill, packing):
    # The usual masked_fill(~mask, -inf) padding (or inf, NaN) must give the loss and the
    # gradient of the packed lists, and an exact 0 gradient at the padding.
    name, opts = case
    fn = getattr(rankops, name)
    s, y, off = random_batch([3, 0, 5, 1, 4], device=device, seed=3)
    S, mask = rankops.segments.unpack(s, off, fill=fill)
    Y, _ = rankops.segments.unpack(y, off)
    for reduction in ("none", "mean"):
        S_req = S.clone().requires_grad_()
        s_req = s.clone().requires_grad_()
        padded = fn(S_req, Y, mask=mask, reduction=reduction, **opts)
        packed = fn(s_req, y, offsets=off, reduction=reduction, **opts)
        torch.testing.assert_close(padded, packed, rtol=1e-12, atol=1e-12)
        padded.sum().backward()
        packed.sum().backward()
        assert S_req.grad[~mask].eq(0).all(), S_req.grad
        torch.testing.assert_close(S_req.grad[mask], s_req.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_random_masks_match_reference(device, case, packing):
    # Padding scattered through the rows (not only at their end), item weights. Finite
    # scores: the dense reference meets inf - inf at infinite scores (softmax 0 * log 0,
    # ListMLE's and ApproxNDCG's differences), see the infinite-score tests below.
    name, opts = case
    S, Y, W, mask = (t.to(device) for t in random_masked(12, 40, seed=6))
    S1, S2 = S.clone().requires_grad_(), S.clone().requires_grad_()
    got = getattr(rankops, name)(S1, Y, mask=mask, weights=W, reduction="none", **opts)
    want = getattr(reference, name)(S2, Y, mask=mask, weights=W, reduction="none", **opts)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    v = torch.rand(got.shape, dtype=torch.float64, device=device)
    (got * v).sum().backward()
    (want * v).sum().backward()
    assert S1.grad[~mask].eq(0).all()
    torch.testing.assert_close(S1.grad, S2.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_permutation_equivariance_without_ties(device, case):
    # Shuffling the items within each list (distinct scores, and distinct labels, since
    # ListMLE orders label ties by position) leaves each list's loss unchanged and
    # permutes the gradient with the items.
    name, opts = case
    lengths = [5, 0, 8, 1, 30]
    s, _, off, w = random_batch(lengths, device=device, weights=True, seed=10)
    g = torch.Generator().manual_seed(10)
    y = torch.cat([torch.randperm(n, generator=g).double() * 0.3 for n in lengths]).to(device)
    perm = torch.cat([a + torch.randperm(b - a, generator=g)
                      for a, b in zip(off[:-1].tolist(), off[1:].tolist())]).to(device)
    assert not torch.equal(perm, torch.arange(len(perm), device=device))
    x1, x2 = s.clone().requires_grad_(), s[perm].clone().requires_grad_()
    a = getattr(rankops, name)(x1, y, offsets=off, weights=w, reduction="none", **opts)
    b = getattr(rankops, name)(x2, y[perm], offsets=off, weights=w[perm], reduction="none", **opts)
    torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-13)
    a.sum().backward()
    b.sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad[perm], rtol=1e-12, atol=1e-13)


def test_listmle_exact_gradient_with_tied_scores(device):
    # All scores equal: L_k = c + log(n - k), so d loss / d s_{pi_j} = sum_{k<=j} w_k / (n-k) - w_j
    # exactly; a max-shift that leaks into the gradient gets this wrong.
    n, c = 6, 3.25
    w = [1.0, 0.5, 2.0, 1.5, 1.0, 0.25]
    y = torch.tensor([5.0, 4, 3, 2, 1, 0], dtype=torch.float64, device=device)
    for dtype in (torch.float64, torch.float32):
        s = torch.full((n,), c, dtype=dtype, device=device, requires_grad=True)
        loss = rankops.listmle_loss(s, y, weights=torch.tensor(w, device=device), reduction="sum")
        loss.backward()
        want = [sum(w[k] / (n - k) for k in range(j + 1)) - w[j] for j in range(n)]
        want_loss = sum(w[k] * math.log(n - k) for k in range(n))
        # float32 on CUDA: __expf in the scans (a few ulp) instead of the CPU's ~1 ulp exp
        tol = 1e-12 if dtype == torch.float64 else (2e-6 if s.is_cuda else 1e-6)
        assert loss.item() == pytest.approx(want_loss, rel=tol)
        assert s.grad.tolist() == pytest.approx(want, abs=tol)
    # ties among some scores only, vs the reference
    _compare(device, "listmle_loss", {}, [6, 9, 12], ties=True, seed=5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("labels", ["grades", "two_grades", "continuous", "tied_continuous"])
def test_listmle_long_lists_match_reference(device, dtype, labels):
    # Lists of more than 64 items take the CPU's radix sort of the labels (it skips the
    # bytes all labels share: grades 0..4 differ in two, grades 2 and 3 in one (an odd
    # number of passes), continuous labels in all), and every list of finite scores the
    # suffix log-sum-exp through the suffix max. Here: ties by position (-0.0 tied with
    # +0.0), and score gaps of ~200 (exp underflows in float32 below ~-87) around lists of
    # 64 and 65 items. Labels are float32 values, so both sides tie the same ones.
    lengths = [65, 64, 300, 1000, 3, 0, 129]
    g = torch.Generator().manual_seed(11)
    n = sum(lengths)
    s64 = torch.randn(n, generator=g, dtype=torch.float64) * 3
    s64[::97] += 200.0
    if labels == "grades":
        y = torch.randint(0, 5, (n,), generator=g).double()
    elif labels == "two_grades":
        y = torch.randint(2, 4, (n,), generator=g).double()
    elif labels == "continuous":
        y = torch.rand(n, generator=g, dtype=torch.float32).double() * 8
    else:  # a few distinct values in steps of 1/4, half the zeros negative zero
        y = torch.round(torch.rand(n, generator=g, dtype=torch.float64) * 8) / 4
        zeros = (y == 0).nonzero().flatten()
        y[zeros[::2]] = -0.0
        assert torch.signbit(y).any() and (y == 0).sum() > torch.signbit(y).sum()
    w = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    off = torch.tensor([0] + lengths, dtype=torch.int64).cumsum(0)
    s64, y, w, off = (t.to(device) for t in (s64, y, w, off))
    s = s64.to(dtype).requires_grad_()
    got = rankops.listmle_loss(s, y, offsets=off, weights=w, reduction="none")
    got.sum().backward()
    x = s.detach().double().requires_grad_()  # the same (rounded) scores, in float64
    want = reference.listmle_loss(x, y, offsets=off, weights=w, reduction="none")
    want.sum().backward()
    assert torch.isfinite(got).all() and torch.isfinite(s.grad).all()
    tol = 1e-10 if dtype == torch.float64 else F32_RTOL
    assert_close_per_list(got, want, rtol=tol, msg="loss: ")
    assert_close_per_list(s.grad, x.grad, off, rtol=tol, msg="gradient: ")


def test_listmle_float32_scores_float32_max_apart(device):
    # 3e38 - (-3e38) overflows float32: after the max-shift the last two scores are -inf,
    # so the list must take the log-add-exp scan (a suffix max of -inf would put NaN into
    # the suffix sums, which the polynomial log turns into a wrong finite value). The two
    # leading items keep the float64 truth, a zero gradient; the loss is NaN
    # (-inf - -inf in the last terms), as for infinite scores.
    s = torch.tensor([3e38, 1.0, -3e38, -3e38], device=device, requires_grad=True)
    y = torch.tensor([3.0, 2.0, 1.0, 0.0], device=device)
    rankops.listmle_loss(s, y, reduction="sum").backward()
    x = s.detach().double().requires_grad_()
    reference.listmle_loss(x, y, reduction="sum").backward()
    assert x.grad[:2].tolist() == [0.0, 0.0]
    assert s.grad[:2].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("name", LISTWISE)
def test_nan_score_gives_nan_for_its_list_only(device, name):
    # A NaN next to a -inf in label order, in both orders (the CPU and CUDA scans combine
    # their operands in different orders): the list's loss is NaN, the other list's is not.
    s = torch.tensor([math.nan, -math.inf, 0.5, -math.inf, math.nan, 0.5, math.nan, -math.inf,
                      0.3, -1.0], dtype=torch.float64, device=device)
    y = torch.tensor([2.0, 1.0, 0.0, 2.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float64,
                     device=device)
    off = torch.tensor([0, 3, 6, 8, 10], device=device)
    loss = getattr(rankops, name)(s, y, offsets=off, reduction="none")
    assert loss[:3].isnan().all(), loss
    want = getattr(rankops, name)(s[8:], y[8:], reduction="sum")
    assert torch.isfinite(want) and loss[3].item() == want.item()


@pytest.mark.parametrize("k", [None, 2])
def test_approx_ndcg_infinite_scores_finite_gradient(device, k):
    # An infinite score's smooth rank is exact (1 or n) and its gradient 0; the reference
    # (dense pair matrix) gets inf - inf = NaN on the diagonal there, so compare elsewhere.
    s = torch.tensor([2.0, math.inf, -math.inf, 0.5, -0.25], dtype=torch.float64, device=device)
    y = torch.tensor([1.0, 0.0, 3.0, 2.0, 1.0], dtype=torch.float64, device=device)
    s_req = s.clone().requires_grad_()
    loss = rankops.approx_ndcg_loss(s_req, y, k=k, reduction="sum")
    loss.backward()
    s_ref = s.clone().requires_grad_()
    ref = reference.approx_ndcg_loss(s_ref, y, k=k, reduction="sum")
    ref.backward()
    torch.testing.assert_close(loss, ref)
    finite = torch.isfinite(s)
    assert (s_req.grad[~finite] == 0).all(), s_req.grad
    torch.testing.assert_close(s_req.grad[finite], s_ref.grad[finite])


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_huge_score_gaps_match_reference(device, case, dtype):
    # gaps of 5e3..2e4 (exp overflows in float32 beyond ~88) and an exact tie at 1e4;
    # the float64 reference on the same (cast) scores is the truth
    name, opts = case
    s = torch.tensor([1e4, -1e4, 0.0, 5e3, -5e3, 1e4], device=device).to(dtype)
    y = torch.tensor([0.0, 3.0, 1.0, 2.0, 4.0, 1.0], device=device)
    s_req = s.clone().requires_grad_()
    loss = getattr(rankops, name)(s_req, y, reduction="sum", **opts)
    loss.backward()
    assert torch.isfinite(loss).all() and torch.isfinite(s_req.grad.float()).all()
    x = s.double().requires_grad_()
    want = getattr(reference, name)(x, y, reduction="sum", **opts)
    want.backward()
    # The kernels take every log-sum-exp relative to the list's max (softmax: (m - s_i) +
    # log sum exp(s - m); ListMLE: its scan over s - max), so a large |s| costs no
    # accuracy: the plain tolerance of the accumulation type holds. (Rounding lse itself
    # at |s| ~ 1e4 was off by ~2e-4 in float32.)
    if dtype == torch.float64:
        tol = 1e-12
        torch.testing.assert_close(loss, want, rtol=tol, atol=1e-12)
        torch.testing.assert_close(s_req.grad, x.grad, rtol=tol, atol=tol * x.grad.abs().max().item())
        return
    tol = F32_RTOL
    assert_close_per_list(loss, want, rtol=tol, msg="loss: ")
    u, tiny = ROUNDOFF.get(dtype, (0.0, 0.0))  # float32: no rounding after the kernel
    assert_close_per_list(s_req.grad, x.grad, torch.tensor([0, 6]), rtol=u, list_rtol=tol,
                          atol=tiny, msg="gradient: ")


@pytest.mark.parametrize("name", LISTWISE)
def test_deterministic_and_thread_count_independent(name):
    s, y, off = random_batch([2900, 40, 700, 3], dtype=torch.float32)
    s.requires_grad_()
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 1, 2):
            torch.set_num_threads(n)
            s.grad = None
            loss = getattr(rankops, name)(s, y, offsets=off, reduction="none")
            loss.sum().backward()
            results.append((loss.detach().clone(), s.grad.clone()))
    finally:
        torch.set_num_threads(threads)
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


# Low precision (float16, bfloat16 scores): the kernels (and the pointwise losses) widen
# the scores to float32 and accumulate in float32 (DESIGN §4), so on the same rounded
# scores their loss and their float32 item gradient match the float64 reference at
# float32 accuracy; the gradient autograd hands back is that float32 gradient rounded
# once to the scores' dtype.

def _raw_op_args(name, opts):
    """The options of the op behind a kernel loss, in its schema's order (None: no op)."""
    if name == "softmax_loss":
        return (opts.get("label_norm", False), 0.0, False)
    if name == "poly1_softmax_loss":  # the softmax op with poly_epsilon
        return (opts.get("label_norm", False), opts.get("epsilon", 1.0), False)
    if name == "listnet_loss":  # the softmax op with label_softmax
        return (False, 0.0, True)
    if name == "listmle_loss":
        return ("none",)
    if name == "plistmle_loss":  # the listmle op with its position weights
        return ("exp2",)
    if name == "unique_softmax_loss":
        return (opts.get("gain", "exp2"),)
    if name == "approx_ndcg_loss":
        return (opts.get("temperature", 1.0), opts.get("k"), opts.get("gain", "exp2"))
    return None


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_matches_float64_reference(device, case, dtype):
    name, opts = case
    s64, y, off, w = random_batch([20, 50, 7, 100, 0, 1, 300], device=device, weights=True)
    s_low = s64.to(dtype)
    x = s_low.double().requires_grad_()  # the same rounded scores, in float64
    truth = getattr(reference, name)(x, y, offsets=off, weights=w, reduction="none", **opts)
    truth.sum().backward()
    raw = _raw_op_args(name, opts)
    if raw is not None:  # the op itself: float32 loss and float32 item gradient
        op = {"poly1_softmax_loss": "softmax_loss", "listnet_loss": "softmax_loss",
              "plistmle_loss": "listmle_loss"}.get(name, name)
        loss32, grad32 = getattr(torch.ops.rankops, op)(s_low, y, off, w, *raw, True)
        assert loss32.dtype == torch.float32 and grad32.dtype == torch.float32
        if name == "approx_ndcg_loss":  # the Python layer zeroes one-item lists (DESIGN §3)
            loss32 = torch.where(off[1:] - off[:-1] >= 2, loss32, torch.zeros_like(loss32))
        assert_close_per_list(loss32, truth, rtol=F32_RTOL, msg="op loss: ")
        assert_close_per_list(grad32, x.grad, off, rtol=F32_RTOL, msg="float32 gradient: ")
    s_req = s_low.clone().requires_grad_()
    got = getattr(rankops, name)(s_req, y, offsets=off, weights=w, reduction="none", **opts)
    got.sum().backward()
    assert got.dtype == torch.float32 and s_req.grad.dtype == dtype
    assert_close_per_list(got, truth, rtol=F32_RTOL, msg="loss: ")
    u, tiny = ROUNDOFF[dtype]
    assert_close_per_list(s_req.grad, x.grad, off, rtol=u, list_rtol=F32_RTOL, atol=tiny, msg="gradient: ")
    # and no worse than the reference run in the same dtype (DESIGN §7)
    ref_low = getattr(reference, name)(s_low, y.to(dtype), offsets=off, weights=w.to(dtype),
                                       reduction="none", **opts)
    assert (got.double() - truth).abs().max().item() <= (ref_low.double() - truth).abs().max().item()


# --------------------------------------------------------------------------------------
# Gradients and registration.

@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_gradcheck(device, case):
    name, opts = case
    s, y, off, w = random_batch([4, 0, 7, 1, 5], device=device, weights=True, seed=2)
    s = (s * 3).requires_grad_()
    if opts.get("k") is not None:  # keep every smooth rank away from the hard cut at k
        ranks = _smooth_ranks(s.detach(), off, opts.get("temperature", 1.0))
        assert (ranks - opts["k"]).abs().min().item() > 1e-3

    def f(x):
        return getattr(rankops, name)(x, y, offsets=off, weights=w, reduction="none", **opts)

    assert torch.autograd.gradcheck(f, (s,), eps=1e-6, atol=1e-7)


def _smooth_ranks(s, off, T):
    out = []
    for a, b in zip(off[:-1].tolist(), off[1:].tolist()):
        x = s[a:b]
        sig = torch.sigmoid((x[None, :] - x[:, None]) / T)
        out.append(0.5 + sig.sum(1))  # 1 + sum_{j != i}: the diagonal adds sigmoid(0) = 0.5
    return torch.cat(out)


@pytest.mark.parametrize("requires_grad", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(device, requires_grad, dtype):
    s, y, off, w = random_batch([3, 0, 6, 1], device=device, dtype=dtype, weights=True)
    s.requires_grad_(requires_grad)
    ops = torch.ops.rankops
    torch.library.opcheck(ops.softmax_loss.default, (s, y, off, w, False, 0.0, False, requires_grad))
    torch.library.opcheck(ops.softmax_loss.default, (s, y, off, None, True, 0.0, False, requires_grad))
    torch.library.opcheck(ops.softmax_loss.default, (s, y, off, w, False, 1.5, False, requires_grad))
    torch.library.opcheck(ops.softmax_loss.default, (s, y, off, w, False, 0.0, True, requires_grad))
    torch.library.opcheck(ops.listmle_loss.default, (s, y, off, w, "none", requires_grad))
    torch.library.opcheck(ops.listmle_loss.default, (s, y, off, None, "exp2", requires_grad))
    torch.library.opcheck(ops.unique_softmax_loss.default, (s, y, off, w, "exp2", requires_grad))
    torch.library.opcheck(ops.unique_softmax_loss.default, (s, y, off, None, "linear", requires_grad))
    torch.library.opcheck(ops.approx_ndcg_loss.default, (s, y, off, w, 1.0, None, "exp2", requires_grad))
    torch.library.opcheck(ops.approx_ndcg_loss.default, (s, y, off, None, 0.5, 2, "linear", requires_grad))
    grad = torch.rand(4, dtype=dtype, device=device)
    item = torch.rand(10, dtype=dtype, device=device)
    for name in ("softmax_loss_backward", "listmle_loss_backward", "unique_softmax_loss_backward",
                 "approx_ndcg_loss_backward"):
        torch.library.opcheck(getattr(ops, name).default, (grad, item, off))


def test_torch_compile_fullgraph_model_and_loss(device):
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).to(device)
    x = torch.randn(20, 6, device=device)
    y = torch.randint(0, 3, (20,), device=device).float()
    off = torch.tensor([0, 5, 5, 12, 20], device=device)
    X = torch.randn(3, 7, 6, device=device)
    Y = torch.randint(0, 3, (3, 7), device=device).float()
    lengths = torch.tensor([7, 2, 5], device=device)
    combined = rankops.nn.CombinedLoss({"lambdarank": 1.0, "softmax": 0.5, "mse": 0.1}, k=5)

    def step(x, y, off, X, Y, lengths):
        s = model(x).squeeze(-1)
        S = model(X).squeeze(-1)
        return (rankops.softmax_loss(s, y, offsets=off)
                + rankops.listnet_loss(s, y, offsets=off)
                + rankops.listnet_loss(S, Y, lengths=lengths)
                + rankops.poly1_softmax_loss(S, Y, lengths=lengths, epsilon=0.5)
                + rankops.unique_softmax_loss(s, y, offsets=off)
                + rankops.listmle_loss(S, Y, lengths=lengths)
                + rankops.approx_ndcg_loss(s, y, offsets=off, k=4, temperature=0.5)
                + rankops.sigmoid_loss(S, Y, lengths=lengths)
                + combined(S, Y, lengths=lengths))

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


def test_double_backward_is_a_clear_error(device):
    s, y, off = random_batch([5, 6], device=device)
    s.requires_grad_()
    for name in LISTWISE:
        loss = getattr(rankops, name)(s, y, offsets=off)
        (g,) = torch.autograd.grad(loss, s, create_graph=True)
        with pytest.raises(RuntimeError, match="double backward"):
            g.sum().backward()


def test_no_grad_skips_the_gradient(device):
    s, y, off = random_batch([5, 6], device=device)
    for name in LISTWISE:
        with torch.no_grad():
            a = getattr(rankops, name)(s.clone().requires_grad_(), y, offsets=off)
        assert not a.requires_grad and torch.equal(a, getattr(rankops, name)(s, y, offsets=off))


# --------------------------------------------------------------------------------------
# Bad input: clear errors that name the argument.

def _ok():
    return torch.randn(6), torch.tensor([0.0, 1, 2, 0, 1, 0]), torch.tensor([0, 3, 6])


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(offsets=torch.tensor([0, 3, 6], dtype=torch.int32)), TypeError, "offsets must be int64"),
        (dict(offsets=torch.tensor([1, 3, 6])), ValueError, "offsets must start at 0"),
        (dict(offsets=torch.tensor([0, 4, 3, 6])), ValueError, "offsets must be non-decreasing"),
        (dict(offsets=torch.tensor([0, 3, 5])), ValueError, "offsets must end at N = 6"),
        (dict(labels=torch.tensor([0.0, -1, 2, 0, 1, 0])), ValueError, "labels must be >= 0"),
        # a device mismatch, without a GPU: the meta device
        (dict(labels=torch.zeros(6, device="meta")), ValueError, "labels must be on the device of scores"),
        (dict(offsets=torch.tensor([0, 3, 6], device="meta")), ValueError, "offsets must be on the device of scores"),
        (dict(weights=torch.ones(6, device="meta")), ValueError, "weights must be on the device of scores"),
        (dict(scores=torch.arange(6)), TypeError, "scores must be a floating tensor"),
        (dict(weights=torch.ones(5)), ValueError, "weights must have the shape of scores"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
    ],
)
def test_bad_input(name, change, error, match):
    s, y, off = _ok()
    kwargs = dict(scores=s, labels=y, offsets=off)
    kwargs.update(change)
    with pytest.raises(error, match=match):
        getattr(rankops, name)(kwargs.pop("scores"), kwargs.pop("labels"), **kwargs)


@pytest.mark.parametrize(
    "name, opts, error, match",
    [
        ("approx_ndcg_loss", dict(temperature=0.0), ValueError, "temperature must be > 0"),
        ("approx_ndcg_loss", dict(temperature="hot"), TypeError, "temperature must be a number"),
        ("approx_ndcg_loss", dict(k=0), ValueError, "k must be >= 1"),
        ("approx_ndcg_loss", dict(k=1.5), TypeError, "k must be an int"),
        ("approx_ndcg_loss", dict(gain="log"), ValueError, "gain must be one of"),
        ("softmax_loss", dict(label_norm="yes"), TypeError, "label_norm must be a bool"),
        ("unique_softmax_loss", dict(gain="log"), ValueError, "gain must be one of"),
        ("poly1_softmax_loss", dict(epsilon="big"), TypeError, "epsilon must be a number"),
        ("poly1_softmax_loss", dict(epsilon=float("inf")), ValueError, "epsilon must be finite"),
        ("poly1_softmax_loss", dict(label_norm=1), TypeError, "label_norm must be a bool"),
        ("unique_softmax_loss", dict(temperature=1.0), TypeError, "temperature"),
    ],
)
def test_bad_options(name, opts, error, match):
    s, y, off = _ok()
    with pytest.raises(error, match=match):
        getattr(rankops, name)(s, y, offsets=off, **opts)


@pytest.mark.skipif(not (torch.cuda.is_available() and rankops.build_info()["cuda"]),
                    reason="needs a GPU and a CUDA build")
@pytest.mark.parametrize("name", ALL)
def test_cuda_device_mismatch(name):
    s, y, off = _ok()
    for kw in (dict(labels=y.cuda(), offsets=off), dict(labels=y, offsets=off.cuda())):
        with pytest.raises(ValueError, match="must be on the device of scores"):
            getattr(rankops, name)(s, **kw)


def test_direct_op_call_checks_in_cpp():
    s, y, _ = _ok()
    with pytest.raises(RuntimeError, match="offsets must end at N"):
        torch.ops.rankops.softmax_loss(s, y, torch.tensor([0, 3, 5]), None, False, 0.0, False, False)
    with pytest.raises(RuntimeError, match="epsilon must be finite"):
        torch.ops.rankops.softmax_loss(s, y, torch.tensor([0, 6]), None, False, float("nan"), False,
                                       False)
    with pytest.raises(RuntimeError, match="temperature must be > 0"):
        torch.ops.rankops.approx_ndcg_loss(s, y, torch.tensor([0, 6]), None, -1.0, None, "exp2", False)
    with pytest.raises(RuntimeError, match="gain must be"):
        torch.ops.rankops.approx_ndcg_loss(s, y, torch.tensor([0, 6]), None, 1.0, None, "x", False)
    with pytest.raises(RuntimeError, match="gain must be"):
        torch.ops.rankops.unique_softmax_loss(s, y, torch.tensor([0, 6]), None, "x", False)
    with pytest.raises(RuntimeError, match="offsets must end at N"):
        torch.ops.rankops.unique_softmax_loss(s, y, torch.tensor([0, 3, 5]), None, "exp2", False)


# --------------------------------------------------------------------------------------
# nn wrappers and CombinedLoss.

def test_nn_modules_match_functions(device):
    s, y, off = random_batch([4, 7], device=device)
    nn = rankops.nn
    pairs = [(nn.SoftmaxLoss(label_norm=True), rankops.softmax_loss, dict(label_norm=True)),
             (nn.Poly1SoftmaxLoss(epsilon=2.0), rankops.poly1_softmax_loss, dict(epsilon=2.0)),
             (nn.ListNetLoss(), rankops.listnet_loss, {}),
             (nn.ListMLELoss(), rankops.listmle_loss, {}),
             (nn.UniqueSoftmaxLoss(gain="linear"), rankops.unique_softmax_loss, dict(gain="linear")),
             (nn.ApproxNDCGLoss(k=3, temperature=0.5), rankops.approx_ndcg_loss, dict(k=3, temperature=0.5)),
             (nn.SigmoidLoss(reduction="sum"), rankops.sigmoid_loss, dict(reduction="sum")),
             (nn.MSELoss(), rankops.mse_loss, {})]
    for module, fn, opts in pairs:
        assert torch.equal(module(s, y, offsets=off), fn(s, y, offsets=off, **opts))
    assert "temperature=0.5" in repr(nn.ApproxNDCGLoss(temperature=0.5))


FUNCTIONALS = {
    "ranknet": rankops.ranknet_loss, "hinge": rankops.pairwise_hinge_loss,
    "soft_zero_one": rankops.pairwise_soft_zero_one_loss, "lambdarank": rankops.lambdarank_loss,
    "ndcg2": lambda *a, **kw: rankops.lambdaloss(*a, variant="ndcg2", **kw),
    "ndcg2pp": lambda *a, **kw: rankops.lambdaloss(*a, variant="ndcg2pp", **kw),
    "softmax": rankops.softmax_loss, "listmle": rankops.listmle_loss,
    "poly1_softmax": rankops.poly1_softmax_loss, "listnet": rankops.listnet_loss,
    "unique_softmax": rankops.unique_softmax_loss,
    "approx_ndcg": rankops.approx_ndcg_loss, "sigmoid": rankops.sigmoid_loss, "mse": rankops.mse_loss,
}
TAKES_K = {"lambdarank", "ndcg2", "ndcg2pp", "approx_ndcg"}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("padded", [False, True])
def test_combined_loss_is_the_weighted_sum(device, reduction, padded):
    s, y, off, w = random_batch([5, 0, 9, 1, 12], device=device, weights=True)
    if padded:
        S, mask = rankops.segments.unpack(s, off)
        Y, _ = rankops.segments.unpack(y, off)
        W, _ = rankops.segments.unpack(w, off)
        inputs, layout = (S, Y), dict(mask=mask, weights=W)
    else:
        inputs, layout = (s, y), dict(offsets=off, weights=w)
    weights = {name: 0.5 + i / 10 for i, name in enumerate(FUNCTIONALS)}
    combined = rankops.nn.CombinedLoss(
        {**weights, "softmax": (weights["softmax"], {"label_norm": True})},
        k=4, sigma=1.5, temperature=0.7, reduction=reduction)
    x1 = inputs[0].clone().requires_grad_()
    got = combined(x1, inputs[1], **layout)
    got.sum().backward()
    x2 = inputs[0].clone().requires_grad_()
    want = 0
    for name, fn in FUNCTIONALS.items():
        opts = {"reduction": reduction}
        if name in TAKES_K:
            opts["k"] = 4
        if name in ("ranknet", "soft_zero_one", "lambdarank", "ndcg2", "ndcg2pp"):
            opts["sigma"] = 1.5
        if name == "approx_ndcg":
            opts["temperature"] = 0.7
        if name == "softmax":
            opts["label_norm"] = True
        want = want + weights[name] * fn(x2, inputs[1], **layout, **opts)
    want.sum().backward()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-12, atol=1e-12)
    assert "lambdarank" in repr(combined)


def test_combined_loss_bad_arguments():
    with pytest.raises(ValueError, match="unknown loss 'neural_ndcg'"):
        rankops.nn.CombinedLoss({"neural_ndcg": 1.0})
    with pytest.raises(TypeError, match="no loss .* takes option"):
        rankops.nn.CombinedLoss({"softmax": 1.0}, temperature=2.0)
    with pytest.raises(TypeError, match="does not take option"):
        rankops.nn.CombinedLoss({"listmle": (1.0, {"k": 3})})
    with pytest.raises(TypeError, match="weight of 'mse' must be a number"):
        rankops.nn.CombinedLoss({"mse": "1"})
    with pytest.raises(TypeError, match="non-empty dict"):
        rankops.nn.CombinedLoss({})
    s, y, off = _ok()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        rankops.nn.CombinedLoss({"approx_ndcg": 1.0}, temperature=-1.0)(s, y, offsets=off)


# --------------------------------------------------------------------------------------
# CUDA: agreement with the CPU kernels and run-to-run determinism (skipped without a GPU).

@pytest.mark.skipif(not (torch.cuda.is_available() and rankops.build_info()["cuda"]),
                    reason="needs a GPU and a CUDA build")
@pytest.mark.parametrize("case", [c for c in CASES if c[0] in LISTWISE], ids=_ids)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu_and_is_deterministic(case, dtype):
    name, opts = case
    lengths = EDGE_LENGTHS + [1000, 4100, 1, 0]
    s, y, off, w = random_batch(lengths, dtype=dtype, weights=True, ties=True, seed=7)
    fn = getattr(rankops, name)
    s_cpu = s.clone().requires_grad_()
    want = fn(s_cpu, y, offsets=off, weights=w, reduction="none", **opts)
    want.sum().backward()
    runs = []
    for _ in range(2):
        s_gpu = s.cuda().requires_grad_()
        got = fn(s_gpu, y.cuda(), offsets=off.cuda(), weights=w.cuda(), reduction="none", **opts)
        got.sum().backward()
        runs.append((got.detach().cpu(), s_gpu.grad.cpu()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(runs[0][0], want.detach(), **tol)
    torch.testing.assert_close(runs[0][1], s_cpu.grad, **tol)


def test_approx_ndcg_single_relevant_item_gives_zero(device):
    # DESIGN §3: single-item lists give 0, also where -NDCG would be the constant -1.
    s = torch.tensor([0.3, 1.0, -2.0], dtype=torch.float64, device=device, requires_grad=True)
    y = torch.tensor([3.0, 2.0, 0.0], dtype=torch.float64, device=device)
    off = torch.tensor([0, 1, 3], device=device)
    per_list = rankops.approx_ndcg_loss(s, y, offsets=off, reduction="none")
    assert per_list[0].item() == 0.0 and per_list[1].item() < 0.0
    ref = rankops.reference.approx_ndcg_loss(s, y, offsets=off, reduction="none")
    torch.testing.assert_close(per_list, ref)
