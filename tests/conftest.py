import os

import pytest
import torch

import rankops


def _cuda_usable() -> bool:
    return torch.cuda.is_available() and rankops.build_info()["cuda"]


DEVICES = ["cpu"] + (["cuda"] if _cuda_usable() else [])
ALL_DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not _cuda_usable(), reason="needs a GPU and a CUDA build")),
]


@pytest.fixture(params=ALL_DEVICES)
def device(request):
    return request.param


@pytest.fixture(params=["valid_only", "padding_list"])
def packing(request, monkeypatch):
    """How padded input is packed: on the CPU only the valid items ("valid_only"), or as on
    a GPU and under torch.compile, with no host sync, the padding moved into a trailing
    list whose results are dropped ("padding_list", forced here so that the CPU tests
    cover the GPU's path)."""
    from rankops import segments
    if (request.param == "valid_only" and "device" in request.fixturenames
            and request.getfixturevalue("device") == "cuda"):
        pytest.skip("CUDA inputs are always packed with a padding list")
    monkeypatch.setattr(segments, "_PADDING_LIST_ON_CPU", request.param == "padding_list")
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_report_header(config):
    info = rankops.build_info()
    return (f"rankops build: cuda={info['cuda']} archs={info['cuda_archs']} openmp={info['openmp']} "
            f"cpu_flags='{info['cpu_flags']}' torch(built)={info['torch']} torch(run)={torch.__version__} "
            f"gpu={'yes' if torch.cuda.is_available() else 'no'} "
            f"RANKOPS_EXPECT_CUDA={os.environ.get('RANKOPS_EXPECT_CUDA', '')}")
