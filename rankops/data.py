"""Learning-to-rank data in the packed layout: a deterministic synthetic set, a
LETOR/SVMlight loader, and what ``torch.utils.data.DataLoader`` needs to batch queries.

A data set is a :class:`RankingData`: ``features [N, F]`` (float32), ``labels [N]``
(float32 grades) and ``offsets [B+1]`` (int64), queries back to back. It is a map-style
dataset of queries (``data[q]`` is query q as a one-query ``RankingData``), so::

    loader = DataLoader(data, batch_size=16, shuffle=True, collate_fn=rankops.data.collate)
    # or a bounded number of items per batch (pairwise losses cost grows with it):
    loader = DataLoader(data, batch_sampler=ItemBudgetSampler(data.lengths, max_items=4096),
                        collate_fn=rankops.data.collate)
    for batch in loader:
        loss = rankops.lambdarank_loss(model(batch.features), batch.labels, offsets=batch.offsets)
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from . import segments

__all__ = ["RankingData", "synthetic", "load_svmlight", "split_queries", "collate",
           "ItemBudgetSampler"]


@dataclass(eq=False)
class RankingData(torch.utils.data.Dataset):
    features: Tensor  # [N, F] float32
    labels: Tensor  # [N] float32 graded relevance
    offsets: Tensor  # [B+1] int64

    @property
    def num_queries(self) -> int:
        return self.offsets.numel() - 1

    def __len__(self) -> int:
        return self.num_queries

    def __getitem__(self, query: int) -> "RankingData":
        """Query ``query`` as a one-query data set (views, no copy)."""
        query = int(query)
        if not -self.num_queries <= query < self.num_queries:
            raise IndexError(f"query {query} out of range for {self.num_queries} queries")
        query %= self.num_queries
        start, end = int(self.offsets[query]), int(self.offsets[query + 1])
        return RankingData(self.features[start:end], self.labels[start:end],
                           torch.tensor([0, end - start], dtype=torch.int64))

    def to(self, *args, **kwargs) -> "RankingData":
        """Features and labels moved/cast as ``Tensor.to`` does; offsets follow them to
        their device and stay int64."""
        features = self.features.to(*args, **kwargs)
        return RankingData(features, self.labels.to(*args, **kwargs),
                           self.offsets.to(features.device,
                                           non_blocking=kwargs.get("non_blocking", False)))

    def pin_memory(self) -> "RankingData":
        """Called by ``DataLoader(pin_memory=True)``."""
        return RankingData(self.features.pin_memory(), self.labels.pin_memory(),
                           self.offsets.pin_memory())

    @property
    def lengths(self) -> Tensor:
        return segments.lengths_from_offsets(self.offsets)

    def subset(self, queries: Tensor) -> "RankingData":
        """The given queries (indices), in that order."""
        queries = torch.as_tensor(queries, dtype=torch.int64)
        starts, lengths = self.offsets[queries], self.lengths[queries]
        offsets = segments.offsets_from_lengths(lengths)
        n = int(offsets[-1])
        within = torch.arange(n) - torch.repeat_interleave(offsets[:-1], lengths, output_size=n)
        items = torch.repeat_interleave(starts, lengths, output_size=n) + within
        return RankingData(self.features[items], self.labels[items], offsets)

    def summary(self) -> str:
        lengths = self.lengths.float()
        no_rel = int(sum(1 for a, b in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist())
                         if not bool((self.labels[a:b] > 0).any())))
        return (f"{self.num_queries} queries, {self.labels.numel()} items, {self.features.shape[1]} "
                f"features, list length median {lengths.median().item():.0f} / max "
                f"{lengths.max().item():.0f}, {no_rel} queries with no relevant item")


# grade cut points: about 55% / 22% / 12% / 7% / 4% of documents in grades 0..4
_GRADE_CUTS = [0.4, 2.0, 3.3, 4.7]


def synthetic(num_queries: int = 1500, num_features: int = 32, *, median_length: int = 40,
              max_length: int = 600, noise: float = 1.0, seed: int = 0) -> RankingData:
    """A deterministic synthetic learning-to-rank set.

    Each query has a heavy-tailed (log-normal) number of documents. Features are Gaussian
    with a per-query shift (as query-level features are); a hidden teacher (a random
    two-layer network plus a per-query difficulty) scores each document, noise is added,
    and the noisy score is cut into grades 0-4 at fixed thresholds, so the label
    distribution is skewed towards 0 and some queries have no relevant document.
    """
    g = torch.Generator().manual_seed(seed)
    lengths = torch.exp(torch.randn(num_queries, generator=g) * 0.8) * median_length
    lengths = lengths.round().clamp(2, max_length).to(torch.int64)
    offsets = segments.offsets_from_lengths(lengths)
    n = int(offsets[-1])
    query_of = torch.repeat_interleave(torch.arange(num_queries), lengths, output_size=n)
    query_shift = torch.randn(num_queries, num_features, generator=g) * 0.5
    x = torch.randn(n, num_features, generator=g) + query_shift[query_of]
    teacher = torch.Generator().manual_seed(12345)  # the task is the same for every seed
    w1 = torch.randn(num_features, 16, generator=teacher) / num_features ** 0.5
    w2 = torch.randn(16, generator=teacher)
    difficulty = torch.randn(num_queries, generator=g) * 0.7
    relevance = torch.tanh(x @ w1) @ w2 + 0.6 * x[:, 0] - difficulty[query_of]
    relevance = relevance + noise * torch.randn(n, generator=g)
    labels = torch.bucketize(relevance, torch.tensor(_GRADE_CUTS)).to(torch.float32)
    return RankingData(x.float(), labels, offsets)


def load_svmlight(path: str, *, num_features: Optional[int] = None,
                  query_file: Optional[str] = None) -> RankingData:
    """Reads a LETOR/SVMlight file: ``label qid:Q i:v ...`` (queries as contiguous runs
    of qid), or ``label i:v ...`` plus a LightGBM-style group file (one list size per
    line; ``path + ".query"`` is used when it exists). Uses scikit-learn's parser."""
    from sklearn.datasets import load_svmlight_file

    if query_file is None and os.path.exists(path + ".query"):
        query_file = path + ".query"
    kwargs = dict(zero_based=False)
    if num_features is not None:
        kwargs["n_features"] = num_features
    if query_file is None:
        x, y, qid = load_svmlight_file(path, query_id=True, **kwargs)
        offsets = segments.offsets_from_group_ids(torch.from_numpy(qid.astype(np.int64)))
    else:
        x, y = load_svmlight_file(path, **kwargs)
        sizes = np.atleast_1d(np.loadtxt(query_file, dtype=np.int64))
        if sizes.sum() != x.shape[0]:
            raise ValueError(f"{query_file}: group sizes sum to {sizes.sum()}, {path} has {x.shape[0]} rows")
        offsets = segments.offsets_from_lengths(torch.from_numpy(sizes))
    features = torch.from_numpy(np.asarray(x.todense(), dtype=np.float32))
    return RankingData(features, torch.from_numpy(y.astype(np.float32)), offsets)


