"""Listwise (softmax, ListNet, poly-1 softmax, ListMLE, unique softmax, ApproxNDCG) and
pointwise (sigmoid, MSE) losses over packed, variable-length lists (DESIGN §3).

Every loss takes ``scores, labels`` in any layout of :mod:`rankops.segments` (packed
``[N]`` with ``offsets``/``lengths``/``group_ids``, or padded ``[B, L]`` with
``lengths``/``mask``), optional item ``weights``, and returns a scalar
(``reduction="mean"``/``"sum"``) or one value per list (``"none"``, shape ``[B]``).

Reductions: ``"mean"`` divides the sum over lists by the number of non-empty lists
(listwise) or by the number of items (pointwise); empty lists give 0, never NaN. Losses
of float16/bfloat16 scores are computed and returned in float32; gradients come back in
the dtype of ``scores``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import segments
from ._common import (GAINS, REDUCTIONS, check_choice, check_float, check_k, check_kernel_autograd,
                      check_positive, exp2_label_bounds, reduce)
from ._ops import ops

__all__ = ["softmax_loss", "listnet_loss", "poly1_softmax_loss", "listmle_loss", "plistmle_loss",
           "unique_softmax_loss", "approx_ndcg_loss", "sigmoid_loss", "mse_loss"]


def _layout(scores, labels, weights, offsets, lengths, mask, group_ids, validate, label_bounds=()):
    return segments.as_packed(scores, labels, weights=weights, offsets=offsets, lengths=lengths,
                              mask=mask, group_ids=group_ids, validate=validate,
                              label_bounds=label_bounds)


def _compute_grad(lists: segments.PackedLists) -> bool:
    return lists.scores.requires_grad and torch.is_grad_enabled()


def _reduce_lists(loss: Tensor, lists: segments.PackedLists, reduction: str) -> Tensor:
    """Listwise reduction: ``"mean"`` divides by the number of non-empty lists."""
    def non_empty_lists():
        B = lists.num_lists
        return (lists.offsets[1:B + 1] > lists.offsets[:B]).sum()

    return reduce(lists.own_lists(loss), reduction, non_empty_lists)


# ---- packed implementations (also used by rankops.nn.CombinedLoss) -------------------

def _softmax_packed(lists, *, label_norm=False, reduction="mean", epsilon=0.0, label_softmax=False):
    check_choice("reduction", reduction, REDUCTIONS)
    if not isinstance(label_norm, bool):
        raise TypeError(f"label_norm must be a bool, got {type(label_norm).__name__}")
    epsilon = check_float("epsilon", epsilon)
    if not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be finite, got {epsilon}")
    check_kernel_autograd(lists.scores, lists.labels, lists.weights)
    loss, _ = ops.softmax_loss(lists.scores, lists.labels, lists.offsets, lists.weights,
                               label_norm, epsilon, label_softmax, _compute_grad(lists))
    return _reduce_lists(loss, lists, reduction)


def _listnet_packed(lists, *, reduction="mean"):
    return _softmax_packed(lists, reduction=reduction, label_softmax=True)


def _poly1_softmax_packed(lists, *, epsilon=1.0, label_norm=False, reduction="mean"):
    return _softmax_packed(lists, label_norm=label_norm, reduction=reduction, epsilon=epsilon)


def _listmle_packed(lists, *, reduction="mean", position_weight="none"):
    check_choice("reduction", reduction, REDUCTIONS)
    check_kernel_autograd(lists.scores, lists.labels, lists.weights)
    loss, _ = ops.listmle_loss(lists.scores, lists.labels, lists.offsets, lists.weights,
                               position_weight, _compute_grad(lists))
    return _reduce_lists(loss, lists, reduction)


def _label_order_positions(lists: segments.PackedLists):
    """Each item's 0-based position in its list's order by label descending (label ties
    by position: ListMLE's order) and its list's length, both ``[N]`` int64."""
    n_items = lists.labels.shape[0]
    offsets = lists.offsets
    list_of = segments.segment_ids(offsets, n_items)
    # two stable sorts: by label descending, then by list (keeps the label order inside)
    by_label = torch.argsort(-lists.labels.to(torch.float64), stable=True)
    order = by_label[torch.argsort(list_of[by_label], stable=True)]
    position = torch.empty_like(order)
    position[order] = torch.arange(n_items, device=order.device) - offsets[list_of[order]]
    return position, (offsets[1:] - offsets[:-1])[list_of]


def _custom_position_weights(lists: segments.PackedLists, position_weight, dtype) -> Tensor:
    """``position_weight(position, n)`` of every item, normalised to sum 1 per list."""
    position, n = _label_order_positions(lists)
    raw = position_weight(position, n)
    if not isinstance(raw, Tensor) or raw.shape != position.shape:
        raise ValueError(f"position_weight(position, n) must return a tensor of shape {tuple(position.shape)}, "
                         f"got {type(raw).__name__ if not isinstance(raw, Tensor) else tuple(raw.shape)}")
    raw = raw.detach().to(dtype)
    if not segments._skip_data_checks(raw) and not bool(((raw >= 0) & torch.isfinite(raw)).all()):
        raise ValueError("position_weight(position, n) must return finite weights >= 0")
    total = torch.segment_reduce(raw, "sum", offsets=lists.offsets, initial=0)
    list_of = segments.segment_ids(lists.offsets, raw.shape[0])
    return raw / torch.where(total > 0, total, torch.ones_like(total))[list_of]


def _plistmle_packed(lists, *, position_weight="exp2", reduction="mean"):
    if position_weight == "exp2":  # in the kernel, which knows each item's position
        return _listmle_packed(lists, reduction=reduction, position_weight="exp2")
    if not callable(position_weight):
        raise ValueError(f"position_weight must be 'exp2' or a function (position, n) -> weights, "
                         f"got {position_weight!r}")
    acc = torch.float64 if lists.scores.dtype == torch.float64 else torch.float32
    alpha = _custom_position_weights(lists, position_weight, acc)
    weights = alpha if lists.weights is None else alpha * lists.weights.to(acc)
    return _listmle_packed(lists._replace(weights=weights), reduction=reduction)


def _unique_softmax_packed(lists, *, gain="exp2", reduction="mean"):
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("gain", gain, GAINS)
    check_kernel_autograd(lists.scores, lists.labels, lists.weights)
    loss, _ = ops.unique_softmax_loss(lists.scores, lists.labels, lists.offsets, lists.weights,
                                      gain, _compute_grad(lists))
    return _reduce_lists(loss, lists, reduction)


def _takes_exp2_gain(gain="exp2", **_) -> bool:
    """Whether labels go through ``G(y) = 2^y - 1`` (and must be bounded)."""
    return gain == "exp2"


def _approx_ndcg_packed(lists, *, temperature=1.0, k=None, gain="exp2", reduction="mean"):
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("gain", gain, GAINS)
    k = check_k(k)
    temperature = check_positive("temperature", temperature)
    check_kernel_autograd(lists.scores, lists.labels, lists.weights)
    loss, _ = ops.approx_ndcg_loss(lists.scores, lists.labels, lists.offsets, lists.weights,
                                   temperature, k, gain, _compute_grad(lists))
    # DESIGN §3: a single-item list gives 0 (the kernel's -NDCG would be a constant -1 there,
    # with zero gradient).
    lengths = lists.offsets[1:] - lists.offsets[:-1]
    loss = torch.where(lengths >= 2, loss, torch.zeros_like(loss))
    return _reduce_lists(loss, lists, reduction)


def _pointwise_packed(lists, per_item_fn, reduction):
    check_choice("reduction", reduction, REDUCTIONS)
    acc = torch.float64 if lists.scores.dtype == torch.float64 else torch.float32
    s = lists.scores.to(acc)
    y = lists.labels.to(acc)
    per_item = per_item_fn(s, y)
    if lists.weights is not None:
        per_item = per_item * lists.weights.to(acc)
    B = lists.num_lists
    n_items = lists.offsets[B]
    if lists.has_padding_list:  # the trailing padding list must not count
        valid = torch.arange(per_item.shape[0], device=per_item.device) < n_items
        per_item = torch.where(valid, per_item, torch.zeros_like(per_item))
    if reduction == "sum":
        return per_item.sum()
    if reduction == "mean":
        return per_item.sum() / n_items.clamp_min(1).to(acc)
    # per-list sums, each over its own items only (a global prefix sum differenced at the
    # offsets let one huge or NaN item spoil every later list); segment_reduce sums each
    # segment in order: deterministic, differentiable, traceable
    return lists.own_lists(torch.segment_reduce(per_item, "sum", offsets=lists.offsets, initial=0))


def _sigmoid_items(s, y):
    # = binary_cross_entropy_with_logits, whose CPU kernel enters a parallel region even
    # for a few items (milliseconds on a loaded machine); exp(-40) is below float64's eps.
    return F.softplus(s, threshold=40.0) - y.clamp(0, 1) * s


def _mse_items(s, y):
    return (s - y) ** 2


def _sigmoid_packed(lists, *, reduction="mean"):
    return _pointwise_packed(lists, _sigmoid_items, reduction)


def _mse_packed(lists, *, reduction="mean"):
    return _pointwise_packed(lists, _mse_items, reduction)


# ---- public functions -----------------------------------------------------------------

def softmax_loss(
    scores: Tensor,
    labels: Tensor,
    *,
    offsets: Optional[Tensor] = None,
    lengths: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    group_ids: Optional[Tensor] = None,
    weights: Optional[Tensor] = None,
    label_norm: bool = False,
    reduction: str = "mean",
    validate: bool = True,
) -> Tensor:
    r"""Softmax cross-entropy (Rax's softmax loss: ListNet's top-one cross-entropy with the
    labels themselves as the target; :func:`listnet_loss` takes softmax(y)): per list
    ``loss = -sum_i t_i log softmax(s)_i`` with targets ``t_i = w_i y_i`` (raw labels,
    as Rax), or ``t_i = w_i y_i / sum_j |w_j y_j|`` with ``label_norm=True`` (the sum of
    the targets for non-negative weights).

    A list whose targets are all 0 (e.g. all labels 0) gives 0 and zero gradient. The gradient,
    ``(sum_j t_j) softmax(s)_i - t_i``, is fused into the forward pass (segmented
    log-sum-exp). ``reduction="mean"`` divides by the number of non-empty lists.
    """
    lists = _layout(scores, labels, weights, offsets, lengths, mask, group_ids, validate)
    return _softmax_packed(lists, label_norm=label_norm, reduction=reduction)


def listnet_loss(
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
    r"""ListNet (Cao et al., ICML 2007) with its top-one probabilities: the cross-entropy
    between ``softmax(y)`` and ``softmax(s)`` within each list,

    ``loss = -sum_i w_i softmax(y)_i log softmax(s)_i``,

    as allRank's ``listNet`` (without weights). Unlike :func:`softmax_loss` (targets
    ``w y``, Rax's convention), every non-empty list has a target: a list whose labels are
    all equal, all-0 lists included, has the uniform target and so pulls its scores
    together. The softmax kernel takes the labels' softmax per list itself (one more max
    and sum of exp), so ListNet costs about what :func:`softmax_loss` does.
    ``reduction="mean"`` divides by the number of non-empty lists.
    """
    lists = _layout(scores, labels, weights, offsets, lengths, mask, group_ids, validate)
    return _listnet_packed(lists, reduction=reduction)


def poly1_softmax_loss(
    scores: Tensor,
    labels: Tensor,
    *,
    offsets: Optional[Tensor] = None,
    lengths: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    group_ids: Optional[Tensor] = None,
    weights: Optional[Tensor] = None,
    epsilon: float = 1.0,
    label_norm: bool = False,
    reduction: str = "mean",
    validate: bool = True,
) -> Tensor:
    r"""Poly-1 softmax (Leng et al., *PolyLoss*, ICLR 2022; Rax's ``poly1_softmax_loss``):
    the softmax loss plus the first polynomial term of its expansion,

    ``loss = softmax_loss + epsilon * (1 - sum_i q_i softmax(s)_i)``, ``q_i = t_i / sum_j |t_j|``,

    with ``t = w y`` and the softmax part as :func:`softmax_loss` (``label_norm`` applies
    to it only; q is always the normalised target, as in Rax). ``epsilon > 0`` pushes
    harder on lists whose relevant items the softmax already ranks well; ``epsilon = 0``
    is the softmax loss. A list whose targets are all 0 gives 0 (Rax: a uniform q, so a
    constant ``epsilon (1 - 1/n)``), and a single item gives 0 as in every loss (Rax too).
    One fused pass per list, no ``[L, L]``.
    ``reduction="mean"`` divides by the number of non-empty lists.
    """
    lists = _layout(scores, labels, weights, offsets, lengths, mask, group_ids, validate)
    return _poly1_softmax_packed(lists, epsilon=epsilon, label_norm=label_norm, reduction=reduction)


def listmle_loss(
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
    r"""ListMLE (Xia et al. 2008): the Plackett-Luce negative log-likelihood of the order
    ``pi`` by label descending (label ties broken by position in the list):

    ``loss = sum_k w_{pi_k} (logsumexp_{m >= k} s_{pi_m} - s_{pi_k})``.

    Weights: item weight ``w_{pi_k}`` scales the term of the position that item takes in
    ``pi`` (default 1: the plain likelihood). The gradient is exact for tied scores: the
    suffix log-sum-exp is a stable scan, and no max-shift enters the gradient.
    ``reduction="mean"`` divides by the number of non-empty lists.
    """
    lists = _layout(scores, labels, weights, offsets, lengths, mask, group_ids, validate)
    return _listmle_packed(lists, reduction=reduction)


def plistmle_loss(
    scores: Tensor,
    labels: Tensor,
    *,
    offsets: Optional[Tensor] = None,
    lengths: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    group_ids: Optional[Tensor] = None,
    weights: Optional[Tensor] = None,
    position_weight="exp2",
    reduction: str = "mean",
    validate: bool = True,
) -> Tensor:
    r"""Position-aware ListMLE (p-ListMLE, Lan et al., UAI 2014): ListMLE whose term at
    position r of the label order (0-based) is weighted by ``alpha_r``, normalised to sum 1
    over the list, so that mistakes at the top cost most:

    ``loss = sum_r alpha_r w_{pi_r} (logsumexp_{m >= r} s_{pi_m} - s_{pi_r})``.

    ``position_weight="exp2"``: ``alpha_r ∝ 2^(n - r) - 1`` (sentence-transformers'
    ``PListMLELambdaWeight`` default), evaluated in the ListMLE kernel without overflow for
    any n (the cost of ``listmle_loss``); or a function
    ``(position, n) -> weights`` of ``[N]`` int64 tensors (each item's position and its list's
    length) giving weights >= 0, normalised per list (a list whose weights sum to 0 has
    loss 0; the weights are checked with one host read, none under torch.compile). The weights depend on the labels only: the gradient is ListMLE's kernel's,
    exact at tied scores. ``reduction="mean"`` divides by the number of non-empty lists.
    """
    lists = _layout(scores, labels, weights, offsets, lengths, mask, group_ids, validate)
    return _plistmle_packed(lists, position_weight=position_weight, reduction=reduction)


def unique_softmax_loss(
    scores: Tensor,
    labels: Tensor,
    *,
    offsets: Optional[Tensor] = None,
    lengths: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    group_ids: Optional[Tensor] = None,
    weights: Optional[Tensor] = None,
    gain: str = "exp2",
    reduction: str = "mean",
    validate: bool = True,
) -> Tensor:
    r"""Unique softmax (Zhu & Klabjan, *Listwise Learning to Rank by Exploring Unique
    Ratings*, WSDM 2020; Rax's ``unique_softmax_loss``): each item competes in its own
    softmax against the items with a strictly smaller label only,

    ``loss = -sum_i w_i G(y_i) log(exp(s_i) / (exp(s_i) + sum_{j: y_j < y_i} exp(s_j)))``,

    ``G(y) = 2^y - 1`` (``gain="exp2"``, Rax's default) or ``y`` (``"linear"``). Items of
    equal label never compete, so graded labels need no tie-break (unlike ListMLE), and
    label-0 items add no term of their own. O(n log n) per list (a sort by label and two
    scans; Rax and the reference build ``[L, L]``), the gradient fused into the forward
    pass with every exponent <= 0. A list with one label value (or one item) gives 0;
    ``reduction="mean"`` divides by the number of non-empty lists.
    """
    lists = _layout(scores, labels, weights, offsets, lengths, mask, group_ids, validate,
                    exp2_label_bounds(scores, _takes_exp2_gain(gain)))
    return _unique_softmax_packed(lists, gain=gain, reduction=reduction)


def approx_ndcg_loss(
    scores: Tensor,
    labels: Tensor,
    *,
    offsets: Optional[Tensor] = None,
    lengths: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    group_ids: Optional[Tensor] = None,
    weights: Optional[Tensor] = None,
    temperature: float = 1.0,
    k: Optional[int] = None,
    gain: str = "exp2",
    reduction: str = "mean",
    validate: bool = True,
) -> Tensor:
    r"""ApproxNDCG (Qin et al. 2010): ``-NDCG`` with the rank replaced by the smooth rank
    ``r_i = 1 + sum_{j != i} sigmoid((s_j - s_i) / T)``:

    ``loss = -sum_{i : r_i <= k} w_i G(y_i) / log2(1 + r_i) / IDCG@k``,

    ``G(y) = 2^y - 1`` (``gain="exp2"``) or ``y`` (``"linear"``); IDCG@k is exact (the
    ordering by ``w G`` descending). ``k``: items whose smooth rank exceeds k contribute
    nothing (a hard cut). A list with IDCG = 0 (no relevant item) gives 0 and still counts
    in the mean; so does a single-item list (DESIGN §3: single-item lists give 0, although
    its NDCG is 1).
    O(n^2) per list in time, O(n) memory; the gradient
    ``(1/T) sum_j sigmoid'((s_j - s_m)/T) (a_j - a_m)``, ``a_i = d loss / d r_i``, is fused
    into the forward pass. ``reduction="mean"`` divides by the number of non-empty lists.
    """
    lists = _layout(scores, labels, weights, offsets, lengths, mask, group_ids, validate,
                    exp2_label_bounds(scores, _takes_exp2_gain(gain)))
    return _approx_ndcg_packed(lists, temperature=temperature, k=k, gain=gain, reduction=reduction)


def sigmoid_loss(
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
    r"""Pointwise binary cross-entropy with logits, on labels clipped to [0, 1]:
    ``w_i (softplus(s_i) - min(y_i, 1) s_i)`` per item, summed per list.
    ``reduction="mean"`` divides by the number of items (weights do not change it)."""
    lists = _layout(scores, labels, weights, offsets, lengths, mask, group_ids, validate)
    return _sigmoid_packed(lists, reduction=reduction)


def mse_loss(
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
    r"""Pointwise squared error ``w_i (s_i - y_i)^2`` per item, summed per list.
    ``reduction="mean"`` divides by the number of items."""
    lists = _layout(scores, labels, weights, offsets, lengths, mask, group_ids, validate)
    return _mse_packed(lists, reduction=reduction)
