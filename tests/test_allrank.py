"""rankops against allRank (allegro/allRank 1.4.3, the PyTorch learning-to-rank library whose
losses many users come from): the same losses written by others, on padded ``[B, L]``
batches with label -1 marking padding, as allRank takes them.

This pins the migration table of the README ("Coming from allRank"): each allRank call and
the rankops call that gives its value, compared on the batch value and on the gradient
(float64 scores; allRank computes its discounts and some masks in float32, so agreement is
~1e-7 relative rather than roundoff). Conventions that differ, mapped here:
  * allRank's ``lambdaLoss`` takes log2 (``reduction_log="binary"``, its default): it is
    rankops's natural-log loss / ln 2; its ``mu`` defaults to 10 (rankops: 5).
  * allRank's ``lambdaLoss`` with ``k`` keeps the pairs with *both* items in the top k;
    rankops's keeps the pairs with *an* item in the top k (DESIGN §3). Compared without k.
  * allRank's listwise losses average over all rows of the batch, rankops's over the
    non-empty lists: equal when no row is empty. An empty row makes allRank's ``listNet``
    NaN (softmax over no item); rankops gives the loss of the other lists.
  * A single-item list's ApproxNDCG is its NDCG (-1 or 0) in allRank, 0 in rankops
    (DESIGN §3). Compared on lists of >= 2 items.
  * ``listMLE`` breaks label ties at random in allRank (a shuffle), by position in rankops.
    Compared on distinct labels.
allRank's package pins torch <= 1.8 and imports torchvision and gcsfs in its data loader
for one constant; it is installed without its dependencies (``--no-deps``) and its loss
modules are loaded with two stub modules: the data loader (that constant) and
``model_utils`` (``get_torch_device``, used by its BCE loss only), both removed again after
the import.
"""
import importlib
import importlib.util
import math
import sys
import types

import pytest
import torch

import rankops

if importlib.util.find_spec("allrank") is None:
    pytest.skip("allRank is not installed (make test installs it)", allow_module_level=True)

PADDED = -1.0  # allRank's PADDED_Y_VALUE


def _load_allrank_losses():
    data = types.ModuleType("allrank.data.dataset_loading")
    data.PADDED_Y_VALUE = PADDED
    utils = types.ModuleType("allrank.models.model_utils")
    utils.get_torch_device = lambda: torch.device("cpu")
    saved = {name: sys.modules.get(name) for name in (data.__name__, utils.__name__)}
    sys.modules[data.__name__], sys.modules[utils.__name__] = data, utils
    try:
        return importlib.import_module("allrank.models.losses")
    finally:  # leave no stub behind for other importers
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


allrank = _load_allrank_losses()


def batch(seed, *, lengths=(12, 7, 2, 9, 3, 12), distinct_labels=False):
    """Scores, labels and mask ``[B, L]`` (float64), and allRank's labels with -1 padding."""
    g = torch.Generator().manual_seed(seed)
    B, L = len(lengths), max(lengths)
    S = torch.randn(B, L, generator=g, dtype=torch.float64) * 1.5
    if distinct_labels:
        Y = torch.stack([torch.randperm(L, generator=g) for _ in range(B)]).double() * 0.25
    else:
        Y = torch.randint(0, 5, (B, L), generator=g).double()
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    Y_allrank = torch.where(mask, Y, torch.full_like(Y, PADDED))
    return S, Y, mask, Y_allrank


