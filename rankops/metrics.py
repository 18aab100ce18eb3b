r"""Ranking metrics over packed, variable-length lists (DESIGN §3 "Metrics").

Every metric takes ``scores, labels`` in any layout of :mod:`rankops.segments` (packed
``[N]`` with ``offsets``/``lengths``/``group_ids``, or padded ``[B, L]`` with
``lengths``/``mask``) and returns a scalar (``reduction="mean"``/``"sum"``) or one value
per list (``"none"``, ``[B]``). One C++/CUDA kernel sorts each list once and computes
every requested metric and cut-off in one pass; no Python loop over lists, no gradient.

Conventions (one list, n items, k' = min(k, n); ``k=None`` is the whole list):

* **Ranks**: by score descending, **ties broken by position** (the earlier item ranks
  higher), NaN scores rank as -inf (last). trec_eval gives the same order when document ids decrease
  along each list (it breaks ties by docno descending).
* **Ties** (``ties=``): ``"position"`` (default) breaks them as above; ``"average"`` gives
  the expected value of the metric when each run of equal scores (NaN and -inf tie, as
  do -0.0 and +0.0) is put in a uniformly random order (McSherry & Najork, ECIR 2008;
  scikit-learn's ``ndcg_score`` averages ties in DCG this way by default). With
  ``"average"`` a model cannot score by the order the data came in: constant scores get
  the metric of a random ranking, not of the file's order. Exact, in closed form for every
  metric; ERR costs O((r + k) * min(r, k)) per tie group with r items of positive gain,
  the others O(n).
* **Gain** ``G(y) = 2^y - 1`` (``gain="exp2"``, default) or ``y`` (``"linear"``, the
  gain of trec_eval's ndcg); **discount** ``D(r) = 1 / log2(1 + r)``.
* **Relevant** (binary metrics): ``y >= relevance_threshold`` (default 1, as trec_eval).
* ``dcg@k = sum_{r <= k'} G(y_r) D(r)``; ``ndcg@k = dcg@k / idcg@k``.
* ``mrr@k = 1 / r`` of the first relevant item if ``r <= k``, else 0.
* ``ap@k = (sum_{r <= k', relevant} P@r) / R``, R = relevant items of the **whole list**
  (trec_eval's map / map_cut); ``map`` is the mean of ``ap``.
* ``precision@k = hits@k' / min(k, n)`` (``divide_by="min_k_n"``, default, as Rax) or
  ``hits@k' / k`` (``divide_by="k"``, trec_eval's P_k); without k, ``hits / n``.
* ``recall@k = hits@k' / R``.
* ``success@k`` (``hit_rate@k``) ``= 1`` if a relevant item ranks within k, else 0
  (trec_eval's success, "top-k accuracy" in dense retrieval, HR@k in recommendation);
  the mean over lists is the fraction of queries answered in the top k.
* ``rprec`` (R-precision) ``= hits@R / R``, the precision at the list's own number R of
  relevant items (trec_eval's Rprec); it takes no cut-off.
* ``opa`` (ordered pair accuracy) ``= #{(i, j): y_i > y_j, i ranked above j} /
  #{(i, j): y_i > y_j}``, the share of the pairs of different labels that the ranking
  orders correctly (Rax's ``opa_metric``, TF-Ranking's OrderedPairAccuracy); with binary
  labels and ``ties="average"`` it is the per-query ROC AUC. Graded (no relevance
  threshold), no cut-off; O(n log n) per list, no pair is formed.
* ``auc`` = the per-query ROC AUC of binary relevance (``y >= relevance_threshold``):
  the share of (relevant, non-relevant) pairs that the scores order, a tied pair counting
  one half whatever ``ties`` says (the definition of AUC, scikit-learn's
  ``roc_auc_score``); ``opa`` with ``ties="average"`` on the thresholded labels. No
  cut-off. Its length-weighted mean over queries is recommendation's GAUC.
* ``err@k = sum_{r <= k'} (1/r) p_r prod_{i<r} (1 - p_i)`` with
  ``p = (2^y - 1) / 2^max_grade`` (Chapelle et al. 2009). ``max_grade`` is the top of
  the grading scale, **default 4** (the 0-4 scale of MSLR-WEB / Yahoo! LTR), a constant so
  that a list's ERR never depends on the rest of the batch; labels above it are an error
  (pass ``max_grade=1`` for binary labels).

**Lists with no relevant item** (no label >= threshold for mrr/ap/precision/recall/
success/rprec; no
positive label for ndcg/dcg/err; no two different labels for opa; not both a relevant and
a non-relevant item for auc; this includes **empty lists**) are governed by ``empty``:

* ``"zero"`` (default): the list scores 0 and counts in the mean (trec_eval, Rax);
* ``"one"``: it scores 1 and counts (LightGBM/XGBoost NDCG); does not apply to ``dcg``,
  whose value for such a list is its natural 0;
* ``"skip"``: it is left out of the mean (``"mean"`` divides by the number of lists that
  have a relevant item), adds nothing to ``"sum"``, and is **NaN** in ``reduction="none"``
  (so ``torch.nanmean`` of the per-list values equals the mean).

A mean over no counted list is 0 (as the losses). Values are float32 for
float16/bfloat16/float32 scores and float64 for float64 scores; the arithmetic is
float64 throughout.
"""
from __future__ import annotations

