"""Two paths of the CUDA pairwise kernel, emulated on the CPU.

`rankops::_pairwise_loss_emulated` runs the paths' own __host__ __device__ code with every
list sent down one path, so the index math of the GPU kernels is checked here, on machines
without a GPU (barriers, cub calls and launches are checked only by test_pairwise_cuda.py):
  * "block" (csrc/common/pair_block_list.h, the algorithm of the warp kernel for lists of
    up to 32 and of the block kernel above): bitonic sorts, pair count, IDCG, ranks and the
    pair loop in a buffer carved as the kernels carve shared memory (same caps, so the same
    padding), by a one-thread team;
  * "long" (csrc/common/pair_long_path.h): tile width choice, tiling of the pair space into
    (row, column tile) pieces, the per-tile pair loop, the per-row sums in tile order.
Expected values come from rankops.reference (autograd for the gradient) and the CPU op.
"""

import pytest
import torch

from rankops import reference
from lists import assert_close_per_list, random_batch

ops = torch.ops.rankops
PAIR_FNS = ["logistic", "hinge", "soft_zero_one"]
WEIGHTS = ["none", "label_diff", "ndcg", "ndcg2", "ndcg2pp"]
# lengths around the tiling cases: empty and one-item lists between long ones, n < k,
# n = k, n = k + 1, and lists longer than every tile width below
LENGTHS = [0, 2, 1, 3, 5, 6, 0, 9, 17, 40, 1, 130]


def emulate(s, y, off, w, fn="logistic", weight="none", k=None, width=0, sigma=1.0,
            margin=1.0, mu=5.0, gain="exp2", plan_only=False, path="long"):
    return ops._pairwise_loss_emulated(s, y, off, w, fn, weight, sigma, margin, k, mu, gain,
                                       path, width, plan_only)


def reference_loss_and_grad(s, y, off, w, fn, weight, k, sigma=1.0, margin=1.0, mu=5.0,
                            gain="exp2"):
    x = s.detach().clone().requires_grad_(True)
    per_list = reference.pairwise_loss(x, y, offsets=off, weights=w, pair_fn=fn, weight=weight,
                                       sigma=sigma, margin=margin, k=k, mu=mu, gain=gain,
                                       reduction="none")
    per_list.sum().backward()
    return per_list.detach(), x.grad


