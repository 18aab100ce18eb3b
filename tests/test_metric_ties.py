"""ties="average": every metric's expected value over the orders of its tie groups.

The oracle is brute force: every order of every tie group, each ranked without ties by
``ties="position"`` (itself checked against trec_eval in test_metrics.py), averaged. Also
scikit-learn's tie-averaged ndcg_score/dcg_score, hand values, and the reference on long
lists with large tie groups."""
import itertools
import math

import pytest
import torch

import rankops
from rankops import metrics as M
from rankops import reference
from lists import random_batch

NAMES = ["ndcg", "dcg", "mrr", "ap", "precision", "recall", "err", "success"]
SPECS = [f"{n}{c}" for n in NAMES for c in ("", "@1", "@2", "@3", "@5")] + ["rprec", "opa"]


def _tie_groups(scores):
    """Items of one list in rank order (score descending, ties by position, NaN as
    -inf), cut into runs of equal scores."""
    key = [(-math.inf if math.isnan(v) else v) for v in scores]
    order = sorted(range(len(key)), key=lambda i: (-key[i], i))
    groups = []
    for i in order:
        if groups and key[groups[-1][0]] == key[i]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _brute_force(scores, labels, specs, **options):
    """Mean of each spec over every order of every tie group: each order becomes
    tie-free scores (n - position) ranked by ties="position" in one padded batch."""
    n = len(scores)
    groups = _tie_groups(scores)
    orders = [list(itertools.chain(*choice))
              for choice in itertools.product(*(itertools.permutations(g) for g in groups))]
    S = torch.zeros(len(orders), n, dtype=torch.float64)
    for row, order in enumerate(orders):
        for position, item in enumerate(order):
            S[row, item] = float(n - position)
    Y = torch.tensor(labels, dtype=torch.float64).expand(len(orders), n)
    got = reference.evaluate(S, Y, metrics=specs, reduction="none", **options)
    return {spec: got[spec].mean().item() for spec in specs}


SPECIAL_SCORES = [1.0, 0.0, -0.0, 2.0, -math.inf, math.nan, 0.5]


def _small_lists(count, seed):
    g = torch.Generator().manual_seed(seed)
    lists = []
    for _ in range(count):
        n = int(torch.randint(0, 8, (1,), generator=g))
        pool = SPECIAL_SCORES[: int(torch.randint(1, len(SPECIAL_SCORES) + 1, (1,), generator=g))]
        scores = [pool[int(i)] for i in torch.randint(0, len(pool), (n,), generator=g)]
        labels = torch.randint(0, 4, (n,), generator=g).to(torch.float64).tolist()
        lists.append((scores, labels))
    lists.append(([3.0] * 7, [0.0, 0.0, 2.0, 0.0, 3.0, 1.0, 0.0]))  # one group of 7
    lists.append(([1.0] * 6, [0.0] * 6))  # no relevant item
    return lists


OPTION_SETS = [dict(), dict(gain="linear", divide_by="k"), dict(relevance_threshold=2.0, max_grade=3.0)]


@pytest.mark.parametrize("case", range(len(OPTION_SETS)), ids=["defaults", "linear-k", "threshold2"])
def test_matches_brute_force_over_tie_orders(device, case):
    options = OPTION_SETS[case]
    lists = _small_lists(40, seed=case)
    scores = torch.tensor([v for s, _ in lists for v in s], dtype=torch.float64)
    labels = torch.tensor([v for _, y in lists for v in y], dtype=torch.float64)
    lengths = torch.tensor([len(s) for s, _ in lists])
    # all specs in one call (every list scanned whole), and each alone (the scan stops at
    # its cut-off, inside a tie group)
    got = M.evaluate(scores.to(device), labels.to(device), lengths=lengths.to(device), metrics=SPECS,
                     ties="average", reduction="none", **options)
    alone = {spec: M.evaluate(scores.to(device), labels.to(device), lengths=lengths.to(device),
                              metrics=[spec], ties="average", reduction="none", **options)[spec]
             for spec in SPECS}
    ref = reference.evaluate(scores, labels, lengths=lengths, metrics=SPECS, ties="average",
                             reduction="none", **options)
    for b, (s, y) in enumerate(lists):
        want = _brute_force(s, y, SPECS, **options)
        for spec in SPECS:
            for source, values in (("kernel", got), ("kernel alone", alone), ("reference", ref)):
                assert values[spec][b].item() == pytest.approx(want[spec], rel=1e-12, abs=1e-14), \
                    (source, b, spec, s, y)


