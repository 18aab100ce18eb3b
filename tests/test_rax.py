"""rankops against Rax (Google's JAX learning-to-rank library): an implementation of the
same losses and metrics written by others, in another framework, from the papers.

Losses are compared per list and gradients per item (jax.grad against autograd), in
float64, on lists of several lengths (empty, one item, up to 40) with label ties, with
and without score ties (both libraries break score ties by position). Rax takes the
lists padded to ``[B, L]`` with its ``where`` mask; rankops takes them packed, and for
some losses and the metrics also padded with a mask (both of its packings).

Conventions that differ, mapped here rather than hidden (README, docs/decisions.md):
  * Rax multiplies its DCG lambda weights by the padded row length (``ranks.shape[-1]``);
    a rankops list's loss does not depend on padding or batching: Rax / L.
  * Item weights in the lambda losses: both weight the pair by w_i and the ideal DCG by w,
    but Rax's lambda weight takes |w_i G_i - w_j G_j| where rankops takes |G_i - G_j|
    (DESIGN §3). Compared without weights.
  * Rax's ``dcg2_lambdaweight`` with ``topn`` follows Jagerman et al. 2022; rankops's k
    keeps the pairs with an item ranked <= k. NDCG-Loss2 is compared without k.
  * A single-item list's ApproxNDCG is 0 in rankops (DESIGN §3), -1 in Rax (its NDCG).
  * ``opa_metric`` counts a pair of tied scores as misordered; rankops breaks the tie by
    position or (``ties="average"``) counts it half ordered. Compared on distinct scores.
  * ``softmax_loss(label_norm=True)`` and ``poly1_softmax_loss`` of a list with no
    positive label: 0 in rankops, a uniform target in Rax's ``normalize_probabilities``.

Two Rax gradients are wrong at exact ties, so there the gradient is checked against
central finite differences of the (smooth) loss instead:
  * ``listmle_loss``: its reverse log-cum-sum-exp is shifted by a ``cummax`` that is not
    stop-gradiented; at tied scores the max's gradient goes to the wrong item.
  * ``pointwise_sigmoid_loss`` at a score of exactly 0: ``relu(s) + log1p(exp(-|s|))``
    takes subgradients there whose sum is off by one.
"""
import functools

import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax")
rax = pytest.importorskip("rax")
jnp = jax.numpy
jax.config.update("jax_enable_x64", True)

import rankops  # noqa: E402

LENGTHS = [1, 2, 3, 8, 17, 40, 0]


def random_lists(seed, ties, *, grades=5):
    """(scores, labels, weights) per list, numpy float64; one list of all-equal labels and
    one with no relevant item among them. ``ties``: scores on a 0.5 grid (many ties)."""
    rng = np.random.default_rng(seed)
    lists = []
    for i, n in enumerate(LENGTHS):
        s = rng.normal(size=n)
        if ties:
            s = np.round(s * 2) / 2
        y = rng.integers(0, grades, size=n).astype(np.float64)
        if i == 3:
            y[:] = 2.0  # all labels equal: no pair
        if i == 4:
            y[:] = np.minimum(y, 0.5)  # no label >= 1 (no relevant item for MRR/MAP)
        lists.append((s, y, rng.uniform(0.2, 2.0, size=n)))
    return lists


def pack(lists, device):
    scores = torch.tensor(np.concatenate([s for s, _, _ in lists]), device=device)
    labels = torch.tensor(np.concatenate([y for _, y, _ in lists]), device=device)
    weights = torch.tensor(np.concatenate([w for _, _, w in lists]), device=device)
    offsets = torch.tensor(np.cumsum([0] + [len(s) for s, _, _ in lists]), device=device)
    return scores, labels, weights, offsets


@pytest.fixture(params=["packed", "padded", "padded+padding_list"])
def layout(request, monkeypatch):
    """How rankops gets the lists: packed with offsets, or padded ``[B, L]`` with a mask,
    packed inside to the valid items (the CPU's way) or with a padding list (the GPU's)."""
    from rankops import segments
    monkeypatch.setattr(segments, "_PADDING_LIST_ON_CPU", request.param.endswith("padding_list"))
    return request.param.split("+")[0]


def rankops_inputs(lists, device, layout):
    """(scores, labels, weights, layout kwargs) for rankops, packed or padded."""
    if layout == "packed":
        scores, labels, weights, offsets = pack(lists, device)
        return scores, labels, weights, {"offsets": offsets}
    S, Y, W, where = (torch.tensor(np.asarray(a), device=device) for a in padded_lists(lists))
    return S, Y, W, {"mask": where}


