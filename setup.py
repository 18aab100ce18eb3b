"""Builds rankops._C: the C++ kernels always, the CUDA kernels when possible.

Build against the torch you run with:  pip install --no-build-isolation -e .

Environment:
  RANKOPS_CUDA=auto|1|0   auto (default): CUDA when torch is a CUDA build and a nvcc of the
                          same major version is found; 1: CUDA or fail; 0: C++ only.
  CUDA_HOME               the toolkit to use (else the one nvcc on PATH belongs to, else
                          /usr/local/cuda).
  TORCH_CUDA_ARCH_LIST    e.g. "9.0" for H100/H200; default: the visible GPU, else
                          "7.5;8.0;8.6;9.0+PTX" (CUDA 13 cannot build below 7.5).
  RANKOPS_CPU_FLAGS       extra C++ ISA flags; default "-mavx2 -mfma" where the build
                          CPU has both (x86-64), "" elsewhere. Set "" for a portable build.
  MAX_JOBS                parallel compile jobs (2 on small machines).
  DEBUG=1                 -O0 -g.
"""
import glob
import os
import platform
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup


# `make` exports these even when unset; empty means "not given".
for _name in ("RANKOPS_CUDA", "CUDA_HOME", "TORCH_CUDA_ARCH_LIST", "MAX_JOBS"):
    if os.environ.get(_name, None) == "":
        del os.environ[_name]

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # build isolation, or no torch installed yet
    sys.exit(
        "rankops: torch is not importable in this build environment.\n"
        "rankops compiles against the torch you run with, so install torch first, then build\n"
        "without build isolation:\n"
        "    pip install torch\n"
        "    pip install --no-build-isolation -e .\n"
        "(or run `make test` / `make demo`, which do both)."
    )


def log(msg):
    print(f"rankops: {msg}", flush=True)


def nvcc_version(cuda_home):
    nvcc = os.path.join(cuda_home, "bin", "nvcc")
    if not os.path.exists(nvcc):
        return None
    try:
        out = subprocess.check_output([nvcc, "--version"], text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def find_cuda_home():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        return home
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if os.path.exists(os.path.join(home, "include", "cuda.h")):
            return home
    return "/usr/local/cuda"


def decide_cuda():
    """Returns (use_cuda, reason, cuda_home)."""
    mode = os.environ.get("RANKOPS_CUDA", "auto").strip().lower()
    if os.environ.get("FORCE_ONLY_CPU") == "1":
        mode = "0"
    elif os.environ.get("FORCE_CUDA") == "1":
        mode = "1"
    if mode not in ("auto", "1", "0"):
        sys.exit(f"rankops: RANKOPS_CUDA must be auto, 1 or 0, got {mode!r}")
    if mode == "0":
        return False, "RANKOPS_CUDA=0", None
    reason = None
    cuda_home = find_cuda_home()
    if torch.version.cuda is None:
        reason = f"torch {torch.__version__} is a CPU build"
    else:
        nv = nvcc_version(cuda_home)
        torch_major = int(torch.version.cuda.split(".")[0])
        if nv is None:
            reason = f"no nvcc under CUDA_HOME={cuda_home}"
        elif nv[0] != torch_major:
            reason = f"nvcc {nv[0]}.{nv[1]} does not match torch's CUDA {torch.version.cuda}"
    if reason is None:
        return True, f"torch {torch.__version__}, CUDA_HOME={cuda_home}", cuda_home
    if mode == "1":
        sys.exit(f"rankops: RANKOPS_CUDA=1 but CUDA cannot be built: {reason}")
    return False, reason, None


def cpu_isa_flags():
    if "RANKOPS_CPU_FLAGS" in os.environ:
        return os.environ["RANKOPS_CPU_FLAGS"].split()
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return []
    return ["-mavx2", "-mfma"] if {"avx2", "fma"} <= flags else []


def cuda_arch_list():
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if not archs:
        try:
            visible = torch.cuda.is_available()
        except Exception:
            visible = False
        if not visible:
            archs = "7.5;8.0;8.6;9.0+PTX"
            os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        else:
            cap = torch.cuda.get_device_capability()
            archs = f"{cap[0]}.{cap[1]}"
            os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    return archs


def extensions():
    use_cuda, reason, cuda_home = decide_cuda()
    debug = os.environ.get("DEBUG") == "1"
    isa = [] if debug else cpu_isa_flags()
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    openmp = sys.platform.startswith("linux") and "OpenMP" in torch.__config__.parallel_info()
    # -fno-trapping-math lets g++ if-convert the branch-free float selects of the pair
    # loops, so they vectorise; rankops never reads floating-point exception flags.
    cxx = ["-O0", "-g"] if debug else ["-O3", "-fno-trapping-math", "-fno-math-errno"]
    cxx += isa + (["-fopenmp"] if openmp else [])
    macros = [("RANKOPS_CPU_FLAGS", '"' + " ".join(isa) + '"')]
    link = ["-fopenmp"] if openmp else []
    if use_cuda:
        os.environ["CUDA_HOME"] = cuda_home
        # cpp_extension read CUDA_HOME at import time; point it at the toolkit chosen here.
        cpp_extension.CUDA_HOME = cuda_home
        archs = cuda_arch_list()
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        macros += [("RANKOPS_WITH_CUDA", None), ("RANKOPS_CUDA_ARCHS", f'"{archs}"')]
        nvcc = ["-O3", "--expt-relaxed-constexpr"] + (["-lineinfo"] if debug else [])
        log(f"building the CUDA extension ({reason}, archs {archs}; OpenMP {openmp}; "
            f"CPU flags {' '.join(isa) or 'none'})")
        return [cpp_extension.CUDAExtension(
            "rankops._C", sources, define_macros=macros,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=link)]
    log(f"building the C++-only extension ({reason}; OpenMP {openmp}; "
        f"CPU flags {' '.join(isa) or 'none'})")
    return [cpp_extension.CppExtension(
        "rankops._C", sources, define_macros=macros,
        extra_compile_args={"cxx": cxx}, extra_link_args=link)]


setup(
    packages=find_packages(include=["rankops", "rankops.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