def test_hand_values_of_one_tie_group(device):
    # four tied items, labels (0, 0, 1, 2): each order equally likely
    s = torch.ones(4, dtype=torch.float64, device=device)
    y = torch.tensor([0.0, 0.0, 1.0, 2.0], device=device)
    kw = dict(ties="average")
    # every position holds the mean gain (0 + 0 + 1 + 3) / 4 = 1
    dcg = sum(1.0 / math.log2(1 + r) for r in range(1, 5))
    assert M.dcg(s, y, **kw).item() == pytest.approx(dcg, rel=1e-14)
    assert M.ndcg(s, y, **kw).item() == pytest.approx(dcg / (3 + 1 / math.log2(3)), rel=1e-14)
    # first relevant at rank 1, 2, 3 with probability 1/2, 1/3, 1/6
    assert M.mrr(s, y, **kw).item() == pytest.approx(1 / 2 + 1 / 3 / 2 + 1 / 6 / 3, rel=1e-14)
    # AP over the 6 equally likely rank pairs of the two relevant items, R = 2
    pairs = itertools.combinations(range(1, 5), 2)
    ap = sum(1 / a + 2 / b for a, b in pairs) / 6 / 2
    assert M.ap(s, y, **kw).item() == pytest.approx(ap, rel=1e-14)
    assert M.precision(s, y, k=1, **kw).item() == pytest.approx(0.5, rel=1e-14)
    assert M.recall(s, y, k=3, **kw).item() == pytest.approx(0.75, rel=1e-14)
    # ERR with p = (0, 0, 1/16, 3/16) (max_grade 4), over the 24 orders by hand
    p = [0.0, 0.0, 1 / 16, 3 / 16]
    total = 0.0
    for order in itertools.permutations(range(4)):
        reach = 1.0
        for r, i in enumerate(order):
            total += reach * p[i] / (r + 1)
            reach *= 1 - p[i]
    assert M.err(s, y, **kw).item() == pytest.approx(total / 24, rel=1e-14)


def test_constant_scores_cannot_use_the_data_order(device):
    # the file lists the relevant items first: by position a constant scorer is perfect,
    # averaged it gets what a random ranking gets
    y = torch.tensor([3.0, 2.0, 1.0, 0.0, 0.0, 0.0], device=device)
    s = torch.zeros(6, dtype=torch.float64, device=device)
    assert M.ndcg(s, y).item() == 1.0
    assert M.mrr(s, y).item() == 1.0
    assert M.mrr(s, y, ties="average").item() == pytest.approx(
        _brute_force([0.0] * 6, y.tolist(), ["mrr"])["mrr"], rel=1e-14)
    assert M.ndcg(s, y, ties="average").item() < 0.8
    assert M.precision(s, y, k=3, ties="average").item() == pytest.approx(0.5, rel=1e-14)


def test_agrees_with_sklearn_tie_averaged_ndcg():
    sk = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(5)
    B, L = 48, 25
    s = torch.randint(0, 4, (B, L), generator=g).to(torch.float64)  # many ties
    s[0] = 1.0  # all tied
    y = torch.randint(0, 5, (B, L), generator=g).to(torch.float64)
    for k in (None, 1, 5, 10):
        ours = M.ndcg(s, y, k=k, gain="linear", ties="average", reduction="none")
        theirs = [sk.ndcg_score(y[b:b + 1].numpy(), s[b:b + 1].numpy(), k=k) for b in range(B)]
        assert ours.tolist() == pytest.approx(theirs, rel=1e-12, abs=1e-14)
        ours = M.dcg(s, y, k=k, gain="linear", ties="average", reduction="none")
        theirs = [sk.dcg_score(y[b:b + 1].numpy(), s[b:b + 1].numpy(), k=k) for b in range(B)]
        assert ours.tolist() == pytest.approx(theirs, rel=1e-12, abs=1e-14)
        # and sklearn's ignore_ties=True is ties by position when nothing ties... but with
        # ties it differs, which is the point
        assert not torch.allclose(M.ndcg(s, y, k=k, gain="linear", reduction="none"),
                                  M.ndcg(s, y, k=k, gain="linear", ties="average", reduction="none"))


def test_success_is_a_probability(device):
    # every (g, h): one tied list of g items, h relevant; a hit somewhere is certain
    cases = [(g, h) for g in range(1, 60) for h in range(1, g + 1)]
    lengths = torch.tensor([g for g, _ in cases])
    y = torch.cat([torch.tensor([1.0] * h + [0.0] * (g - h)) for g, h in cases]).double()
    s = torch.zeros_like(y)
    got = M.evaluate(s.to(device), y.to(device), lengths=lengths.to(device), ties="average",
                     metrics=["success", "success@3"], reduction="none")
    assert (got["success"] == 1.0).all()
    at3 = got["success@3"].cpu()
    want = torch.tensor([1.0 - math.comb(g - h, min(3, g)) / math.comb(g, min(3, g)) for g, h in cases],
                        dtype=torch.float64)
    assert ((at3 >= 0) & (at3 <= 1)).all()
    torch.testing.assert_close(at3, want, rtol=1e-15, atol=1e-15)


