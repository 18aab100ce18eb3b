"""metrics.auc: the per-query ROC AUC of thresholded relevance (and GAUC from it).

Expected values come from hand counts of the pairs, scikit-learn's ``roc_auc_score`` per
query (an independent implementation) and ``rankops.reference``.
"""
import math

import pytest
import torch

import rankops
from rankops import metrics as M
from rankops import reference
from lists import random_batch


def test_hand_value_with_a_tie(device):
    # positives score 0.9 and 0.8, negatives 0.8 and 0.1: pairs (0.9, 0.8) (0.9, 0.1)
    # (0.8, 0.1) ordered, (0.8, 0.8) tied: (3 + 1/2) / 4
    s = torch.tensor([0.9, 0.8, 0.8, 0.1], device=device)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0], device=device)
    assert M.auc(s, y).item() == pytest.approx(0.875, rel=1e-7)
    # graded labels are thresholded: grades 2 and 3 relevant at threshold 2, 0 and 1 not
    graded = torch.tensor([3.0, 1.0, 2.0, 0.0], device=device)
    assert M.auc(s, graded, relevance_threshold=2).item() == pytest.approx(0.875, rel=1e-7)
    # at the default threshold 1 only the item of grade 0 is non-relevant: 3 of 3 ordered
    assert M.auc(s, graded).item() == pytest.approx(1.0, rel=1e-7)


def test_matches_sklearn_per_query(device):
    sk = pytest.importorskip("sklearn.metrics")
    lengths = [2, 3, 5, 17, 40, 100, 333, 1000] * 4
    s, y, off = random_batch(lengths, ties=True, grades=4, seed=40)
    got = M.auc(s.to(device), y.to(device), offsets=off.to(device), relevance_threshold=2,
                empty="skip", reduction="none").cpu()
    checked = 0
    for b in range(len(lengths)):
        lo, hi = int(off[b]), int(off[b + 1])
        relevant = (y[lo:hi] >= 2).numpy()
        if relevant.all() or not relevant.any():
            assert math.isnan(got[b].item())
            continue
        want = sk.roc_auc_score(relevant, s[lo:hi].numpy())
        assert got[b].item() == pytest.approx(want, rel=1e-12, abs=1e-15), b
        checked += 1
    assert checked > 25


@pytest.mark.parametrize("ties", ["position", "average"])
def test_evaluate_mixes_auc_with_other_metrics(device, ties):
    # auc always averages ties (its definition); the others follow ties=; the order of the
    # requested metrics is kept
    s, y, off = random_batch([0, 1, 4, 9, 30, 64], ties=True, seed=41)
    s, y, off = s.to(device), y.to(device), off.to(device)
    metrics = ["ndcg@5", "auc", "opa", "map"]
    got = M.evaluate(s, y, offsets=off, metrics=metrics, ties=ties, reduction="none")
    assert list(got) == metrics
    want = reference.evaluate(s.cpu(), y.cpu(), offsets=off.cpu(), metrics=metrics, ties=ties,
                              reduction="none")
    for spec in metrics:
        torch.testing.assert_close(got[spec].cpu(), want[spec], rtol=1e-12, atol=1e-15)
    alone = M.auc(s, y, offsets=off, reduction="none")
    torch.testing.assert_close(got["auc"], alone, rtol=0, atol=0)
    binary = (y >= 1).to(y.dtype)
    torch.testing.assert_close(alone, M.opa(s, binary, offsets=off, ties="average", reduction="none"),
                               rtol=0, atol=0)


@pytest.mark.parametrize("empty", ["zero", "one", "skip"])
def test_lists_without_both_classes_follow_empty(device, empty):
    # lists: empty; one item; all relevant; none relevant; a perfect one (AUC 1)
    off = torch.tensor([0, 0, 1, 4, 6, 8], device=device)
    s = torch.tensor([0.5, 0.3, 0.2, 0.1, 0.9, 0.8, 0.7, 0.1], device=device)
    y = torch.tensor([1.0, 2.0, 1.0, 3.0, 0.0, 0.0, 1.0, 0.0], device=device)
    per_list = M.auc(s, y, offsets=off, empty=empty, reduction="none").cpu()
    fill = {"zero": 0.0, "one": 1.0, "skip": math.nan}[empty]
    want = torch.tensor([fill, fill, fill, fill, 1.0])
    torch.testing.assert_close(per_list, want, equal_nan=True)
    mean = M.auc(s, y, offsets=off, empty=empty).item()
    assert mean == pytest.approx({"zero": 0.2, "one": 1.0, "skip": 1.0}[empty])


def test_gauc_from_per_query_values(device):
    # GAUC: per-query AUC weighted by the query's impressions, over queries with both
    # classes; here by hand: AUCs 0.875 (4 items) and 0.5 (2 items)
    off = torch.tensor([0, 4, 6, 9], device=device)
    s = torch.tensor([0.9, 0.8, 0.8, 0.1, 0.4, 0.4, 0.3, 0.2, 0.1], device=device)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], device=device)
    per_query = M.auc(s, y, offsets=off, empty="skip", reduction="none")
    n = (off[1:] - off[:-1]).to(per_query.dtype)
    counted = ~per_query.isnan()
    gauc = (per_query.nan_to_num() * n).sum() / n[counted].sum()
    assert gauc.item() == pytest.approx((0.875 * 4 + 0.5 * 2) / 6, rel=1e-7)


def test_layouts_and_accumulator_agree(device, packing):
    s, y, off = random_batch([3, 0, 6, 1, 12], ties=True, seed=42)
    s, y, off = s.to(device), y.to(device), off.to(device)
    want = M.auc(s, y, offsets=off, reduction="none")
    S, mask = rankops.segments.unpack(s, off)
    Y, _ = rankops.segments.unpack(y, off, fill=-1.0)  # padding may hold any label
    torch.testing.assert_close(M.auc(S, Y, mask=mask, reduction="none"), want, rtol=0, atol=0)
    acc = M.MetricAccumulator(["auc", "ndcg@3"])
    acc.update(s[:9], y[:9], offsets=off[:4])
    acc.update(s[9:], y[9:], offsets=off[3:] - off[3])
    whole = M.evaluate(s, y, offsets=off, metrics=["auc", "ndcg@3"])
    for spec in ("auc", "ndcg@3"):
        assert acc.compute()[spec].item() == pytest.approx(whole[spec].item(), rel=1e-12)


def test_bad_input_is_still_named():
    s = torch.tensor([0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="labels"):
        M.auc(s, torch.tensor([1.0, float("nan"), 0.0]))
    with pytest.raises(ValueError, match="labels"):
        M.auc(s, torch.tensor([1.0, -1.0, 0.0]))
    with pytest.raises(ValueError, match="no cut-off"):
        M.evaluate(s, torch.tensor([1.0, 0.0, 0.0]), metrics=["auc@2"])
    with pytest.raises(ValueError, match="reduction"):
        M.auc(s, torch.tensor([1.0, 0.0, 0.0]), reduction="avg")
    with pytest.raises(TypeError, match="labels"):
        M.auc(s, [1.0, 0.0, 0.0])
