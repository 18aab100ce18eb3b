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


# ---- listwise family: (loss [B], item_grad [N] or [0]) ------------------------------

def _list_loss_fake(scores, labels, offsets, compute_grad):
    torch._check(scores.dim() == 1, lambda: "scores must be 1-D")
    torch._check(labels.shape == scores.shape, lambda: "labels must match scores")
    acc = _acc_dtype(scores.dtype)
    n_grad = scores.shape[0] if compute_grad else 0
    return scores.new_empty(offsets.shape[0] - 1, dtype=acc), scores.new_empty(n_grad, dtype=acc)


@torch.library.register_fake("rankops::softmax_loss")
def _softmax_loss_fake(scores, labels, offsets, weights, label_norm, poly_epsilon, label_softmax,
                       compute_grad):
    return _list_loss_fake(scores, labels, offsets, compute_grad)


@torch.library.register_fake("rankops::listmle_loss")
def _listmle_loss_fake(scores, labels, offsets, weights, position_weight, compute_grad):
    return _list_loss_fake(scores, labels, offsets, compute_grad)


@torch.library.register_fake("rankops::unique_softmax_loss")
def _unique_softmax_loss_fake(scores, labels, offsets, weights, gain, compute_grad):
    return _list_loss_fake(scores, labels, offsets, compute_grad)


@torch.library.register_fake("rankops::approx_ndcg_loss")
def _approx_ndcg_loss_fake(scores, labels, offsets, weights, temperature, k, gain, compute_grad):
    return _list_loss_fake(scores, labels, offsets, compute_grad)


# ---- autograd ------------------------------------------------------------------------
# The loss ops' autograd is C++ (csrc/autograd.cpp, on the Autograd dispatch key): their
# forward already computed d loss_b / d s_i, and the backward scales it by the op's
# *_backward kernel without entering Python. Called directly, a *_backward op gives first
# derivatives only.

def _no_double_backward(ctx, grad):
    raise NotImplementedError(
        "rankops: double backward (create_graph=True through a rankops loss) is not supported"
    )


def _setup_none(ctx, inputs, output):
    pass


def _backward_op(name: str):
    torch.library.register_fake(f"rankops::{name}_backward")(
        lambda grad_loss, item_grad, offsets: torch.empty_like(item_grad))
    torch.library.register_autograd(f"rankops::{name}_backward", _no_double_backward,
                                    setup_context=_setup_none)


for _name in ("pairwise_loss", "softmax_loss", "listmle_loss", "unique_softmax_loss",
              "approx_ndcg_loss"):
    _backward_op(_name)
