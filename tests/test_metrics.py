"""Ranking metrics: hand cases, conventions, layouts, reference agreement, pytrec_eval and
scikit-learn agreement, the streaming accumulator (also under torch.distributed)."""
import math
import socket

import pytest
import torch

import rankops
from rankops import metrics as M
from rankops import reference
from lists import EDGE_LENGTHS, random_batch, random_masked

NAMES = ["ndcg", "dcg", "mrr", "ap", "precision", "recall", "err", "success"]
FUNCS = {"ndcg": M.ndcg, "dcg": M.dcg, "mrr": M.mrr, "ap": M.ap, "precision": M.precision,
         "recall": M.recall, "err": M.err, "success": M.success}


def _D(r):
    return 1.0 / math.log2(1.0 + r)


# --------------------------------------------------------------------------------------
# Hand-worked list: scores (0.8, -0.4, 1.5, 0.1), labels (3, 2, 1, 0).
# Sorted by score: 1.5 (item 2, y=1), 0.8 (item 0, y=3), 0.1 (item 3, y=0), -0.4 (item 1,
# y=2): labels in rank order (1, 3, 0, 2). Relevant (y >= 1): ranks 1, 2, 4; R = 3.
HAND_SCORES = [0.8, -0.4, 1.5, 0.1]
HAND_LABELS = [3.0, 2.0, 1.0, 0.0]
RANKED = [1.0, 3.0, 0.0, 2.0]


def _hand(name, k, gain="exp2", divide_by="min_k_n", max_grade=4.0):
    """The metric of the hand list from its definition, with the ranks above."""
    n = 4
    kk = n if k is None else min(k, n)
    G = [(2.0 ** y - 1.0) if gain == "exp2" else y for y in RANKED]
    if name in ("dcg", "ndcg"):
        d = sum(G[p] * _D(p + 1) for p in range(kk))
        if name == "dcg":
            return d
        ideal = sorted(G, reverse=True)
        return d / sum(ideal[p] * _D(p + 1) for p in range(kk))
    rel = [y >= 1 for y in RANKED]
    R = sum(rel)
    if name == "mrr":
        return next((1.0 / (p + 1) for p in range(kk) if rel[p]), 0.0)
    if name == "ap":
        return sum(sum(rel[: p + 1]) / (p + 1) for p in range(kk) if rel[p]) / R
    if name == "precision":
        return sum(rel[:kk]) / (kk if k is None or divide_by == "min_k_n" else k)
    if name == "recall":
        return sum(rel[:kk]) / R
    if name == "success":
        return 1.0 if any(rel[:kk]) else 0.0
    p = [(2.0 ** y - 1.0) / 2.0 ** max_grade for y in RANKED]
    out, reach = 0.0, 1.0
    for r in range(kk):
        out += reach * p[r] / (r + 1)
        reach *= 1 - p[r]
    return out


def test_hand_values_spelled_out(device):
    # a few values written out from the ranked labels (1, 3, 0, 2), checked against the
    # kernels, the reference and the helper above (which test_hand_list then uses)
    s = torch.tensor(HAND_SCORES, dtype=torch.float64, device=device)
    y = torch.tensor(HAND_LABELS, dtype=torch.float64, device=device)
    ideal = 7 + 3 / math.log2(3) + 1 / math.log2(4)
    cases = [
        ("dcg", dict(k=2), 1.0 + 7.0 / math.log2(3)),
        ("ap", dict(), (1 / 1 + 2 / 2 + 3 / 4) / 3),
        ("mrr", dict(), 1.0),
        ("precision", dict(k=3), 2 / 3),
        ("precision", dict(k=10), 3 / 4),
        ("precision", dict(k=10, divide_by="k"), 3 / 10),
        ("recall", dict(k=2), 2 / 3),
        ("err", dict(k=1), (2.0 - 1) / 16),
        ("ndcg", dict(), (1 + 7 / math.log2(3) + 3 / math.log2(5)) / ideal),
        ("success", dict(k=1), 1.0),
    ]
    for name, kw, want in cases:
        assert FUNCS[name](s, y, **kw).item() == pytest.approx(want, rel=1e-12), (name, kw)
        assert getattr(reference, name)(s, y, **kw).item() == pytest.approx(want, rel=1e-12), (name, kw)
        assert _hand(name, kw.get("k"), divide_by=kw.get("divide_by", "min_k_n")) == pytest.approx(want, rel=1e-12)
    # R-precision: R = 3 relevant items, 2 of them in the first 3 ranks
    for impl in (M.r_precision, reference.r_precision):
        assert impl(s, y).item() == pytest.approx(2 / 3, rel=1e-12)
        assert impl(s, y, relevance_threshold=2).item() == pytest.approx(1 / 2, rel=1e-12)
    assert M.evaluate(s, y, metrics=["rprec", "r_precision"])["rprec"].item() == pytest.approx(2 / 3, rel=1e-12)
    # success: the first relevant item ranks 1st; at threshold 3 it ranks 2nd
    assert M.success(s, y, k=1, relevance_threshold=3).item() == 0.0
    assert M.success(s, y, k=2, relevance_threshold=3).item() == 1.0
    assert M.evaluate(s, y, metrics=["hit_rate@1"])["hit_rate@1"].item() == 1.0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [None, 1, 2, 3, 10])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hand_list(device, name, k, dtype):
    s = torch.tensor(HAND_SCORES, dtype=dtype, device=device)
    y = torch.tensor(HAND_LABELS, device=device)
    got = FUNCS[name](s, y, k=k)
    assert got.dtype == dtype
    assert got.item() == pytest.approx(_hand(name, k), rel=1e-6 if dtype == torch.float32 else 1e-12)


