"""Pure-PyTorch versions of every rankops op, written for clarity.

They take the same arguments as the public functions and are the oracle of the tests and
the baseline of the benchmarks. They pad every list to the longest one and build
``[B, L, L]`` pair tensors, as the popular PyTorch ranking libraries do: exact but
O(B L^2) memory. They are never used as a silent fallback for the kernels.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import segments
from ._common import GAINS, PAIR_FNS, PAIR_WEIGHTS, REDUCTIONS, check_choice, check_float, check_k, reduce

__all__ = [
    "padded_lists",
    "ranks",
    "gains",
    "discounts",
    "ideal_dcg",
    "pairwise_loss",
    "ranknet_loss",
    "pairwise_hinge_loss",
    "pairwise_soft_zero_one_loss",
    "lambdarank_loss",
    "lambdaloss",
    "pairwise_mse_loss",
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
]


def padded_lists(scores, labels, weights=None, *, offsets=None, lengths=None, mask=None,
                 group_ids=None):
    """Any layout -> padded ``(scores, labels, weights, mask)``, each ``[B, L]``.

    Padding holds score 0, label 0, weight 0 and mask False. Weights default to 1.
    """
    if scores.dim() == 2:
        valid = segments._padded_mask(scores, lengths, mask)
        w = torch.ones_like(scores) if weights is None else weights.to(scores.dtype)
        zero = torch.zeros((), dtype=scores.dtype, device=scores.device)
        return (torch.where(valid, scores, zero), torch.where(valid, labels.to(scores.dtype), zero),
                torch.where(valid, w, zero), valid)
    lists = segments.as_packed(scores, labels, weights=weights, offsets=offsets, lengths=lengths,
                               group_ids=group_ids)
    w = torch.ones_like(scores) if weights is None else weights.to(scores.dtype)
    S, valid = segments.unpack(scores, lists.offsets)
    Y, _ = segments.unpack(labels.to(scores.dtype), lists.offsets)
    W, _ = segments.unpack(w, lists.offsets)
    return S, Y, W, valid


def _order_padding_last(key: Tensor, mask: Tensor) -> Tensor:
    """Indices that sort each row by ``key`` descending, ties by position, with every
    padding slot (``mask`` False) after every real item, whatever the keys hold.

    Two stable sorts: by key, then by validity. Padding cannot share a sort key with a
    real item (a real -inf or NaN score would tie with a -inf padding key and, when the
    padding sits before it in the row, rank below it)."""
    by_key = torch.sort(key, dim=1, descending=True, stable=True).indices
    valid_in_key_order = mask.gather(1, by_key).to(torch.int8)
    by_valid = torch.sort(valid_in_key_order, dim=1, descending=True, stable=True).indices
    return by_key.gather(1, by_valid)


def ranks(scores: Tensor, mask: Tensor) -> Tensor:
    """1-based rank of each item by score descending, ties by position, padding last.

    NaN ranks as -inf (after every finite score, by position among the -inf scores);
    padding ranks after every real item, -inf and NaN included."""
    keyed = torch.where(scores.isnan(), torch.full_like(scores, -float("inf")), scores)
    order = _order_padding_last(keyed, mask)
    r = torch.empty_like(order)
    positions = torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(order)
    return r.scatter_(1, order, positions)


def gains(labels: Tensor, gain: str) -> Tensor:
    """G(y) = 2^y - 1 (``"exp2"``) or y (``"linear"``)."""
    return torch.exp2(labels) - 1 if gain == "exp2" else labels


def discounts(rank: Tensor) -> Tensor:
    """D(r) = 1 / log2(1 + r) for 1-based ranks."""
    return 1.0 / torch.log2(1.0 + rank.to(torch.float64))


def ideal_dcg(weighted_gain: Tensor, mask: Tensor, k: Optional[int]) -> Tensor:
    """DCG@k of the ordering by w*G descending, per row (padding sorts last, also below
    negative w*G, and adds nothing)."""
    ideal = weighted_gain.gather(1, _order_padding_last(weighted_gain, mask))
    r = torch.arange(1, weighted_gain.shape[1] + 1, device=weighted_gain.device)
    ideal = torch.where(r <= mask.sum(1, keepdim=True), ideal, torch.zeros_like(ideal))
    d = discounts(r).to(weighted_gain.dtype)
    if k is not None:
        d = torch.where(r <= k, d, torch.zeros_like(d))
    return (ideal * d).sum(1)


def _pair_fn(diff: Tensor, pair_fn: str, sigma: float, margin: float) -> Tensor:
    if pair_fn == "logistic":
        return F.softplus(-sigma * diff)
    if pair_fn == "hinge":
        return F.relu(margin - diff)
    return torch.sigmoid(-sigma * diff)


def _pair_weights(S, Y, W, valid, weight, k, mu, gain):
    """lambda_ij for every (i, j) of every list, [B, L, L]; no gradient."""
    dtype = S.dtype
    if weight == "none":
        return torch.ones(S.shape + S.shape[-1:], dtype=dtype, device=S.device)
    if weight == "label_diff":
        return (Y[:, :, None] - Y[:, None, :]).abs()
    r = ranks(S, valid)
    G = gains(Y, gain)
    idcg = ideal_dcg(W * G, valid, k)
    inv_idcg = torch.where(idcg > 0, 1.0 / idcg, torch.zeros_like(idcg))[:, None, None]
    abs_dgain = (G[:, :, None] - G[:, None, :]).abs()
    D = discounts(r)
    if k is not None:
        D = torch.where(r <= k, D, torch.zeros_like(D))
    ndcg = abs_dgain * (D[:, :, None] - D[:, None, :]).abs().to(dtype) * inv_idcg
    dist = (r[:, :, None] - r[:, None, :]).abs().clamp_min(1)
    ndcg2 = abs_dgain * (discounts(dist) - discounts(dist + 1)).abs().to(dtype) * inv_idcg
    if weight == "ndcg":
        return ndcg
    if weight == "ndcg2":
        return ndcg2
    return ndcg + mu * ndcg2


def pairwise_loss(scores, labels, *, offsets=None, lengths=None, mask=None, group_ids=None,
                  weights=None, pair_fn="logistic", weight="none", sigma=1.0, margin=1.0, k=None,
                  mu=5.0, gain="exp2", reduction="mean"):
    """Reference of :func:`rankops.pairwise_loss` (same arguments, same semantics)."""
    check_choice("pair_fn", pair_fn, PAIR_FNS)
    check_choice("weight", weight, PAIR_WEIGHTS)
    check_choice("gain", gain, GAINS)
    check_choice("reduction", reduction, REDUCTIONS)
    k = check_k(k)
    sigma, margin, mu = check_float("sigma", sigma), check_float("margin", margin), check_float("mu", mu)
    S, Y, W, valid = padded_lists(scores, labels, weights, offsets=offsets, lengths=lengths,
                                  mask=mask, group_ids=group_ids)
    both = valid[:, :, None] & valid[:, None, :]
    pairs = (Y[:, :, None] > Y[:, None, :]) & both  # (i, j): i more relevant than j
    with torch.no_grad():
        lam = _pair_weights(S.detach(), Y, W, valid, weight, k, mu, gain)
        evaluated = pairs
        if k is not None:
            r = ranks(S.detach(), valid)
            evaluated = pairs & ((r[:, :, None] <= k) | (r[:, None, :] <= k))
    phi = _pair_fn(S[:, :, None] - S[:, None, :], pair_fn, sigma, margin)
    terms = W[:, :, None] * lam * phi
    per_list = torch.where(evaluated, terms, torch.zeros_like(terms)).sum((1, 2))
    return reduce(per_list, reduction, pairs.sum())


def ranknet_loss(scores, labels, *, sigma=1.0, **kwargs):
    return pairwise_loss(scores, labels, pair_fn="logistic", weight="none", sigma=sigma, **kwargs)


def pairwise_hinge_loss(scores, labels, *, margin=1.0, **kwargs):
    return pairwise_loss(scores, labels, pair_fn="hinge", weight="none", margin=margin, **kwargs)


def pairwise_soft_zero_one_loss(scores, labels, *, sigma=1.0, **kwargs):
    return pairwise_loss(scores, labels, pair_fn="soft_zero_one", weight="none", sigma=sigma, **kwargs)


def lambdarank_loss(scores, labels, *, sigma=1.0, k=None, gain="exp2", **kwargs):
    return pairwise_loss(scores, labels, pair_fn="logistic", weight="ndcg", sigma=sigma, k=k,
                         gain=gain, **kwargs)


def lambdaloss(scores, labels, *, variant="ndcg2pp", sigma=1.0, k=None, mu=5.0, gain="exp2", **kwargs):
    check_choice("variant", variant, ("ndcg2", "ndcg2pp"))
    return pairwise_loss(scores, labels, pair_fn="logistic", weight=variant, sigma=sigma, k=k,
                         mu=mu, gain=gain, **kwargs)


def pairwise_mse_loss(scores, labels, *, offsets=None, lengths=None, mask=None, group_ids=None,
                      weights=None, reduction="mean"):
    """Reference of :func:`rankops.pairwise_mse_loss`: every ordered pair (i, j) of a list,
    ``w_i ((s_i - s_j) - (y_i - y_j))^2``, formed in ``[B, L, L]``; mean over those pairs."""
    check_choice("reduction", reduction, REDUCTIONS)
    S, Y, W, valid = padded_lists(scores, labels, weights, offsets=offsets, lengths=lengths,
                                  mask=mask, group_ids=group_ids)
    both = valid[:, :, None] & valid[:, None, :]
    error = (S[:, :, None] - S[:, None, :]) - (Y[:, :, None] - Y[:, None, :])
    terms = W[:, :, None] * error * error
    per_list = torch.where(both, terms, torch.zeros_like(terms)).sum((1, 2))
    return reduce(per_list, reduction, both.sum())


# ---- metrics
# Padded [B, L] versions of rankops.metrics, same signatures and conventions (see the
# docstring of rankops.metrics), vectorised over lists: the oracle of the metric tests
# and the "vectorised PyTorch" baseline of benchmarks/bench_metrics.py. float64 inside.
# ties="average" (expected values over the orders of tie groups) is a plain Python loop
# over lists and groups instead: an oracle, not a baseline.

_METRIC_ALIASES = {"ndcg": "ndcg", "dcg": "dcg", "mrr": "mrr", "ap": "ap", "map": "ap",
                   "precision": "precision", "p": "precision", "recall": "recall", "err": "err",
                   "success": "success", "hit_rate": "success", "rprec": "rprec",
                   "r_precision": "rprec", "opa": "opa"}


def _ordered_pair_accuracy(S, Y, valid, ties):
    """OPA [B] and defined [B] over the ``[B, L, L]`` pairs: the share of the pairs with
    y_i > y_j where i ranks above j (ties="position") or, with ties="average", where
    s_i > s_j, a tied pair (NaN as -inf) counting one half."""
    pair = valid[:, :, None] & valid[:, None, :] & (Y[:, :, None] > Y[:, None, :])
    if ties == "position":
        r = ranks(S, valid)
        ordered = (r[:, :, None] < r[:, None, :]).to(torch.float64)
    else:
        key = torch.where(S.isnan(), torch.full_like(S, -float("inf")), S)
        ordered = ((key[:, :, None] > key[:, None, :]).to(torch.float64)
                   + 0.5 * (key[:, :, None] == key[:, None, :]).to(torch.float64))
    total = pair.sum((1, 2)).to(torch.float64)
    value = (ordered * pair).sum((1, 2)) / total.clamp_min(1)
    return value, total > 0


def _metric_table(S, Y, valid, specs, gain, threshold, max_grade, divide_by):
    """Per-list values [M, B] and defined [M, B] of every (metric, k) in specs."""
    B, L = S.shape
    Y = Y.to(torch.float64)
    order = torch.sort(ranks(S, valid), dim=1).indices  # order[b, p] = item at rank p + 1
    Ys = torch.gather(Y, 1, order)
    Vs = torch.gather(valid, 1, order)  # valid items come first
    pos = torch.arange(1, L + 1, device=S.device, dtype=torch.float64).expand(B, L)
    n = valid.sum(1).to(torch.float64)
    G = torch.where(Vs, gains(Ys, gain), torch.zeros_like(Ys))
    rel = Vs & (Ys >= threshold)
    R = (valid & (Y >= threshold)).sum(1).to(torch.float64)
    any_gain = (valid & (Y > 0)).any(1)
    hits = torch.cumsum(rel.to(torch.float64), 1)
    p_stop = torch.where(Vs, ((torch.exp2(Ys) - 1) / 2.0 ** max_grade).clamp(0, 1), torch.zeros_like(Ys))
    # prod_{i < r} (1 - p_i): exclusive cumulative product
    reach = torch.cumprod(torch.cat([torch.ones_like(p_stop[:, :1]), 1 - p_stop[:, :-1]], 1), 1)
    zero = torch.zeros_like(Ys)
    rows, defined = [], []
    for name, k in specs:  # a loop over the requested metrics, not over lists
        cut = pos <= (L if k is None else k)
        if name in ("ndcg", "dcg"):
            d = (torch.where(cut, G, zero) * discounts(pos)).sum(1)
            if name == "ndcg":
                idcg = ideal_dcg(torch.where(valid, gains(Y, gain), torch.zeros_like(Y)), valid, k)
                d = torch.where(idcg > 0, d / torch.where(idcg > 0, idcg, torch.ones_like(idcg)), torch.zeros_like(d))
            v = d
        elif name == "mrr":
            # 1 / rank of the first relevant item: a sum, not a max, so that a batch of
            # empty lists (L = 0) gives 0 instead of a max over an empty dimension
            v = torch.where(rel & cut & (hits == 1), 1.0 / pos, zero).sum(1)
        elif name == "ap":
            v = torch.where(rel & cut, hits / pos, zero).sum(1) / R.clamp_min(1)
        elif name == "success":
            v = (rel & cut).any(1).to(torch.float64)
        elif name == "rprec":  # hits within the first R ranks, over R
            v = (rel & (pos <= R[:, None])).to(torch.float64).sum(1) / R.clamp_min(1)
        elif name == "opa":
            v, has_pair = _ordered_pair_accuracy(S, Y, valid, "position")
        elif name in ("precision", "recall"):
            h = torch.where(cut, rel.to(torch.float64), zero).sum(1)
            if name == "recall":
                v = h / R.clamp_min(1)
            else:
                denom = n if k is None else (torch.full_like(n, float(k)) if divide_by == "k" else n.clamp(max=k))
                v = h / denom.clamp_min(1)
        else:  # err
            v = torch.where(cut, reach * p_stop / pos, zero).sum(1)
        rows.append(v)
        defined.append(any_gain if name in ("ndcg", "dcg", "err") else has_pair if name == "opa" else R > 0)
    return torch.stack(rows), torch.stack(defined)


def _tie_averaged_table(S, Y, valid, specs, gain, threshold, max_grade, divide_by):
    """:func:`_metric_table` with ``ties="average"``: each metric's expected value when
    every run of equal scores is put in a uniformly random order (McSherry & Najork
    2008). A loop over lists and tie groups in plain float64 Python, for clarity.

    For a tie group of g items at 0-based positions a..a+g-1, h of them relevant and H
    relevant items ranked before it, position p = a + q holds a uniformly random item of
    the group: its expected gain is the group's mean gain and it is relevant with
    probability h/g; given that it is, q(h-1)/(g-1) of the q group items before it are
    relevant on average (AP). The group's first relevant item is at q with probability
    C(g-1-q, h-1) / C(g, h) (MRR). ERR's user stops at p, having passed the q group items
    before it, with probability pass(q) - pass(q+1), pass(q) being the mean over q-item
    subsets of the group of prod (1 - p_stop).
    """
    B = S.shape[0]
    if any(name == "opa" for name, _ in specs):  # [B, L, L]: only when asked for
        opa_values, opa_defined = _ordered_pair_accuracy(S, Y, valid, "average")
    keys = torch.where(S.isnan(), torch.full_like(S, -float("inf")), S)
    order = torch.sort(ranks(S, valid), dim=1).indices
    values = torch.zeros(len(specs), B, dtype=torch.float64)
    defined = torch.zeros(len(specs), B, dtype=torch.bool)
    for b in range(B):
        n = int(valid[b].sum())
        ks = [float(keys[b, i]) for i in order[b, :n].tolist()]
        ys = [float(Y[b, i]) for i in order[b, :n].tolist()]
        G = [(2.0 ** y - 1.0) if gain == "exp2" else y for y in ys]
        stop = [min(max((2.0 ** y - 1.0) / 2.0 ** max_grade, 0.0), 1.0) for y in ys]
        rel = [y >= threshold for y in ys]
        R = float(sum(rel))
        # per-position expectations: gain, relevant, AP term, P(first relevant), ERR term
        e_gain, e_rel, e_ap, p_first, e_err = ([0.0] * n for _ in range(5))
        H, reach, seen, a = 0.0, 1.0, False, 0
        first_group = None  # (start, size, relevant) of the first group with a relevant item
        while a < n:
            end = a + 1
            while end < n and ks[end] == ks[a]:  # -0.0 == 0.0; NaN became -inf
                end += 1
            g = end - a
            h = float(sum(rel[a:end]))
            mean_gain = sum(G[a:end]) / g
            passing = [1.0] + [0.0] * g  # pass(q), grown one group item at a time
            for m in range(1, g + 1):
                c = 1.0 - stop[a + m - 1]
                for q in range(m, 0, -1):
                    passing[q] = ((m - q) * passing[q] + q * c * passing[q - 1]) / m
            for q in range(g):
                p = a + q
                e_gain[p] = mean_gain
                e_rel[p] = h / g
                if h > 0:
                    e_ap[p] = h / g * (H + 1.0 + (q * (h - 1.0) / (g - 1.0) if g > 1 else 0.0)) / (p + 1)
                    if not seen and q <= g - h:
                        p_first[p] = math.comb(g - 1 - q, int(h) - 1) / math.comb(g, int(h))
                e_err[p] = reach * (passing[q] - passing[q + 1]) / (p + 1)
            reach *= passing[g]
            if not seen and h > 0:
                first_group = (a, g, int(h))
            H += h
            seen = seen or h > 0
            a = end
        ideal = sorted(G, reverse=True)
        for j, (name, k) in enumerate(specs):
            cut = n if k is None else min(k, n)
            if name in ("ndcg", "dcg"):
                v = sum(e_gain[p] / math.log2(p + 2.0) for p in range(cut))
                if name == "ndcg":
                    idcg = sum(ideal[p] / math.log2(p + 2.0) for p in range(cut))
                    v = v / idcg if idcg > 0 else 0.0
            elif name == "mrr":
                v = sum(p_first[p] / (p + 1) for p in range(cut))
            elif name == "success":  # 1 - P(no relevant item in the first group that has one)
                v = 0.0
                if first_group is not None and cut > first_group[0]:
                    a0, g0, h0 = first_group
                    c = min(cut - a0, g0)
                    v = 1.0 - math.comb(g0 - h0, c) / math.comb(g0, c)
            elif name == "rprec":
                v = sum(e_rel[:int(R)]) / R if R > 0 else 0.0
            elif name == "opa":
                v = float(opa_values[b])
            elif name == "ap":
                v = sum(e_ap[:cut]) / R if R > 0 else 0.0
            elif name in ("precision", "recall"):
                hits = sum(e_rel[:cut])
                if name == "recall":
                    v = hits / R if R > 0 else 0.0
                else:
                    denom = n if k is None else (k if divide_by == "k" else min(k, n))
                    v = hits / denom if denom > 0 else 0.0
            else:  # err
                v = sum(e_err[:cut])
            values[j, b] = v
            defined[j, b] = (any(y > 0 for y in ys) if name in ("ndcg", "dcg", "err")
                             else bool(opa_defined[b]) if name == "opa" else R > 0)
    return values, defined


def _metric_finish(values, defined, names, empty, reduction, dtype):
    if empty == "one":
        is_dcg = torch.tensor([nm == "dcg" for nm in names], device=values.device)[:, None]
        values = torch.where(defined | is_dcg, values, torch.ones_like(values))
    counted = defined if empty == "skip" else torch.ones_like(defined)
    if reduction == "none":
        out = torch.where(counted, values, torch.full_like(values, float("nan")))
    else:
        out = torch.where(counted, values, torch.zeros_like(values)).sum(1)
        if reduction == "mean":
            out = out / counted.sum(1).clamp_min(1)
    return out.to(dtype)


def _reference_metrics(scores, labels, specs, *, offsets=None, lengths=None, mask=None,
                       group_ids=None, gain="exp2", empty="zero", relevance_threshold=1.0,
                       max_grade=4.0, divide_by="min_k_n", ties="position", reduction="mean"):
    check_choice("gain", gain, GAINS)
    check_choice("ties", ties, ("position", "average"))
    check_choice("empty", empty, ("zero", "one", "skip"))
    check_choice("divide_by", divide_by, ("min_k_n", "k"))
    check_choice("reduction", reduction, REDUCTIONS)
    specs = [(_METRIC_ALIASES[name], check_k(k)) for name, k in specs]
    with torch.no_grad():
        S, Y, _, valid = padded_lists(scores.detach(), labels, offsets=offsets, lengths=lengths,
                                      mask=mask, group_ids=group_ids)
        table = _tie_averaged_table if ties == "average" else _metric_table
        values, defined = table(S, Y.to(torch.float64), valid, specs, gain, float(relevance_threshold),
                                float(max_grade), divide_by)
    out_dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    return _metric_finish(values, defined, [nm for nm, _ in specs], empty, reduction, out_dtype)


def ndcg(scores, labels, *, k=None, gain="exp2", empty="zero", ties="position",
         reduction="mean", **layout):
    return _reference_metrics(scores, labels, [("ndcg", k)], gain=gain, empty=empty,
                              ties=ties, reduction=reduction, **layout)[0]


def dcg(scores, labels, *, k=None, gain="exp2", empty="zero", ties="position",
        reduction="mean", **layout):
    return _reference_metrics(scores, labels, [("dcg", k)], gain=gain, empty=empty,
                              ties=ties, reduction=reduction, **layout)[0]


def mrr(scores, labels, *, k=None, relevance_threshold=1.0, empty="zero", ties="position",
        reduction="mean", **layout):
    return _reference_metrics(scores, labels, [("mrr", k)], relevance_threshold=relevance_threshold,
                              empty=empty, ties=ties, reduction=reduction, **layout)[0]


def ap(scores, labels, *, k=None, relevance_threshold=1.0, empty="zero", ties="position",
       reduction="mean", **layout):
    return _reference_metrics(scores, labels, [("ap", k)], relevance_threshold=relevance_threshold,
                              empty=empty, ties=ties, reduction=reduction, **layout)[0]


def map(scores, labels, **kwargs):  # noqa: A001
    return ap(scores, labels, reduction="mean", **kwargs)


def precision(scores, labels, *, k=None, relevance_threshold=1.0, divide_by="min_k_n", empty="zero",
              ties="position", reduction="mean", **layout):
    return _reference_metrics(scores, labels, [("precision", k)], relevance_threshold=relevance_threshold,
                              divide_by=divide_by, empty=empty, ties=ties, reduction=reduction, **layout)[0]


def recall(scores, labels, *, k=None, relevance_threshold=1.0, empty="zero", ties="position",
           reduction="mean", **layout):
    return _reference_metrics(scores, labels, [("recall", k)], relevance_threshold=relevance_threshold,
                              empty=empty, ties=ties, reduction=reduction, **layout)[0]


def err(scores, labels, *, k=None, max_grade=4.0, empty="zero", ties="position",
        reduction="mean", **layout):
    return _reference_metrics(scores, labels, [("err", k)], max_grade=max_grade, empty=empty,
                              ties=ties, reduction=reduction, **layout)[0]


def success(scores, labels, *, k=None, relevance_threshold=1.0, empty="zero", ties="position",
            reduction="mean", **layout):
    return _reference_metrics(scores, labels, [("success", k)], relevance_threshold=relevance_threshold,
                              empty=empty, ties=ties, reduction=reduction, **layout)[0]


def r_precision(scores, labels, *, relevance_threshold=1.0, empty="zero", ties="position",
                reduction="mean", **layout):
    return _reference_metrics(scores, labels, [("rprec", None)], relevance_threshold=relevance_threshold,
                              empty=empty, ties=ties, reduction=reduction, **layout)[0]


def opa(scores, labels, *, empty="zero", ties="position", reduction="mean", **layout):
    return _reference_metrics(scores, labels, [("opa", None)], empty=empty, ties=ties,
                              reduction=reduction, **layout)[0]


def auc(scores, labels, *, relevance_threshold=1.0, empty="zero", reduction="mean", **layout):
    """Per-query ROC AUC: the pairs (relevant, non-relevant) over ``[B, L, L]``, a tie
    counting one half (:func:`opa` with ``ties="average"`` on labels ``y >= threshold``)."""
    relevant = (labels >= relevance_threshold).to(torch.float64)
    return _reference_metrics(scores, relevant, [("opa", None)], empty=empty, ties="average",
                              reduction=reduction, **layout)[0]


def evaluate(scores, labels, *, metrics=("ndcg@10", "map", "mrr"), **options):
    from .metrics import parse_metric  # the spec syntax only; the arithmetic is above

    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    specs = [parse_metric(s) for s in metrics]
    others = [spec for spec in specs if spec[0] != "auc"]
    out = iter(_reference_metrics(scores, labels, others, **options)) if others else iter(())
    result = {}
    for spec, (name, _) in zip(metrics, specs):
        if name == "auc":
            layout = {k: options[k] for k in ("offsets", "lengths", "mask", "group_ids") if k in options}
            result[spec] = auc(scores, labels, relevance_threshold=options.get("relevance_threshold", 1.0),
                               empty=options.get("empty", "zero"), reduction=options.get("reduction", "mean"),
                               **layout)
        else:
            result[spec] = next(out)
    return result

# ---- listwise and pointwise
# Same conventions as rankops.listwise: listwise "mean" divides by the number of
# non-empty lists, pointwise "mean" by the number of items. Padding is kept out of every
# sum with a very negative score (exp() of it is exactly 0) rather than -inf, so no
# backward formula meets inf - inf.

__all__ += ["softmax_loss", "listnet_loss", "poly1_softmax_loss", "listmle_loss", "plistmle_loss", "unique_softmax_loss", "approx_ndcg_loss", "sigmoid_loss",
            "mse_loss"]


def _listwise_mean_count(valid: Tensor) -> Tensor:
    return (valid.sum(1) > 0).sum()


def _very_negative(x: Tensor) -> Tensor:
    return torch.full_like(x, torch.finfo(x.dtype).min)


def softmax_loss(scores, labels, *, offsets=None, lengths=None, mask=None, group_ids=None,
                 weights=None, label_norm=False, reduction="mean"):
    """Reference of :func:`rankops.softmax_loss`: ``-sum_i t_i log softmax(s)_i``, t = w y."""
    check_choice("reduction", reduction, REDUCTIONS)
    S, Y, W, valid = padded_lists(scores, labels, weights, offsets=offsets, lengths=lengths,
                                  mask=mask, group_ids=group_ids)
    t = W * Y
    if label_norm:  # to unit mass sum |t| (= sum t for non-negative weights)
        total = t.abs().sum(1, keepdim=True)
        t = t / torch.where(total > 0, total, torch.ones_like(total))
    log_p = torch.log_softmax(torch.where(valid, S, _very_negative(S)), dim=1)
    per_list = -torch.where(valid, t * log_p, torch.zeros_like(log_p)).sum(1)
    return reduce(per_list, reduction, _listwise_mean_count(valid))


def listnet_loss(scores, labels, *, offsets=None, lengths=None, mask=None, group_ids=None,
                 weights=None, reduction="mean"):
    """Reference of :func:`rankops.listnet_loss`: ``-sum_i w_i softmax(y)_i log softmax(s)_i``
    (allRank's listNet, with item weights)."""
    check_choice("reduction", reduction, REDUCTIONS)
    S, Y, W, valid = padded_lists(scores, labels, weights, offsets=offsets, lengths=lengths,
                                  mask=mask, group_ids=group_ids)
    target = torch.softmax(torch.where(valid, Y, torch.full_like(Y, -math.inf)), dim=1)
    log_p = torch.log_softmax(torch.where(valid, S, _very_negative(S)), dim=1)
    terms = torch.where(valid, W * target * log_p, torch.zeros_like(log_p))
    return reduce(-terms.sum(1), reduction, _listwise_mean_count(valid))


def poly1_softmax_loss(scores, labels, *, offsets=None, lengths=None, mask=None, group_ids=None,
                       weights=None, epsilon=1.0, label_norm=False, reduction="mean"):
    """Reference of :func:`rankops.poly1_softmax_loss`: the softmax loss plus
    ``epsilon * (1 - sum_i q_i softmax(s)_i)``, q = t / sum |t|; no such term for a list
    with t = 0 or a single item."""
    check_choice("reduction", reduction, REDUCTIONS)
    epsilon = check_float("epsilon", epsilon)
    if not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be finite, got {epsilon}")
    S, Y, W, valid = padded_lists(scores, labels, weights, offsets=offsets, lengths=lengths,
                                  mask=mask, group_ids=group_ids)
    t = torch.where(valid, W * Y, torch.zeros_like(S))
    total = t.abs().sum(1, keepdim=True)
    has_target = total > 0
    q = t / torch.where(has_target, total, torch.ones_like(total))
    log_p = torch.log_softmax(torch.where(valid, S, _very_negative(S)), dim=1)
    pt = torch.where(valid, q * log_p.exp(), torch.zeros_like(log_p)).sum(1)
    # no poly-1 term for a list without a target or with a single item (whose loss is 0)
    poly = torch.where(has_target.squeeze(1) & (valid.sum(1) > 1), epsilon * (1 - pt),
                       torch.zeros_like(pt))
    ce = softmax_loss(S, Y, mask=valid, weights=W, label_norm=label_norm, reduction="none")
    return reduce(ce + poly, reduction, _listwise_mean_count(valid))


def listmle_loss(scores, labels, *, offsets=None, lengths=None, mask=None, group_ids=None,
                 weights=None, reduction="mean"):
    """Reference of :func:`rankops.listmle_loss`:
    ``sum_k w_{pi_k} (logsumexp_{m >= k} s_{pi_m} - s_{pi_k})``, pi = labels descending, stable."""
    check_choice("reduction", reduction, REDUCTIONS)
    S, Y, W, valid = padded_lists(scores, labels, weights, offsets=offsets, lengths=lengths,
                                  mask=mask, group_ids=group_ids)
    order = _order_padding_last(Y, valid)  # labels descending, ties by position, padding last
    s_pi, w_pi, v_pi = S.gather(1, order), W.gather(1, order), valid.gather(1, order)
    s_pi_kept = torch.where(v_pi, s_pi, _very_negative(s_pi))
    suffix_lse = torch.logcumsumexp(s_pi_kept.flip(1), dim=1).flip(1)
    terms = torch.where(v_pi, w_pi * (suffix_lse - s_pi), torch.zeros_like(s_pi))
    return reduce(terms.sum(1), reduction, _listwise_mean_count(valid))


def plistmle_loss(scores, labels, *, offsets=None, lengths=None, mask=None, group_ids=None,
                  weights=None, position_weight="exp2", reduction="mean"):
    """Reference of :func:`rankops.plistmle_loss`: ListMLE's terms in label order times
    ``alpha_r``, ``(2^(n - r) - 1)`` normalised per list in log space (softmax of
    ``log(2^(n-r) - 1) = (n - r) log 2 + log1p(-2^-(n-r))``, finite for any n) or
    ``position_weight(r, n)`` normalised by its sum."""
    check_choice("reduction", reduction, REDUCTIONS)
    S, Y, W, valid = padded_lists(scores, labels, weights, offsets=offsets, lengths=lengths,
                                  mask=mask, group_ids=group_ids)
    order = _order_padding_last(Y, valid)
    s_pi, w_pi, v_pi = S.gather(1, order), W.gather(1, order), valid.gather(1, order)
    r = torch.arange(S.shape[1], device=S.device).expand_as(S)
    n = valid.sum(1, keepdim=True).expand_as(S)
    if position_weight == "exp2":
        e = (n - r).clamp_min(1).to(torch.float64)
        log_alpha = e * math.log(2.0) + torch.log1p(-torch.exp2(-e))
        log_alpha = torch.where(v_pi, log_alpha, torch.full_like(log_alpha, -math.inf))
        alpha = torch.softmax(log_alpha, dim=1).nan_to_num(0.0)  # all-padding rows: 0
    else:
        alpha = position_weight(r.reshape(-1), n.reshape(-1)).reshape(S.shape).to(torch.float64)
        alpha = torch.where(v_pi, alpha, torch.zeros_like(alpha))
        total = alpha.sum(1, keepdim=True)
        alpha = alpha / torch.where(total > 0, total, torch.ones_like(total))
    alpha = alpha.to(S.dtype)
    s_pi_kept = torch.where(v_pi, s_pi, _very_negative(s_pi))
    suffix_lse = torch.logcumsumexp(s_pi_kept.flip(1), dim=1).flip(1)
    terms = torch.where(v_pi, alpha * w_pi * (suffix_lse - s_pi), torch.zeros_like(s_pi))
    return reduce(terms.sum(1), reduction, _listwise_mean_count(valid))


def unique_softmax_loss(scores, labels, *, offsets=None, lengths=None, mask=None, group_ids=None,
                        weights=None, gain="exp2", reduction="mean"):
    """Reference of :func:`rankops.unique_softmax_loss`: ``-sum_i w_i G(y_i) log p_i``, p_i the
    softmax of s_i among {i} and the items of smaller label; [B, L, L] memory (as Rax)."""
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("gain", gain, GAINS)
    S, Y, W, valid = padded_lists(scores, labels, weights, offsets=offsets, lengths=lengths,
                                  mask=mask, group_ids=group_ids)
    L = S.shape[1]
    lower = valid[:, :, None] & valid[:, None, :] & (Y[:, None, :] < Y[:, :, None])  # [b, i, j]: y_j < y_i
    competes = lower | torch.eye(L, dtype=torch.bool, device=S.device)
    row = torch.where(competes, S[:, None, :].expand(-1, L, -1), _very_negative(S)[:, None, :])
    log_p = S - torch.logsumexp(row, dim=2)
    a = W * gains(Y, gain)
    # an item with no smaller label is alone in its softmax (log p = 0); a weight of 0 adds 0
    active = valid & lower.any(2) & (a != 0)
    per_list = -torch.where(active, a * log_p, torch.zeros_like(log_p)).sum(1)
    return reduce(per_list, reduction, _listwise_mean_count(valid))


def approx_ndcg_loss(scores, labels, *, offsets=None, lengths=None, mask=None, group_ids=None,
                     weights=None, temperature=1.0, k=None, gain="exp2", reduction="mean"):
    """Reference of :func:`rankops.approx_ndcg_loss`: ``-sum_{r_i <= k} w_i G_i D(r_i) / IDCG@k``
    with smooth ranks ``r_i = 1 + sum_{j != i} sigmoid((s_j - s_i) / T)``; [B, L, L] memory."""
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("gain", gain, GAINS)
    k = check_k(k)
    temperature = check_float("temperature", temperature)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    S, Y, W, valid = padded_lists(scores, labels, weights, offsets=offsets, lengths=lengths,
                                  mask=mask, group_ids=group_ids)
    L = S.shape[1]
    wg = W * gains(Y, gain)
    others = valid[:, :, None] & valid[:, None, :] & ~torch.eye(L, dtype=torch.bool, device=S.device)
    sig = torch.sigmoid((S[:, None, :] - S[:, :, None]) / temperature)  # [b, i, j]: (s_j - s_i) / T
    rank = 1 + torch.where(others, sig, torch.zeros_like(sig)).sum(2)
    active = valid if k is None else valid & (rank <= k)
    dcg = torch.where(active, wg / torch.log2(1 + rank), torch.zeros_like(rank)).sum(1)
    idcg = ideal_dcg(wg, valid, k)
    safe = torch.where(idcg > 0, idcg, torch.ones_like(idcg))
    per_list = torch.where(idcg > 0, -dcg / safe, torch.zeros_like(dcg))
    per_list = torch.where(valid.sum(1) >= 2, per_list, torch.zeros_like(per_list))  # one item: 0
    return reduce(per_list, reduction, _listwise_mean_count(valid))


def _pointwise(scores, labels, per_item_fn, offsets, lengths, mask, group_ids, weights, reduction):
    check_choice("reduction", reduction, REDUCTIONS)
    S, Y, W, valid = padded_lists(scores, labels, weights, offsets=offsets, lengths=lengths,
                                  mask=mask, group_ids=group_ids)
    items = torch.where(valid, W * per_item_fn(S, Y), torch.zeros_like(S))
    return reduce(items.sum(1), reduction, valid.sum())


def sigmoid_loss(scores, labels, *, offsets=None, lengths=None, mask=None, group_ids=None,
                 weights=None, reduction="mean"):
    """Reference of :func:`rankops.sigmoid_loss`: BCE with logits on labels clipped to [0, 1]."""
    return _pointwise(scores, labels,
                      lambda s, y: F.binary_cross_entropy_with_logits(s, y.clamp(0, 1), reduction="none"),
                      offsets, lengths, mask, group_ids, weights, reduction)


def mse_loss(scores, labels, *, offsets=None, lengths=None, mask=None, group_ids=None,
             weights=None, reduction="mean"):
    """Reference of :func:`rankops.mse_loss`: ``w (s - y)^2`` per item."""
    return _pointwise(scores, labels, lambda s, y: (s - y) ** 2, offsets, lengths, mask,
                      group_ids, weights, reduction)
