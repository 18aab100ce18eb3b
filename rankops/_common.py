"""Argument checks and reductions shared by the losses, the metrics and the reference."""
from __future__ import annotations

from typing import Optional

from torch import Tensor

PAIR_FNS = ("logistic", "hinge", "soft_zero_one")
PAIR_WEIGHTS = ("none", "label_diff", "ndcg", "ndcg2", "ndcg2pp")
GAINS = ("exp2", "linear")
REDUCTIONS = ("mean", "sum", "none")


def check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def check_k(k) -> Optional[int]:
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int >= 1 or None, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1 (or None for the whole list), got {k}")
    return k


def check_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def reduce(per_list: Tensor, reduction: str, denominator: Tensor) -> Tensor:
    """``"none"``: per-list values; ``"sum"``; ``"mean"``: sum / max(denominator, 1)."""
    if reduction == "none":
        return per_list
    total = per_list.sum()
    if reduction == "sum":
        return total
    return total / denominator.clamp_min(1).to(total.dtype)