def test_hand_list_options(device):
    s = torch.tensor(HAND_SCORES, dtype=torch.float64, device=device)
    y = torch.tensor(HAND_LABELS, dtype=torch.float64, device=device)
    assert M.ndcg(s, y, k=3, gain="linear").item() == pytest.approx(_hand("ndcg", 3, gain="linear"), rel=1e-12)
    assert M.dcg(s, y, gain="linear").item() == pytest.approx(_hand("dcg", None, gain="linear"), rel=1e-12)
    assert M.precision(s, y, k=10, divide_by="k").item() == pytest.approx(0.3, rel=1e-12)
    assert M.err(s, y, max_grade=3).item() == pytest.approx(_hand("err", None, max_grade=3), rel=1e-12)
    # threshold 2: relevant are y in {3, 2}, at ranks 2 and 4
    assert M.mrr(s, y, relevance_threshold=2).item() == pytest.approx(0.5, rel=1e-12)
    assert M.ap(s, y, relevance_threshold=2).item() == pytest.approx((1 / 2 + 2 / 4) / 2, rel=1e-12)
    assert M.recall(s, y, k=3, relevance_threshold=2).item() == pytest.approx(0.5, rel=1e-12)


def test_ties_broken_by_position(device):
    # all scores equal: the order is the input order, labels (0, 0, 1, 2) at ranks 1..4
    s = torch.ones(4, dtype=torch.float64, device=device)
    y = torch.tensor([0.0, 0.0, 1.0, 2.0], device=device)
    dcg = 1 / math.log2(4) + 3 / math.log2(5)
    idcg = 3 + 1 / math.log2(3)
    assert M.ndcg(s, y).item() == pytest.approx(dcg / idcg, rel=1e-12)
    assert M.mrr(s, y).item() == pytest.approx(1 / 3, rel=1e-12)
    assert M.ap(s, y).item() == pytest.approx((1 / 3 + 2 / 4) / 2, rel=1e-12)
    assert M.precision(s, y, k=2).item() == 0.0
    # a tie group in the middle: (0.5, 0.9, 0.5, 0.9) -> order 1, 3, 0, 2
    s = torch.tensor([0.5, 0.9, 0.5, 0.9], dtype=torch.float64, device=device)
    y = torch.tensor([1.0, 0.0, 0.0, 0.0], device=device)
    assert M.mrr(s, y).item() == pytest.approx(1 / 3, rel=1e-12)
    # NaN scores rank last
    s = torch.tensor([float("nan"), 0.0, -1.0], dtype=torch.float64, device=device)
    y = torch.tensor([1.0, 0.0, 0.0], device=device)
    assert M.mrr(s, y).item() == pytest.approx(1 / 3, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ties_signed_zeros_and_nan_in_long_lists(device, dtype):
    # 200 items (the CPU's radix sort): scores 1 at positions 100..149, +0.0 and -0.0
    # alternating elsewhere except NaN at 0 and -inf at 1. Order: the 1s by position, then
    # the zeros by position (-0.0 tied with +0.0), then NaN and -inf, tied by position.
    n = 200
    s = torch.zeros(n, dtype=dtype)
    s[1::2] = -0.0
    s[100:150] = 1.0
    s[0], s[1] = float("nan"), -float("inf")
    y = torch.zeros(n, dtype=torch.float64)
    y[[0, 3, 120]] = 1.0  # ranks: 120 -> 21; 3 -> 50 + 2 (zeros 2, 3, ...); 0 -> 199
    s, y = s.to(device), y.to(device)
    ranks = [21, 52, 199]
    tol = 1e-12 if dtype == torch.float64 else 1e-6  # float32 scores: float32 results
    assert M.mrr(s, y).item() == pytest.approx(1 / 21, rel=tol)
    assert M.ap(s, y).item() == pytest.approx(sum((i + 1) / r for i, r in enumerate(ranks)) / 3,
                                              rel=tol)
    dcg = sum(1 / math.log2(1 + r) for r in ranks)
    idcg = sum(1 / math.log2(1 + r) for r in (1, 2, 3))
    assert M.ndcg(s, y).item() == pytest.approx(dcg / idcg, rel=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_top_k_selection_order(device, dtype):
    # only cut-offs below n: the CPU selects the top of each list (> 64 items) instead of
    # sorting it; its order must be the radix sort's. Distinct labels and linear gains make
    # dcg@k pin the order of the first k items exactly.
    g = torch.Generator().manual_seed(41)
    lengths = [65, 70, 130, 400, 1000]
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-40, -1e-40,
                             1.0, 1.0, 2.0], dtype=torch.float64)
    parts = []
    for n in lengths:
        v = torch.round(torch.randn(n, generator=g, dtype=torch.float64) * 2)  # many ties
        v[torch.randperm(n, generator=g)[:30]] = specials[torch.randint(0, len(specials), (30,), generator=g)]
        parts.append(v)
    s = torch.cat(parts).to(dtype).to(device)
    y = torch.cat([torch.randperm(n, generator=g).to(torch.float64) for n in lengths]).to(device)
    lengths = torch.tensor(lengths, device=device)
    specs = [f"dcg@{k}" for k in (1, 2, 5, 17, 64)] + ["mrr@3", "precision@7"]
    kw = dict(lengths=lengths, metrics=specs, gain="linear", relevance_threshold=500.0, reduction="none")
    top = M.evaluate(s, y, **kw)
    whole = M.evaluate(s, y, **dict(kw, metrics=specs + ["dcg"]))  # forces the full sort
    want = reference.evaluate(s.cpu().double(), y.cpu(), **dict(kw, lengths=lengths.cpu()))
    for spec in specs:
        torch.testing.assert_close(top[spec], whole[spec], rtol=0, atol=0, msg=spec)
        torch.testing.assert_close(top[spec].cpu().double(), want[spec].double(), rtol=1e-6, atol=1e-9, msg=spec)


