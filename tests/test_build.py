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


def _cuda_resources():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "scripts", "cuda_resources.py")
    spec = importlib.util.spec_from_file_location("cuda_resources", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Two kernels as `nvcc --resource-usage` (CUDA 13) reports them, mangled as rankops' are.
_PTXAS_REPORT = """\
ptxas info    : 28 bytes gmem
ptxas info    : Compiling entry function '_ZN7rankops13pairwise_cuda21pairwise_block_kernelILNS_6PairFnE0ELNS_10PairWeightE2EfEEvNS_9PairBatchIT1_EEPKlii' for 'sm_90'
ptxas info    : Function properties for _ZN7rankops13pairwise_cuda21pairwise_block_kernelILNS_6PairFnE0ELNS_10PairWeightE2EfEEvNS_9PairBatchIT1_EEPKlii
    8 bytes stack frame, 12 bytes spill stores, 28 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 8 bytes cumulative stack size, {block_smem} bytes smem
ptxas info    : Compile time = 291.485 ms
ptxas info    : Compiling entry function '_ZN7rankops50_GLOBAL__N__70c5d901_17_list_grad_cuda_cu_93c24be622scale_item_grad_kernelIfEEvPKT_S4_PKlllPS2_' for 'sm_90'
ptxas info    : Function properties for _ZN7rankops50_GLOBAL__N__70c5d901_17_list_grad_cuda_cu_93c24be622scale_item_grad_kernelIfEEvPKT_S4_PKlllPS2_
    0 bytes stack frame, {spill} bytes spill stores, 0 bytes spill loads
ptxas info    : Used {regs} registers, used 0 barriers
"""


def test_cuda_resources_parses_ptxas_and_flags_each_budget():
    cr = _cuda_resources()
    kernels = cr.parse_report(_PTXAS_REPORT.format(block_smem=640, spill=0, regs=32))
    assert [k[1:] for k in kernels] == [(40, 640, 8, 12, 28), (32, 0, 0, 0, 0)]

    def violations(**fields):
        values = dict(block_smem=640, spill=0, regs=32)
        values.update(fields)
        report = [("x.cu", cr.parse_report(_PTXAS_REPORT.format(**values)))]
        return cr.check(report, reserve=1024, max_registers=128, max_spill=64, max_stack=64)[0]

    assert violations() == []
    over = violations(block_smem=1040)
    assert len(over) == 1 and "pairwise_block_kernel" in over[0] and "1024" in over[0]
    assert len(violations(regs=130)) == 1 and "130 registers" in violations(regs=130)[0]
    assert len(violations(spill=96)) == 1 and "spills 96" in violations(spill=96)[0]
    assert len(violations(block_smem=50000)) == 2  # over the reserve and the 48 KiB limit


def test_cuda_resources_reads_the_reserve_the_kernels_use():
    # the constant medium_cap_for_device keeps back, read from the header it lives in
    assert 0 < _cuda_resources().block_kernel_reserve() < 48 * 1024


@pytest.mark.skipif(os.environ.get("RANKOPS_EXPECT_CUDA") != "1", reason="CUDA build not expected")
def test_cuda_kernel_resources():
    # CI's CUDA leg: ptxas's report of every kernel (registers, shared memory, spills)
    # within what the launches assume (scripts/cuda_resources.py; a few minutes of nvcc).
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(root, "scripts", "cuda_resources.py")],
                         cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "VIOLATION" not in out.stdout
