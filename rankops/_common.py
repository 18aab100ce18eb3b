"""Argument checks and reductions shared by the losses, the metrics and the reference."""
from __future__ import annotations

import numbers
from typing import List, Optional, Tuple

import torch
import torch.autograd.forward_ad as forward_ad
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
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):  # int, numpy integers
        raise TypeError(f"k must be an int >= 1 or None, got {type(k).__name__}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1 (or None for the whole list), got {k}")
    return k


def check_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # also numpy scalars
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def check_positive(name: str, value) -> float:
    value = check_float(name, value)
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def exp2_label_limit(scores_dtype: torch.dtype) -> float:
    """The largest label allowed where an exp2 gain 2^y - 1 is taken, for scores of this
    dtype: 64 (float32 accumulation, whose max is 2^128) or 512 (float64, 2^1024). The
    margin keeps sums of gains over any list (ideal DCG), their differences and the
    returned DCG finite, not only a single gain."""
    return 512.0 if scores_dtype == torch.float64 else 64.0


def exp2_label_bounds(scores, takes_exp2_gain: bool) -> List[Tuple[float, str]]:
    """The label bound (``segments.as_packed``'s ``label_bounds``) of a loss or metric that
    takes ``G(y) = 2^y - 1`` of the labels: :func:`exp2_label_limit`; else none. Which ones
    do is said once, next to each (``*_takes_exp2_gain`` in losses.py and listwise.py)."""
    if not (takes_exp2_gain and isinstance(scores, Tensor)):
        return []
    limit = exp2_label_limit(scores.dtype)
    return [(limit, f"labels must be <= {limit:g} with gain='exp2': 2^y - 1 overflows beyond; "
                    "use gain='linear' for larger labels")]


def check_kernel_autograd(scores: Tensor, labels: Tensor, weights: Optional[Tensor]) -> None:
    """The C++/CUDA losses give d loss / d scores, in reverse mode. A silent zero
    gradient for labels or weights, or a zero forward-mode tangent, would be wrong, so
    these raise instead."""
    if torch.is_grad_enabled():
        for name, t in (("labels", labels), ("weights", weights)):
            if t is not None and t.requires_grad:
                raise ValueError(
                    f"{name} requires grad, but this rankops loss is differentiable in the "
                    f"scores only; pass {name}.detach() (rankops.reference differentiates "
                    f"{name} too)")
    if torch.compiler.is_compiling():
        return
    if forward_ad.unpack_dual(scores).tangent is not None or (
            scores.requires_grad and torch._C._functorch.is_functorch_wrapped_tensor(scores)):
        raise NotImplementedError(
            "rankops losses support reverse-mode autograd (loss.backward(), "
            "torch.autograd.grad, torch.autograd.functional.jacobian), not torch.func "
            "transforms (grad, vjp, jacrev, jvp) or forward-mode AD: their gradients would "
            "be wrong or fail inside torch")


def reduce(per_list: Tensor, reduction: str, denominator) -> Tensor:
    """``"none"``: per-list values; ``"sum"``; ``"mean"``: sum / max(denominator, 1).
    ``denominator``: a tensor, or a function giving it, called for ``"mean"`` only (its
    few small ops are a measurable part of a small batch's step)."""
    if reduction == "none":
        return per_list
    total = per_list.sum()
    if reduction == "sum":
        return total
    if callable(denominator):
        denominator = denominator()
    return total / denominator.clamp_min(1).to(total.dtype)
