"""``torch.nn.Module`` wrappers of the losses: options fixed at construction, the layout
given at call time (``loss(scores, labels, offsets=...)``)."""
from __future__ import annotations

import numbers

import torch
from torch import nn

from . import losses

__all__ = ["PairwiseLoss", "RankNetLoss", "PairwiseHingeLoss", "PairwiseSoftZeroOneLoss",
           "LambdaRankLoss", "LambdaLoss", "PairwiseMSELoss"]


class _ListLoss(nn.Module):
    _fn = None

    def __init__(self, **options):
        super().__init__()
        self.options = options
        # Bad options fail here, not at the first forward: one call on a two-item CPU list
        # runs every argument check of the function (CPU whatever the default device, so
        # construction under torch.device("meta"/"cuda") neither fails nor syncs).
        with torch.no_grad():
            type(self)._fn(*_probe_list(), **options)

    def forward(self, scores, labels, **layout):
        return type(self)._fn(scores, labels, **self.options, **layout)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


def _probe_list():
    return (torch.tensor([0.0, 1.0], device="cpu"), torch.tensor([1.0, 0.0], device="cpu"))


class PairwiseLoss(_ListLoss):
    """:func:`rankops.pairwise_loss` with fixed options (``pair_fn``, ``weight``, ``sigma``, ...)."""
    _fn = staticmethod(losses.pairwise_loss)


class RankNetLoss(_ListLoss):
    """:func:`rankops.ranknet_loss`."""
    _fn = staticmethod(losses.ranknet_loss)


class PairwiseHingeLoss(_ListLoss):
    """:func:`rankops.pairwise_hinge_loss`."""
    _fn = staticmethod(losses.pairwise_hinge_loss)


class PairwiseSoftZeroOneLoss(_ListLoss):
    """:func:`rankops.pairwise_soft_zero_one_loss`."""
    _fn = staticmethod(losses.pairwise_soft_zero_one_loss)


class LambdaRankLoss(_ListLoss):
    """:func:`rankops.lambdarank_loss`."""
    _fn = staticmethod(losses.lambdarank_loss)


class LambdaLoss(_ListLoss):
    """:func:`rankops.lambdaloss` (``variant="ndcg2"`` or ``"ndcg2pp"``)."""
    _fn = staticmethod(losses.lambdaloss)


class PairwiseMSELoss(_ListLoss):
    """:func:`rankops.pairwise_mse_loss`."""
    _fn = staticmethod(losses.pairwise_mse_loss)


# ---- listwise and pointwise losses, and CombinedLoss -----------------------------------

from . import listwise as _listwise  # noqa: E402
from ._common import exp2_label_bounds  # noqa: E402
from . import segments as _segments  # noqa: E402

__all__ += ["SoftmaxLoss", "ListNetLoss", "Poly1SoftmaxLoss", "ListMLELoss", "PListMLELoss", "UniqueSoftmaxLoss", "ApproxNDCGLoss", "SigmoidLoss", "MSELoss", "CombinedLoss"]


class SoftmaxLoss(_ListLoss):
    """:func:`rankops.softmax_loss` (``label_norm``)."""
    _fn = staticmethod(_listwise.softmax_loss)


class ListNetLoss(_ListLoss):
    """:func:`rankops.listnet_loss`."""
    _fn = staticmethod(_listwise.listnet_loss)


class Poly1SoftmaxLoss(_ListLoss):
    """:func:`rankops.poly1_softmax_loss` (``epsilon``, ``label_norm``)."""
    _fn = staticmethod(_listwise.poly1_softmax_loss)


class ListMLELoss(_ListLoss):
    """:func:`rankops.listmle_loss`."""
    _fn = staticmethod(_listwise.listmle_loss)


class PListMLELoss(_ListLoss):
    """:func:`rankops.plistmle_loss` (``position_weight``)."""
    _fn = staticmethod(_listwise.plistmle_loss)


class UniqueSoftmaxLoss(_ListLoss):
    """:func:`rankops.unique_softmax_loss` (``gain``)."""
    _fn = staticmethod(_listwise.unique_softmax_loss)


class ApproxNDCGLoss(_ListLoss):
    """:func:`rankops.approx_ndcg_loss` (``temperature``, ``k``, ``gain``)."""
    _fn = staticmethod(_listwise.approx_ndcg_loss)


class SigmoidLoss(_ListLoss):
    """:func:`rankops.sigmoid_loss`."""
    _fn = staticmethod(_listwise.sigmoid_loss)


class MSELoss(_ListLoss):
    """:func:`rankops.mse_loss`."""
    _fn = staticmethod(_listwise.mse_loss)


# name -> (implementation on resolved packed lists, fixed options, options it accepts,
#          whether it takes an exp2 gain of the labels given its options, or None: never)
_pairwise, _pairwise_exp2 = losses._pairwise_loss_packed, losses._pairwise_takes_exp2_gain
_COMBINABLE = {
    "ranknet": (_pairwise, dict(pair_fn="logistic", weight="none"), ("sigma",), None),
    "hinge": (_pairwise, dict(pair_fn="hinge", weight="none"), ("margin",), None),
    "soft_zero_one": (_pairwise, dict(pair_fn="soft_zero_one", weight="none"), ("sigma",), None),
    "lambdarank": (_pairwise, dict(pair_fn="logistic", weight="ndcg"), ("sigma", "k", "gain"),
                   _pairwise_exp2),
    "ndcg2": (_pairwise, dict(pair_fn="logistic", weight="ndcg2"), ("sigma", "k", "gain"),
              _pairwise_exp2),
    "ndcg2pp": (_pairwise, dict(pair_fn="logistic", weight="ndcg2pp"), ("sigma", "k", "mu", "gain"),
                _pairwise_exp2),
    "pairwise_mse": (losses._pairwise_mse_packed, {}, (), None),
    "softmax": (_listwise._softmax_packed, {}, ("label_norm",), None),
    "poly1_softmax": (_listwise._poly1_softmax_packed, {}, ("epsilon", "label_norm"), None),
    "listnet": (_listwise._listnet_packed, {}, (), None),
    "listmle": (_listwise._listmle_packed, {}, (), None),
    "plistmle": (_listwise._plistmle_packed, {}, ("position_weight",), None),
    "unique_softmax": (_listwise._unique_softmax_packed, {}, ("gain",),
                       _listwise._takes_exp2_gain),
    "approx_ndcg": (_listwise._approx_ndcg_packed, {}, ("temperature", "k", "gain"),
                    _listwise._takes_exp2_gain),
    "sigmoid": (_listwise._sigmoid_packed, {}, (), None),
    "mse": (_listwise._mse_packed, {}, (), None),
}


