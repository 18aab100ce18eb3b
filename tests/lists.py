"""Random packed batches for the tests."""
import torch

# lengths that cover the edge cases: empty, one item, warp/block boundaries, long lists
EDGE_LENGTHS = [0, 1, 2, 3, 7, 8, 31, 32, 33, 64, 100, 255]


def random_batch(lengths, *, dtype=torch.float64, device="cpu", grades=5, ties=False,
                 weights=False, seed=0):
    """scores, labels, offsets (and weights) for lists of the given lengths."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    n = int(lengths.sum())
    scores = torch.randn(n, generator=g, dtype=torch.float64)
    if ties:  # few distinct scores: many ties, exercise the position tie-break
        scores = torch.round(scores * 2) / 2
    labels = torch.randint(0, grades, (n,), generator=g).to(torch.float64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    out = [scores.to(dtype).to(device), labels.to(device), offsets.to(device)]
    if weights:
        out.append((torch.rand(n, generator=g, dtype=torch.float64) + 0.1).to(device))
    return out
