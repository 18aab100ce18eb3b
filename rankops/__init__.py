"""rankops: learning-to-rank losses and metrics for PyTorch, with C++/CUDA kernels over
packed, variable-length lists. See README.md and DESIGN (docs/) for the semantics."""
from . import _ops  # loads rankops._C first, then fake kernels and autograd
from . import _metrics_ops  # noqa: F401  (fake kernel of the metrics op)
from . import data, metrics, nn, reference, segments
from .losses import (
    lambdaloss,
    lambdarank_loss,
    pairwise_hinge_loss,
    pairwise_loss,
    pairwise_mse_loss,
    pairwise_soft_zero_one_loss,
    ranknet_loss,
)
from .listwise import (approx_ndcg_loss, listmle_loss, listnet_loss, mse_loss, plistmle_loss,
                       poly1_softmax_loss, sigmoid_loss, softmax_loss, unique_softmax_loss)

__version__ = "0.1.0"


def build_info() -> dict:
    """What the compiled extension contains: ``cpu``, ``cuda`` (bool), ``cuda_version``,
    ``cuda_archs`` (list), ``openmp`` (bool), ``cpu_flags``, ``torch`` (built against)."""
    raw = dict(item.split("=", 1) for item in _ops.ops.build_info().split(";"))
    return {
        "cpu": True,
        "cuda": raw["cuda"] == "1",
        "cuda_version": raw["cuda_version"] or None,
        "cuda_archs": [a for a in raw["cuda_archs"].split(";") if a] if raw["cuda_archs"] else [],
        "openmp": raw["openmp"] == "1",
        "cpu_flags": raw["cpu_flags"],
        "torch": raw["torch"],
    }


__all__ = [
    "build_info",
    "segments",
    "data",
    "metrics",
    "reference",
    "nn",
    "pairwise_loss",
    "ranknet_loss",
    "pairwise_hinge_loss",
    "pairwise_soft_zero_one_loss",
    "pairwise_mse_loss",
    "lambdarank_loss",
    "lambdaloss",
    "softmax_loss",
    "poly1_softmax_loss",
    "listnet_loss",
    "listmle_loss",
    "plistmle_loss",
    "unique_softmax_loss",
    "approx_ndcg_loss",
    "sigmoid_loss",
    "mse_loss",
]