def ours(loss_fn, lists, device, *, with_weights=False, layout="packed", **kwargs):
    """Per-list losses [B] and the gradient of their sum (items in list order), as numpy."""
    scores, labels, weights, where = rankops_inputs(lists, device, layout)
    scores.requires_grad_(True)
    loss = loss_fn(scores, labels, weights=weights if with_weights else None, reduction="none",
                   **where, **kwargs)
    loss.sum().backward()
    grad = scores.grad if layout == "packed" else scores.grad[where["mask"]]  # row-major
    return loss.detach().cpu().numpy(), grad.cpu().numpy()


def padded_lists(lists):
    """The lists as Rax takes a batch: scores, labels, weights ``[B, L]`` and ``where``."""
    L = max(len(s) for s, _, _ in lists)
    S, Y, W = (jnp.asarray(np.stack([np.pad(item[i], (0, L - len(item[i]))) for item in lists]))
               for i in range(3))
    return S, Y, W, jnp.asarray(np.stack([np.arange(L) < len(s) for s, _, _ in lists]))


def theirs(rax_fn, lists, *, with_weights=False, scale_by_length=False, jit=False, **kwargs):
    """Rax's loss of each list and its jax.grad: one call on the lists padded to ``[B, L]``
    with Rax's ``where`` mask (one array shape, so JAX compiles each primitive once and
    reuses it across tests; ``jit`` for losses whose eager form is slow, a scan)."""
    S, Y, W, where = padded_lists(lists)
    L = S.shape[1]
    extra = {"weights": W} if with_weights else {}
    # Rax's lambda weights scale by the padded row length, ranks.shape[-1] (docstring)
    factor = 1.0 / L if scale_by_length else 1.0

    def sum_per_list(values, where):  # [B] per list, or [B, L, L] per pair
        B = len(lists)
        return jnp.sum(values.reshape(B, -1), where=where.reshape(B, -1), axis=-1)

    def per_list(x):
        return factor * rax_fn(x, Y, where=where, reduce_fn=sum_per_list, **extra, **kwargs)

    def total(x):
        return jnp.sum(per_list(x))

    grad_fn = jax.grad(total)
    if jit:
        per_list, grad_fn = jax.jit(per_list), jax.jit(grad_fn)
    grad = np.asarray(grad_fn(S))
    return (np.asarray(per_list(S)),
            np.concatenate([grad[b, :len(s)] for b, (s, _, _) in enumerate(lists)]))


def finite_difference_grad(loss_fn, lists, device, *, h=1e-6, **kwargs):
    """Central differences of the summed loss, item by item (float64)."""
    scores, labels, _, offsets = pack(lists, device)

    def total(x):
        return float(loss_fn(x, labels, offsets=offsets, reduction="sum", **kwargs))

    grad = np.zeros(scores.numel())
    for i in range(scores.numel()):
        up, down = scores.clone(), scores.clone()
        up[i] += h
        down[i] -= h
        grad[i] = (total(up) - total(down)) / (2 * h)
    return grad


def assert_agree(got, want, *, grad=True):
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10, atol=1e-12, err_msg="per-list loss")
    if grad:
        np.testing.assert_allclose(got[1], want[1], rtol=1e-9, atol=1e-12, err_msg="gradient")


TIES = pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
RAX_GAIN = {"exp2": {}, "linear": {"gain_fn": lambda y: y}}  # Rax's default gain is 2^y - 1


# ---- the pairwise family ---------------------------------------------------------------

PAIR_FNS = {
    "logistic": rax.pairwise_logistic_loss,
    "hinge": rax.pairwise_hinge_loss,  # max(0, 1 - d): margin 1
    "soft_zero_one": rax.pairwise_soft_zero_one_loss,
}


@TIES
@pytest.mark.parametrize("pair_fn", PAIR_FNS)
@pytest.mark.parametrize("with_weights", [False, True], ids=["", "weights"])
def test_pair_functions(device, ties, pair_fn, with_weights):
    lists = random_lists(1, ties)
    got = ours(rankops.pairwise_loss, lists, device, with_weights=with_weights, pair_fn=pair_fn)
    want = theirs(PAIR_FNS[pair_fn], lists, with_weights=with_weights)
    assert_agree(got, want)


@TIES
def test_label_diff_weights(device, ties):
    lists = random_lists(2, ties)
    got = ours(rankops.pairwise_loss, lists, device, weight="label_diff")
    want = theirs(rax.pairwise_logistic_loss, lists, lambdaweight_fn=rax.labeldiff_lambdaweight)
    assert_agree(got, want)