@pytest.mark.parametrize("fn", PAIR_FNS)
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("k", [None, 1, 5])
@pytest.mark.parametrize("width", [0, 1, 2, 4, 64])
def test_long_path_matches_reference(fn, weight, k, width):
    s, y, off, w = random_batch(LENGTHS, weights=True, seed=11)
    loss, grad, pairs, used = emulate(s, y, off, w, fn, weight, k, width)
    want_loss, want_grad = reference_loss_and_grad(s, y, off, w, fn, weight, k)
    assert used == (width if width > 0 else 256)  # 256: the narrowest candidate fits
    lengths = (off[1:] - off[:-1]).tolist()
    lists = [y[a:b] for a, b in zip(off[:-1].tolist(), off[1:].tolist())]
    assert pairs.tolist() == [int((l[:, None] > l[None, :]).sum()) for l in lists]
    assert len(lengths) == loss.numel()
    torch.testing.assert_close(loss, want_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gain", ["exp2", "linear"])
@pytest.mark.parametrize("sigma,margin,mu", [(0.5, 2.0, 0.0), (3.0, 0.1, 12.0)])
@pytest.mark.parametrize("weight", ["ndcg", "ndcg2pp"])
def test_long_path_knobs(gain, sigma, margin, mu, weight):
    s, y, off, w = random_batch([33, 7, 70], weights=True, seed=12)
    for fn in PAIR_FNS:
        loss, grad, _, _ = emulate(s, y, off, w, fn, weight, 4, 3, sigma, margin, mu, gain)
        want_loss, want_grad = reference_loss_and_grad(s, y, off, w, fn, weight, 4, sigma,
                                                       margin, mu, gain)
        torch.testing.assert_close(loss, want_loss, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k", [None, 2, 7])
def test_long_path_ties_nan_signed_zero(k):
    # position breaks score ties; NaN ranks last; -0.0 and +0.0 tie (as on the CPU)
    s, y, off = random_batch([50, 30], ties=True, seed=13)
    s[3], s[10], s[11], s[60] = float("nan"), -0.0, 0.0, float("nan")
    for weight in ["none", "ndcg", "ndcg2pp"]:
        want = ops.pairwise_loss(s, y, off, None, "hinge", weight, 1.0, 1.0, k, 5.0, "exp2", True)
        got = emulate(s, y, off, None, "hinge", weight, k, 3)
        assert torch.equal(got[2], want[2])
        torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-12, equal_nan=True)
        torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_long_path_low_precision(dtype):
    # the CUDA wrapper widens to float32 first, as the emulation does
    s, y, off, w = random_batch([300, 20, 900], dtype=dtype, weights=True, seed=14)
    for weight in ["none", "ndcg2pp"]:
        want = ops.pairwise_loss(s, y, off, w, "logistic", weight, 1.0, 1.0, 10, 5.0, "exp2", True)
        got = emulate(s, y, off, w, "logistic", weight, 10, 0)
        assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
        assert torch.equal(got[2], want[2])
        # per list: a tolerance scaled by the batch's largest value would not check the
        # short list beside the long ones
        assert_close_per_list(got[0], want[0], rtol=1e-5, msg="losses: ")
        assert_close_per_list(got[1], want[1], off, rtol=1e-5, msg="gradients: ")


def test_long_path_no_pairs_and_huge_gaps():
    s, y, off = random_batch([40, 300], seed=15)
    y[:40] = 2.0  # list 0: all labels tie, no pairs
    s[40:] = s[40:] * 1e4  # list 1: gaps of ~1e4
    for weight in ["none", "ndcg"]:
        loss, grad, pairs, _ = emulate(s, y, off, None, "logistic", weight, None, 16)
        assert pairs[0] == 0 and loss[0] == 0 and torch.count_nonzero(grad[:40]) == 0
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        want_loss, want_grad = reference_loss_and_grad(s, y, off, None, "logistic", weight, None)
        torch.testing.assert_close(loss, want_loss, rtol=1e-10, atol=1e-9)
        torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-12)


def test_long_path_one_huge_list_top_k():
    # the case: one list of 2^20 items, k = 10; 10 head rows x 4,096 tiles plus
    # one tile per tail row fit the budget at the narrowest width
    n = 1 << 20
    s, y, off = random_batch([n], seed=16)
    loss, grad, pairs, used = emulate(s, y, off, None, "logistic", "ndcg", 10, 0)
    assert used == 256
    want = ops.pairwise_loss(s, y, off, None, "logistic", "ndcg", 1.0, 1.0, 10, 5.0, "exp2", True)
    assert torch.equal(pairs, want[2])
    torch.testing.assert_close(loss, want[0], rtol=1e-10, atol=0)
    torch.testing.assert_close(grad, want[1], rtol=1e-10, atol=1e-15)
    assert torch.count_nonzero(grad) > 0


# Tile width choice, worked by hand. Candidates: 256 * 2^c; tiles of a list of n:
# head_rows * ceil(n / W) + (n - head_rows) * ceil(k / W) (head_rows = k with top-k, else
# n); budget max(2^20, 2 * items in long lists); the narrowest fitting width wins.
@pytest.mark.parametrize("lengths,k,width", [
    ([16384], None, 256),          # 16,384 * 64 = 2^20 tiles: fits exactly
    ([16385], None, 512),          # 16,385 * 65 > 2^20; 16,385 * 33 fits
    ([1 << 20], 10, 256),          # 10 * 4,096 + (2^20 - 10) * 1 <= 2^21
    ([1 << 20], None, 1 << 19),    # 2^20 * ceil(2^20 / W) <= 2^21 needs W >= 2^19
    ([1 << 20], 300, 512),         # 300 * 4,096 + (2^20 - 300) * 2 > 2^21; at 512: 300 * 2,048 + (2^20 - 300) * 1 fits
    ([20000] * 3, None, 2048),     # 60,000 * ceil(20,000 / W) <= 2^20 needs ceil <= 17
    ([3, 1, 0], None, 256),
])
def test_tile_width_choice(lengths, k, width):
    n = sum(lengths)
    s, y = torch.zeros(n), torch.zeros(n)
    off = torch.tensor([0] + lengths).cumsum(0)
    assert emulate(s, y, off, None, k=k, plan_only=True)[3] == width


