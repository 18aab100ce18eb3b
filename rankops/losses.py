"""Ranking losses over packed, variable-length lists (DESIGN §3).

Every loss takes ``scores, labels`` in any layout of :mod:`rankops.segments` (packed
``[N]`` with ``offsets``/``lengths``/``group_ids``, or padded ``[B, L]`` with
``lengths``/``mask``) and returns a scalar (``reduction="mean"``/``"sum"``) or one value
per list (``"none"``, shape ``[B]``). Losses of float16/bfloat16 scores are computed and
returned in float32; gradients come back in the dtype of ``scores``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import segments
from ._common import (GAINS, PAIR_FNS, PAIR_WEIGHTS, REDUCTIONS, check_choice, check_float,
                      check_k, check_kernel_autograd, check_positive, exp2_label_bounds, reduce)
from ._ops import ops

__all__ = [
    "pairwise_loss",
    "ranknet_loss",
    "pairwise_hinge_loss",
    "pairwise_soft_zero_one_loss",
    "lambdarank_loss",
    "lambdaloss",
    "pairwise_mse_loss",
]


NDCG_WEIGHTS = ("ndcg", "ndcg2", "ndcg2pp")


def pairwise_loss(
    scores: Tensor,
    labels: Tensor,
    *,
    offsets: Optional[Tensor] = None,
    lengths: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    group_ids: Optional[Tensor] = None,
    weights: Optional[Tensor] = None,
    pair_fn: str = "logistic",
    weight: str = "none",
    sigma: float = 1.0,
    margin: float = 1.0,
    k: Optional[int] = None,
    mu: float = 5.0,
    gain: str = "exp2",
    reduction: str = "mean",
    validate: bool = True,
) -> Tensor:
    r"""The pairwise family: ``loss = sum_{y_i > y_j} w_i * lambda_ij * phi(s_i - s_j)`` per list.

    Args:
        scores, labels: ``[N]`` packed or ``[B, L]`` padded; labels are graded relevance >= 0.
        offsets / lengths / mask / group_ids: the list layout (see :mod:`rankops.segments`).
        weights: optional item weights ``w`` (same shape as scores); a pair is weighted by
            the weight of its more relevant item.
        pair_fn: ``phi``: ``"logistic"`` (RankNet) ``log(1 + exp(-sigma d))``, ``"hinge"``
            ``max(0, margin - d)``, ``"soft_zero_one"`` ``sigmoid(-sigma d)``.
        weight: ``lambda``: ``"none"`` (1), ``"label_diff"`` ``|y_i - y_j|``, ``"ndcg"``
            (LambdaRank) ``|G_i - G_j| |D(r_i) - D(r_j)| / IDCG@k``, ``"ndcg2"`` (LambdaLoss
            NDCG-Loss2) ``|G_i - G_j| |D(|r_i - r_j|) - D(|r_i - r_j| + 1)| / IDCG@k``,
            ``"ndcg2pp"`` (NDCG-Loss2++) ``ndcg + mu * ndcg2``. Ranks r come from the scores
            (descending, ties by position) and are not differentiated.
        k: top-k: only pairs with an item ranked <= k (O(n k) work); IDCG becomes IDCG@k and
            the ``ndcg`` discount is 0 beyond k.
        gain: ``"exp2"`` ``G(y) = 2^y - 1`` or ``"linear"`` ``G(y) = y``.
        reduction: ``"mean"`` (sum over lists / number of pairs y_i > y_j in the batch,
            including pairs that top-k or a zero weight left out; 0 pairs give 0),
            ``"sum"``, or ``"none"`` (``[B]``).
        validate: check offsets and labels values (one host sync on CUDA; skipped under
            torch.compile).

    Deterministic on CPU and CUDA; O(N) memory; empty and single-item lists give 0.
    """
    lists = segments.as_packed(scores, labels, weights=weights, offsets=offsets, lengths=lengths,
                               mask=mask, group_ids=group_ids, validate=validate,
                               label_bounds=exp2_label_bounds(scores, _pairwise_takes_exp2_gain(weight, gain)))
    return _pairwise_loss_packed(lists, pair_fn=pair_fn, weight=weight, sigma=sigma, margin=margin,
                                 k=k, mu=mu, gain=gain, reduction=reduction)


def _pairwise_takes_exp2_gain(weight="none", gain="exp2", **_) -> bool:
    """Whether labels go through ``G(y) = 2^y - 1`` (and must be bounded): the NDCG weights."""
    return weight in NDCG_WEIGHTS and gain == "exp2"


def _pairwise_loss_packed(lists: segments.PackedLists, *, pair_fn="logistic", weight="none",
                          sigma=1.0, margin=1.0, k=None, mu=5.0, gain="exp2", reduction="mean"):
    """:func:`pairwise_loss` on lists already resolved by :func:`segments.as_packed`."""
    check_choice("pair_fn", pair_fn, PAIR_FNS)
    check_choice("weight", weight, PAIR_WEIGHTS)
    check_choice("gain", gain, GAINS)
    check_choice("reduction", reduction, REDUCTIONS)
    k = check_k(k)
    sigma = check_positive("sigma", sigma)
    margin, mu = check_float("margin", margin), check_float("mu", mu)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if mu < 0:
        raise ValueError(f"mu must be >= 0, got {mu}")
    check_kernel_autograd(lists.scores, lists.labels, lists.weights)
    compute_grad = lists.scores.requires_grad and torch.is_grad_enabled()
    loss, _, num_pairs = ops.pairwise_loss(
        lists.scores, lists.labels, lists.offsets, lists.weights, pair_fn, weight, sigma, margin,
        k, mu, gain, compute_grad)
    return reduce(lists.own_lists(loss), reduction, lambda: lists.own_lists(num_pairs).sum())


def ranknet_loss(scores: Tensor, labels: Tensor, *, sigma: float = 1.0, **kwargs) -> Tensor:
    """RankNet (Burges et al. 2005): logistic pair function, unit pair weights."""
    return pairwise_loss(scores, labels, pair_fn="logistic", weight="none", sigma=sigma, **kwargs)


def pairwise_hinge_loss(scores: Tensor, labels: Tensor, *, margin: float = 1.0, **kwargs) -> Tensor:
    """RankSVM-style pairwise hinge: ``max(0, margin - (s_i - s_j))`` per pair."""
    return pairwise_loss(scores, labels, pair_fn="hinge", weight="none", margin=margin, **kwargs)


def pairwise_soft_zero_one_loss(scores: Tensor, labels: Tensor, *, sigma: float = 1.0, **kwargs) -> Tensor:
    """Smooth 0-1 pair loss: ``sigmoid(-sigma (s_i - s_j))`` per pair."""
    return pairwise_loss(scores, labels, pair_fn="soft_zero_one", weight="none", sigma=sigma, **kwargs)


def lambdarank_loss(scores: Tensor, labels: Tensor, *, sigma: float = 1.0, k: Optional[int] = None,
                    gain: str = "exp2", **kwargs) -> Tensor:
    """LambdaRank (Burges 2010): logistic pairs weighted by ``|delta NDCG@k|`` of swapping them."""
    return pairwise_loss(scores, labels, pair_fn="logistic", weight="ndcg", sigma=sigma, k=k,
                         gain=gain, **kwargs)


def lambdaloss(scores: Tensor, labels: Tensor, *, variant: str = "ndcg2pp", sigma: float = 1.0,
               k: Optional[int] = None, mu: float = 5.0, gain: str = "exp2", **kwargs) -> Tensor:
    """LambdaLoss (Wang et al. 2018): ``variant="ndcg2"`` (NDCG-Loss2) or ``"ndcg2pp"`` (NDCG-Loss2++)."""
    check_choice("variant", variant, ("ndcg2", "ndcg2pp"))
    return pairwise_loss(scores, labels, pair_fn="logistic", weight=variant, sigma=sigma, k=k,
                         mu=mu, gain=gain, **kwargs)


def pairwise_mse_loss(
    scores: Tensor,
    labels: Tensor,
    *,
    offsets: Optional[Tensor] = None,
    lengths: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    group_ids: Optional[Tensor] = None,
    weights: Optional[Tensor] = None,
    reduction: str = "mean",
    validate: bool = True,
) -> Tensor:
    r"""Pairwise squared error ``sum_{i, j} w_i ((s_i - s_j) - (y_i - y_j))^2`` per list,
    over every ordered pair of the list, tied labels included (Rax's ``pairwise_mse_loss``).

    Computed in O(n) per list, exactly, without forming a pair: with ``d = s - y`` the
    pair term is ``(d_i - d_j)^2``, so the list's sum is
    ``n sum_i w_i c_i^2 - 2 (sum_i w_i c_i)(sum_j c_j) + (sum_i w_i) sum_j c_j^2`` for
    ``c = d - mean(d)`` (an identity for any shift; the centred form has no cancellation
    when scores and labels are large and close).

    Args:
        weights: optional item weights; the pair (i, j) is weighted by ``w_i`` (as Rax).
        reduction: ``"mean"`` (sum over lists / number of ordered pairs ``sum_b n_b^2`` in
            the batch, each item's pair with itself included, as Rax), ``"sum"``, or
            ``"none"`` (``[B]``).

    An infinite score makes its list's loss NaN (inf - inf, as in Rax's own pair of it).
    """
    lists = segments.as_packed(scores, labels, weights=weights, offsets=offsets, lengths=lengths,
                               mask=mask, group_ids=group_ids, validate=validate)
    return _pairwise_mse_packed(lists, reduction=reduction)


def _pairwise_mse_packed(lists: segments.PackedLists, *, reduction="mean"):
    """:func:`pairwise_mse_loss` on lists already resolved by :func:`segments.as_packed`."""
    check_choice("reduction", reduction, REDUCTIONS)
    acc = torch.float64 if lists.scores.dtype == torch.float64 else torch.float32
    offsets = lists.offsets
    n = (offsets[1:] - offsets[:-1]).to(acc)
    d = lists.scores.to(acc) - lists.labels.to(acc)

    def per_list_sum(x):  # in item order per list: deterministic, differentiable, traceable
        return torch.segment_reduce(x, "sum", offsets=offsets, initial=0)

    # The shift is held constant: the identity above holds for any shift, so its gradient
    # needs none, and a gather's backward (a scatter-add, atomic on CUDA) is avoided.
    shift = (per_list_sum(d.detach()) / n.clamp_min(1))
    c = d - shift[segments.segment_ids(offsets, d.shape[0])]
    c_sum, c_sq = per_list_sum(c), per_list_sum(c * c)
    if lists.weights is None:
        loss = 2 * (n * c_sq - c_sum * c_sum)
    else:
        w = lists.weights.to(acc)
        wc = w * c
        loss = n * per_list_sum(wc * c) - 2 * per_list_sum(wc) * c_sum + per_list_sum(w) * c_sq
    return reduce(lists.own_lists(loss), reduction, lambda: lists.own_lists(n * n).sum())