@TIES
@pytest.mark.parametrize("k", [None, 1, 3, 10])
@pytest.mark.parametrize("gain", ["exp2", "linear"])
def test_lambdarank(device, ties, k, gain, layout):
    lists = random_lists(3, ties)
    weight = functools.partial(rax.dcg_lambdaweight, normalize=True, topn=k, **RAX_GAIN[gain])
    got = ours(rankops.lambdarank_loss, lists, device, k=k, gain=gain, layout=layout)
    want = theirs(rax.pairwise_logistic_loss, lists, lambdaweight_fn=weight, scale_by_length=True)
    assert_agree(got, want)


@TIES
@pytest.mark.parametrize("variant", ["ndcg2", "ndcg2pp"])
def test_lambdaloss(device, ties, variant):
    lists = random_lists(4, ties)
    mu = 3.0
    ndcg = functools.partial(rax.dcg_lambdaweight, normalize=True)
    ndcg2 = functools.partial(rax.dcg2_lambdaweight, normalize=True)

    def weight(*args, **kwargs):
        if variant == "ndcg2":
            return ndcg2(*args, **kwargs)
        return ndcg(*args, **kwargs) + mu * ndcg2(*args, **kwargs)

    got = ours(rankops.lambdaloss, lists, device, variant=variant, mu=mu)
    want = theirs(rax.pairwise_logistic_loss, lists, lambdaweight_fn=weight, scale_by_length=True)
    assert_agree(got, want)


# ---- listwise and pointwise --------------------------------------------------------------

@TIES
@pytest.mark.parametrize("with_weights", [False, True], ids=["", "weights"])
def test_softmax(device, ties, with_weights, layout):
    lists = random_lists(5, ties)
    got = ours(rankops.softmax_loss, lists, device, with_weights=with_weights, layout=layout)
    want = theirs(rax.softmax_loss, lists, with_weights=with_weights)
    assert_agree(got, want)


def test_documented_differences(device):
    """The conventions the module docstring names, where rankops and Rax disagree on
    purpose: both sides computed, so that a change on either side shows here."""
    s, y = np.array([0.3]), np.array([2.0])  # one item: ApproxNDCG 0 here, -1 (-NDCG) in Rax
    got = ours(rankops.approx_ndcg_loss, [(s, y, s)], device)
    want = theirs(lambda x, y_, **kw: -rax.ndcg_metric(x, y_, rank_fn=rax.utils.approx_ranks, **kw),
                  [(s, y, s)])
    assert got[0].tolist() == [0.0] and want[0].tolist() == [-1.0]
    assert got[1].tolist() == [0.0] and want[1].tolist() == [0.0]
    # label_norm with no positive label: 0 here, a uniform target in Rax
    s, y = np.array([0.5, -1.0, 2.0]), np.zeros(3)
    got = ours(rankops.softmax_loss, [(s, y, s)], device, label_norm=True)
    want = theirs(rax.softmax_loss, [(s, y, s)], label_fn=rax.utils.normalize_probabilities)
    uniform = float(np.mean(np.log(np.exp(s).sum()) - s))
    assert got[0].tolist() == [0.0]
    np.testing.assert_allclose(want[0], [uniform], rtol=1e-12)
    # poly-1 with no positive label: 0 here, epsilon (1 - 1/n) in Rax (uniform target)
    got = ours(rankops.poly1_softmax_loss, [(s, y, s)], device, epsilon=2.0)
    want = theirs(rax.poly1_softmax_loss, [(s, y, s)], epsilon=2.0)
    assert got[0].tolist() == [0.0]
    np.testing.assert_allclose(want[0], [2.0 * (1 - 1 / 3)], rtol=1e-12)
    # lambda weights with item weights: Rax's |w_i G_i - w_j G_j| differs from |G_i - G_j|
    lists = random_lists(11, False)[4:]
    got = ours(rankops.lambdarank_loss, lists, device, with_weights=True)
    want = theirs(rax.pairwise_logistic_loss, lists, with_weights=True, scale_by_length=True,
                  lambdaweight_fn=functools.partial(rax.dcg_lambdaweight, normalize=True))
    assert np.abs(got[0] - want[0]).max() > 1e-3