def split_queries(data: RankingData, fractions=(0.8, 0.1, 0.1), *, seed: int = 0):
    """Random split of the queries into parts with the given fractions."""
    perm = torch.randperm(data.num_queries, generator=torch.Generator().manual_seed(seed))
    cuts = np.cumsum([0] + [round(f * data.num_queries) for f in fractions])
    cuts[-1] = data.num_queries
    return [data.subset(perm[a:b].sort().values) for a, b in zip(cuts[:-1], cuts[1:])]


def collate(batch: Sequence[RankingData]) -> RankingData:
    """Packs data sets (usually single queries from ``data[q]``) into one, lists back to
    back in the given order: the ``collate_fn`` for ``DataLoader``."""
    batch = list(batch)
    if not batch:
        raise ValueError("collate: batch is empty")
    for i, part in enumerate(batch):
        if not isinstance(part, RankingData):
            raise TypeError(f"collate: batch[{i}] is {type(part).__name__}, expected RankingData")
    lengths = torch.cat([part.lengths for part in batch])
    return RankingData(torch.cat([part.features for part in batch]),
                       torch.cat([part.labels for part in batch]),
                       segments.offsets_from_lengths(lengths))


class ItemBudgetSampler(torch.utils.data.Sampler):
    """Batches of queries holding at most ``max_items`` items each (a longer query makes
    a batch of its own), for ``DataLoader(batch_sampler=...)``.

    Fixed-size batches of queries make memory and time follow the longest lists drawn;
    a budget of items keeps each step's work near constant. Queries are taken in a
    seeded random order (``shuffle=True``; call :meth:`set_epoch` each epoch for a new
    order) or in data order, and packed greedily. With ``num_replicas``/``rank``
    (DistributedDataParallel) each rank takes every ``num_replicas``-th batch, and the
    last batches are reused from the start so that every rank takes the same number of
    steps (as ``DistributedSampler`` pads).
    """

    def __init__(self, lengths, max_items: int, *, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, drop_last: bool = False):
        lengths = torch.as_tensor(lengths)
        if lengths.dim() != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise TypeError("lengths must be a 1-D integer tensor (items per query)")
        if bool((lengths < 0).any()):
            raise ValueError("lengths must be non-negative")
        if not isinstance(max_items, int) or isinstance(max_items, bool) or max_items < 1:
            raise ValueError(f"max_items must be a positive int, got {max_items!r}")
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"num_replicas must be a positive int, got {num_replicas!r}")
        if not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be an int in [0, num_replicas), got {rank!r}")
        self.lengths = lengths.to(torch.int64).tolist()
        self.max_items, self.shuffle, self.seed = max_items, bool(shuffle), int(seed)
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _all_batches(self) -> List[List[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(self.lengths), generator=g).tolist()
        else:
            order = range(len(self.lengths))
        batches, current, items = [], [], 0
        for q in order:
            n = self.lengths[q]
            if current and items + n > self.max_items:
                batches.append(current)
                current, items = [], 0
            current.append(q)
            items += n
        if current:
            batches.append(current)
        return batches

    def _per_rank(self, total: int) -> int:
        if self.drop_last:
            return total // self.num_replicas
        return math.ceil(total / self.num_replicas)

    def __iter__(self) -> Iterator[List[int]]:
        batches = self._all_batches()
        steps = self._per_rank(len(batches))
        if not batches:
            return iter(())
        picks = [(self.rank + step * self.num_replicas) % len(batches) for step in range(steps)]
        return iter([batches[i] for i in picks])

    def __len__(self) -> int:
        return self._per_rank(len(self._all_batches()))
