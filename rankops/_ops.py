"""Loads the compiled library and registers fake kernels and autograd for every op.

Import order matters: rankops._C must be loaded (its static initialisers register the
op schemas and kernels) before torch.library can refer to the ops.
"""
from __future__ import annotations

import torch

try:
    from . import _C  # noqa: F401  (registers torch.ops.rankops.*)
except ImportError as exc:  # keep the real cause (undefined symbol, missing file) visible
    raise ImportError(
        "rankops: the compiled extension rankops._C could not be loaded. Build it against "
        "the torch you run with:  pip install --no-build-isolation -e .   "
        f"(torch here: {torch.__version__})"
    ) from exc

ops = torch.ops.rankops


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- fake (meta) kernels: shapes never depend on data -------------------------------

@torch.library.register_fake("rankops::pairwise_loss")
def _pairwise_loss_fake(scores, labels, offsets, weights, pair_fn, pair_weight, sigma, margin,
                        k, mu, gain, compute_grad):
    torch._check(scores.dim() == 1, lambda: "scores must be 1-D")
    torch._check(labels.shape == scores.shape, lambda: "labels must match scores")
    B = offsets.shape[0] - 1
    acc = _acc_dtype(scores.dtype)
    n_grad = scores.shape[0] if compute_grad else 0
    return (scores.new_empty(B, dtype=acc), scores.new_empty(n_grad, dtype=acc),
            scores.new_empty(B, dtype=torch.int64))


@torch.library.register_fake("rankops::pairwise_loss_backward")
def _pairwise_loss_backward_fake(grad_loss, item_grad, offsets):
    return torch.empty_like(item_grad)


# ---- autograd: the forward already computed d loss_b / d s_i ------------------------

class _NoDoubleBackward(torch.autograd.Function):
    """Identity on a returned gradient whose own backward raises: the loss kernels
    give first derivatives only, and a silent zero Hessian would be wrong."""

    @staticmethod
    def forward(ctx, grad, scores):
        return grad.clone()

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError(
            "rankops: double backward (differentiating the gradient of a rankops loss, "
            "e.g. create_graph=True) is not supported"
        )


def _setup_list_loss(ctx, inputs, output):
    scores, offsets = inputs[0], inputs[2]
    item_grad = output[1]
    ctx.mark_non_differentiable(item_grad, output[2])
    ctx.save_for_backward(item_grad, offsets)
    ctx.scores_dtype = scores.dtype
    ctx.scores = scores  # only to attach the no-double-backward guard


def _scaled_item_grad(ctx, grad_loss):
    item_grad, offsets = ctx.saved_tensors
    grad_scores = ops.pairwise_loss_backward(grad_loss, item_grad, offsets).to(ctx.scores_dtype)
    if torch.is_grad_enabled() and ctx.scores.requires_grad:  # create_graph=True
        grad_scores = _NoDoubleBackward.apply(grad_scores, ctx.scores)
    return grad_scores


def _pairwise_loss_backward(ctx, grad_loss, _grad_item, _grad_pairs):
    return (_scaled_item_grad(ctx, grad_loss),) + (None,) * 11


torch.library.register_autograd(
    "rankops::pairwise_loss", _pairwise_loss_backward, setup_context=_setup_list_loss
)


def _no_double_backward(ctx, grad):
    raise NotImplementedError(
        "rankops: double backward (create_graph=True through a rankops loss) is not supported"
    )


def _setup_none(ctx, inputs, output):
    pass


torch.library.register_autograd(
    "rankops::pairwise_loss_backward", _no_double_backward, setup_context=_setup_none
)


# ---- listwise family: (loss [B], item_grad [N] or [0]) ------------------------------

def _list_loss_fake(scores, labels, offsets, compute_grad):
    torch._check(scores.dim() == 1, lambda: "scores must be 1-D")
    torch._check(labels.shape == scores.shape, lambda: "labels must match scores")
    acc = _acc_dtype(scores.dtype)
    n_grad = scores.shape[0] if compute_grad else 0
    return scores.new_empty(offsets.shape[0] - 1, dtype=acc), scores.new_empty(n_grad, dtype=acc)


@torch.library.register_fake("rankops::softmax_loss")
def _softmax_loss_fake(scores, labels, offsets, weights, label_norm, compute_grad):
    return _list_loss_fake(scores, labels, offsets, compute_grad)


@torch.library.register_fake("rankops::listmle_loss")
def _listmle_loss_fake(scores, labels, offsets, weights, compute_grad):
    return _list_loss_fake(scores, labels, offsets, compute_grad)


@torch.library.register_fake("rankops::approx_ndcg_loss")
def _approx_ndcg_loss_fake(scores, labels, offsets, weights, temperature, k, gain, compute_grad):
    return _list_loss_fake(scores, labels, offsets, compute_grad)


def _setup_listwise(ctx, inputs, output):
    scores, offsets = inputs[0], inputs[2]
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1], offsets)
    ctx.scores_dtype = scores.dtype
    ctx.scores = scores  # only to attach the no-double-backward guard


def _listwise_autograd(name: str, num_inputs: int):
    backward_op = getattr(ops, f"{name}_backward")

    def backward(ctx, grad_loss, _grad_item):
        item_grad, offsets = ctx.saved_tensors
        grad_scores = backward_op(grad_loss, item_grad, offsets).to(ctx.scores_dtype)
        if torch.is_grad_enabled() and ctx.scores.requires_grad:  # create_graph=True
            grad_scores = _NoDoubleBackward.apply(grad_scores, ctx.scores)
        return (grad_scores,) + (None,) * (num_inputs - 1)

    torch.library.register_fake(f"rankops::{name}_backward")(
        lambda grad_loss, item_grad, offsets: torch.empty_like(item_grad))
    torch.library.register_autograd(f"rankops::{name}", backward, setup_context=_setup_listwise)
    torch.library.register_autograd(f"rankops::{name}_backward", _no_double_backward,
                                    setup_context=_setup_none)


_listwise_autograd("softmax_loss", 6)
_listwise_autograd("listmle_loss", 5)
_listwise_autograd("approx_ndcg_loss", 8)
