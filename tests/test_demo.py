"""The data loaders and the training demo, in one process and under torchrun (gloo)."""
import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

from rankops import data

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
YAHOO = os.path.join(SHARED, "lightgbm-lambdarank-yahoo-sample")
MQ2008 = os.path.join(SHARED, "mq2008-fold1-vali-test")


def test_synthetic_is_deterministic_and_graded():
    a, b = data.synthetic(num_queries=50, seed=3), data.synthetic(num_queries=50, seed=3)
    assert torch.equal(a.features, b.features) and torch.equal(a.labels, b.labels)
    assert set(a.labels.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    assert a.offsets[0] == 0 and a.offsets[-1] == a.labels.numel() == a.features.shape[0]
    big = data.synthetic(num_queries=600)
    lengths = big.lengths.float()
    assert lengths.max() > 4 * lengths.median()  # heavy tail
    no_relevant = sum(1 for s, e in zip(big.offsets[:-1], big.offsets[1:]) if big.labels[s:e].max() == 0)
    assert no_relevant > 0


def test_subset_and_split_keep_queries_whole():
    d = data.synthetic(num_queries=30, seed=1)
    sub = d.subset(torch.tensor([4, 0]))
    n4 = int(d.lengths[4])
    assert torch.equal(sub.features[:n4], d.features[d.offsets[4]:d.offsets[5]])
    parts = data.split_queries(d, (0.5, 0.5))
    assert sum(p.num_queries for p in parts) == 30
    assert sum(p.labels.numel() for p in parts) == d.labels.numel()


def test_load_svmlight_qid_and_query_file(tmp_path):
    qid_file = tmp_path / "qid.txt"
    qid_file.write_text("2 qid:7 1:0.5 3:1.0\n0 qid:7 2:0.25\n1 qid:9 1:1.0 # comment\n")
    d = data.load_svmlight(str(qid_file), num_features=3)
    assert d.offsets.tolist() == [0, 2, 3]
    assert d.labels.tolist() == [2.0, 0.0, 1.0]
    assert d.features.tolist() == [[0.5, 0.0, 1.0], [0.0, 0.25, 0.0], [1.0, 0.0, 0.0]]
    plain = tmp_path / "rank.txt"
    plain.write_text("1 1:0.5\n0 2:0.5\n3 1:1.0\n")
    (tmp_path / "rank.txt.query").write_text("1\n2\n")
    d = data.load_svmlight(str(plain))
    assert d.offsets.tolist() == [0, 1, 3] and d.labels.tolist() == [1.0, 0.0, 3.0]


@pytest.mark.skipif(not os.path.isdir(YAHOO), reason="shared/data not present")
def test_load_real_files():
    y = data.load_svmlight(os.path.join(YAHOO, "rank.train"), num_features=300)
    assert (y.num_queries, y.labels.numel(), y.features.shape[1]) == (201, 3005, 300)
    m = data.load_svmlight(os.path.join(MQ2008, "vali.txt"), num_features=46)
    assert (m.num_queries, m.labels.numel()) == (157, 2707)


def _run_demo(tmp_path, name, launcher):
    out = tmp_path / name
    cmd = launcher + ["-m", "rankops.demo", "--losses", "ranknet,lambdarank", "--epochs", "4",
                      "--queries", "200", "--reference-steps", "2", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    with open(out / "results.json") as f:
        return json.load(f), out


def _baselines(queries):
    """Test metrics of the demo's test split (the same synthetic data, split and feature
    scaling as the demo) scored (a) at random, averaged over 20 draws, and (b) by the
    demo's model before training (its seed-0 initial weights)."""
    from rankops import demo, metrics

    args = argparse.Namespace(train=None, test=None, valid=None, num_features=None, queries=queries)
    train_set, _, test_set, _ = demo._load(args)
    g = torch.Generator().manual_seed(0)
    draws = [metrics.evaluate(torch.rand(test_set.labels.shape, generator=g), test_set.labels,
                              offsets=test_set.offsets, metrics=demo.METRICS) for _ in range(20)]
    random = {m: sum(d[m].item() for d in draws) / len(draws) for m in demo.METRICS}
    torch.manual_seed(0)  # as demo.train does before building the model
    model = demo.Ranker(train_set.features.shape[1], 64)
    untrained = demo.evaluate(model, test_set, torch.device("cpu"))
    return random, untrained


def test_demo_single_process_writes_table_json_and_plot(tmp_path):
    results, out = _run_demo(tmp_path, "one", [sys.executable])
    random, untrained = _baselines(queries=200)
    # Measured on this split: random NDCG@1 ~0.14, NDCG@10 ~0.24, MAP ~0.47, MRR ~0.61;
    # the untrained model 0.19 / 0.30 / 0.50 / 0.61; after 4 epochs RankNet and
    # LambdaRank reach NDCG@1 ~0.67-0.69, NDCG@10 ~0.73-0.76, MAP ~0.83-0.85, MRR ~0.95.
    # Required: a clear margin above both baselines, and absolute floors.
    margin = {"ndcg@1": 0.3, "ndcg@10": 0.3, "map": 0.2, "mrr": 0.2}
    floor = {"ndcg@1": 0.5, "ndcg@10": 0.6, "map": 0.7, "mrr": 0.85}
    for name in ("ranknet", "lambdarank"):
        r = results["results"][name]
        for metric in margin:
            trained = r["metrics"][metric][0]
            baseline = max(random[metric], untrained[metric])
            assert trained <= 1.0
            assert trained > baseline + margin[metric], (name, metric, trained, random[metric], untrained[metric])
            assert trained > floor[metric], (name, metric, trained)
        assert r["seconds_per_epoch"] > 0 and r["reference_seconds_per_epoch"] > 0
        assert len(results["curves"][name]) == 4
    assert "| RankNet |" in (out / "results.md").read_text()
    if (out / "ndcg_curve.png").exists():
        assert (out / "ndcg_curve.png").stat().st_size > 1000


def test_demo_two_processes_match_one(tmp_path):
    one, _ = _run_demo(tmp_path, "one", [sys.executable])
    two, _ = _run_demo(tmp_path, "two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                         "--nproc_per_node", "2"])
    assert two["results"].keys() == one["results"].keys()
    for name in one["results"]:
        a = one["results"][name]["metrics"]["ndcg@10"][0]
        b = two["results"][name]["metrics"]["ndcg@10"][0]
        # the same model trained on batches split over two ranks (DDP averages gradients):
        # equal within the noise of training, not bit for bit
        assert abs(a - b) < 0.05, (name, a, b)