import copy
import math
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import segments
from ._common import GAINS, REDUCTIONS, check_choice, check_float, check_k, exp2_label_bounds
from ._metrics_ops import ops

__all__ = [
    "ndcg",
    "dcg",
    "mrr",
    "ap",
    "map",
    "precision",
    "recall",
    "err",
    "success",
    "r_precision",
    "opa",
    "auc",
    "evaluate",
    "MetricAccumulator",
    "METRICS",
    "EMPTY",
    "DIVIDE_BY",
    "TIES",
]

# Public metric names (and aliases) -> kernel metric name.
METRICS = {
    "ndcg": "ndcg",
    "dcg": "dcg",
    "mrr": "mrr",
    "ap": "ap",
    "map": "ap",
    "precision": "precision",
    "p": "precision",
    "recall": "recall",
    "err": "err",
    "success": "success",
    "hit_rate": "success",
    "rprec": "rprec",
    "r_precision": "rprec",
    "opa": "opa",
    "auc": "auc",  # not a kernel metric: opa(ties="average") of the thresholded labels
}
EMPTY = ("zero", "one", "skip")
TIES = ("position", "average")
DIVIDE_BY = ("min_k_n", "k")
_SPEC = re.compile(r"^([a-z_]+)(?:@(\d+))?$")


def _check_number(name: str, value, *, minimum=None) -> float:
    value = check_float(name, value)
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        raise ValueError(f"{name} must be a finite number" + (f" >= {minimum}" if minimum is not None else "")
                         + f", got {value}")
    return value


def parse_metric(spec: str) -> Tuple[str, Optional[int]]:
    """``"ndcg@10"`` -> ``("ndcg", 10)``; ``"map"`` -> ``("ap", None)``."""
    if not isinstance(spec, str):
        raise TypeError(f"metrics must be strings like 'ndcg@10', got {type(spec).__name__}")
    m = _SPEC.match(spec.strip().lower())
    if not m or m.group(1) not in METRICS:
        raise ValueError(f"metrics: unknown metric {spec!r}; use one of "
                         f"{', '.join(sorted(METRICS))}, optionally with a cut-off like 'ndcg@10'")
    k = None if m.group(2) is None else int(m.group(2))
    if k is not None and k < 1:
        raise ValueError(f"metrics: the cut-off of {spec!r} must be >= 1")
    if k is not None and METRICS[m.group(1)] == "rprec":
        raise ValueError(f"metrics: {spec!r}: R-precision has no cut-off (it reads the first R items)")
    if k is not None and METRICS[m.group(1)] in ("opa", "auc"):
        raise ValueError(f"metrics: {spec!r}: {METRICS[m.group(1)]} has no cut-off (it counts the "
                         "pairs of the whole list)")
    return METRICS[m.group(1)], k