def test_no_relevant_item_and_empty_lists(device):
    # list 0: hand list; list 1: no relevant item; list 2: empty; list 3: a single relevant item
    s = torch.tensor(HAND_SCORES + [0.3, 0.2] + [0.1], dtype=torch.float64, device=device)
    y = torch.tensor(HAND_LABELS + [0.0, 0.0] + [2.0], dtype=torch.float64, device=device)
    offsets = torch.tensor([0, 4, 6, 6, 7], device=device)
    for name in NAMES:
        a = _hand(name, None)
        single = {"ndcg": 1.0, "dcg": 3.0, "mrr": 1.0, "ap": 1.0, "precision": 1.0, "recall": 1.0,
                  "err": 3.0 / 16, "success": 1.0}[name]
        f = FUNCS[name]
        zero = f(s, y, offsets=offsets, reduction="none")
        assert zero.tolist() == pytest.approx([a, 0.0, 0.0, single], rel=1e-12)
        assert f(s, y, offsets=offsets).item() == pytest.approx((a + single) / 4, rel=1e-12)
        assert f(s, y, offsets=offsets, reduction="sum").item() == pytest.approx(a + single, rel=1e-12)
        one = f(s, y, offsets=offsets, reduction="none", empty="one")
        filler = 0.0 if name == "dcg" else 1.0  # dcg keeps its natural 0
        assert one.tolist() == pytest.approx([a, filler, filler, single], rel=1e-12)
        assert f(s, y, offsets=offsets, empty="one").item() == pytest.approx((a + single + 2 * filler) / 4, rel=1e-12)
        skip = f(s, y, offsets=offsets, reduction="none", empty="skip")
        assert skip[[0, 3]].tolist() == pytest.approx([a, single], rel=1e-12)
        assert torch.isnan(skip[[1, 2]]).all()
        mean_skip = f(s, y, offsets=offsets, empty="skip")
        assert mean_skip.item() == pytest.approx((a + single) / 2, rel=1e-12)
        assert mean_skip.item() == pytest.approx(torch.nanmean(skip).item(), rel=1e-12)
    # no list counts: the mean is 0
    none = torch.tensor([0.0, 0.0], device=device)
    assert M.ndcg(none.double(), none, empty="skip").item() == 0.0
    empty_batch = M.ndcg(torch.zeros(0, dtype=torch.float64, device=device), torch.zeros(0, device=device))
    assert empty_batch.item() == 0.0


@pytest.mark.parametrize("layout, shape", [("offsets", [0]), ("offsets", [0, 0]), ("offsets", [0, 0, 0]),
                                           ("padded", (2, 0)), ("padded", (0, 3))], ids=str)
@pytest.mark.parametrize("empty", ["zero", "one", "skip"])
def test_batch_of_empty_lists(device, layout, shape, empty):
    # No item at all: every list is empty. By hand (DESIGN §3): an empty list has no
    # relevant item, so it scores 0 ("zero"), 1 ("one"; dcg keeps its natural 0) or is
    # left out ("skip": NaN per list, and a mean over no list is 0).
    if layout == "offsets":
        s = torch.zeros(0, dtype=torch.float64, device=device)
        args, kw = (s, s.clone()), dict(offsets=torch.tensor(shape, device=device))
        B = len(shape) - 1
    else:
        B, L = shape
        S = torch.zeros(B, L, dtype=torch.float64, device=device)
        args, kw = (S, S.clone()), dict(mask=torch.zeros(B, L, dtype=torch.bool, device=device))
    for name in NAMES:
        filler = {"zero": 0.0, "one": 0.0 if name == "dcg" else 1.0, "skip": math.nan}[empty]
        per_list = torch.full((B,), filler, dtype=torch.float64)
        want = {"none": per_list, "sum": per_list.nan_to_num(0.0).sum(),
                "mean": per_list.nan_to_num(0.0).sum() / max(B, 1) if empty != "skip" else torch.tensor(0.0)}
        for reduction, expected in want.items():
            for impl in (FUNCS[name], getattr(reference, name)):
                got = impl(*args, empty=empty, reduction=reduction, **kw)
                torch.testing.assert_close(got.cpu(), expected.to(torch.float64), rtol=0, atol=0, equal_nan=True,
                                           msg=lambda m: f"{impl.__module__}.{name} {reduction}: {m}")
    for impl in (M.evaluate, reference.evaluate):
        out = impl(*args, metrics=["ndcg@10", "map", "mrr", "err"], empty=empty, **kw)
        want_mean = 1.0 if empty == "one" and B > 0 else 0.0
        assert {k: v.item() for k, v in out.items()} == {"ndcg@10": want_mean, "map": want_mean,
                                                         "mrr": want_mean, "err": want_mean}


def test_graded_versus_binary_definedness(device):
    # label 0.5: a positive gain (ndcg defined) but not relevant at threshold 1
    s = torch.tensor([1.0, 0.0], dtype=torch.float64, device=device)
    y = torch.tensor([0.0, 0.5], dtype=torch.float64, device=device)
    assert M.ndcg(s, y, empty="one").item() == pytest.approx((2 ** 0.5 - 1) * _D(2) / (2 ** 0.5 - 1), rel=1e-12)
    assert M.mrr(s, y, empty="one").item() == 1.0
    assert M.mrr(s, y, relevance_threshold=0.5).item() == 0.5


