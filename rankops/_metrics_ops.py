"""Fake kernel of rankops::ranking_metrics (metrics have no autograd formula: no gradient)."""
from __future__ import annotations

import torch

from ._ops import _acc_dtype, ops  # loads rankops._C first


@torch.library.register_fake("rankops::ranking_metrics")
def _ranking_metrics_fake(scores, labels, offsets, metrics, ks, gain, relevance_threshold,
                          max_grade, precision_divide_by, ties="position"):
    torch._check(scores.dim() == 1, lambda: "scores must be 1-D")
    torch._check(labels.shape == scores.shape, lambda: "labels must match scores")
    torch._check(len(metrics) == len(ks), lambda: "metrics and ks must have one entry each")
    shape = (len(metrics), offsets.shape[0] - 1)
    return (scores.new_empty(shape, dtype=_acc_dtype(scores.dtype)),
            scores.new_empty(shape, dtype=torch.bool))


__all__ = ["ops"]
