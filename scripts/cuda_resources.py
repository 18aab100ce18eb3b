"""What ptxas gives each rankops CUDA kernel, checked against what the launches assume.

No GPU is needed: every csrc/cuda/*.cu is compiled for one architecture with
`nvcc --resource-usage` (the extension's own flags, torch's headers), and the report of
each kernel (registers, static shared memory, stack, spills) is checked:

  * the medium-list block kernel's static shared memory fits kBlockKernelStaticSmem, the
    share `medium_cap_for_device` keeps back from the opt-in limit for it (its dynamic
    buffers take the rest: a larger static use would make those launches fail);
  * no rankops kernel needs more than --max-registers per thread (128 keeps at least two
    256-thread blocks on an SM's 64K registers);
  * no rankops kernel spills more than --max-spill bytes or needs a stack frame larger
    than --max-stack bytes (small spills around a math slow path are tolerated);
  * every kernel's static shared memory is within the 48 KiB static limit.

CUB's own kernels are listed in the counts but not held to the budgets.

    python scripts/cuda_resources.py [--arch 9.0] [--jobs 2] [--table FILE]

Exit status 1 on a violation, 2 when no CUDA toolkit or CUDA torch is found. Runs in CI's
CUDA leg (tests/test_build.py::test_cuda_kernel_resources); a few minutes of nvcc.
"""
import argparse
import concurrent.futures
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATIC_SMEM_LIMIT = 48 * 1024

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for 'sm_(\d+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def nvcc_command(source, arch, cuda_home):
    import torch
    from torch.utils import cpp_extension

    try:
        includes = cpp_extension.include_paths(device_type="cuda")
    except TypeError:  # torch < 2.6
        includes = cpp_extension.include_paths(cuda=True)
    aten_h = os.path.join(includes[0], "ATen", "ATen.h")
    with open(aten_h) as f:
        std = "-std=c++20" if "C++20" in f.read() else "-std=c++17"
    major, minor = arch.split(".")
    sm = f"{major}{minor}"
    return ([os.path.join(cuda_home, "bin", "nvcc"), "-O3", "--expt-relaxed-constexpr", std,
             f"-gencode=arch=compute_{sm},code=sm_{sm}", "--resource-usage", "-c", source,
             "-o", os.devnull, "-DRANKOPS_WITH_CUDA", "-DTORCH_EXTENSION_NAME=_C",
             "-I" + sysconfig.get_paths()["include"], "-I" + os.path.join(ROOT, "csrc")]
            + list(cpp_extension.COMMON_NVCC_FLAGS) + ["-I" + p for p in includes]
            + (["-D_GLIBCXX_USE_CXX11_ABI=" + str(int(torch._C._GLIBCXX_USE_CXX11_ABI))]))


def demangle(names):
    if not names or shutil.which("c++filt") is None:
        return names
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    lines = out.stdout.splitlines()
    return lines if len(lines) == len(names) else names


def parse_report(text):
    """[(mangled name, registers, static smem, stack, spill stores, spill loads)]."""
    parts = _ENTRY.split(text)
    kernels = []
    for name, _sm, body in zip(parts[1::3], parts[2::3], parts[3::3]):
        frame = _FRAME.search(body)
        used = _USED.search(body)
        if frame is None or used is None:
            raise ValueError(f"unreadable ptxas report for {name}")
        smem = _SMEM.search(body)
        stack, stores, loads = map(int, frame.groups())
        kernels.append((name, int(used.group(1)), int(smem.group(1)) if smem else 0,
                        stack, stores, loads))
    return kernels


def block_kernel_reserve():
    with open(os.path.join(ROOT, "csrc", "cuda", "pairwise_kernels.cuh")) as f:
        m = re.search(r"kBlockKernelStaticSmem = (\d+);", f.read())
    if m is None:
        raise SystemExit("cuda_resources: kBlockKernelStaticSmem not found in pairwise_kernels.cuh")
    return int(m.group(1))


def compile_all(arch, jobs, cuda_home):
    sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))

    def one(source):
        cmd = nvcc_command(source, arch, cuda_home)
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if run.returncode != 0:
            raise SystemExit(f"cuda_resources: nvcc failed on {source}:\n{run.stderr[-4000:]}")
        return os.path.basename(source), parse_report(run.stdout + run.stderr)

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, sources))


def check(reports, reserve, max_registers, max_spill, max_stack):
    """(violations, table rows) over every kernel of every file."""
    violations, rows = [], []
    for source, kernels in reports:
        pretty = demangle([k[0] for k in kernels])
        for (name, regs, smem, stack, stores, loads), shown in zip(kernels, pretty):
            shown = re.sub(r"rankops::(\(anonymous namespace\)::)?|pairwise_cuda::"
                           r"(\(anonymous namespace\)::)?", "", shown)
            ours = "cub::" not in shown
            what = f"{source}: {shown[:160]}"
            if smem > STATIC_SMEM_LIMIT:
                violations.append(f"{what}: {smem} bytes static shared memory > 48 KiB")
            if not ours:
                continue
            rows.append((source, shown, regs, smem, stack, stores, loads))
            if regs > max_registers:
                violations.append(f"{what}: {regs} registers (budget {max_registers})")
            if max(stores, loads) > max_spill:
                violations.append(f"{what}: spills {stores} / {loads} bytes (budget {max_spill})")
            if stack > max_stack:
                violations.append(f"{what}: {stack} bytes stack frame (budget {max_stack})")
            if "pairwise_block_kernel" in shown and smem > reserve:
                violations.append(f"{what}: {smem} bytes static shared memory > the "
                                  f"{reserve} bytes kBlockKernelStaticSmem keeps for it")
    return violations, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default=(os.environ.get("TORCH_CUDA_ARCH_LIST") or "9.0")
                    .replace("+PTX", "").split(";")[-1])
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("MAX_JOBS") or 2))
    ap.add_argument("--max-registers", type=int, default=128)
    ap.add_argument("--max-spill", type=int, default=64)
    ap.add_argument("--max-stack", type=int, default=64)
    ap.add_argument("--table", help="write the per-kernel table (markdown) here")
    args = ap.parse_args()

    try:
        import torch
    except ImportError:
        print("cuda_resources: torch is not importable", file=sys.stderr)
        return 2
    cuda_home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    if torch.version.cuda is None or not os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        print(f"cuda_resources: needs a CUDA build of torch and nvcc (CUDA_HOME={cuda_home})",
              file=sys.stderr)
        return 2

    reserve = block_kernel_reserve()
    reports = compile_all(args.arch, args.jobs, cuda_home)
    violations, rows = check(reports, reserve, args.max_registers, args.max_spill, args.max_stack)
    total = sum(len(k) for _, k in reports)
    block_smem = max((r[3] for r in rows if "pairwise_block_kernel" in r[1]), default=0)
    print(f"cuda_resources: sm_{args.arch.replace('.', '')}, {total} kernels ({len(rows)} "
          f"rankops, {total - len(rows)} CUB); rankops: at most {max(r[2] for r in rows)} "
          f"registers, {max(r[5] for r in rows)} bytes spilled, block kernel static smem "
          f"{block_smem} of {reserve} bytes kept for it")
    if args.table:
        with open(args.table, "w") as f:
            f.write("| file | kernel | registers | static smem | stack | spill st/ld |\n")
            f.write("|---|---|---|---|---|---|\n")
            for source, shown, regs, smem, stack, stores, loads in rows:
                f.write(f"| {source} | `{shown[:120]}` | {regs} | {smem} | {stack} | "
                        f"{stores}/{loads} |\n")
    for v in violations:
        print("VIOLATION " + v)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
