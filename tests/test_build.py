"""The extension was really built, and the build says what it contains."""
import importlib
import os

import pytest
import torch

import rankops


def test_compiled_extension_is_loaded():
    # rankops never falls back to Python: without rankops._C the package must not import.
    mod = importlib.import_module("rankops._C")
    assert mod.__file__.endswith((".so", ".pyd"))
    assert hasattr(torch.ops.rankops, "pairwise_loss")
    schemas = {str(op) for op in torch._C._jit_get_all_schemas() if str(op).startswith("rankops::")}
    assert any("pairwise_loss_backward" in s for s in schemas)


def test_build_info_keys():
    info = rankops.build_info()
    for key in ("cpu", "cuda", "cuda_archs", "openmp", "torch"):
        assert key in info
    assert info["cpu"] is True
    assert isinstance(info["cuda"], bool)
    # built against the torch we run with (major.minor.patch, local tag aside)
    assert torch.__version__.split("+")[0].startswith(info["torch"].split("+")[0])


def test_openmp_on_linux():
    if os.uname().sysname == "Linux":
        assert rankops.build_info()["openmp"], "CPU kernels must be built with OpenMP on Linux"


@pytest.mark.skipif(os.environ.get("RANKOPS_EXPECT_CUDA") != "1", reason="CUDA build not expected")
def test_cuda_build_when_expected():
    # CI's CUDA leg sets RANKOPS_EXPECT_CUDA=1: a silent C++-only fallback must fail here.
    info = rankops.build_info()
    assert info["cuda"], "RANKOPS_EXPECT_CUDA=1 but the extension was built without CUDA"
    assert info["cuda_archs"]
    assert "CUDA" in torch._C._dispatch_dump("rankops::pairwise_loss")


@pytest.mark.skipif(os.environ.get("RANKOPS_EXPECT_CUDA") != "0", reason="C++-only build not expected")
def test_cpu_only_build_when_expected():
    info = rankops.build_info()
    assert not info["cuda"]
    assert "CUDA" not in torch._C._dispatch_dump("rankops::pairwise_loss")


@pytest.mark.skipif(os.environ.get("RANKOPS_REQUIRE_CUDA") != "1", reason="GPU not required")
def test_gpu_usable_when_required():
    # scripts/gpu_check.sh sets RANKOPS_REQUIRE_CUDA=1 on the GPU machine.
    assert torch.cuda.is_available()
    assert rankops.build_info()["cuda"]


def test_setup_py_fails_fast_without_torch(tmp_path):
    # Build isolation gives setup.py an environment without torch: it must stop at once
    # and say what to run instead.
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.modules['torch'] = None; sys.argv = ['setup.py', '--version'];"
            "exec(compile(open('setup.py').read(), 'setup.py', 'exec'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode != 0
    assert "pip install --no-build-isolation" in out.stderr + out.stdout