def test_k_larger_than_n(device):
    s, y, offsets = random_batch([3, 5, 0, 1], device=device, seed=3)
    for name in NAMES:
        whole = FUNCS[name](s, y, offsets=offsets, reduction="none", empty="one")
        big = FUNCS[name](s, y, offsets=offsets, reduction="none", k=100, empty="one")
        if name == "precision":  # hits / min(k, n) = hits / n
            assert torch.allclose(whole, big, rtol=1e-12, atol=0)
            by_k = M.precision(s, y, offsets=offsets, reduction="none", k=100, divide_by="k", empty="one")
            n = (offsets[1:] - offsets[:-1]).to(by_k.dtype)
            defined = whole != 1.0
            assert torch.allclose(by_k[defined], (whole * n / 100)[defined], rtol=1e-12, atol=0)
        else:
            assert torch.allclose(whole, big, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------------
# Layouts

def test_all_layouts_agree(device):
    lengths = [4, 0, 3, 1, 5]
    s, y, offsets = random_batch(lengths, device=device, ties=True, seed=1)
    specs = ["ndcg@3", "map", "mrr", "precision@2", "recall@3", "err", "dcg"]
    kw = dict(metrics=specs, reduction="none", empty="one")
    packed = M.evaluate(s, y, offsets=offsets, **kw)
    lens = torch.tensor(lengths, device=device)
    by_lengths = M.evaluate(s, y, lengths=lens, **kw)
    padded_s, mask = rankops.segments.unpack(s, offsets, fill=-5.0)
    padded_y, _ = rankops.segments.unpack(y, offsets)
    by_mask = M.evaluate(padded_s, padded_y, mask=mask, **kw)
    by_plen = M.evaluate(padded_s, padded_y, lengths=lens, **kw)
    nonempty = [i for i, n in enumerate(lengths) if n]
    gid = torch.repeat_interleave(torch.tensor([10, 11, 12, 13, 14], device=device), lens)
    by_gid = M.evaluate(s, y, group_ids=gid, **kw)  # group ids cannot express the empty list
    for spec in specs:
        assert packed[spec].shape == (5,)
        assert torch.equal(packed[spec], by_lengths[spec])
        assert torch.equal(packed[spec], by_mask[spec])
        assert torch.equal(packed[spec], by_plen[spec])
        assert torch.equal(packed[spec][nonempty], by_gid[spec])
        one_by_one = torch.stack([
            M.evaluate(s[offsets[b]:offsets[b + 1]], y[offsets[b]:offsets[b + 1]], **kw)[spec][0]
            for b in range(5)])
        assert torch.equal(packed[spec], one_by_one)
    # padded without lengths or mask: every row is a full list (fill values included)
    full = M.ndcg(padded_s, padded_y, k=3, reduction="none")
    rows = torch.stack([M.ndcg(padded_s[b], padded_y[b], k=3, reduction="none")[0] for b in range(5)])
    assert torch.equal(full, rows)
    torch.testing.assert_close(full, reference.ndcg(padded_s, padded_y, k=3, reduction="none"),
                               rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------
# Reference agreement on random batches

@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("empty", ["zero", "one", "skip"])
@pytest.mark.parametrize("gain", ["exp2", "linear"])
def test_evaluate_matches_reference(device, ties, empty, gain):
    lengths = EDGE_LENGTHS + [5, 0, 12, 1000]
    s, y, offsets = random_batch(lengths, device=device, ties=ties, grades=3, seed=7)
    y[offsets[2]:offsets[3]] = 0  # a list with no relevant item
    specs = [f"{n}{c}" for n in NAMES for c in ("", "@1", "@5", "@10", "@300")] + ["rprec", "opa"]
    for reduction in ("none", "mean", "sum"):
        for divide_by in ("min_k_n", "k"):
            kw = dict(offsets=offsets, metrics=specs, empty=empty, gain=gain, reduction=reduction,
                      divide_by=divide_by, relevance_threshold=1.0, max_grade=2.0)
            got = M.evaluate(s, y, **kw)
            want = reference.evaluate(s, y, **kw)
            for spec in specs:
                torch.testing.assert_close(got[spec], want[spec], rtol=1e-12, atol=1e-12, equal_nan=True,
                                           msg=lambda m: f"{spec} {reduction}: {m}")


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("empty", ["zero", "one", "skip"])
def test_random_masks_match_reference(device, special, empty, packing):
    # Padding scattered through the rows; with special, valid items also score -inf or
    # NaN (ranked as -inf, by position) with padding before them: every real item, -inf
    # and NaN included, ranks before every padding slot.
    S, Y, _, mask = (t.to(device) for t in random_masked(30, 25, seed=8, special=special))
    specs = [f"{n}{c}" for n in NAMES for c in ("", "@1", "@3", "@10")] + ["rprec", "opa"]
    kw = dict(mask=mask, metrics=specs, empty=empty, max_grade=3.0)
    for reduction in ("none", "mean"):
        got = M.evaluate(S, Y, reduction=reduction, **kw)
        want = reference.evaluate(S, Y, reduction=reduction, **kw)
        packed = M.evaluate(S[mask], Y[mask], lengths=mask.sum(1), reduction=reduction, **kw | {"mask": None})
        for spec in specs:
            torch.testing.assert_close(got[spec], want[spec], rtol=1e-12, atol=1e-12, equal_nan=True,
                                       msg=lambda m: f"{spec} {reduction}: {m}")
            torch.testing.assert_close(packed[spec], want[spec], rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_scores(device, dtype):
    s, y, offsets = random_batch([7, 33, 100, 0, 2], device=device, dtype=dtype, seed=2)
    got = M.evaluate(s, y, offsets=offsets, metrics=["ndcg@5", "map", "err@3"], reduction="none")
    want = reference.evaluate(s, y, offsets=offsets, metrics=["ndcg@5", "map", "err@3"], reduction="none")
    for spec in got:
        assert got[spec].dtype == torch.float32
        torch.testing.assert_close(got[spec], want[spec], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_single_metric_functions_match_reference(device, name):
    s, y, offsets = random_batch([10, 0, 3, 50], device=device, ties=True, seed=4)
    for k in (None, 3):
        got = FUNCS[name](s, y, offsets=offsets, k=k, reduction="none")
        want = getattr(reference, name)(s, y, offsets=offsets, k=k, reduction="none")
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(M.map(s, y, offsets=offsets), reference.map(s, y, offsets=offsets))


def test_deterministic_and_thread_independent():
    s, y, offsets = random_batch([int(x) for x in torch.randint(0, 300, (400,))], ties=True, seed=5)
    specs = ["ndcg@10", "map", "mrr", "err"]
    threads = torch.get_num_threads()
    runs = {}
    try:
        for n in (1, 2, 4, 1, 2):  # 1 thread against 2 and 4, twice each
            torch.set_num_threads(n)
            assert torch.get_num_threads() == n
            runs.setdefault(n, []).append(M.evaluate(s, y, offsets=offsets, metrics=specs, reduction="none"))
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads
    single = runs[1][0]
    for n, outs in runs.items():
        for out in outs:
            for spec in specs:
                assert torch.equal(out[spec], single[spec]), (n, spec)


@pytest.mark.skipif(not (torch.cuda.is_available() and rankops.build_info()["cuda"]),
                    reason="needs a GPU and a CUDA build")
def test_cuda_device_mismatch():
    s, y = torch.tensor([0.5, 0.2, 0.1]), torch.tensor([1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="labels must be on the device of scores"):
        M.evaluate(s, y.cuda())
    with pytest.raises(ValueError, match="offsets must be on the device of scores"):
        M.evaluate(s, y, offsets=torch.tensor([0, 3], device="cuda"))


@pytest.mark.parametrize("label_dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_and_bool_labels_equal_float_labels(device, label_dtype):
    # labels of any real dtype (DESIGN §2): the metrics of the same labels as floats
    s, y, offsets = random_batch([5, 0, 8, 1, 30, 12], device=device, grades=4, ties=True, seed=14)
    y_int = (y > 0) if label_dtype == torch.bool else y.to(label_dtype)
    specs = [f"{n}{c}" for n in NAMES for c in ("", "@3")] + ["rprec", "opa"]
    for empty in ("zero", "skip"):
        kw = dict(offsets=offsets, metrics=specs, empty=empty, max_grade=3, reduction="none")
        got = M.evaluate(s, y_int, **kw)
        want = M.evaluate(s, y_int.to(torch.float64), **kw)
        for spec in specs:
            assert torch.equal(got[spec].nan_to_num(-1.0), want[spec].nan_to_num(-1.0)), spec
        assert got["ndcg"].nan_to_num(0.0).sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_permutation_invariance_without_score_ties(device, name):
    # Without score ties the ranking does not depend on the input order: shuffling the
    # items within each list leaves every list's value unchanged.
    lengths = [5, 0, 8, 1, 30, 12]
    s, y, offsets = random_batch(lengths, device=device, grades=4, seed=15)
    assert s.unique().numel() == s.numel()
    g = torch.Generator().manual_seed(15)
    perm = torch.cat([a + torch.randperm(b - a, generator=g)
                      for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]).to(device)
    for k in (None, 3):
        a = FUNCS[name](s, y, offsets=offsets, k=k, reduction="none")
        b = FUNCS[name](s[perm], y[perm], offsets=offsets, k=k, reduction="none")
        torch.testing.assert_close(b, a, rtol=1e-13, atol=1e-15)


def test_opcheck_and_fake_kernel():
    s, y, offsets = random_batch([4, 0, 7], seed=6)
    args = (s, y, offsets, ["ndcg", "ap", "precision"], [3, 0, 2], "exp2", 1.0, 4.0, "min_k_n")
    torch.library.opcheck(torch.ops.rankops.ranking_metrics.default, args)


def test_compile():
    s, y, offsets = random_batch([4, 6, 7], seed=6)

    @torch.compile(fullgraph=True, backend="eager")
    def f(s, y, offsets):
        return M.evaluate(s, y, offsets=offsets, metrics=["ndcg@3", "mrr"], reduction="none")

    got = f(s, y, offsets)
    want = M.evaluate(s, y, offsets=offsets, metrics=["ndcg@3", "mrr"], reduction="none")
    for spec in want:
        torch.testing.assert_close(got[spec], want[spec])


# --------------------------------------------------------------------------------------
# Bad input

def test_bad_arguments():
    s = torch.tensor([0.5, 0.2, 0.1])
    y = torch.tensor([1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="k must be >= 1"):
        M.ndcg(s, y, k=0)
    with pytest.raises(TypeError, match="k must be an int"):
        M.ndcg(s, y, k=2.5)
    with pytest.raises(ValueError, match="empty must be one of"):
        M.ndcg(s, y, empty="nan")
    with pytest.raises(ValueError, match="R-precision has no cut-off"):
        M.evaluate(s, y, metrics=["rprec@5"])
    with pytest.raises(RuntimeError, match="rprec has no cut-off"):
        torch.ops.rankops.ranking_metrics(s, y, torch.tensor([0, 3]), ["rprec"], [5], "exp2", 1.0, 4.0, "k")
    with pytest.raises(ValueError, match="gain must be one of"):
        M.dcg(s, y, gain="exp")
    with pytest.raises(ValueError, match="divide_by must be one of"):
        M.precision(s, y, divide_by="n")
    with pytest.raises(ValueError, match="reduction must be one of"):
        M.mrr(s, y, reduction="avg")
    with pytest.raises(ValueError, match="unknown metric"):
        M.evaluate(s, y, metrics=["ndcg@10", "bpref"])
    with pytest.raises(ValueError, match="cut-off"):
        M.evaluate(s, y, metrics=["ndcg@0"])
    with pytest.raises(ValueError, match="metrics must name"):
        M.evaluate(s, y, metrics=[])
    with pytest.raises(ValueError, match="max_grade"):
        M.err(s, y, max_grade=1)
    with pytest.raises(ValueError, match="max_grade"):
        M.err(s, y, max_grade=-1)
    with pytest.raises(TypeError, match="relevance_threshold"):
        M.mrr(s, y, relevance_threshold="1")
    with pytest.raises(ValueError, match="labels must be >= 0"):
        M.ndcg(s, -y)
    with pytest.raises(ValueError, match="offsets must end at N"):
        M.ndcg(s, y, offsets=torch.tensor([0, 2]))
    with pytest.raises(TypeError, match="offsets must be int64"):
        M.ndcg(s, y, offsets=torch.tensor([0, 3], dtype=torch.int32))
    with pytest.raises(ValueError, match="offsets must start at 0"):
        M.evaluate(s, y, offsets=torch.tensor([1, 3]))
    with pytest.raises(ValueError, match="offsets must be non-decreasing"):
        M.evaluate(s, y, offsets=torch.tensor([0, 2, 1, 3]))
    # a device mismatch, without a GPU: the meta device
    with pytest.raises(ValueError, match="labels must be on the device of scores"):
        M.evaluate(s, torch.zeros(3, device="meta"))
    with pytest.raises(ValueError, match="offsets must be on the device of scores"):
        M.ndcg(s, y, offsets=torch.tensor([0, 3], device="meta"))
    with pytest.raises(TypeError, match="scores must be a floating"):
        M.ndcg(torch.tensor([1, 2, 3]), y)
    with pytest.raises(ValueError, match="labels must have the shape"):
        M.ndcg(s, y[:2])
    with pytest.raises(TypeError, match="map is the mean"):
        M.map(s, y, reduction="none")
    with pytest.raises(RuntimeError, match="metrics must be among"):
        torch.ops.rankops.ranking_metrics(s, y, torch.tensor([0, 3]), ["auc"], [0], "exp2", 1.0, 4.0, "k")


# --------------------------------------------------------------------------------------
# Ordered pair accuracy (OPA): hand counts, its AUC identity (scikit-learn), long lists

# Seven items already in score order, one score tie (items 4 and 5, labels 1 and 0).
OPA_SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.1]
OPA_LABELS = [2.0, 0.0, 1.0, 0.0, 1.0, 0.0, 3.0]
# Label counts 0:3, 1:2, 2:1, 3:1, so 21 pairs - 3 (the three 0s) - 1 (the two 1s) = 17
# pairs with different labels. Ordered ones, counted as the items below each item with a
# smaller label: item 0 (y=2): 5; item 2 (y=1): 2 (items 3, 5); item 4 (y=1): 1 (item 5);
# the rest 0. So 8/17 with ties by position. With ties="average" the tied pair (4, 5)
# counts one half instead of one: 7.5/17.
OPA_BY_POSITION, OPA_AVERAGED = 8 / 17, 7.5 / 17


def test_opa_hand_values(device):
    s = torch.tensor(OPA_SCORES, dtype=torch.float64, device=device)
    y = torch.tensor(OPA_LABELS, dtype=torch.float64, device=device)
    assert M.opa(s, y).item() == pytest.approx(OPA_BY_POSITION, rel=1e-15)
    assert M.opa(s, y, ties="average").item() == pytest.approx(OPA_AVERAGED, rel=1e-15)
    # reversed scores: each of the 16 untied pairs flips (7 were ordered, so 9 are), the
    # tied pair keeps its position order (item 4, y=1, above item 5, y=0: ordered): 10/17
    rev = M.opa(-s, y).item()
    assert rev == pytest.approx(10 / 17, rel=1e-15)
    assert M.opa(-s, y, ties="average").item() == pytest.approx(1 - OPA_AVERAGED, rel=1e-15)
    # it reads the whole list: the metric spec takes no cut-off
    assert M.evaluate(s, y, metrics=["opa", "ndcg"])["opa"].item() == pytest.approx(OPA_BY_POSITION)


def test_opa_is_the_per_list_roc_auc(device):
    sk = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(31)
    lengths = torch.randint(2, 80, (120,), generator=g).tolist()
    s, y, offsets = random_batch(lengths, ties=True, grades=2, seed=32)  # binary, many ties
    got = M.opa(s, y, offsets=offsets, ties="average", reduction="none", empty="skip")
    checked = 0
    for b in range(len(lengths)):
        lo, hi = int(offsets[b]), int(offsets[b + 1])
        yb = y[lo:hi].numpy()
        if yb.min() == yb.max():  # no pair: AUC undefined, the list is skipped
            assert math.isnan(got[b].item())
            continue
        want = sk.roc_auc_score(yb, s[lo:hi].numpy())
        assert got[b].item() == pytest.approx(want, rel=1e-12, abs=1e-15), b
        checked += 1
    assert checked > 100


def test_opa_of_a_huge_binary_list_matches_sklearn(device):
    # 200,000 items: 1e10 pairs, beyond int32 counts
    sk = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(33)
    n = 200_000
    y = (torch.rand(n, generator=g) < 0.5).to(torch.float64)
    s = (y + 2.0 * torch.randn(n, generator=g, dtype=torch.float64)).round(decimals=1)  # ties
    got = M.opa(s.to(device), y.to(device), ties="average").item()
    assert got == pytest.approx(sk.roc_auc_score(y.numpy(), s.numpy()), rel=1e-12)
    assert 0.6 < got < 0.7  # the signal above: far from 0.5 and 1


@pytest.mark.parametrize("ties", ["position", "average"])
def test_opa_graded_and_continuous_labels_match_reference(device, ties):
    g = torch.Generator().manual_seed(34)
    lengths = [0, 1, 2, 3, 33, 255, 1500, 3000]
    s, y, offsets = random_batch(lengths, ties=True, grades=5, seed=35)
    y = torch.where(torch.rand(y.shape, generator=g) < 0.5, y, torch.rand(y.shape, generator=g, dtype=torch.float64))
    y[torch.rand(y.shape, generator=g) < 0.1] = -0.0  # equal to +0.0: the same label
    s[5] = float("nan")
    kw = dict(offsets=offsets, reduction="none", ties=ties, empty="skip")
    got = M.opa(s.to(device), y.to(device), **{**kw, "offsets": offsets.to(device)}).cpu()
    want = reference.opa(s, y, **kw)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15, equal_nan=True)
    # ties="average" is antisymmetric in the scores; by position only without score ties
    if ties == "average":
        flipped = M.opa(-s, y, **kw)
        torch.testing.assert_close(got + flipped, torch.where(got.isnan(), got, torch.ones_like(got)),
                                   rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("empty", ["zero", "one", "skip"])
def test_opa_lists_without_a_pair_follow_empty(device, empty):
    # lists: empty, one item, all labels equal (5 items), two items of different labels
    s = torch.tensor([0.3, 0.2, 0.5, 0.1, 0.9, 0.4, 0.1, 0.7], dtype=torch.float64, device=device)
    y = torch.tensor([1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0, 0.0], dtype=torch.float64, device=device)
    offsets = torch.tensor([0, 0, 1, 6, 8], device=device)
    filler = {"zero": 0.0, "one": 1.0, "skip": math.nan}[empty]
    got = M.opa(s, y, offsets=offsets, empty=empty, reduction="none").cpu()
    want = torch.tensor([filler, filler, filler, 0.0], dtype=torch.float64)  # 0.1 over 0.7: wrong
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    mean = {"zero": 0.0, "one": 0.75, "skip": 0.0}[empty]
    assert M.opa(s, y, offsets=offsets, empty=empty).item() == mean
    assert reference.opa(s.cpu(), y.cpu(), offsets=offsets.cpu(), empty=empty).item() == mean


def test_opa_bad_arguments():
    s = torch.tensor([0.5, 0.2, 0.1])
    y = torch.tensor([1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="opa has no cut-off"):
        M.evaluate(s, y, metrics=["opa@5"])
    with pytest.raises(RuntimeError, match="opa has no cut-off"):
        torch.ops.rankops.ranking_metrics(s, y, torch.tensor([0, 3]), ["opa"], [5], "exp2", 1.0, 4.0, "k")
    with pytest.raises(ValueError, match="ties must be one of"):
        M.opa(s, y, ties="random")
    with pytest.raises(ValueError, match="labels must be >= 0"):
        M.opa(s, -y)


# --------------------------------------------------------------------------------------
# pytrec_eval and scikit-learn

def _trec_inputs(s, y, offsets, gain):
    """qrels and run for pytrec_eval. trec_eval breaks score ties by docno descending, so
    docnos decrease along each list: the earlier item wins a tie, as in rankops."""
    qrel, run = {}, {}
    for b in range(offsets.numel() - 1):
        lo, hi = int(offsets[b]), int(offsets[b + 1])
        n = hi - lo
        q = f"q{b:05d}"
        qrel[q], run[q] = {}, {}
        for i in range(n):
            doc = f"d{n - 1 - i:08d}"
            label = int(y[lo + i])
            qrel[q][doc] = (2 ** label - 1) if gain == "exp2" else label
            run[q][doc] = float(s[lo + i])
    return qrel, run


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("gain", ["exp2", "linear"])
def test_agrees_with_pytrec_eval(ties, gain):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    g = torch.Generator().manual_seed(11)
    lengths = torch.randint(1, 60, (300,), generator=g).tolist() + [1, 2, 250]
    s, y, offsets = random_batch(lengths, ties=ties, grades=4, seed=12)
    y[offsets[3]:offsets[4]] = 0  # lists with no relevant item
    y[offsets[10]:offsets[11]] = 0
    # trec_eval skips queries without any qrels line; every query here has qrels (some all 0).
    qrel, run = _trec_inputs(s, y, offsets, gain)
    cuts = [1, 3, 5, 10, 20]
    measures = {"ndcg", "map", "recip_rank", "ndcg_cut." + ",".join(map(str, cuts)),
                "P." + ",".join(map(str, cuts)), "recall." + ",".join(map(str, cuts)),
                "map_cut." + ",".join(map(str, cuts)), "success." + ",".join(map(str, cuts)),
                "Rprec"}
    trec = pytrec_eval.RelevanceEvaluator(qrel, measures).evaluate(run)
    queries = sorted(trec)
    assert len(queries) == len(lengths)
    pairs = {"ndcg": "ndcg", "map": "map", "mrr": "recip_rank", "rprec": "Rprec"}
    for c in cuts:
        pairs.update({f"ndcg@{c}": f"ndcg_cut_{c}", f"precision@{c}": f"P_{c}",
                      f"recall@{c}": f"recall_{c}", f"ap@{c}": f"map_cut_{c}",
                      f"success@{c}": f"success_{c}"})
    ours = M.evaluate(s, y, offsets=offsets, metrics=list(pairs), gain=gain, divide_by="k",
                      reduction="none")
    worst = 0.0
    for spec, tname in pairs.items():
        theirs = torch.tensor([trec[q][tname] for q in queries], dtype=torch.float64)
        diff = (ours[spec] - theirs).abs().max().item()
        worst = max(worst, diff)
        assert diff <= 1e-6, f"{spec} vs trec_eval {tname}: max |diff| {diff}"
    # and the means (every query counts, as trec_eval's averages over its qrels queries)
    means = M.evaluate(s, y, offsets=offsets, metrics=list(pairs), gain=gain, divide_by="k")
    for spec, tname in pairs.items():
        theirs = sum(trec[q][tname] for q in queries) / len(queries)
        assert abs(means[spec].item() - theirs) <= 1e-6


def test_agrees_with_sklearn_ndcg_score():
    sk = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(21)
    B, L = 64, 30
    s = torch.randn(B, L, generator=g, dtype=torch.float64)  # continuous: no ties
    y = torch.randint(0, 5, (B, L), generator=g).to(torch.float64)
    y[0] = 0  # no relevant item: sklearn gives 0 there too
    for k in (None, 1, 5, 10):
        ours = M.ndcg(s, y, k=k, gain="linear", reduction="none")
        theirs = [sk.ndcg_score(y[b:b + 1].numpy(), s[b:b + 1].numpy(), k=k) for b in range(B)]
        assert ours.tolist() == pytest.approx(theirs, rel=1e-9, abs=1e-12)
        mean = sk.ndcg_score(y.numpy(), s.numpy(), k=k)
        assert M.ndcg(s, y, k=k, gain="linear").item() == pytest.approx(mean, rel=1e-9)


# --------------------------------------------------------------------------------------
# Streaming accumulator

@pytest.mark.parametrize("empty", ["zero", "one", "skip"])
def test_accumulator_equals_one_call(device, empty):
    specs = ["ndcg@10", "map", "mrr", "precision@5", "err"]
    batches = [random_batch(lens, device=device, seed=i, grades=3)
               for i, lens in enumerate([[5, 0, 12], [1, 40], [], [7, 7, 7]])]
    acc = M.MetricAccumulator(specs, empty=empty, max_grade=2)
    for s, y, offsets in batches:
        acc.update(s, y, offsets=offsets)
    got = acc.compute()
    s = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    lengths = torch.cat([b[2][1:] - b[2][:-1] for b in batches])
    want = M.evaluate(s, y, lengths=lengths, metrics=specs, empty=empty, max_grade=2)
    for spec in specs:
        assert got[spec].item() == pytest.approx(want[spec].item(), rel=1e-12)
    acc.reset()
    assert acc.compute()["map"].item() == 0.0


def test_accumulator_state_dict_resumes(device, tmp_path):
    specs = ["ndcg@10", "map", "mrr"]
    batches = [random_batch(lens, device=device, seed=10 + i, grades=3)
               for i, lens in enumerate([[5, 0, 12], [1, 40], [7, 7, 7]])]
    whole = M.MetricAccumulator(specs)
    first = M.MetricAccumulator(specs)
    for i, (s, y, offsets) in enumerate(batches):
        whole.update(s, y, offsets=offsets)
        if i < 2:
            first.update(s, y, offsets=offsets)
    torch.save(first.state_dict(), tmp_path / "acc.pt")
    resumed = M.MetricAccumulator(specs)
    resumed.load_state_dict(torch.load(tmp_path / "acc.pt"))
    resumed.update(*batches[2][:2], offsets=batches[2][2])
    got, want = resumed.compute(), whole.compute()
    for spec in specs:
        assert got[spec].item() == pytest.approx(want[spec].item(), rel=1e-12)
    assert torch.equal(resumed.num_lists.cpu(), whole.num_lists.cpu())
    with pytest.raises(ValueError, match="state_dict holds metrics"):
        M.MetricAccumulator(["map"]).load_state_dict(first.state_dict())
    with pytest.raises(ValueError, match="accumulated with options"):
        M.MetricAccumulator(specs, empty="skip").load_state_dict(first.state_dict())
    bad = dict(first.state_dict(), sums=torch.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        M.MetricAccumulator(specs).load_state_dict(bad)


def _distributed_worker(rank, world, port, out_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        acc = M.MetricAccumulator(["ndcg@5", "map", "mrr"], empty="skip")
        for lens, seed in (([3, 8, 0], 100 + rank), ([20], 200 + rank)):
            s, y, offsets = random_batch(lens, seed=seed, grades=3)
            acc.update(s, y, offsets=offsets)
        result = {k: v.item() for k, v in acc.compute().items()}
        if rank == 0:
            torch.save(result, out_path)
    finally:
        dist.destroy_process_group()


def test_accumulator_under_torch_distributed(tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    with socket.socket() as sock:  # a free port, bound to loopback only
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = str(tmp_path / "result.pt")
    mp.spawn(_distributed_worker, args=(2, port, out), nprocs=2, join=True)
    got = torch.load(out)
    parts = [random_batch(lens, seed=seed, grades=3)
             for rank in range(2) for lens, seed in (([3, 8, 0], 100 + rank), ([20], 200 + rank))]
    s = torch.cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    lengths = torch.cat([p[2][1:] - p[2][:-1] for p in parts])
    want = M.evaluate(s, y, lengths=lengths, metrics=["ndcg@5", "map", "mrr"], empty="skip")
    for spec, value in want.items():
        assert got[spec] == pytest.approx(value.item(), rel=1e-12)


@pytest.mark.cuda
@pytest.mark.skipif(not (torch.cuda.is_available() and rankops.build_info()["cuda"]),
                    reason="needs a GPU and a CUDA build")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    lengths = EDGE_LENGTHS + [0, 5000, 3, 70000]
    s, y, offsets = random_batch(lengths, ties=True, grades=4, seed=31, dtype=dtype)
    s[5] = float("nan")
    s[7] = -0.0
    s[8] = 0.0
    specs = [f"{n}{c}" for n in NAMES for c in ("", "@1", "@10", "@100")] + ["rprec", "opa"]
    kw = dict(metrics=specs, reduction="none", empty="one", max_grade=3)
    cpu = M.evaluate(s, y, offsets=offsets, **kw)
    gpu = M.evaluate(s.cuda(), y.cuda(), offsets=offsets.cuda(), **kw)
    for spec in specs:
        torch.testing.assert_close(gpu[spec].cpu(), cpu[spec], rtol=1e-12 if dtype == torch.float64 else 1e-6,
                                   atol=1e-12 if dtype == torch.float64 else 1e-6)
