"""Benchmark: NDCG@10 + MAP + MRR over many queries, rankops vs the alternatives.

* rankops: one ``rankops.metrics.evaluate`` call (one kernel, one sort per list);
* reference: ``rankops.reference.evaluate`` (padded, vectorised PyTorch);
* torchmetrics (if installed): ``RetrievalNormalizedDCG(top_k=10)``, ``RetrievalMAP``,
  ``RetrievalMRR``, update + compute each;
* pytrec_eval (if installed): ``RelevanceEvaluator.evaluate`` only (building its dicts is
  not timed); also the agreement check: every per-query value within 1e-6.

Agreement is checked before timing. Scores are uniform in (0, 1], float64 (no ties, so
torchmetrics' tie handling does not matter, and positive: torchmetrics 1.x treats items
with a score <= 0 as non-relevant in RetrievalMAP, so negative scores would make it
disagree). Its NDCG uses linear gain, so rankops runs with ``gain="linear"`` (the exp2
default costs the same).

    python benchmarks/bench_metrics.py                      # 10,000 web-like queries
    python benchmarks/bench_metrics.py --queries 500 --repeats 3
    python benchmarks/bench_metrics.py --out /tmp/bench_metrics.md   # tables go to RESULTS.md

``--tied``: scores rounded to one decimal (11 values, tie groups of about a tenth of each
list), and ``ties="average"`` (the expected metric over the orders of each tie group)
against scikit-learn's tie-averaged ``ndcg_score(k=10)`` called per query (its lists must
have one length), and against rankops' own ``ties="position"`` on the same scores (what
averaging costs). Agreement first: NDCG@10 with scikit-learn on every query, every metric
with ``rankops.reference`` (a Python loop over lists and tie groups: checked on the first
300 queries, not timed).

``--opa``: ordered pair accuracy (``rankops.metrics.opa``) on the same web-like queries,
graded labels 0-4, against ``rankops.reference.opa`` (the ``[B, L, L]`` pairs, called on
chunks of 25 consecutive queries so that its pairs fit in memory), and on the labels cut to
binary (y >= 1) with ``ties="average"``, the per-query ROC AUC, against scikit-learn's
``roc_auc_score`` per query (queries with both classes). Agreement first, to 1e-12.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from rankops import reference  # noqa: E402
from rankops.metrics import evaluate  # noqa: E402

SPECS = ["ndcg@10", "map", "mrr"]
OPTIONS = dict(gain="linear")


def run_rankops(s, y, offsets):
    return evaluate(s, y, offsets=offsets, metrics=SPECS, reduction="none", **OPTIONS)


def run_reference(s, y, offsets):
    return reference.evaluate(s, y, offsets=offsets, metrics=SPECS, reduction="none", **OPTIONS)


def torchmetrics_fns():
    try:
        from torchmetrics.retrieval import RetrievalMAP, RetrievalMRR, RetrievalNormalizedDCG
    except ImportError:
        return None

    def run(s, y, indexes):
        out = {}
        binary = y >= 1
        for spec, metric, target in (("ndcg@10", RetrievalNormalizedDCG(top_k=10), y.long()),
                                     ("map", RetrievalMAP(), binary),
                                     ("mrr", RetrievalMRR(), binary)):
            metric.update(s, target, indexes=indexes)
            out[spec] = metric.compute()
        return out

    return run


def trec_check(s, y, offsets, ours):
    """Per-query agreement with pytrec_eval, and its evaluate() time; None if missing."""
    try:
        import pytrec_eval
    except ImportError:
        return None, None
    qrel, run = {}, {}
    so, yo = s.tolist(), y.long().tolist()
    off = offsets.tolist()
    for b in range(len(off) - 1):
        n = off[b + 1] - off[b]
        q = f"q{b:06d}"
        # docnos decrease along the list: trec_eval breaks ties by docno descending
        qrel[q] = {f"d{n - 1 - i:06d}": yo[off[b] + i] for i in range(n)}
        run[q] = {f"d{n - 1 - i:06d}": so[off[b] + i] for i in range(n)}
    ev = pytrec_eval.RelevanceEvaluator(qrel, {"ndcg_cut.10", "map", "recip_rank"})
    t = common.time_fn(lambda: ev.evaluate(run), "cpu", repeats=1, warmup=0)
    res = ev.evaluate(run)
    qs = sorted(res)
    worst = 0.0
    for spec, name in (("ndcg@10", "ndcg_cut_10"), ("map", "map"), ("mrr", "recip_rank")):
        theirs = torch.tensor([res[q][name] for q in qs], dtype=torch.float64)
        worst = max(worst, (ours[spec].double() - theirs).abs().max().item())
    return worst, t


def tied_main(a):
    """--tied: ties="average" against scikit-learn and against ties="position"."""
    dev = a.device
    lengths = common.web_like_lengths(num_lists=a.queries)
    _, y, offsets = common.make_batch(lengths)
    n = int(offsets[-1])
    g = torch.Generator().manual_seed(1)
    s = torch.round(torch.rand(n, generator=g, dtype=torch.float64), decimals=1)
    s, y, offsets = (t.to(dev) for t in (s, y, offsets))

    def ours(ties, s=s, y=y, offsets=offsets):
        return evaluate(s, y, offsets=offsets, metrics=SPECS, reduction="none", ties=ties, **OPTIONS)

    avg = ours("average")
    check = 300
    sub = int(offsets[min(check, a.queries)])
    ref = reference.evaluate(s[:sub].cpu(), y[:sub].cpu(), offsets=offsets[:check + 1].cpu(),
                             metrics=SPECS, reduction="none", ties="average", **OPTIONS)
    ref_diff = max((avg[k][:check].cpu() - ref[k]).abs().max().item() for k in SPECS)
    if not ref_diff <= 1e-6:
        raise SystemExit(f"rankops and the reference disagree: {ref_diff:.2e}")

    try:
        from sklearn.metrics import ndcg_score
    except ImportError:
        ndcg_score = None
    sk_diff = t_sk = None
    if ndcg_score is not None:
        so, yo, off = s.cpu().numpy(), y.cpu().numpy(), offsets.cpu().tolist()
        # sklearn needs >= 2 items per list; one-item lists have NDCG 1 or 0 either way
        qs = [b for b in range(a.queries) if off[b + 1] - off[b] >= 2]

        def run_sklearn():
            return [ndcg_score(yo[None, off[b]:off[b + 1]], so[None, off[b]:off[b + 1]], k=10) for b in qs]

        theirs = torch.tensor(run_sklearn(), dtype=torch.float64)
        sk_diff = (avg["ndcg@10"].cpu()[qs].double() - theirs).abs().max().item()
        if not sk_diff <= 1e-6:
            raise SystemExit(f"rankops and scikit-learn disagree: {sk_diff:.2e}")
        t_sk = common.time_fn(run_sklearn, "cpu", repeats=1, warmup=0)

    t_avg = common.time_fn(lambda: ours("average"), dev, repeats=a.repeats)
    t_pos = common.time_fn(lambda: ours("position"), dev, repeats=a.repeats)
    means = {k: v.mean().item() for k, v in avg.items()}
    lines = [common.machine_banner(dev), "",
             f"Command: `python benchmarks/bench_metrics.py {' '.join(sys.argv[1:])}`", "",
             f"{a.queries:,} web-like queries, {n:,} items, float64 scores rounded to one decimal "
             f"(11 values: tie groups of ~1/10 of a list), labels 0-4; NDCG@10 + MAP + MRR per query, "
             f"ties averaged. Means: NDCG@10 {means['ndcg@10']:.6f}, MAP {means['map']:.6f}, "
             f"MRR {means['mrr']:.6f}.", "",
             "| implementation | time | queries/s | vs rankops `ties=\"average\"` | max abs. diff |",
             "|---|---|---|---|---|",
             f"| rankops `evaluate(ties=\"average\")` | {common.fmt_time(t_avg)} | {a.queries / t_avg:,.0f} | 1.0x | – |",
             f"| rankops `evaluate(ties=\"position\")` (not tie-averaged) | {common.fmt_time(t_pos)} | "
             f"{a.queries / t_pos:,.0f} | {t_pos / t_avg:.2f}x | – |",
             f"| rankops.reference (first {check} queries, agreement only) | – | – | – | {ref_diff:.1e} (per query) |"]
    if ndcg_score is None:
        lines.append("| scikit-learn `ndcg_score(k=10)` | not installed | – | – | – |")
    else:
        lines.append(f"| scikit-learn `ndcg_score(k=10)` per query (NDCG@10 only) | {common.fmt_time(t_sk)} | "
                     f"{len(qs) / t_sk:,.0f} | {t_sk / t_avg:.0f}x | {sk_diff:.1e} (per query) |")
    print("\n".join(lines), flush=True)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


def opa_main(a):
    """--opa: ordered pair accuracy against the reference and scikit-learn's ROC AUC."""
    from rankops.metrics import opa
    dev = a.device
    lengths = common.web_like_lengths(num_lists=a.queries)
    _, y, offsets = common.make_batch(lengths)
    n = int(offsets[-1])
    g = torch.Generator().manual_seed(1)
    s = 1.0 - torch.rand(n, generator=g, dtype=torch.float64)  # (0, 1], ties improbable
    binary = (y >= 1).to(y.dtype)
    s, y, binary, offsets = (t.to(dev) for t in (s, y, binary, offsets))
    off = offsets.cpu().tolist()
    chunk = 25

    def run_reference():
        parts = []
        for b in range(0, a.queries, chunk):
            e = min(b + chunk, a.queries)
            o = offsets[b:e + 1] - offsets[b]
            parts.append(reference.opa(s[off[b]:off[e]], y[off[b]:off[e]], offsets=o, reduction="none"))
        return torch.cat(parts)

    ours = opa(s, y, offsets=offsets, reduction="none")
    ref = run_reference()
    ref_diff = (ours.double() - ref.double()).abs().max().item()
    if not ref_diff <= 1e-12:
        raise SystemExit(f"rankops and the reference disagree: {ref_diff:.2e}")
    auc = opa(s, binary, offsets=offsets, ties="average", reduction="none")

    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        roc_auc_score = None
    sk_diff = t_sk = None
    if roc_auc_score is not None:
        so, bo = s.cpu().numpy(), binary.cpu().numpy()
        qs = [q for q in range(a.queries) if 0 < bo[off[q]:off[q + 1]].sum() < off[q + 1] - off[q]]

        def run_sklearn():
            return [roc_auc_score(bo[off[q]:off[q + 1]], so[off[q]:off[q + 1]]) for q in qs]

        theirs = torch.tensor(run_sklearn(), dtype=torch.float64)
        sk_diff = (auc.cpu()[qs].double() - theirs).abs().max().item()
        if not sk_diff <= 1e-12:
            raise SystemExit(f"rankops and scikit-learn disagree: {sk_diff:.2e}")
        t_sk = common.time_fn(run_sklearn, "cpu", repeats=1, warmup=0)

    t_ops = common.time_fn(lambda: opa(s, y, offsets=offsets, reduction="none"), dev, repeats=a.repeats)
    t_auc = common.time_fn(lambda: opa(s, binary, offsets=offsets, ties="average", reduction="none"),
                           dev, repeats=a.repeats)
    t_ref = common.time_fn(run_reference, dev, repeats=max(3, a.repeats // 2))
    lines = [common.machine_banner(dev), "",
             f"Command: `python benchmarks/bench_metrics.py {' '.join(sys.argv[1:])}`", "",
             f"{a.queries:,} web-like queries (median ~120 items, max 1,000), {n:,} items, float64 "
             f"scores in (0, 1]. Mean OPA (labels 0-4) {ours.mean().item():.6f}; mean per-query AUC "
             f"(labels y >= 1) {auc.mean().item():.6f}.", "",
             "| implementation | time | queries/s | rankops speed-up | max abs. diff (per query) |",
             "|---|---|---|---|---|",
             f"| rankops `opa` (labels 0-4) | {common.fmt_time(t_ops)} | {a.queries / t_ops:,.0f} | 1.0x | – |",
             f"| rankops.reference `opa` (`[B, L, L]`, chunks of {chunk} queries) | {common.fmt_time(t_ref)} | "
             f"{a.queries / t_ref:,.0f} | {t_ref / t_ops:.0f}x | {ref_diff:.1e} |",
             f"| rankops `opa(ties=\"average\")`, binary labels (the per-query AUC) | {common.fmt_time(t_auc)} | "
             f"{a.queries / t_auc:,.0f} | 1.0x | – |"]
    if roc_auc_score is None:
        lines.append("| scikit-learn `roc_auc_score` per query | not installed | – | – | – |")
    else:
        lines.append(f"| scikit-learn `roc_auc_score` per query ({len(qs):,} with both classes) | "
                     f"{common.fmt_time(t_sk)} | {len(qs) / t_sk:,.0f} | {t_sk / t_auc:.0f}x | {sk_diff:.1e} |")
    print("\n".join(lines), flush=True)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", help="also write the Markdown table here")
    p.add_argument("--device", default="cpu", help="rankops, the reference and torchmetrics run here")
    p.add_argument("--tied", action="store_true", help='tied scores, ties="average" vs scikit-learn')
    p.add_argument("--opa", action="store_true", help="ordered pair accuracy vs the reference and scikit-learn's AUC")
    a = p.parse_args()
    if a.opa:
        return opa_main(a)
    if a.tied:
        return tied_main(a)
    dev = a.device

    lengths = common.web_like_lengths(num_lists=a.queries)
    _, y, offsets = common.make_batch(lengths)
    n = int(offsets[-1])
    g = torch.Generator().manual_seed(1)
    s = 1.0 - torch.rand(n, generator=g, dtype=torch.float64)  # (0, 1], ties improbable
    indexes = torch.repeat_interleave(torch.arange(a.queries), lengths)
    cpu_inputs = (s, y, offsets)
    s, y, offsets, indexes = (t.to(dev) for t in (s, y, offsets, indexes))
    ours = run_rankops(s, y, offsets)
    means = {k: v.mean().item() for k, v in ours.items()}

    # agreement first
    ref = run_reference(s, y, offsets)
    ref_diff = max((ours[k] - ref[k]).abs().max().item() for k in SPECS)
    if not ref_diff <= 1e-6:
        raise SystemExit(f"rankops and the reference disagree: {ref_diff:.2e}")
    tm = torchmetrics_fns()
    tm_diff = None
    if tm is not None:
        tm_out = tm(s, y, indexes)
        tm_diff = max(abs(tm_out[k].item() - means[k]) for k in SPECS)
        if not tm_diff <= 1e-5:
            raise SystemExit(f"rankops and torchmetrics disagree: {tm_diff:.2e}")
    trec_diff, t_trec = trec_check(*cpu_inputs, {k: v.cpu() for k, v in ours.items()})
    if trec_diff is not None and not trec_diff <= 1e-6:
        raise SystemExit(f"rankops and pytrec_eval disagree: {trec_diff:.2e}")

    t_ops = common.time_fn(lambda: run_rankops(s, y, offsets), dev, repeats=a.repeats)
    t_ref = common.time_fn(lambda: run_reference(s, y, offsets), dev, repeats=max(3, a.repeats // 2))
    t_tm = common.time_fn(lambda: tm(s, y, indexes), dev, repeats=3) if tm is not None else None

    lines = [common.machine_banner(dev), "",
             f"Command: `python benchmarks/bench_metrics.py {' '.join(sys.argv[1:])}`", "",
             f"{a.queries:,} web-like queries (log-normal lengths, median ~120, max 1,000), "
             f"{n:,} items, float64 scores in (0, 1], labels 0-4; NDCG@10 + MAP + MRR per query. "
             f"Means: NDCG@10 {means['ndcg@10']:.6f}, MAP {means['map']:.6f}, MRR {means['mrr']:.6f}.", "",
             "| implementation | time | queries/s | rankops speed-up | max abs. diff vs rankops |",
             "|---|---|---|---|---|"]

    def row(name, t, diff, note=""):
        if t is None:
            return f"| {name} | not installed | – | – | – |"
        d = "–" if diff is None else f"{diff:.1e}{note}"
        return f"| {name} | {common.fmt_time(t)} | {a.queries / t:,.0f} | {t / t_ops:.1f}x | {d} |"

    lines.append(row("rankops `evaluate` (one kernel call)", t_ops, None))
    lines.append(row("rankops.reference (padded, vectorised PyTorch)", t_ref, ref_diff, " (per query)"))
    lines.append(row("torchmetrics Retrieval{NormalizedDCG,MAP,MRR}", t_tm, tm_diff, " (means)"))
    lines.append(row("pytrec_eval (evaluate only)", t_trec, trec_diff, " (per query)"))
    print("\n".join(lines), flush=True)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
