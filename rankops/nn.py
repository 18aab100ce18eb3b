"""``torch.nn.Module`` wrappers of the losses: options fixed at construction, the layout
given at call time (``loss(scores, labels, offsets=...)``)."""
from __future__ import annotations

from torch import nn

from . import losses

__all__ = ["PairwiseLoss", "RankNetLoss", "PairwiseHingeLoss", "PairwiseSoftZeroOneLoss",
           "LambdaRankLoss", "LambdaLoss"]


class _ListLoss(nn.Module):
    _fn = None

    def __init__(self, **options):
        super().__init__()
        self.options = options

    def forward(self, scores, labels, **layout):
        return type(self)._fn(scores, labels, **self.options, **layout)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


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