def assert_same_loss_and_grad(theirs_fn, ours_fn, S, *, rtol=1e-6):
    S1, S2 = S.clone().requires_grad_(), S.clone().requires_grad_()
    theirs, ours = theirs_fn(S1), ours_fn(S2)
    assert ours.item() == pytest.approx(theirs.item(), rel=rtol)
    theirs.backward()
    ours.backward()
    scale = S1.grad.abs().max()
    torch.testing.assert_close(S2.grad, S1.grad, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("seed", [0, 1])
def test_ranknet(seed):
    S, Y, mask, Ya = batch(seed)
    assert_same_loss_and_grad(lambda s: allrank.rankNet(s, Ya),
                              lambda s: rankops.ranknet_loss(s, Y, mask=mask), S)
    assert_same_loss_and_grad(lambda s: allrank.rankNet(s, Ya, weight_by_diff=True),
                              lambda s: rankops.pairwise_loss(s, Y, mask=mask, weight="label_diff"), S)


SCHEMES = {  # allRank weighing_scheme -> rankops pair weight
    None: "none",
    "rankNet_scheme": "none",
    "rankNetWeightedByGTDiff_scheme": "label_diff",
    "lambdaRank_scheme": "ndcg",
    "ndcgLoss2_scheme": "ndcg2",
    "ndcgLoss2PP_scheme": "ndcg2pp",
}


@pytest.mark.parametrize("scheme", list(SCHEMES), ids=str)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_lambda_loss(scheme, reduction, sigma):
    # gaps small enough that allRank's clamp of each pair's probability at 1e-10 never
    # bites (see the next test)
    S, Y, mask, Ya = batch(2)
    S = S / sigma
    assert_same_loss_and_grad(
        lambda s: allrank.lambdaLoss(s, Ya, weighing_scheme=scheme, sigma=sigma, reduction=reduction),
        lambda s: rankops.pairwise_loss(s, Y, mask=mask, weight=SCHEMES[scheme], sigma=sigma, mu=10.0,
                                        reduction=reduction) / math.log(2), S)
    # reduction_log="natural" is rankops's loss itself
    assert_same_loss_and_grad(
        lambda s: allrank.lambdaLoss(s, Ya, weighing_scheme=scheme, sigma=sigma, reduction=reduction,
                                     reduction_log="natural"),
        lambda s: rankops.pairwise_loss(s, Y, mask=mask, weight=SCHEMES[scheme], sigma=sigma, mu=10.0,
                                        reduction=reduction), S)


def test_lambda_loss_huge_gap_is_clamped_in_allrank_exact_in_rankops():
    # allRank clamps sigmoid(sigma d)^w at 1e-10, so a badly misordered pair costs at most
    # -log2(1e-10) = 33.2 bits and pushes back with zero gradient; rankops's logistic is
    # exact for any gap: log(1 + e^30) nats, slope -sigmoid(30)
    S = torch.tensor([[-30.0, 0.0]], dtype=torch.float64, requires_grad=True)
    Y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    theirs = allrank.lambdaLoss(S, Y, reduction="sum")
    theirs.backward()
    assert theirs.item() == pytest.approx(-math.log2(1e-10), rel=1e-6)
    assert S.grad.abs().max().item() == 0.0
    s = S.detach().clone().requires_grad_()
    ours = rankops.ranknet_loss(s, Y, reduction="sum")
    ours.backward()
    assert ours.item() == pytest.approx(30.0 + math.log1p(math.exp(-30.0)), rel=1e-15)
    assert s.grad[0, 0].item() == pytest.approx(-1.0 / (1.0 + math.exp(-30.0)), rel=1e-15)


def test_shortcuts_and_mu():
    # the README's rows name the shortcut functions and mu; allRank's mu defaults to 10
    S, Y, mask, Ya = batch(8)
    S = S / 2.5
    assert_same_loss_and_grad(lambda s: allrank.lambdaLoss(s, Ya, weighing_scheme="lambdaRank_scheme"),
                              lambda s: rankops.lambdarank_loss(s, Y, mask=mask, reduction="sum") / math.log(2), S)
    assert_same_loss_and_grad(lambda s: allrank.lambdaLoss(s, Ya, weighing_scheme="ndcgLoss2_scheme"),
                              lambda s: rankops.lambdaloss(s, Y, mask=mask, variant="ndcg2", reduction="sum")
                              / math.log(2), S)
    for mu in (10.0, 5.0, 0.5):
        assert_same_loss_and_grad(
            lambda s: allrank.lambdaLoss(s, Ya, weighing_scheme="ndcgLoss2PP_scheme", mu=mu),
            lambda s: rankops.lambdaloss(s, Y, mask=mask, variant="ndcg2pp", mu=mu, reduction="sum")
            / math.log(2), S)


def test_lambda_loss_top_k_keeps_other_pairs():
    # allRank's k keeps pairs with both items in the top k, rankops's pairs with either:
    # rankops counts every pair allRank counts, and more
    S, Y, mask, Ya = batch(3)
    theirs = allrank.lambdaLoss(S, Ya, weighing_scheme="lambdaRank_scheme", k=3, reduction="sum")
    ours = rankops.lambdarank_loss(S, Y, mask=mask, k=3, reduction="sum") / math.log(2)
    assert ours.item() > theirs.item() * (1 + 1e-3)


def test_listnet():
    S, Y, mask, Ya = batch(4)
    assert_same_loss_and_grad(lambda s: allrank.listNet(s, Ya),
                              lambda s: rankops.listnet_loss(s, Y, mask=mask), S)


def test_listnet_empty_row_is_nan_in_allrank_finite_in_rankops():
    S, Y, mask, Ya = batch(5, lengths=(6, 0, 4))
    assert allrank.listNet(S, Ya).isnan()
    ours = rankops.listnet_loss(S, Y, mask=mask)
    keep = torch.tensor([0, 2])
    # allRank adds eps = 1e-10 to the probabilities before the log: ~1e-9 apart
    assert ours.item() == pytest.approx(allrank.listNet(S[keep], Ya[keep]).item(), rel=1e-7)


def test_listmle():
    S, Y, mask, Ya = batch(6, distinct_labels=True)
    assert_same_loss_and_grad(lambda s: allrank.listMLE(s, Ya),
                              lambda s: rankops.listmle_loss(s, Y, mask=mask), S)


def test_approx_ndcg_one_item_lists_and_the_mean():
    # a one-item list: allRank gives its NDCG (-1 for a relevant item), rankops 0 (DESIGN
    # §3); allRank's mean divides by all rows, rankops's by the non-empty lists
    S, Y, mask, Ya = batch(9, lengths=(5, 1, 0, 4))
    Y[1, 0], Ya[1, 0] = 2.0, 2.0
    theirs_one = allrank.approxNDCGLoss(S[1:2], Ya[1:2])
    assert theirs_one.item() == pytest.approx(-1.0, rel=1e-6)
    assert rankops.approx_ndcg_loss(S[1:2], Y[1:2], mask=mask[1:2]).item() == 0.0
    ours = rankops.approx_ndcg_loss(S, Y, mask=mask, reduction="none")
    keep = torch.tensor([0, 3])
    per_row = [allrank.approxNDCGLoss(S[b:b + 1], Ya[b:b + 1]).item() for b in keep.tolist()]
    torch.testing.assert_close(ours[keep], torch.tensor(per_row, dtype=ours.dtype), rtol=1e-6, atol=0)
    assert ours[1].item() == 0.0 and ours[2].item() == 0.0
    # means: allRank over the 4 rows (its empty row's NDCG is 0), rankops over the 3 non-empty
    assert allrank.approxNDCGLoss(S, Ya).item() == pytest.approx((sum(per_row) - 1.0) / 4, rel=1e-6)
    assert rankops.approx_ndcg_loss(S, Y, mask=mask).item() == pytest.approx(sum(per_row) / 3, rel=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 4.0])
def test_approx_ndcg(alpha):
    S, Y, mask, Ya = batch(7)
    assert_same_loss_and_grad(lambda s: allrank.approxNDCGLoss(s, Ya, alpha=alpha),
                              lambda s: rankops.approx_ndcg_loss(s, Y, mask=mask, temperature=1.0 / alpha), S)