# the loss functions' own names (rankops.<name>_loss, rankops.lambdaloss), accepted too
_ALIASES = {"pairwise_hinge": "hinge", "pairwise_soft_zero_one": "soft_zero_one",
            "lambdaloss": "ndcg2pp", "approxndcg": "approx_ndcg"}


def _combinable_name(name):
    if isinstance(name, str) and name.endswith("_loss"):
        name = name[: -len("_loss")]
    return _ALIASES.get(name, name)


class CombinedLoss(nn.Module):
    """Several losses, weighted and summed: ``sum_name weight_name * loss_name(scores, labels)``.

    ``losses`` maps a name (``"ranknet"``, ``"hinge"``, ``"soft_zero_one"``, ``"lambdarank"``,
    ``"ndcg2"``, ``"ndcg2pp"``, ``"pairwise_mse"``, ``"softmax"``, ``"listnet"``, ``"poly1_softmax"``, ``"listmle"``, ``"plistmle"``, ``"unique_softmax"``, ``"approx_ndcg"``, ``"sigmoid"``,
    ``"mse"``; also the functions' names, with or without ``_loss``: ``"ranknet_loss"``,
    ``"pairwise_hinge"``, ``"pairwise_soft_zero_one_loss"``, ``"lambdaloss"`` = ``"ndcg2pp"``) to its weight, or to ``(weight, {options})`` for
    options of that loss alone; bad options fail at construction.
    ``shared_options`` (``reduction``, ``k``, ``sigma``, ``gain``, ``temperature``, ...) go to
    every loss that takes them; an option no loss takes is a TypeError. Each loss reduces
    with its own convention (pairwise mean: per pair; listwise: per non-empty list;
    pointwise: per item); ``reduction="none"`` sums the per-list values ``[B]``.

    The layout is resolved and validated once per call (:func:`rankops.segments.as_packed`)
    and the packed lists go to every loss::

        loss_fn = rankops.nn.CombinedLoss({"lambdarank": 1.0, "softmax": 0.5}, k=10)
        loss = loss_fn(scores, labels, offsets=offsets)
    """

    def __init__(self, losses: dict, **shared_options):
        super().__init__()
        if not isinstance(losses, dict) or not losses:
            raise TypeError("losses must be a non-empty dict {name: weight or (weight, {options})}")
        reduction = shared_options.pop("reduction", "mean")
        self.parts = []
        self._takes_exp2 = False
        used = set()
        for name, spec in losses.items():
            name = _combinable_name(name)
            if name not in _COMBINABLE:
                raise ValueError(f"unknown loss {name!r} in losses; choose from {', '.join(_COMBINABLE)}")
            weight, own = (spec if isinstance(spec, tuple) else (spec, {}))
            if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
                raise TypeError(f"the weight of {name!r} must be a number, got {type(weight).__name__}")
            fn, fixed, accepted, takes_exp2_gain = _COMBINABLE[name]
            unknown = set(own) - set(accepted) - {"reduction"}
            if unknown:
                raise TypeError(f"{name!r} does not take option(s) {', '.join(sorted(unknown))}")
            opts = {o: shared_options[o] for o in accepted if o in shared_options}
            used.update(opts)
            opts.update(own)
            opts.setdefault("reduction", reduction)
            self.parts.append((name, float(weight), fn, {**fixed, **opts}))
            # labels are validated once for all parts: bounded where any takes an exp2 gain
            if takes_exp2_gain is not None and takes_exp2_gain(**fixed, **opts):
                self._takes_exp2 = True
        unused = set(shared_options) - used
        if unused:
            raise TypeError(f"no loss in {sorted(losses)} takes option(s) {', '.join(sorted(unused))}")
        self.reduction = reduction
        self.shared_options = dict(shared_options, reduction=reduction)
        with torch.no_grad():  # every option's value checked now, on a two-item CPU list
            self(*_probe_list())

    def forward(self, scores, labels, *, offsets=None, lengths=None, mask=None, group_ids=None,
                weights=None, validate=True):
        lists = _segments.as_packed(scores, labels, weights=weights, offsets=offsets,
                                    lengths=lengths, mask=mask, group_ids=group_ids,
                                    validate=validate,
                                    label_bounds=exp2_label_bounds(scores, self._takes_exp2))
        total = None
        for _, weight, fn, opts in self.parts:
            term = weight * fn(lists, **opts)
            total = term if total is None else total + term
        return total

    def extra_repr(self) -> str:
        parts = ", ".join(f"{name}={w!r}" for name, w, _, _ in self.parts)
        shared = ", ".join(f"{k}={v!r}" for k, v in self.shared_options.items())
        return f"{parts}, {shared}"
