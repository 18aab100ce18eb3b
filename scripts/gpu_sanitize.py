"""Runs every CUDA kernel path of rankops once on small inputs, for compute-sanitizer.

    compute-sanitizer --tool memcheck --error-exitcode 1 python3 scripts/gpu_sanitize.py
    compute-sanitizer --tool racecheck --error-exitcode 1 python3 scripts/gpu_sanitize.py
    python3 scripts/gpu_sanitize.py cpu      (a dry run of the script itself)

The tests check the numbers; this checks what numbers can hide: out-of-bounds accesses and
shared-memory races (a race in a bitonic sort can give the right answer by luck). Inputs are
small because every access is instrumented: one list of each kind (empty, one item, warp
<= 32, block up to the shared-memory cap, long above it, alone and two at once), every pair
function, the lambda weights with and without top-k, float32 and float64, forward and
backward; the listwise losses and the metrics. Prints one line per step, then "ok".
"""
import sys

import torch

import rankops

dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
if dev.type == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu_sanitize.py needs a CUDA device")


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


gen = torch.Generator().manual_seed(0)


def batch(lengths, dtype):
    n = sum(lengths)
    s = torch.randn(n, generator=gen, dtype=torch.float64)
    s[::7] = torch.round(s[::7])  # some ties
    y = torch.randint(0, 5, (n,), generator=gen).double()
    off = torch.tensor([0] + lengths).cumsum(0)
    return s.to(dtype).to(dev).requires_grad_(), y.to(dev), off.to(dev)


# warp lists, block lists below and above the 512 split, and long lists (cap <= 4096 in
# float32, smaller in float64): several long lists (segmented sort) and one alone (radix sort).
LAYOUTS = {
    "short+medium": [0, 1, 2, 5, 31, 32, 33, 100, 600],
    "long x2 + short": [3, 5000, 17, 4500],
    "long alone": [6000],
}
CASES = [("logistic", "none", None), ("logistic", "ndcg", 10), ("hinge", "ndcg2pp", None),
         ("soft_zero_one", "label_diff", 3), ("logistic", "ndcg2", 300)]

for dtype in (torch.float32, torch.float64, torch.float16):
    for layout, lengths in LAYOUTS.items():
        s, y, off = batch(lengths, dtype)
        w = torch.rand(y.shape, generator=gen).to(dev) + 0.5
        for pair_fn, weight, k in CASES:
            loss = rankops.pairwise_loss(s, y, offsets=off, weights=w, pair_fn=pair_fn,
                                         weight=weight, k=k)
            (g,) = torch.autograd.grad(loss, s)
            sync()
        print(f"pairwise {dtype} {layout}: ok", flush=True)
        if layout == "long alone" and dtype != torch.float32:
            continue
        for name, opts in [("softmax_loss", {}), ("poly1_softmax_loss", {}), ("listnet_loss", {}),
                           ("listmle_loss", {}), ("plistmle_loss", {}),
                           ("unique_softmax_loss", {}),
                           ("approx_ndcg_loss", {"k": 10})]:
            loss = getattr(rankops, name)(s, y, offsets=off, **opts)
            (g,) = torch.autograd.grad(loss, s)
            sync()
        out = rankops.metrics.evaluate(s.detach(), y, offsets=off,
                                       metrics=["ndcg@10", "ndcg", "map", "mrr", "precision@5",
                                                "recall@5", "err@10", "rprec", "opa"])
        out = rankops.metrics.evaluate(s.detach().round(decimals=1), y, offsets=off,
                                       metrics=["ndcg@10", "map", "mrr", "err", "opa"], ties="average")
        sync()
        print(f"listwise + metrics {dtype} {layout}: ok", flush=True)

# padded input (the trailing padding list) and an empty batch
S = torch.randn(4, 40, device=dev, requires_grad=True)
Y = torch.randint(0, 3, (4, 40), device=dev).float()
lengths = torch.tensor([40, 0, 7, 33], device=dev)
rankops.lambdarank_loss(S, Y, lengths=lengths, k=5).backward()
rankops.listmle_loss(S, Y, lengths=lengths).backward()
rankops.unique_softmax_loss(S, Y, lengths=lengths).backward()
empty = torch.zeros(0, device=dev, requires_grad=True)
rankops.ranknet_loss(empty, torch.zeros(0, device=dev)).backward()
sync()
print("padded + empty: ok")

# unvalidated bad offsets (past N, decreasing): the listwise and metrics kernels clamp them
# into [0, N]; memcheck proves no access outside the items (the CPU kernels raise instead)
if dev.type == "cuda":
    s, y, _ = batch([6, 4], torch.float32)
    bad = torch.tensor([0, 9, 3, 10_000], device=dev)
    for name in ("softmax_loss", "listmle_loss", "unique_softmax_loss", "approx_ndcg_loss"):
        torch.autograd.grad(getattr(rankops, name)(s, y, offsets=bad, validate=False), s)
    rankops.metrics.evaluate(s.detach(), y, offsets=bad, metrics=["ndcg@3", "map"], validate=False)
    sync()
    print("bad offsets, validate=False: ok")
print("ok")