@TIES
def test_softmax_label_norm(device, ties):
    # every list has a positive label (see the module docstring for the others)
    lists = [(s, np.maximum(y, (np.arange(len(y)) == 0).astype(float)), w)
             for s, y, w in random_lists(6, ties)]
    got = ours(rankops.softmax_loss, lists, device, label_norm=True)
    want = theirs(rax.softmax_loss, lists, label_fn=rax.utils.normalize_probabilities)
    assert_agree(got, want)


@TIES
@pytest.mark.parametrize("with_weights", [False, True], ids=["", "weights"])
def test_listnet(device, ties, with_weights, layout):
    # ListNet = Rax's softmax loss with softmax(y) as its label_fn (all-0 lists included:
    # both give them the uniform target)
    lists = random_lists(13, ties)
    got = ours(rankops.listnet_loss, lists, device, with_weights=with_weights, layout=layout)
    label_softmax = lambda y, where: jax.nn.softmax(y, where=where)  # noqa: E731
    if with_weights:  # Rax applies the weights before label_fn; rankops weights the target
        want = theirs(lambda s, y, weights=None, **kw: rax.softmax_loss(
            s, jnp.where(kw["where"], jax.nn.softmax(y, where=kw["where"]), 0.0) * weights, **kw),
            lists, with_weights=True)
    else:
        want = theirs(rax.softmax_loss, lists, label_fn=label_softmax)
    assert_agree(got, want)


@TIES
@pytest.mark.parametrize("epsilon", [1.0, -0.5, 4.0])
@pytest.mark.parametrize("with_weights", [False, True], ids=["", "weights"])
def test_poly1_softmax(device, ties, epsilon, with_weights, layout):
    # every list has a positive label (a list without one: 0 here, Rax's uniform target
    # gives the constant epsilon (1 - 1/n); test_documented_differences)
    lists = [(s, np.maximum(y, (np.arange(len(y)) == 0).astype(float)), w)
             for s, y, w in random_lists(12, ties)]
    got = ours(rankops.poly1_softmax_loss, lists, device, with_weights=with_weights, layout=layout,
               epsilon=epsilon)
    want = theirs(rax.poly1_softmax_loss, lists, with_weights=with_weights, epsilon=epsilon)
    assert_agree(got, want)


@TIES
def test_listmle(device, ties, layout):
    lists = random_lists(7, ties)  # label ties: both keep the input order
    got = ours(rankops.listmle_loss, lists, device, layout=layout)
    want = theirs(rax.listmle_loss, lists, jit=True)
    assert_agree(got, want, grad=not ties)
    if ties:  # Rax's gradient is wrong there (module docstring): the loss's own slope
        np.testing.assert_allclose(got[1], finite_difference_grad(rankops.listmle_loss, lists, device),
                                   rtol=1e-6, atol=1e-7)
        assert np.abs(got[1] - want[1]).max() > 1e-3  # the Rax artefact is really exercised


@TIES
@pytest.mark.parametrize("gain", ["exp2", "linear"])
@pytest.mark.parametrize("with_weights", [False, True], ids=["", "weights"])
def test_unique_softmax(device, ties, gain, with_weights, layout):
    lists = random_lists(10, ties)
    got = ours(rankops.unique_softmax_loss, lists, device, with_weights=with_weights, layout=layout,
               gain=gain)
    want = theirs(rax.unique_softmax_loss, lists, with_weights=with_weights, **RAX_GAIN[gain])
    assert_agree(got, want)


@TIES
@pytest.mark.parametrize("temperature", [1.0, 0.25])
@pytest.mark.parametrize("with_weights", [False, True], ids=["", "weights"])
def test_approx_ndcg(device, ties, temperature, with_weights):
    lists = [item for item in random_lists(8, ties) if len(item[0]) > 1]  # module docstring
    step = functools.partial(lambda x, t: jax.nn.sigmoid(x / t), t=temperature)
    ranks = functools.partial(rax.utils.approx_ranks, step_fn=step)  # rax.approx_t12n's

    def approx_ndcg(scores, labels, **kwargs):
        return -rax.ndcg_metric(scores, labels, rank_fn=ranks, **kwargs)

    got = ours(rankops.approx_ndcg_loss, lists, device, with_weights=with_weights,
               temperature=temperature)
    want = theirs(approx_ndcg, lists, with_weights=with_weights)
    assert_agree(got, want)