def test_without_ties_average_equals_position(device):
    s, y, offsets = random_batch([0, 1, 2, 9, 64, 65, 300, 2000], seed=3)  # continuous: no ties
    specs = SPECS + ["ndcg@100", "err@1000", "ap@64"]
    a = M.evaluate(s.to(device), y.to(device), offsets=offsets.to(device), metrics=specs,
                   reduction="none", max_grade=4)
    b = M.evaluate(s.to(device), y.to(device), offsets=offsets.to(device), metrics=specs,
                   reduction="none", max_grade=4, ties="average")
    for spec in specs:
        torch.testing.assert_close(b[spec], a[spec], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_long_lists_with_large_tie_groups_match_reference(device, dtype):
    # ~9 distinct scores per list: tie groups of hundreds straddle every cut-off
    s, y, offsets = random_batch([0, 1, 5, 33, 200, 1500], ties=True, grades=4, seed=8, dtype=dtype)
    s[3] = float("nan")
    s[10] = -float("inf")
    s[11] = -0.0
    specs = [f"{n}{c}" for n in NAMES for c in ("", "@1", "@10", "@100")] + ["rprec", "opa"]
    kw = dict(metrics=specs, reduction="none", ties="average", max_grade=3)
    got = M.evaluate(s.to(device), y.to(device), offsets=offsets.to(device), **kw)
    want = reference.evaluate(s, y, offsets=offsets, **kw)
    for spec in specs:
        assert torch.isfinite(got[spec]).all()
        torch.testing.assert_close(got[spec].cpu().double(), want[spec].double(),
                                   rtol=1e-10 if dtype == torch.float64 else 1e-6,
                                   atol=1e-12 if dtype == torch.float64 else 1e-6, msg=spec)


def _log_comb(a, b):
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


def test_padded_input_both_packings(device, packing):
    # mostly padding: on the GPU's packing the padding is one trailing tie group of
    # ~58,000 label-0 items, which ERR's recurrence must pass in O(g) (it has no stoppable
    # item), not O(g^2)
    g = torch.Generator().manual_seed(12)
    B, L = 256, 256
    S = torch.round(torch.randn(B, L, generator=g, dtype=torch.float64))
    Y = torch.randint(0, 4, (B, L), generator=g).to(torch.float64)
    mask = torch.rand(B, L, generator=g) < 0.1
    specs = ["err", "err@3", "ndcg@5", "map", "mrr@10"]
    kw = dict(metrics=specs, reduction="none", ties="average")
    got = M.evaluate(S.to(device), Y.to(device), mask=mask.to(device), **kw)
    lengths = mask.sum(1)
    packed = M.evaluate(S[mask].to(device), Y[mask].to(device), lengths=lengths.to(device), **kw)
    for spec in specs:
        torch.testing.assert_close(got[spec], packed[spec], rtol=0, atol=0, equal_nan=True)
    want = reference.evaluate(S[:40], Y[:40], mask=mask[:40], **kw)
    for spec in specs:
        torch.testing.assert_close(got[spec][:40].cpu(), want[spec], rtol=1e-12, atol=1e-14)


def test_one_long_tied_list_is_finite_and_exact(device):
    # 3,000 tied items, 30 relevant: whole-list ERR walks its O(g^2) recurrence
    n, rel = 3000, 30
    s = torch.zeros(n, dtype=torch.float64, device=device)
    y = torch.zeros(n, dtype=torch.float64, device=device)
    y[torch.randperm(n)[:rel]] = 2.0
    got = M.evaluate(s, y, metrics=["ndcg", "mrr", "map", "precision@10", "err"], ties="average")
    for value in got.values():
        assert math.isfinite(value.item())
    D = [1 / math.log2(2 + p) for p in range(n)]
    mean_gain = rel * 3.0 / n
    assert got["ndcg"].item() == pytest.approx(mean_gain * sum(D) / (3.0 * sum(D[:rel])), rel=1e-12)
    assert got["precision@10"].item() == pytest.approx(rel / n, rel=1e-12)
    # MRR: sum_q P(first relevant at q) / (q + 1), P from binomials
    mrr = sum(math.exp(_log_comb(n - 1 - q, rel - 1) - _log_comb(n, rel)) / (q + 1)
              for q in range(n - rel + 1))
    assert got["mrr"].item() == pytest.approx(mrr, rel=1e-12)
    # AP: E[P@r at a relevant rank r] is the same for every relevant item; by linearity
    # AP = (1/R) sum_p (R/n) (1 + p (R - 1) / (n - 1)) / (p + 1)
    ap = sum((1 + p * (rel - 1) / (n - 1)) / (p + 1) for p in range(n)) / n
    assert got["map"].item() == pytest.approx(ap, rel=1e-12)
    # ERR with every relevant p = 3/16: by symmetry of the tied list, the expected ERR is
    # sum_r (1/r) E[p_r prod_{i<r}(1 - p_i)] over a random placement of the relevant items
    q = 3 / 16
    err = 0.0
    for p in range(n):
        # P(item at p relevant and j of the p items before it relevant), j hypergeometric
        for j in range(max(0, p - (n - rel)), min(p, rel - 1) + 1):
            prob = math.exp(_log_comb(rel - 1, j) + _log_comb(n - rel, p - j)
                            - _log_comb(n - 1, p)) * rel / n
            err += prob * q * (1 - q) ** j / (p + 1)
    assert got["err"].item() == pytest.approx(err, rel=1e-10)


def test_accumulator_and_state_dict(device, tmp_path):
    s, y, offsets = random_batch([5, 0, 40, 7, 19], ties=True, seed=4)
    s, y, offsets = s.to(device), y.to(device), offsets.to(device)
    specs = ["ndcg@3", "map", "mrr", "err@5"]
    acc = M.MetricAccumulator(specs, ties="average")
    acc.update(s[:5], y[:5], offsets=offsets[:3])
    acc.update(s[5:], y[5:], offsets=offsets[2:] - 5)
    want = M.evaluate(s, y, offsets=offsets, metrics=specs, ties="average")
    for spec in specs:
        assert acc.compute()[spec].item() == pytest.approx(want[spec].item(), rel=1e-12)
    # a checkpoint holds the option; one from before ties= existed loads as "position"
    state = acc.state_dict()
    assert state["options"]["ties"] == "average"
    with pytest.raises(ValueError, match="options"):
        M.MetricAccumulator(specs).load_state_dict(state)
    old = dict(state, options={k: v for k, v in state["options"].items() if k != "ties"})
    M.MetricAccumulator(specs).load_state_dict(old)
    with pytest.raises(ValueError, match="options"):
        M.MetricAccumulator(specs, ties="average").load_state_dict(old)


def test_bad_ties_argument():
    s, y = torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0])
    with pytest.raises(ValueError, match="ties must be one of 'position', 'average'"):
        M.ndcg(s, y, ties="random")
    with pytest.raises(ValueError, match="ties"):
        M.MetricAccumulator(["map"], ties=None)
    with pytest.raises(RuntimeError, match="ties must be 'position' or 'average'"):
        torch.ops.rankops.ranking_metrics(s, y, torch.tensor([0, 2]), ["ndcg"], [0], "exp2", 1.0,
                                          4.0, "min_k_n", "mean")