class _Options:
    """Validated options shared by every metric."""

    def __init__(self, gain="exp2", empty="zero", relevance_threshold=1.0, max_grade=4.0,
                 divide_by="min_k_n", ties="position"):
        self.gain = check_choice("gain", gain, GAINS)
        self.empty = check_choice("empty", empty, EMPTY)
        self.threshold = _check_number("relevance_threshold", relevance_threshold)
        self.max_grade = _check_number("max_grade", max_grade, minimum=0.0)
        self.divide_by = check_choice("divide_by", divide_by, DIVIDE_BY)
        self.ties = check_choice("ties", ties, TIES)


def _relevance_labels(labels, threshold: float):
    """1 where ``labels >= threshold``, 0 below; values that are not valid labels (NaN,
    inf, negative) are kept, so that the layout's label check still names them."""
    if not isinstance(labels, Tensor):
        return labels  # as_packed names the bad argument
    valid = torch.isfinite(labels) & (labels >= 0)
    return torch.where(valid, (labels >= threshold).to(labels.dtype), labels)


def _per_list(scores, labels, layout: dict, specs: Sequence[Tuple[str, Optional[int]]],
              opt: _Options, validate: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-list values [M, B], defined [M, B] and the counted mask [M, B] after the
    ``empty`` option (values of uncounted lists are 0). One kernel call, and one more for
    ``auc``, which is ``opa`` with ties averaged on the thresholded labels."""
    if not any(name == "auc" for name, _ in specs):
        return _kernel_per_list(scores, labels, layout, specs, opt, validate)
    auc_opt = copy.copy(opt)
    auc_opt.ties = "average"
    auc = _kernel_per_list(scores, _relevance_labels(labels, opt.threshold), layout, [("opa", None)],
                           auc_opt, validate)
    others = [spec for spec in specs if spec[0] != "auc"]
    if not others:
        return tuple(t.expand(len(specs), -1) for t in auc)
    rest = _kernel_per_list(scores, labels, layout, others, opt, validate)
    # rows in the order of specs, by slicing (an index tensor built on the host would be a
    # host-to-device copy, which breaks CUDA-graph capture)
    merged = []
    for auc_rows, other_rows in zip(auc, rest):
        rows, j = [], 0
        for name, _ in specs:
            rows.append(auc_rows if name == "auc" else other_rows[j:j + 1])
            j += name != "auc"
        merged.append(torch.cat(rows))
    return tuple(merged)


def _kernel_per_list(scores, labels, layout: dict, specs: Sequence[Tuple[str, Optional[int]]],
                     opt: _Options, validate: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """The metrics kernel's call for ``specs`` (kernel metric names)."""
    takes_exp2_gain = opt.gain == "exp2" and any(name in ("ndcg", "dcg") for name, _ in specs)
    bounds = exp2_label_bounds(scores, takes_exp2_gain)
    if any(name == "err" for name, _ in specs):
        bounds.append((opt.max_grade, f"labels must be <= max_grade ({opt.max_grade:g}) for err; "
                                      "pass max_grade= the top of your grading scale"))
    # Metrics are not differentiable: detached, so their values carry no grad_fn.
    lists = segments.as_packed(scores.detach() if isinstance(scores, Tensor) else scores,
                               labels, validate=validate, label_bounds=bounds, **layout)
    names = [name for name, _ in specs]
    ks = [0 if k is None else k for _, k in specs]
    values, defined = ops.ranking_metrics(lists.scores, lists.labels, lists.offsets, names, ks,
                                          opt.gain, opt.threshold, opt.max_grade, opt.divide_by,
                                          opt.ties)
    values, defined = lists.own_lists(values), lists.own_lists(defined)
    counted = torch.ones_like(defined)
    if opt.empty == "one":
        is_dcg = torch.zeros(len(names), 1, dtype=torch.bool, device=defined.device)
        for j, n in enumerate(names):  # fills on the device: no host copy (CUDA-graph safe)
            if n == "dcg":
                is_dcg[j] = True
        keep = defined | is_dcg
        values = torch.where(keep, values, torch.ones_like(values))
    elif opt.empty == "skip":
        counted = defined
    return values, defined, counted


def _reduce(values: Tensor, counted: Tensor, reduction: str) -> Tensor:
    """Reduces rows of per-list values [M, B] to [M] (or keeps [M, B] for "none")."""
    if reduction == "none":
        return torch.where(counted, values, torch.full_like(values, float("nan")))
    total = torch.where(counted, values, torch.zeros_like(values)).sum(1)
    if reduction == "sum":
        return total
    return total / counted.sum(1).clamp_min(1).to(total.dtype)


def _layout(offsets, lengths, mask, group_ids) -> dict:
    return dict(offsets=offsets, lengths=lengths, mask=mask, group_ids=group_ids)


def _single(name, scores, labels, layout, k, reduction, opt, validate) -> Tensor:
    check_choice("reduction", reduction, REDUCTIONS)
    k = check_k(k)
    values, _, counted = _per_list(scores, labels, layout, [(name, k)], opt, validate)
    return _reduce(values, counted, reduction)[0]


def ndcg(scores: Tensor, labels: Tensor, *, offsets: Optional[Tensor] = None,
         lengths: Optional[Tensor] = None, mask: Optional[Tensor] = None,
         group_ids: Optional[Tensor] = None, k: Optional[int] = None, gain: str = "exp2",
         empty: str = "zero", ties: str = "position", reduction: str = "mean",
         validate: bool = True) -> Tensor:
    r"""NDCG@k = DCG@k / IDCG@k, ``DCG@k = sum_{r <= min(k, n)} G(y_r) / log2(1 + r)``.

    ``G(y) = 2^y - 1`` (``gain="exp2"``) or ``y`` (``"linear"``); IDCG@k is the DCG@k of
    the lists sorted by label. Ties in scores by position, or averaged over their orders
    with ``ties="average"``. A list with no positive label (IDCG = 0) follows ``empty``
    (module docstring).
    """
    return _single("ndcg", scores, labels, _layout(offsets, lengths, mask, group_ids), k,
                   reduction, _Options(gain=gain, empty=empty, ties=ties), validate)


def dcg(scores: Tensor, labels: Tensor, *, offsets: Optional[Tensor] = None,
        lengths: Optional[Tensor] = None, mask: Optional[Tensor] = None,
        group_ids: Optional[Tensor] = None, k: Optional[int] = None, gain: str = "exp2",
        empty: str = "zero", ties: str = "position", reduction: str = "mean",
        validate: bool = True) -> Tensor:
    r"""DCG@k = ``sum_{r <= min(k, n)} G(y_r) / log2(1 + r)`` (unnormalised).

    A list with no positive label has DCG 0 (``empty="one"`` does not change that;
    ``"skip"`` leaves it out of the mean).
    """
    return _single("dcg", scores, labels, _layout(offsets, lengths, mask, group_ids), k,
                   reduction, _Options(gain=gain, empty=empty, ties=ties), validate)


def mrr(scores: Tensor, labels: Tensor, *, offsets: Optional[Tensor] = None,
        lengths: Optional[Tensor] = None, mask: Optional[Tensor] = None,
        group_ids: Optional[Tensor] = None, k: Optional[int] = None,
        relevance_threshold: float = 1.0, empty: str = "zero", ties: str = "position",
        reduction: str = "mean", validate: bool = True) -> Tensor:
    r"""Reciprocal rank ``1 / r`` of the first item with ``y >= relevance_threshold``
    (0 when it ranks below k); the mean over lists is MRR (trec_eval's recip_rank)."""
    return _single("mrr", scores, labels, _layout(offsets, lengths, mask, group_ids), k,
                   reduction, _Options(empty=empty, relevance_threshold=relevance_threshold, ties=ties),
                   validate)


def ap(scores: Tensor, labels: Tensor, *, offsets: Optional[Tensor] = None,
       lengths: Optional[Tensor] = None, mask: Optional[Tensor] = None,
       group_ids: Optional[Tensor] = None, k: Optional[int] = None,
       relevance_threshold: float = 1.0, empty: str = "zero", ties: str = "position",
       reduction: str = "mean", validate: bool = True) -> Tensor:
    r"""Average precision ``AP@k = (sum_{r <= min(k, n), y_r relevant} P@r) / R``.

    R counts the relevant items of the whole list, also those ranked below k (trec_eval's
    map and map_cut). ``reduction="mean"`` gives MAP.
    """
    return _single("ap", scores, labels, _layout(offsets, lengths, mask, group_ids), k,
                   reduction, _Options(empty=empty, relevance_threshold=relevance_threshold, ties=ties),
                   validate)


def map(scores: Tensor, labels: Tensor, **kwargs) -> Tensor:  # noqa: A001 (the metric's name)
    r"""MAP: the mean over lists of :func:`ap` (same arguments; ``reduction`` is ``"mean"``)."""
    if "reduction" in kwargs:
        raise TypeError("map is the mean of ap; use ap(..., reduction=...) for other reductions")
    return ap(scores, labels, reduction="mean", **kwargs)


def precision(scores: Tensor, labels: Tensor, *, offsets: Optional[Tensor] = None,
              lengths: Optional[Tensor] = None, mask: Optional[Tensor] = None,
              group_ids: Optional[Tensor] = None, k: Optional[int] = None,
              relevance_threshold: float = 1.0, divide_by: str = "min_k_n",
              empty: str = "zero", ties: str = "position", reduction: str = "mean",
              validate: bool = True) -> Tensor:
    r"""Precision@k = ``hits@k / min(k, n)`` (``divide_by="min_k_n"``, as Rax) or
    ``hits@k / k`` (``divide_by="k"``, as trec_eval's P_k); ``hits / n`` without k."""
    return _single("precision", scores, labels, _layout(offsets, lengths, mask, group_ids), k,
                   reduction, _Options(empty=empty, relevance_threshold=relevance_threshold,
                                       divide_by=divide_by, ties=ties), validate)


def recall(scores: Tensor, labels: Tensor, *, offsets: Optional[Tensor] = None,
           lengths: Optional[Tensor] = None, mask: Optional[Tensor] = None,
           group_ids: Optional[Tensor] = None, k: Optional[int] = None,
           relevance_threshold: float = 1.0, empty: str = "zero", ties: str = "position",
           reduction: str = "mean", validate: bool = True) -> Tensor:
    r"""Recall@k = ``hits@k / R`` (R: relevant items of the whole list)."""
    return _single("recall", scores, labels, _layout(offsets, lengths, mask, group_ids), k,
                   reduction, _Options(empty=empty, relevance_threshold=relevance_threshold, ties=ties),
                   validate)


def err(scores: Tensor, labels: Tensor, *, offsets: Optional[Tensor] = None,
        lengths: Optional[Tensor] = None, mask: Optional[Tensor] = None,
        group_ids: Optional[Tensor] = None, k: Optional[int] = None, max_grade: float = 4.0,
        empty: str = "zero", ties: str = "position", reduction: str = "mean",
        validate: bool = True) -> Tensor:
    r"""Expected reciprocal rank (Chapelle et al. 2009):
    ``ERR@k = sum_{r <= min(k, n)} (1/r) p_r prod_{i<r} (1 - p_i)``,
    ``p = (2^y - 1) / 2^max_grade``. ``max_grade`` (default 4) is the top of the grading
    scale; labels above it raise ValueError."""
    return _single("err", scores, labels, _layout(offsets, lengths, mask, group_ids), k,
                   reduction, _Options(empty=empty, max_grade=max_grade, ties=ties), validate)


def success(scores: Tensor, labels: Tensor, *, offsets: Optional[Tensor] = None,
            lengths: Optional[Tensor] = None, mask: Optional[Tensor] = None,
            group_ids: Optional[Tensor] = None, k: Optional[int] = None,
            relevance_threshold: float = 1.0, empty: str = "zero", ties: str = "position",
            reduction: str = "mean", validate: bool = True) -> Tensor:
    r"""Success@k: 1 if an item with ``y >= relevance_threshold`` ranks within the first
    k, else 0; the mean over lists is the share of queries with a hit in the top k
    (trec_eval's success, "top-k accuracy", HR@k). With ``ties="average"``, the chance of
    a hit over the orders of the tie groups."""
    return _single("success", scores, labels, _layout(offsets, lengths, mask, group_ids), k,
                   reduction, _Options(empty=empty, relevance_threshold=relevance_threshold, ties=ties),
                   validate)


def r_precision(scores: Tensor, labels: Tensor, *, offsets: Optional[Tensor] = None,
                lengths: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                group_ids: Optional[Tensor] = None, relevance_threshold: float = 1.0,
                empty: str = "zero", ties: str = "position", reduction: str = "mean",
                validate: bool = True) -> Tensor:
    r"""R-precision: ``hits@R / R``, the precision at the list's own number R of relevant
    items (trec_eval's Rprec). It equals recall@R, and takes no cut-off."""
    return _single("rprec", scores, labels, _layout(offsets, lengths, mask, group_ids), None,
                   reduction, _Options(empty=empty, relevance_threshold=relevance_threshold, ties=ties),
                   validate)


def opa(scores: Tensor, labels: Tensor, *, offsets: Optional[Tensor] = None,
        lengths: Optional[Tensor] = None, mask: Optional[Tensor] = None,
        group_ids: Optional[Tensor] = None, empty: str = "zero", ties: str = "position",
        reduction: str = "mean", validate: bool = True) -> Tensor:
    r"""Ordered pair accuracy: the share of the pairs with ``y_i > y_j`` that the
    scores rank in that order, ``#{y_i > y_j, i above j} / #{y_i > y_j}``.

    Rax's ``opa_metric`` and TF-Ranking's OrderedPairAccuracy. Score ties: by position
    (``ties="position"``), or each tied pair counted half ordered (``"average"``, its
    expected value over the orders of the tie group); Rax counts a tied pair as
    misordered. With binary labels and ``ties="average"`` it is the per-query ROC AUC
    (scikit-learn's ``roc_auc_score`` of the list); ``reduction="none"`` gives the
    per-list values to weight as a group AUC. A list whose labels are all equal (or
    empty) has no pair and follows ``empty``. O(n log n) per list: a Fenwick tree over
    the labels' ranks counts the pairs, none is formed.
    """
    return _single("opa", scores, labels, _layout(offsets, lengths, mask, group_ids), None,
                   reduction, _Options(empty=empty, ties=ties), validate)


def auc(scores: Tensor, labels: Tensor, *, offsets: Optional[Tensor] = None,
        lengths: Optional[Tensor] = None, mask: Optional[Tensor] = None,
        group_ids: Optional[Tensor] = None, relevance_threshold: float = 1.0,
        empty: str = "zero", reduction: str = "mean", validate: bool = True) -> Tensor:
    r"""Per-query ROC AUC of binary relevance (``y >= relevance_threshold``): the share of
    the (relevant, non-relevant) pairs of a list whose relevant item scores higher, a tie
    counting one half (scikit-learn's ``roc_auc_score`` of the list). Ties always count
    half, as AUC is defined. A list without both a relevant and a non-relevant item
    follows ``empty``. ``reduction="none"`` gives the per-query values; weighted by the
    lists' lengths they give GAUC. O(n log n) per list (:func:`opa` with
    ``ties="average"`` on the thresholded labels)."""
    check_choice("reduction", reduction, REDUCTIONS)
    values, _, counted = _per_list(scores, labels, _layout(offsets, lengths, mask, group_ids),
                                   [("auc", None)],
                                   _Options(empty=empty, relevance_threshold=relevance_threshold),
                                   validate)
    return _reduce(values, counted, reduction)[0]


def _parse_specs(metrics) -> List[Tuple[str, Optional[int]]]:
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics must name at least one metric")
    return [parse_metric(s) for s in metrics]


def evaluate(scores: Tensor, labels: Tensor, *, offsets: Optional[Tensor] = None,
             lengths: Optional[Tensor] = None, mask: Optional[Tensor] = None,
             group_ids: Optional[Tensor] = None,
             metrics: Iterable[str] = ("ndcg@10", "map", "mrr"), gain: str = "exp2",
             empty: str = "zero", relevance_threshold: float = 1.0, max_grade: float = 4.0,
             divide_by: str = "min_k_n", ties: str = "position", reduction: str = "mean",
             validate: bool = True) -> Dict[str, Tensor]:
    r"""Several metrics and cut-offs in one kernel call (each list is sorted once; ``auc``
    adds a second, on the thresholded labels, with its own validation).

    ``metrics``: names ``ndcg``, ``dcg``, ``mrr``, ``ap``/``map``, ``precision``/``p``,
    ``recall``, ``err``, ``success``/``hit_rate``, each optionally with ``@k``, and
    ``rprec``/``r_precision``, ``opa`` and ``auc`` (no cut-off; ``auc`` costs a second
    kernel call, on the thresholded labels). Returns ``{spec: value}`` in the
    given order: scalars for ``reduction="mean"``/``"sum"``, ``[B]`` for ``"none"``.
    The options mean what they mean in the single-metric functions.
    """
    specs = _parse_specs(metrics)
    check_choice("reduction", reduction, REDUCTIONS)
    opt = _Options(gain, empty, relevance_threshold, max_grade, divide_by, ties)
    values, _, counted = _per_list(scores, labels, _layout(offsets, lengths, mask, group_ids),
                                   specs, opt, validate)
    reduced = _reduce(values, counted, reduction)
    return {spec: reduced[j] for j, spec in enumerate(metrics if not isinstance(metrics, str) else [metrics])}


class MetricAccumulator:
    r"""Streaming mean of ranking metrics over an evaluation loop, also across processes.

    ``update(scores, labels, offsets=...)`` adds each batch's per-list values to running
    sums and counts (float64/int64, on the device of the inputs, no host sync);
    ``compute()`` returns ``{spec: sum / count}`` (0 where no list counted). Under
    ``torch.distributed`` (initialised), ``compute()`` all-reduces the sums and counts
    over ``process_group`` first, so every rank gets the mean over all lists of all
    ranks; every rank must call it. ``empty="skip"`` lists count nowhere. The result
    equals :func:`evaluate` on the concatenation of all batches.
    """

    def __init__(self, metrics: Iterable[str] = ("ndcg@10", "map", "mrr"), *, gain: str = "exp2",
                 empty: str = "zero", relevance_threshold: float = 1.0, max_grade: float = 4.0,
                 divide_by: str = "min_k_n", ties: str = "position", process_group=None,
                 validate: bool = True):
        self.metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        self._specs = _parse_specs(self.metrics)
        self._opt = _Options(gain, empty, relevance_threshold, max_grade, divide_by, ties)
        self.process_group = process_group
        self.validate = validate
        self.reset()

    def reset(self) -> None:
        """Forgets every update."""
        self._sums: Optional[Tensor] = None    # [M] float64
        self._counts: Optional[Tensor] = None  # [M] float64 (exact up to 2^53 lists)

    @torch.no_grad()
    def update(self, scores: Tensor, labels: Tensor, *, offsets: Optional[Tensor] = None,
               lengths: Optional[Tensor] = None, mask: Optional[Tensor] = None,
               group_ids: Optional[Tensor] = None) -> None:
        """Adds one batch (any layout of :mod:`rankops.segments`)."""
        values, _, counted = _per_list(scores.detach(), labels, _layout(offsets, lengths, mask, group_ids),
                                       self._specs, self._opt, self.validate)
        sums = torch.where(counted, values, torch.zeros_like(values)).to(torch.float64).sum(1)
        counts = counted.to(torch.float64).sum(1)
        if self._sums is None:
            self._sums, self._counts = sums, counts
        else:
            self._sums = self._sums.to(sums.device) + sums
            self._counts = self._counts.to(counts.device) + counts

    def _state(self) -> Tensor:
        if self._sums is not None:
            return torch.stack([self._sums, self._counts])
        return torch.zeros(2, len(self._specs), dtype=torch.float64)

    @torch.no_grad()
    def compute(self) -> Dict[str, Tensor]:
        """``{spec: mean}`` (float64 scalars) over every list seen (on every rank)."""
        state = self._state()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # NCCL reduces CUDA tensors only: also a state that no update moved there
            # (nothing seen on this rank, or just loaded from a state_dict)
            if torch.distributed.get_backend(self.process_group) == "nccl":
                state = state.to(torch.device("cuda", torch.cuda.current_device()))
            state = state.clone()
            torch.distributed.all_reduce(state, op=torch.distributed.ReduceOp.SUM,
                                         group=self.process_group)
        means = state[0] / state[1].clamp_min(1)
        return {spec: means[j] for j, spec in enumerate(self.metrics)}

    def state_dict(self) -> Dict[str, object]:
        """This rank's running sums and counts (CPU tensors), to checkpoint a long
        evaluation and resume it with :meth:`load_state_dict`."""
        state = self._state().cpu()
        return {"metrics": list(self.metrics), "options": self._options(),
                "sums": state[0].clone(), "counts": state[1].clone()}

    def _options(self) -> Dict[str, object]:
        o = self._opt
        return {"gain": o.gain, "empty": o.empty, "relevance_threshold": o.threshold,
                "max_grade": o.max_grade, "divide_by": o.divide_by, "ties": o.ties}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restores :meth:`state_dict`'s sums and counts (for the same metrics); later
        updates add to them on the device of their inputs."""
        if list(state.get("metrics", [])) != self.metrics:
            raise ValueError(f"state_dict holds metrics {state.get('metrics')!r}, this accumulator "
                             f"computes {self.metrics!r}")
        options = state.get("options")
        if isinstance(options, dict) and "ties" not in options:
            options = {**options, "ties": "position"}  # saved before ties= existed
        if options != self._options():
            raise ValueError(f"state_dict was accumulated with options {state.get('options')!r}, "
                             f"this accumulator uses {self._options()!r}")
        sums, counts = state["sums"], state["counts"]
        if not (isinstance(sums, Tensor) and isinstance(counts, Tensor)
                and sums.shape == counts.shape == (len(self._specs),)):
            raise ValueError(f"state_dict sums and counts must be tensors of shape [{len(self._specs)}]")
        self._sums = sums.to(torch.float64).clone()
        self._counts = counts.to(torch.float64).clone()

    @property
    def num_lists(self) -> Tensor:
        """Counted lists per metric on this rank (``[M]``), before any all-reduce."""
        return self._state()[1]