@TIES
def test_pointwise(device, ties):
    lists = random_lists(9, ties)
    assert_agree(ours(rankops.mse_loss, lists, device), theirs(rax.pointwise_mse_loss, lists))
    binary = [(s, np.minimum(y, 1.0), w) for s, y, w in lists]
    got = ours(rankops.sigmoid_loss, binary, device)
    want = theirs(rax.pointwise_sigmoid_loss, binary)
    at_zero = np.concatenate([s for s, _, _ in binary]) == 0
    assert_agree(got, want, grad=False)
    np.testing.assert_allclose(got[1][~at_zero], want[1][~at_zero], rtol=1e-12, atol=1e-15)
    # at s = 0 Rax's gradient is off by one (module docstring): sigmoid(0) - y by hand
    y = np.concatenate([y for _, y, _ in binary])
    np.testing.assert_allclose(got[1][at_zero], 0.5 - y[at_zero], rtol=0, atol=1e-15)
    assert at_zero.any() == ties


@TIES
@pytest.mark.parametrize("with_weights", [False, True], ids=["", "weights"])
def test_pairwise_mse(device, ties, with_weights, layout):
    # Rax forms every ordered pair in [B, L, L]; rankops never forms one (O(n) per list)
    lists = random_lists(11, ties)
    got = ours(rankops.pairwise_mse_loss, lists, device, with_weights=with_weights, layout=layout)
    want = theirs(rax.pairwise_mse_loss, lists, with_weights=with_weights)
    assert_agree(got, want)
    # "mean": both divide by the ordered pairs of the batch's lists, n^2 each
    scores, labels, weights, where = rankops_inputs(lists, device, layout)
    S, Y, W, mask = padded_lists(lists)
    w = {"weights": weights} if with_weights else {}
    np.testing.assert_allclose(rankops.pairwise_mse_loss(scores, labels, **where, **w).item(),
                               float(rax.pairwise_mse_loss(S, Y, where=mask, **({"weights": W} if with_weights else {}))),
                               rtol=1e-12)


# ---- metrics -----------------------------------------------------------------------------

METRICS = {  # rankops name -> (Rax metric, whether it takes a gain)
    "ndcg": (rax.ndcg_metric, True),
    "dcg": (rax.dcg_metric, True),
    "mrr": (rax.mrr_metric, False),
    "precision": (rax.precision_metric, False),
    "recall": (rax.recall_metric, False),
    "ap": (rax.ap_metric, False),
}


@TIES
@pytest.mark.parametrize("metric,gain", [(m, g) for m, (_, takes_gain) in METRICS.items()
                                         for g in (["exp2", "linear"] if takes_gain else [None])])
@pytest.mark.parametrize("k", [None, 1, 3, 10])
def test_metrics(device, ties, metric, gain, k, layout):
    rax_fn, _ = METRICS[metric]
    lists = random_lists(10, ties)
    scores, labels, _, where = rankops_inputs(lists, device, layout)
    gain_args = ({"gain": gain}, RAX_GAIN[gain]) if gain else ({}, {})
    got = getattr(rankops.metrics, metric)(scores, labels, k=k, reduction="none", **where,
                                           **gain_args[0])
    S, Y, _, where = padded_lists(lists)
    want = rax_fn(S, Y, where=where, topn=k, reduce_fn=None, **gain_args[1])
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-12, atol=1e-15)


def test_opa(device, layout):
    """Ordered pair accuracy on distinct scores (Rax counts a tied pair as misordered,
    rankops breaks it by position or counts it half: compared without ties); a list with
    no pair of different labels is 0 in both (Rax divides by max(pairs, 1))."""
    lists = random_lists(11, ties=False)
    scores, labels, _, where = rankops_inputs(lists, device, layout)
    S, Y, _, rax_where = padded_lists(lists)
    want = rax.opa_metric(S, Y, where=rax_where, reduce_fn=None)
    for ties in ("position", "average"):
        got = rankops.metrics.opa(scores, labels, ties=ties, reduction="none", **where)
        np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-12, atol=1e-15)
    assert np.count_nonzero(np.asarray(want) == 0) >= 3  # empty, all-equal, one-item lists


def test_opa_tie_convention(device):
    """The documented difference: constant scores order no pair for Rax (0), and rankops
    counts each tied pair half under ties="average" (0.5, the ROC AUC of a constant)."""
    y = np.array([3.0, 0.0, 1.0, 1.0, 2.0])
    s = np.zeros_like(y)
    want = float(rax.opa_metric(jnp.asarray(s), jnp.asarray(y)))
    got = float(rankops.metrics.opa(torch.tensor(s, device=device), torch.tensor(y, device=device),
                                    offsets=torch.tensor([0, 5], device=device), ties="average"))
    assert want == 0.0 and got == 0.5
