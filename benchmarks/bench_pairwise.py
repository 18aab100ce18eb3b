"""Benchmark: rankops's pairwise kernels vs rankops.reference (padded [B, L, L] PyTorch).

For every shape and loss: check that kernel and reference agree (on a GPU, where the
reference does not fit in memory: the CUDA kernel against the CPU kernel), then time forward +
backward (median of repeats after a warm-up; CUDA events on GPU), measure the peak extra
memory of one forward + backward, and report pairs/second and the speed-up.

    python benchmarks/bench_pairwise.py                 # CPU shapes
    python benchmarks/bench_pairwise.py --device cuda   # adds 4096 x 1024
    python benchmarks/bench_pairwise.py --quick         # small shapes, for a smoke test
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
    "RankNet": dict(pair_fn="logistic", weight="none"),
    "LambdaRank": dict(pair_fn="logistic", weight="ndcg"),
    "LambdaRank@10": dict(pair_fn="logistic", weight="ndcg", k=10),
}
# The reference's [B, L, L] temporaries: about this many float32-sized copies at the peak.
REFERENCE_COPIES = 14


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
    out["(f) 1 x 1,048,576"] = [1048576]  # LambdaRank@10 only
    return out


def cases(device, quick):
    for shape, lengths in shapes(device, quick).items():
        longest = max(lengths)
        if longest >= 1048576:
            yield shape, lengths, "LambdaRank@10"  # all pairs would be 5.5e11
            continue
        yield shape, lengths, "RankNet"
        yield shape, lengths, "LambdaRank"
        if longest >= 65536 or (quick and longest >= 4096):
            yield shape, lengths, "LambdaRank@10"


def pairs_evaluated(lengths, k=None):
    total = 0
    for n in lengths:
        rows = n - 1 if k is None else min(k, n - 1)
        total += rows * (n - 1) - rows * (rows - 1) // 2
    return total


def run_once(impl, batch, opts):
    scores, labels, offsets = batch
    fn = rankops.pairwise_loss if impl == "rankops" else reference.pairwise_loss
    scores.grad = None
    loss = fn(scores, labels, offsets=offsets, reduction="sum", **opts)
    loss.backward()
    return loss


def reference_fits(lengths, device):
    need = len(lengths) * max(lengths) ** 2 * 4 * REFERENCE_COPIES
    if torch.device(device).type == "cuda":
        budget = torch.cuda.mem_get_info()[0] * 0.8
    else:
        budget = 16 * 2**30  # of the 24 GiB development machines
    return need <= budget, need


def measure_memory_child(args):
    lengths, impl, loss, device = args["lengths"], args["impl"], args["loss"], args["device"]
    batch = common.make_batch(lengths, device=device)
    print(common.peak_extra_rss_bytes(lambda: run_once(impl, batch, LOSSES[loss])))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", help="also write the Markdown table here")
    p.add_argument("--only", help="run only the shapes whose name contains one of these comma-separated strings, e.g. '(a),(c)'")
    p.add_argument("--losses", help="run only these losses (comma-separated names as in the "
                   f"table: {', '.join(LOSSES)})")
    p.add_argument("--measure-memory", help=argparse.SUPPRESS)
    a = p.parse_args()
    unknown = set(a.losses.split(",")) - set(LOSSES) if a.losses else set()
    if unknown:
        p.error(f"--losses: unknown {', '.join(sorted(unknown))}; choose from {', '.join(LOSSES)}")
    if a.measure_memory:
        return measure_memory_child(json.loads(a.measure_memory))

    device = a.device
    lines = [common.machine_banner(device), "",
             f"Command: `python benchmarks/bench_pairwise.py {' '.join(sys.argv[1:])}`", "",
             "| shape | loss | pairs | rankops fwd+bwd | rankops pairs/s | rankops peak extra mem "
             "| reference fwd+bwd | reference peak extra mem | speed-up | max rel. diff |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for shape, lengths, loss in cases(device, a.quick):
        if a.only and not any(part in shape for part in a.only.split(",")):
            continue
        if a.losses and loss not in a.losses.split(","):
            continue
        opts = LOSSES[loss]
        batch = common.make_batch(lengths, device=device)
        pairs = pairs_evaluated(lengths, opts.get("k"))
        fits, need = reference_fits(lengths, device)
        diff = "–"
        if fits:  # agreement first: never time a mismatch
            got = rankops.pairwise_loss(*batch[:2], offsets=batch[2], reduction="none", **opts)
            want = reference.pairwise_loss(*batch[:2], offsets=batch[2], reduction="none", **opts)
            rel = ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
            if not rel < 1e-4:
                raise SystemExit(f"{shape} {loss}: kernel and reference disagree (rel. diff {rel:.2e})")
            diff = f"{rel:.1e}"
            del got, want
        elif torch.device(device).type == "cuda" and pairs <= 3e9:
            # the reference does not fit: check the GPU against the CPU kernel instead
            got = rankops.pairwise_loss(*batch[:2], offsets=batch[2], reduction="none", **opts)
            cpu = [t.cpu() for t in batch]
            want = rankops.pairwise_loss(*cpu[:2], offsets=cpu[2], reduction="none", **opts)
            rel = ((got.cpu() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
            if not rel < 1e-4:
                raise SystemExit(f"{shape} {loss}: CUDA and CPU kernels disagree (rel. diff {rel:.2e})")
            diff = f"{rel:.1e} (vs CPU op)"
            del got, want, cpu
        reps = a.repeats if pairs < 5e9 else 3
        t_ops, t_ref, m_ops, m_ref = common.time_and_memory(
            lambda impl, batch=batch: run_once(impl, batch, opts), device, fits=fits, repeats=reps,
            script=__file__, child_args=dict(lengths=lengths, loss=loss, device=device))
        row = common.result_row(shape, loss, pairs, "", t_ops, t_ref, m_ops, m_ref, fits, need, diff)
        print(row, flush=True)
        lines.append(row)
        del batch
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
