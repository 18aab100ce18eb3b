"""Benchmark: rankops against Rax (Google's JAX ranking library), forward + backward.

Rax is the library the tests use as an independent oracle (tests/test_rax.py); this
measures it as a competitor. Rax takes padded ``[B, L]`` lists with a ``where`` mask and
builds ``[B, L, L]`` pair arrays; here it runs as ``jax.jit(jax.value_and_grad(loss))``
on the CPU (XLA; compile time excluded and reported apart), rankops as its kernels with
autograd on packed lists. Both sum the loss over the batch (``reduce_fn=jnp.sum`` /
``reduction="sum"``) in float32, and the sums are checked to agree (Rax's DCG lambda
weights divided by L, its documented scaling) before anything is timed.

    python benchmarks/bench_rax.py [--out FILE] [--repeats 5] [--losses ListMLE,softmax]

Needs ``pip install jax rax``; skips with a message where they are missing.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import rankops  # noqa: E402

try:
    import jax
    import jax.numpy as jnp
    import rax
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.exit(f"bench_rax.py needs jax and rax ({e}); pip install jax rax")


def rax_losses():
    ndcg_weight = functools.partial(rax.dcg_lambdaweight, normalize=True)
    return {  # name -> (rankops loss, Rax loss, Rax / rankops scale given L)
        "RankNet": (rankops.ranknet_loss, rax.pairwise_logistic_loss, lambda L: 1.0),
        "LambdaRank": (rankops.lambdarank_loss,
                       functools.partial(rax.pairwise_logistic_loss, lambdaweight_fn=ndcg_weight),
                       lambda L: float(L)),
        "softmax": (rankops.softmax_loss, rax.softmax_loss, lambda L: 1.0),
        "poly-1 softmax": (rankops.poly1_softmax_loss, rax.poly1_softmax_loss, lambda L: 1.0),
        "ListMLE": (rankops.listmle_loss, rax.listmle_loss, lambda L: 1.0),
        "unique softmax": (rankops.unique_softmax_loss, rax.unique_softmax_loss, lambda L: 1.0),
        "ApproxNDCG": (rankops.approx_ndcg_loss,
                       lambda s, y, **kw: -rax.ndcg_metric(
                           s, y, rank_fn=rax.utils.approx_ranks, **kw),
                       lambda L: 1.0),
    }


SHAPES = {
    "(a) 1,024 x 16": [16] * 1024,
    "(b) 256 web-like": common.web_like_lengths().tolist(),
    "(c) 64 x 1,024": [1024] * 64,
}


def padded(scores, labels, lengths):
    """Rax's layout: [B, L] scores and labels (0 in the padding) and the where mask."""
    B, L = len(lengths), max(lengths)
    where = np.arange(L)[None, :] < np.asarray(lengths)[:, None]
    S = np.zeros((B, L), np.float32)
    Y = np.zeros((B, L), np.float32)
    S[where] = scores.detach().numpy()
    Y[where] = labels.numpy()
    return jnp.asarray(S), jnp.asarray(Y), jnp.asarray(where)


def time_jax(fn, *args, repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))  # compiles
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), compile_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="also write the table to this Markdown file")
    parser.add_argument("--losses", help="run only these losses (comma-separated names as in "
                        f"the table: {', '.join(rax_losses())})")
    args = parser.parse_args()
    unknown = set(args.losses.split(",")) - set(rax_losses()) if args.losses else set()
    if unknown:
        parser.error(f"--losses: unknown {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(rax_losses())}")

    lines = [common.machine_banner("cpu") + f"; jax {jax.__version__}, rax "
             f"{getattr(rax, '__version__', '?')} on {jax.devices()[0].platform}", "",
             "| shape | loss | rankops | Rax (jit) | speed-up | Rax compile | loss sums agree |",
             "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for shape, lengths in SHAPES.items():
        scores, labels, offsets = common.make_batch(lengths)
        S, Y, where = padded(scores, labels, lengths)
        L = S.shape[1]
        for name, (ours, theirs, scale) in rax_losses().items():
            if args.losses and name not in args.losses.split(","):
                continue
            def run_ours():
                scores.grad = None
                loss = ours(scores, labels, offsets=offsets, reduction="sum")
                loss.backward()
                return loss

            # labels and mask are arguments, not constants: XLA would fold their sorts
            # into the compiled program
            rax_step = jax.jit(jax.value_and_grad(
                lambda s, y, w, fn=theirs: fn(s, y, where=w, reduce_fn=jnp.sum)))
            mine = float(run_ours().detach())
            theirs_value = float(rax_step(S, Y, where)[0]) / scale(L)
            agree = abs(mine - theirs_value) <= 1e-4 * max(1.0, abs(mine))
            t_ours = common.time_fn(run_ours, "cpu", repeats=args.repeats)
            t_rax, compile_s = time_jax(rax_step, S, Y, where, repeats=args.repeats)
            row = (f"| {shape} | {name} | {common.fmt_time(t_ours)} | {common.fmt_time(t_rax)} | "
                   f"{t_rax / t_ours:.1f}x | {compile_s:.1f} s | "
                   f"{'yes' if agree else f'NO ({mine:.6g} vs {theirs_value:.6g})'} |")
            lines.append(row)
            print(row, flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
