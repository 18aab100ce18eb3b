"""Benchmark: rankops's listwise kernels (softmax, poly-1 softmax and ListNet, ListMLE, unique
softmax, ApproxNDCG), pointwise losses and pairwise MSE (closed form, no kernel) vs
rankops.reference (padded PyTorch; the references of ApproxNDCG, unique softmax and
pairwise MSE build [B, L, L], as Rax does).

For every shape and loss: check that rankops and the reference agree, then time forward +
backward (median of repeats after a warm-up; CUDA events on GPU), measure the peak extra
memory of one forward + backward, and report throughput (pairs/s for ApproxNDCG, whose
work is n(n-1)/2 pairs per list, and pairwise MSE, n^2 ordered pairs; items/s otherwise) and the speed-up.

The pointwise losses are plain PyTorch over the packed layout; the row "floor" times
``(s * s).sum()`` forward + backward on the same items, the least any pointwise loss
through autograd can cost, to show what a kernel could still gain.

    python benchmarks/bench_listwise.py                 # CPU shapes
    python benchmarks/bench_listwise.py --device cuda
    python benchmarks/bench_listwise.py --quick         # small shapes, for a smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import rankops  # noqa: E402
from rankops import reference  # noqa: E402

LOSSES = {
    "softmax": ("softmax_loss", {}),
    "poly-1 softmax": ("poly1_softmax_loss", {}),
    "ListNet": ("listnet_loss", {}),
    "ListMLE": ("listmle_loss", {}),
    "PListMLE": ("plistmle_loss", {}),
    "unique softmax": ("unique_softmax_loss", {}),
    "ApproxNDCG": ("approx_ndcg_loss", {}),
    "ApproxNDCG@10": ("approx_ndcg_loss", {"k": 10}),
    "sigmoid": ("sigmoid_loss", {}),
    "MSE": ("mse_loss", {}),
    "pairwise MSE": ("pairwise_mse_loss", {}),
}
# The reference's [B, L, L] temporaries (ApproxNDCG, unique softmax): about this many float32
# copies at the peak.
REFERENCE_COPIES = 10
PAIR_REFERENCES = ("ApproxNDCG", "unique softmax", "pairwise MSE")


def shapes(device, quick):
    if quick:
        return {"(a) 64 x 16": [16] * 64, "(c) 4 x 256": [256] * 4, "(d) 1 x 4,096": [4096]}
    out = {
        "(s) 64 x 16": [16] * 64,  # a small training batch: bound by per-call overhead
        "(a) 1,024 x 16": [16] * 1024,
        "(b) 256 web-like": common.web_like_lengths().tolist(),
        "(c) 64 x 1,024": [1024] * 64,
        "(d) 1 x 65,536": [65536],
    }
    if torch.device(device).type == "cuda":
        out["(e) 4,096 x 1,024"] = [1024] * 4096
    return out


def cases(device, quick):
    for shape, lengths in shapes(device, quick).items():
        for loss in ("softmax", "poly-1 softmax", "ListNet", "ListMLE", "PListMLE", "unique softmax", "ApproxNDCG",
                     "sigmoid", "MSE", "pairwise MSE"):
            yield shape, lengths, loss
        if max(lengths) >= 4096:
            yield shape, lengths, "ApproxNDCG@10"


def work(lengths, loss):
    if loss.startswith("ApproxNDCG"):
        return sum(n * (n - 1) // 2 for n in lengths), "pairs"
    if loss == "pairwise MSE":  # every ordered pair, as its mean counts them
        return sum(n * n for n in lengths), "pairs"
    return sum(lengths), "items"


def run_once(impl, batch, loss):
    scores, labels, offsets = batch
    name, opts = LOSSES[loss]
    fn = getattr(rankops if impl == "rankops" else reference, name)
    scores.grad = None
    out = fn(scores, labels, offsets=offsets, reduction="sum", **opts)
    out.backward()
    return out


def floor_once(batch):
    scores = batch[0]
    scores.grad = None
    (scores * scores).sum().backward()


def reference_fits(lengths, loss, device):
    L = max(lengths)
    per_item = len(lengths) * L * 4
    need = per_item * L * REFERENCE_COPIES if loss.startswith(PAIR_REFERENCES) else per_item * 20
    if torch.device(device).type == "cuda":
        budget = torch.cuda.mem_get_info()[0] * 0.8
    else:
        budget = 16 * 2**30  # of the 24 GiB development machines
    return need <= budget, need


def measure_memory_child(args):
    lengths, impl, loss, device = args["lengths"], args["impl"], args["loss"], args["device"]
    batch = common.make_batch(lengths, device=device)
    print(common.peak_extra_rss_bytes(lambda: run_once(impl, batch, loss)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory column (faster)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--out", help="also write the Markdown table here")
    p.add_argument("--only", help="run only the shapes whose name contains one of these comma-separated strings, e.g. '(s),(a)'")
    p.add_argument("--losses", help="run only these losses (comma-separated names as in the "
                   f"table: {', '.join(LOSSES)})")
    p.add_argument("--measure-memory", help=argparse.SUPPRESS)
    a = p.parse_args()
    unknown = set(a.losses.split(",")) - set(LOSSES) if a.losses else set()
    if unknown:
        p.error(f"--losses: unknown {', '.join(sorted(unknown))}; choose from {', '.join(LOSSES)}")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.measure_memory:
        return measure_memory_child(json.loads(a.measure_memory))

    device = a.device
    lines = [common.machine_banner(device), "",
             f"Command: `python benchmarks/bench_listwise.py {' '.join(sys.argv[1:])}`", "",
             "| shape | loss | work | rankops fwd+bwd | rankops throughput | rankops peak extra mem "
             "| reference fwd+bwd | reference peak extra mem | speed-up | max rel. diff |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    last_shape = None
    for shape, lengths, loss in cases(device, a.quick):
        if a.only and not any(part in shape for part in a.only.split(",")):
            continue
        if a.losses and loss not in a.losses.split(","):
            continue
        batch = common.make_batch(lengths, device=device)
        if shape != last_shape:  # the pointwise floor, once per shape
            last_shape = shape
            t_floor = common.time_fn(lambda batch=batch: floor_once(batch), device, repeats=a.repeats)
            row = (f"| {shape} | floor: (s*s).sum() | {sum(lengths):.3g} items | {common.fmt_time(t_floor)} | "
                   f"{sum(lengths) / t_floor:.3g} items/s | – | – | – | – | – |")
            print(row, flush=True)
            lines.append(row)
        amount, unit = work(lengths, loss)
        fits, need = reference_fits(lengths, loss, device)
        name, opts = LOSSES[loss]
        diff = "–"
        if fits:  # agreement first: never time a mismatch
            got = getattr(rankops, name)(*batch[:2], offsets=batch[2], reduction="none", **opts)
            want = getattr(reference, name)(*batch[:2], offsets=batch[2], reduction="none", **opts)
            rel = ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
            if not rel < 1e-4:
                raise SystemExit(f"{shape} {loss}: rankops and reference disagree (rel. diff {rel:.2e})")
            diff = f"{rel:.1e}"
            del got, want
        reps = a.repeats if amount < 5e9 else 3
        if a.threads and not a.no_memory:
            os.environ["OMP_NUM_THREADS"] = str(a.threads)  # the memory child's threads
        t_ops, t_ref, m_ops, m_ref = common.time_and_memory(
            lambda impl, batch=batch: run_once(impl, batch, loss), device, fits=fits, repeats=reps,
            script=__file__, child_args=dict(lengths=lengths, loss=loss, device=device),
            memory=not a.no_memory)
        row = common.result_row(shape, loss, amount, unit, t_ops, t_ref, m_ops, m_ref, fits, need, diff)
        print(row, flush=True)
        lines.append(row)
        del batch
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
