"""Batching queries with torch.utils.data: RankingData as a dataset of queries, collate,
and the item-budget batch sampler."""
import pytest
import torch
from torch.utils.data import DataLoader

import rankops
from rankops import data, reference


def _small():
    # 4 queries of 3, 0, 5, 2 items; feature 0 is the item's global index
    lengths = torch.tensor([3, 0, 5, 2])
    n = int(lengths.sum())
    features = torch.stack([torch.arange(n, dtype=torch.float32), torch.ones(n)], dim=1)
    labels = torch.tensor([2., 0., 1., 0., 1., 3., 0., 2., 1., 0.])
    return data.RankingData(features, labels, rankops.segments.offsets_from_lengths(lengths))


def test_indexing_gives_one_query_views():
    d = _small()
    assert len(d) == 4
    q2 = d[2]
    assert q2.offsets.tolist() == [0, 5]
    assert q2.features[:, 0].tolist() == [3., 4., 5., 6., 7.]
    assert q2.labels.tolist() == [0., 1., 3., 0., 2.]
    assert q2.features.data_ptr() == d.features[3].data_ptr()  # a view
    assert d[1].offsets.tolist() == [0, 0] and d[1].features.shape == (0, 2)
    assert d[-1].labels.tolist() == [1., 0.]
    with pytest.raises(IndexError, match="query 4"):
        d[4]


def test_collate_packs_in_the_given_order():
    d = _small()
    batch = data.collate([d[3], d[1], d[0]])
    assert batch.offsets.tolist() == [0, 2, 2, 5]
    assert batch.features[:, 0].tolist() == [8., 9., 0., 1., 2.]
    assert batch.labels.tolist() == [1., 0., 2., 0., 1.]
    # multi-query parts pack too
    assert torch.equal(data.collate([d]).offsets, d.offsets)
    with pytest.raises(ValueError, match="empty"):
        data.collate([])
    with pytest.raises(TypeError, match=r"batch\[1\]"):
        data.collate([d[0], (d.features, d.labels)])


def test_dataloader_batches_equal_subset_and_losses_match_reference():
    d = data.synthetic(num_queries=40, seed=2)
    loader = DataLoader(d, batch_size=7, shuffle=False, collate_fn=data.collate)
    batches = list(loader)
    assert len(batches) == 6
    for i, batch in enumerate(batches):
        expected = d.subset(torch.arange(7 * i, min(7 * i + 7, 40)))
        assert torch.equal(batch.features, expected.features)
        assert torch.equal(batch.labels, expected.labels)
        assert torch.equal(batch.offsets, expected.offsets)
    s = batches[0].features[:, 0].clone()
    got = rankops.lambdarank_loss(s, batches[0].labels, offsets=batches[0].offsets)
    want = reference.lambdarank_loss(s, batches[0].labels, offsets=batches[0].offsets)
    torch.testing.assert_close(got, want)


def test_dataloader_with_workers():
    d = data.synthetic(num_queries=12, seed=4)
    loader = DataLoader(d, batch_size=5, shuffle=False, collate_fn=data.collate, num_workers=2)
    got = data.collate(list(loader))
    assert torch.equal(got.features, d.features) and torch.equal(got.offsets, d.offsets)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_dataloader_pin_memory_cuda():
    d = data.synthetic(num_queries=12, seed=4)
    loader = DataLoader(d, batch_size=5, collate_fn=data.collate, pin_memory=True)
    batch = next(iter(loader))
    assert batch.features.is_pinned() and batch.offsets.is_pinned()
    on_gpu = batch.to("cuda", non_blocking=True)
    assert on_gpu.offsets.dtype == torch.int64 and on_gpu.labels.is_cuda


def test_to_moves_tensors_and_keeps_offsets_int64():
    for target in (torch.float64, torch.zeros(1, dtype=torch.float64)):  # a dtype, a tensor
        d = _small().to(target)
        assert d.features.dtype == d.labels.dtype == torch.float64
        assert d.offsets.dtype == torch.int64
    d = _small().to("cpu", torch.float16)
    assert d.features.dtype == torch.float16 and d.offsets.dtype == torch.int64


def test_item_budget_sampler_respects_budget_and_covers_every_query_once():
    lengths = torch.tensor([5, 1, 9, 3, 0, 12, 4, 4, 2, 7])
    sampler = data.ItemBudgetSampler(lengths, max_items=10, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(q for b in batches for q in b) == list(range(10))
    for b in batches:
        items = int(lengths[b].sum())
        assert items <= 10 or len(b) == 1  # the 12-item query goes alone
    assert [5] in batches
    # greedy: no batch could have taken the first query of the next one
    for b, nxt in zip(batches, batches[1:]):
        assert int(lengths[b].sum()) + int(lengths[nxt[0]]) > 10
    # deterministic per (seed, epoch); a new epoch reorders
    assert list(data.ItemBudgetSampler(lengths, max_items=10, seed=1)) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_item_budget_sampler_in_order_without_shuffle():
    lengths = torch.tensor([4, 4, 4, 1, 20, 3])
    batches = list(data.ItemBudgetSampler(lengths, max_items=8, shuffle=False))
    assert batches == [[0, 1], [2, 3], [4], [5]]


def test_item_budget_sampler_shards_evenly_across_ranks():
    lengths = torch.tensor([3] * 10)  # 5 batches of 2 queries with max_items=6
    per_rank = [list(data.ItemBudgetSampler(lengths, max_items=6, shuffle=False,
                                            num_replicas=2, rank=r)) for r in range(2)]
    assert per_rank[0] == [[0, 1], [4, 5], [8, 9]]
    assert per_rank[1] == [[2, 3], [6, 7], [0, 1]]  # padded from the start
    dropped = [list(data.ItemBudgetSampler(lengths, max_items=6, shuffle=False, num_replicas=2,
                                           rank=r, drop_last=True)) for r in range(2)]
    assert dropped == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]


def test_item_budget_sampler_with_dataloader():
    d = data.synthetic(num_queries=60, seed=5)
    sampler = data.ItemBudgetSampler(d.lengths, max_items=300, seed=0)
    seen = 0
    for batch in DataLoader(d, batch_sampler=sampler, collate_fn=data.collate):
        assert batch.labels.numel() <= 300 or batch.num_queries == 1
        seen += batch.num_queries
    assert seen == 60


@pytest.mark.parametrize("kwargs, match", [
    (dict(lengths=torch.tensor([1.5, 2.0]), max_items=4), "lengths"),
    (dict(lengths=torch.tensor([[1, 2]]), max_items=4), "lengths"),
    (dict(lengths=torch.tensor([1, -2]), max_items=4), "lengths"),
    (dict(lengths=torch.tensor([1, 2]), max_items=0), "max_items"),
    (dict(lengths=torch.tensor([1, 2]), max_items=2.5), "max_items"),
    (dict(lengths=torch.tensor([1, 2]), max_items=4, num_replicas=0), "num_replicas"),
    (dict(lengths=torch.tensor([1, 2]), max_items=4, num_replicas=2, rank=2), "rank"),
])
def test_item_budget_sampler_rejects_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        data.ItemBudgetSampler(**kwargs)


def test_data_is_reachable_from_the_package():
    import subprocess
    import sys
    code = "import rankops; print(rankops.data.collate.__name__, rankops.data.ItemBudgetSampler.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["collate", "ItemBudgetSampler"]
