"""Learning-to-rank data in the packed layout: a deterministic synthetic set and a
LETOR/SVMlight loader.

A data set is a :class:`RankingData`: ``features [N, F]`` (float32), ``labels [N]``
(float32 grades) and ``offsets [B+1]`` (int64), queries back to back.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from . import segments

__all__ = ["RankingData", "synthetic", "load_svmlight", "split_queries"]


@dataclass
class RankingData:
    features: Tensor  # [N, F] float32
    labels: Tensor  # [N] float32 graded relevance
    offsets: Tensor  # [B+1] int64

    @property
    def num_queries(self) -> int:
        return self.offsets.numel() - 1

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