def test_opcheck_and_compile():
    s, y, offsets = random_batch([4, 0, 7], ties=True, seed=6)
    args = (s, y, offsets, ["ndcg", "ap", "err"], [3, 0, 2], "exp2", 1.0, 4.0, "min_k_n", "average")
    torch.library.opcheck(torch.ops.rankops.ranking_metrics.default, args)

    @torch.compile(fullgraph=True, backend="eager")
    def f(s, y, offsets):
        return M.evaluate(s, y, offsets=offsets, metrics=["ndcg@3", "mrr"], ties="average",
                          reduction="none")

    got = f(s, y, offsets)
    want = M.evaluate(s, y, offsets=offsets, metrics=["ndcg@3", "mrr"], ties="average", reduction="none")
    for spec in want:
        torch.testing.assert_close(got[spec], want[spec])


@pytest.mark.cuda
@pytest.mark.skipif(not (torch.cuda.is_available() and rankops.build_info()["cuda"]),
                    reason="needs a GPU and a CUDA build")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    s, y, offsets = random_batch([0, 1, 2, 31, 32, 33, 100, 5000, 3], ties=True, grades=4, seed=31,
                                 dtype=dtype)
    s[5] = float("nan")
    s[7] = -0.0
    specs = [f"{n}{c}" for n in NAMES for c in ("", "@1", "@10", "@100")] + ["rprec", "opa"]
    kw = dict(metrics=specs, reduction="none", ties="average", max_grade=3)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-6)
    for kw["metrics"] in (specs, ["err@10", "mrr@10", "ap@10", "ndcg@1"]):  # whole lists, cut scans
        cpu = M.evaluate(s, y, offsets=offsets, **kw)
        gpu = M.evaluate(s.cuda(), y.cuda(), offsets=offsets.cuda(), **kw)
        for spec in kw["metrics"]:
            torch.testing.assert_close(gpu[spec].cpu(), cpu[spec], **tol)