# ---- block path -------------------------------------------------------------------------
# lengths around the bitonic sort's power-of-two padding and the kernel's medium tiers
BLOCK_LENGTHS = [0, 2, 1, 3, 4, 5, 31, 32, 33, 64, 65, 100, 0, 511, 512, 513]


@pytest.mark.parametrize("fn", PAIR_FNS)
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("k", [None, 1, 5, 40])
def test_block_path_matches_reference(fn, weight, k):
    s, y, off, w = random_batch(BLOCK_LENGTHS, weights=True, seed=21)
    loss, grad, pairs, used = emulate(s, y, off, w, fn, weight, k, path="block")
    want_loss, want_grad = reference_loss_and_grad(s, y, off, w, fn, weight, k)
    assert used == 0
    lists = [y[a:b] for a, b in zip(off[:-1].tolist(), off[1:].tolist())]
    assert pairs.tolist() == [int((l[:, None] > l[None, :]).sum()) for l in lists]
    torch.testing.assert_close(loss, want_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k", [None, 3])
def test_block_path_ties_nan_signed_zero_and_knobs(k):
    s, y, off, w = random_batch([50, 300], ties=True, weights=True, seed=22)
    s[3], s[10], s[11], s[60], s[61], s[62] = (float("nan"), -0.0, 0.0, float("nan"), 0.0, -0.0)
    for fn, weight, gain, sigma, margin, mu in [("hinge", "ndcg2pp", "exp2", 1.0, 0.5, 5.0),
                                                ("logistic", "ndcg", "linear", 2.5, 1.0, 0.0),
                                                ("soft_zero_one", "label_diff", "exp2", 0.3, 1.0, 1.0)]:
        want = ops.pairwise_loss(s, y, off, w, fn, weight, sigma, margin, k, mu, gain, True)
        got = emulate(s, y, off, w, fn, weight, k, 0, sigma, margin, mu, gain, path="block")
        assert torch.equal(got[2], want[2])
        torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-12, equal_nan=True)
        torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_block_path_low_precision_and_largest_block(dtype):
    # 4,096: the longest list a block takes on H100/H200 in float32
    s, y, off = random_batch([4096, 700], dtype=dtype, seed=23)
    want = ops.pairwise_loss(s, y, off, None, "logistic", "ndcg", 1.0, 1.0, None, 5.0, "exp2", True)
    got = emulate(s, y, off, None, "logistic", "ndcg", path="block")
    assert got[0].dtype == torch.float32 and torch.equal(got[2], want[2])
    assert_close_per_list(got[0], want[0], rtol=1e-5, msg="losses: ")
    assert_close_per_list(got[1], want[1], off, rtol=1e-5, msg="gradients: ")


def test_block_path_no_pairs():
    s, y, off = random_batch([40, 3], seed=24)
    y[:] = 1.0
    loss, grad, pairs, _ = emulate(s, y, off, None, "logistic", "ndcg", path="block")
    assert torch.count_nonzero(pairs) == 0 and torch.count_nonzero(loss) == 0
    assert torch.count_nonzero(grad) == 0


def test_emulation_bad_arguments():
    s, y, off = random_batch([3], seed=17)
    with pytest.raises(RuntimeError, match="path"):
        emulate(s, y, off, None, path="warp")
    with pytest.raises(RuntimeError, match="tile_width"):
        emulate(s, y, off, None, width=-1)
    with pytest.raises(RuntimeError, match="k must be"):
        emulate(s, y, off, None, k=0)
    with pytest.raises(RuntimeError, match="offsets"):
        emulate(s, y, torch.tensor([0, 2]), None)
