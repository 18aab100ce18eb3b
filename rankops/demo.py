"""Train a small ranker with each loss on the same data and compare them.

    python -m rankops.demo                       # synthetic data, every loss, ~1-2 min on 2 cores
    python -m rankops.demo --train rank.train --test rank.test --seeds 5
    torchrun --nproc_per_node 2 -m rankops.demo  # DistributedDataParallel on CPU (gloo)

For every loss: the same MLP, initial weights, data order, optimiser and number of epochs.
Reported: test NDCG@1/3/5/10, MAP and MRR (rankops.metrics: exp2 gain, ties by position,
lists with no relevant item score 0), and seconds per training epoch with the rankops
kernels and with the pure-PyTorch rankops.reference of the same loss.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from typing import Callable, Dict, List

import torch
from torch import nn

import rankops
from rankops import data as rdata
from rankops import reference

METRICS = ["ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "map", "mrr"]

# name -> (label for the table, loss(impl) -> callable(scores, labels, offsets=...))
LOSSES: Dict[str, tuple] = {
    "mse": ("pointwise MSE", lambda m: m.mse_loss),
    "ranknet": ("RankNet", lambda m: m.ranknet_loss),
    "lambdarank": ("LambdaRank (NDCG)", lambda m: m.lambdarank_loss),
    "ndcg2pp": ("LambdaLoss NDCG-Loss2++", lambda m: lambda s, y, **kw: m.lambdaloss(s, y, variant="ndcg2pp", **kw)),
    "pairwise_mse": ("pairwise MSE", lambda m: m.pairwise_mse_loss),
    "softmax": ("softmax cross-entropy", lambda m: m.softmax_loss),
    "listnet": ("ListNet (softmax targets)", lambda m: m.listnet_loss),
    "poly1_softmax": ("poly-1 softmax (ε = 1)", lambda m: m.poly1_softmax_loss),
    "listmle": ("ListMLE", lambda m: m.listmle_loss),
    "plistmle": ("PListMLE (position-aware)", lambda m: m.plistmle_loss),
    "unique_softmax": ("unique softmax", lambda m: m.unique_softmax_loss),
    "approx_ndcg": ("ApproxNDCG", lambda m: m.approx_ndcg_loss),
    # LambdaRank's per-pair mean has ~1e-4 of softmax's gradient norm, so 1:1 means would
    # be softmax alone; summed over the batch's pairs and weighted 1/4, its gradient norm
    # at initialisation matches softmax's (measured on the synthetic set, 16 queries/step).
    "combined": ("LambdaRank + softmax", lambda m: (
        rankops.nn.CombinedLoss({"lambdarank": (0.25, {"reduction": "sum"}), "softmax": 1.0})
        if m is rankops else lambda s, y, **kw: (0.25 * m.lambdarank_loss(s, y, reduction="sum", **kw)
                                                 + m.softmax_loss(s, y, **kw)))),
}


class Ranker(nn.Module):
    """A small MLP scoring each document independently."""

    def __init__(self, num_features: int, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _batches(train: rdata.RankingData, batch_queries: int, seed: int):
    """Query batches in a seeded random order; under DDP each rank takes its share of
    every batch, so all ranks take the same number of steps."""
    rank, world = _dist()
    perm = torch.randperm(train.num_queries, generator=torch.Generator().manual_seed(seed))
    for start in range(0, train.num_queries, batch_queries):
        queries = perm[start:start + batch_queries][rank::world]
        yield train.subset(queries.sort().values)


def evaluate(model, data: rdata.RankingData, device) -> Dict[str, float]:
    """Test metrics; under DDP each rank scores a share of the queries and the
    accumulator all-reduces sums and counts."""
    rank, world = _dist()
    part = data.subset(torch.arange(rank, data.num_queries, world)) if world > 1 else data
    acc = rankops.metrics.MetricAccumulator(metrics=METRICS)
    model.eval()
    with torch.no_grad():
        scores = model(part.features.to(device)).float()
    model.train()
    acc.update(scores, part.labels.to(device), offsets=part.offsets.to(device))
    return {k: float(v) for k, v in acc.compute().items()}


def train(loss_fn: Callable, train_set, valid_set, test_set, *, epochs, seed, device, lr,
          hidden, batch_queries, progress=None, record_curve=True, max_steps=None):
    """Returns (model, validation NDCG@10 per epoch, median seconds per epoch). With
    max_steps, stops after that many steps and returns the time per epoch extrapolated
    from them (steps per epoch x median seconds per step)."""
    torch.manual_seed(seed)
    model = Ranker(train_set.features.shape[1], hidden).to(device)
    if _dist()[1] > 1:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    curve, epoch_times, step_times = [], [], []
    steps_per_epoch = math.ceil(train_set.num_queries / batch_queries)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for batch in _batches(train_set, batch_queries, seed * 1000 + epoch):
            t_step = time.perf_counter()
            scores = model(batch.features.to(device))
            loss = loss_fn(scores, batch.labels.to(device), offsets=batch.offsets.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - t_step)
            if max_steps is not None and len(step_times) >= max_steps:
                return model, curve, statistics.median(step_times) * steps_per_epoch
        epoch_times.append(time.perf_counter() - t0)
        if record_curve and valid_set is not None:
            curve.append(evaluate(model, valid_set, device)["ndcg@10"])
        if progress is not None:
            progress.update(1)
    return model, curve, statistics.median(epoch_times)


def _mean_std(values):
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _load(args):
    if args.train:
        num_features = args.num_features
        if num_features is None:  # read both files first so they agree on the width
            probe = [rdata.load_svmlight(f) for f in (args.train, args.test) if f]
            num_features = max(p.features.shape[1] for p in probe)
        train_all = rdata.load_svmlight(args.train, num_features=num_features)
        test_set = rdata.load_svmlight(args.test, num_features=num_features) if args.test else None
        if args.valid:
            valid = rdata.load_svmlight(args.valid, num_features=num_features)
            train_set = train_all
        else:  # hold out 10% of the training queries to draw the validation curve
            train_set, valid = rdata.split_queries(train_all, (0.9, 0.1), seed=0)
        if test_set is None:
            raise SystemExit("--train needs --test")
        source = f"{args.train} / {args.test}"
    else:
        full = rdata.synthetic(num_queries=args.queries, seed=0)
        train_set, valid, test_set = rdata.split_queries(full, (0.7, 0.1, 0.2), seed=0)
        source = "synthetic (rankops.data.synthetic, seed 0)"
    mean = train_set.features.mean(0)
    std = train_set.features.std(0).clamp_min(1e-6)
    for d in (train_set, valid, test_set):
        d.features = (d.features - mean) / std
    return train_set, valid, test_set, source


def main(argv: List[str] | None = None):
    p = argparse.ArgumentParser(prog="rankops-demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--losses", default=",".join(LOSSES), help=f"comma-separated, from {', '.join(LOSSES)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="repeat with seeds seed..seed+N-1; report mean ± std")
    p.add_argument("--out", help="folder for results.md, results.json and ndcg_curve.png")
    p.add_argument("--train", help="LETOR/SVMlight training file (qid: fields or a .query file beside it)")
    p.add_argument("--test", help="LETOR/SVMlight test file")
    p.add_argument("--valid", help="optional validation file (default: 10%% of the training queries)")
    p.add_argument("--num-features", type=int)
    p.add_argument("--queries", type=int, default=1500, help="synthetic queries")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-queries", type=int, default=16)
    p.add_argument("--reference-steps", type=int, default=8,
                   help="training steps timed with rankops.reference, extrapolated to an epoch (0: skip)")
    args = p.parse_args(argv)

    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if distributed:
        torch.distributed.init_process_group("gloo" if args.device == "cpu" else "nccl")
    rank, world = _dist()
    device = torch.device(args.device)
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    names = [n.strip() for n in args.losses.split(",") if n.strip()]
    unknown = [n for n in names if n not in LOSSES]
    if unknown:
        p.error(f"unknown loss {unknown[0]!r}; choose from {', '.join(LOSSES)}")
    torch.set_num_threads(max(1, torch.get_num_threads() // world))

    train_set, valid, test_set, source = _load(args)
    log = print if rank == 0 else (lambda *a, **k: None)
    log(f"data: {source}\n  train: {train_set.summary()}\n  valid: {valid.summary()}\n  test:  {test_set.summary()}")
    log(f"model: MLP {train_set.features.shape[1]}-{args.hidden}-{args.hidden}-1, Adam lr {args.lr}, "
        f"{args.epochs} epochs, {args.batch_queries} queries per step, {world} process(es), device {device}")
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are a nicety
        tqdm = None

    seeds = list(range(args.seed, args.seed + args.seeds))
    results, curves = {}, {}
    for name in names:
        label, make = LOSSES[name]
        rows = {m: [] for m in METRICS}
        ops_times, ref_times = [], []
        bar = tqdm(total=args.epochs * len(seeds), desc=f"{label:>24}", leave=False,
                   disable=rank != 0) if tqdm else None
        for seed in seeds:
            model, curve, t_ops = train(make(rankops), train_set, valid, test_set, epochs=args.epochs,
                                        seed=seed, device=device, lr=args.lr, hidden=args.hidden,
                                        batch_queries=args.batch_queries, progress=bar)
            metrics = evaluate(model, test_set, device)
            for m in METRICS:
                rows[m].append(metrics[m])
            ops_times.append(t_ops)
            if seed == seeds[0]:
                curves[name] = curve
                if args.reference_steps > 0:
                    _, _, t_ref = train(make(reference), train_set, None, test_set, epochs=1,
                                        seed=seed, device=device, lr=args.lr, hidden=args.hidden,
                                        batch_queries=args.batch_queries, record_curve=False,
                                        max_steps=args.reference_steps)
                    ref_times.append(t_ref)
        if bar is not None:
            bar.close()
        results[name] = {"label": label, "metrics": rows, "seconds_per_epoch": statistics.median(ops_times),
                         "reference_seconds_per_epoch": ref_times[0] if ref_times else None}
        log(f"  {label:<24} NDCG@10 {_mean_std(rows['ndcg@10'])}  MAP {_mean_std(rows['map'])}  "
            f"{results[name]['seconds_per_epoch']:.3f} s/epoch")

    if rank == 0:
        _report(args, results, curves, seeds, source, world)
    if distributed:
        # every rank leaves together: a rank that tears gloo down while another still
        # uses the group can abort ("terminate called without an active exception")
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return results


def _report(args, results, curves, seeds, source, world):
    """Prints the table and writes --out files (rank 0)."""
    header = ("| loss | NDCG@1 | NDCG@3 | NDCG@5 | NDCG@10 | MAP | MRR | s/epoch rankops | "
              "s/epoch reference |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        ref = r["reference_seconds_per_epoch"]
        lines.append(f"| {r['label']} | " + " | ".join(_mean_std(r["metrics"][m]) for m in METRICS)
                     + f" | {r['seconds_per_epoch']:.3f} | {'–' if ref is None else f'{ref:.3f}'} |")
    table = "\n".join(lines)
    note = (f"Test metrics{' (mean ± std over seeds ' + ', '.join(map(str, seeds)) + ')' if len(seeds) > 1 else ''}; "
            f"data: {source}; {args.epochs} epochs; {world} process(es); torch {torch.__version__}. "
            f"s/epoch: median training epoch with the rankops kernels"
            + (f"; with rankops.reference (the same loss in padded PyTorch), median of "
               f"{args.reference_steps} timed steps x steps per epoch." if args.reference_steps else "."))
    print("\n" + table + "\n\n" + note)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.md"), "w") as f:
            f.write(table + "\n\n" + note + "\n")
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"args": vars(args), "results": results, "curves": curves}, f, indent=1)
        _plot(curves, results, os.path.join(args.out, "ndcg_curve.png"))


def _plot(curves, results, path):
    try:
        import matplotlib
        import matplotlib.ticker
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        if curve:
            ax.plot(range(1, len(curve) + 1), curve, label=results[name]["label"])
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
