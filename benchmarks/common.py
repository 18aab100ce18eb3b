"""Shared pieces of the benchmark scripts: shapes, timing, peak memory, the table."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

import rankops


def web_like_lengths(num_lists=256, median=120, max_len=1000, seed=0):
    """Heavy-tailed list lengths (log-normal), like web-search queries."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.exp(torch.randn(num_lists, generator=g, dtype=torch.float64) * 0.9) * median
    lengths = raw.round().clamp(2, max_len).to(torch.int64)
    lengths[0] = max_len  # the tail is really there
    return lengths


def make_batch(lengths, *, device="cpu", dtype=torch.float32, grades=5, seed=0):
    """Packed scores (requires_grad), labels and offsets for the given lengths."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    n = int(lengths.sum())
    scores = torch.randn(n, generator=g).to(dtype)
    labels = torch.randint(0, grades, (n,), generator=g).to(torch.float32)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    return (scores.to(device).requires_grad_(), labels.to(device), offsets.to(device))


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_fn(fn, device, *, repeats=5, warmup=1):
    """Median seconds of fn() over `repeats` runs after `warmup` runs (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if torch.device(device).type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_extra_bytes_cuda(fn, device):
    """Peak GPU memory allocated by fn() above what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(device) - before


def current_rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_extra_rss_bytes(fn, min_seconds=0.2):
    """Peak resident memory above the level before fn(), sampled every 0.2 ms by a thread
    while fn() runs (repeated for at least min_seconds). Meant for a fresh process: the
    first run maps new memory, later runs reuse it, so the peak is the first run's."""
    import threading

    baseline = current_rss_bytes()
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], current_rss_bytes())
            time.sleep(0.0002)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < min_seconds:
        fn()
    done.set()
    t.join()
    return max(peak[0], current_rss_bytes()) - baseline


def peak_extra_bytes_cpu_subprocess(script, args):
    """Runs `script --measure-memory args` in a fresh process; it prints the peak RSS
    growth (bytes) of one run. A fresh process keeps earlier peaks out of the number."""
    out = subprocess.run([sys.executable, script, "--measure-memory", json.dumps(args)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["?"]
        return None, tail[0]
    return int(out.stdout.strip().splitlines()[-1]), None


def time_and_memory(run, device, *, fits, repeats, script, child_args, memory=True):
    """Times ``run("rankops")`` and, when the reference fits, ``run("reference")``, then
    measures each one's peak extra memory (CUDA allocator stats, or a fresh child process
    ``script --measure-memory`` on CPU). Returns (t_ops, t_ref, m_ops, m_ref); None where
    not measured."""
    t_ops = time_fn(lambda: run("rankops"), device, repeats=repeats)
    t_ref = time_fn(lambda: run("reference"), device, repeats=max(3, repeats // 2)) if fits else None
    m_ops = m_ref = None
    if memory:
        if torch.device(device).type == "cuda":
            m_ops = peak_extra_bytes_cuda(lambda: run("rankops"), device)
            m_ref = peak_extra_bytes_cuda(lambda: run("reference"), device) if fits else None
        else:
            m_ops = peak_extra_bytes_cpu_subprocess(script, dict(child_args, impl="rankops"))[0]
            if fits:
                m_ref = peak_extra_bytes_cpu_subprocess(script, dict(child_args, impl="reference"))[0]
    return t_ops, t_ref, m_ops, m_ref


def result_row(shape, loss, amount, unit, t_ops, t_ref, m_ops, m_ref, fits, need, diff):
    """One Markdown row of the kernel-vs-reference tables; unit is "" for pairs."""
    u = f" {unit}" if unit else ""
    ref_t = fmt_time(t_ref) if fits else f"does not fit (needs ~{fmt_bytes(need)})"
    speed = f"{t_ref / t_ops:.1f}x" if fits else "–"
    return (f"| {shape} | {loss} | {amount:.3g}{u} | {fmt_time(t_ops)} | {amount / t_ops:.3g}"
            f"{u + '/s' if unit else ''} | {fmt_bytes(m_ops)} | {ref_t} | "
            f"{fmt_bytes(m_ref) if fits else '–'} | {speed} | {diff} |")


def fmt_bytes(b):
    if b is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(b) < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024


def fmt_time(t):
    if t is None:
        return "–"
    if t < 1e-3:
        return f"{t * 1e6:.0f} µs"
    return f"{t * 1e3:.2f} ms" if t < 1 else f"{t:.2f} s"


def machine_banner(device):
    info = rankops.build_info()
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name()
        where = f"{name}, CUDA {torch.version.cuda}"
    else:
        cpu = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        where = f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return (f"Machine: {where}; torch {torch.__version__}; rankops build: cuda={info['cuda']}, "
            f"openmp={info['openmp']}, cpu_flags='{info['cpu_flags']}'; python {platform.python_version()}")
