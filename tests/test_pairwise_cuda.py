"""CUDA pairwise kernel against the CPU kernel (the same op, the same semantics).

Covers every length class of the CUDA kernel (warp <= 32 < block <= 512 < block <= cap
(4096 on H100) < multi-block), top-k, every pair function and weight, item weights, score
ties and NaN, determinism (bitwise, run to run) and the backward op. Skips without a GPU;
RANKOPS_REQUIRE_CUDA=1 turns the skip into a failure.
"""
import os

import pytest
import torch

import rankops
from lists import assert_close_per_list

ops = torch.ops.rankops
HAS_CUDA = torch.cuda.is_available() and rankops.build_info().get("cuda", False)
REQUIRE = os.environ.get("RANKOPS_REQUIRE_CUDA") == "1"

needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device or rankops built without CUDA")

# class boundaries of the CUDA kernel, plus empty and single-item lists
LENGTHS = [0, 1, 2, 3, 31, 32, 33, 100, 512, 513, 1000, 4096, 4097, 6000]
FNS = ["logistic", "hinge", "soft_zero_one"]
WEIGHTS = ["none", "label_diff", "ndcg", "ndcg2", "ndcg2pp"]


def test_cuda_required_and_built():
    if REQUIRE:
        assert torch.cuda.is_available(), "RANKOPS_REQUIRE_CUDA=1 but torch sees no GPU"
        assert rankops.build_info().get("cuda"), "RANKOPS_REQUIRE_CUDA=1 but rankops has no CUDA"
    elif not HAS_CUDA:
        pytest.skip("no CUDA")


def make_batch(lengths, dtype=torch.float64, seed=0, ties=False, levels=5):
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    scores = torch.randn(n, generator=g, dtype=torch.float64)
    if ties:  # many exact score ties: the tie-break (position) decides the ranks
        scores = torch.round(scores * 2) / 2
    labels = torch.randint(0, levels, (n,), generator=g).to(torch.float64)
    weights = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0)
    return scores.to(dtype), labels, weights, offsets


def run(device, scores, labels, weights, offsets, fn, weight, k, sigma=1.0, margin=1.0, mu=5.0,
        gain="exp2"):
    return ops.pairwise_loss(scores.to(device), labels.to(device), offsets.to(device),
                             None if weights is None else weights.to(device), fn, weight, sigma,
                             margin, k, mu, gain, True)


def assert_close_to_cpu(cuda_out, cpu_out, rtol, offsets):
    """Each list's loss within rtol of its CPU value (a tolerance scaled by the batch's
    largest loss would leave the short lists beside a long one unchecked); gradients
    within rtol plus rtol of the largest gradient *of the same list*."""
    loss_g, grad_g, pairs_g = (t.cpu() for t in cuda_out)
    loss_c, grad_c, pairs_c = cpu_out
    assert torch.equal(pairs_g, pairs_c)
    assert loss_g.dtype == loss_c.dtype and grad_g.dtype == grad_c.dtype
    assert_close_per_list(loss_g, loss_c, rtol=rtol, atol=1e-30, msg="losses: ")
    assert_close_per_list(grad_g, grad_c, offsets, rtol=rtol, atol=1e-30, msg="gradients: ")


@needs_cuda
@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("k", [None, 1, 10])
def test_cuda_matches_cpu_float64(fn, weight, k):
    s, y, w, off = make_batch(LENGTHS, torch.float64, seed=1)
    cpu = run("cpu", s, y, w, off, fn, weight, k)
    assert_close_to_cpu(run("cuda", s, y, w, off, fn, weight, k), cpu, rtol=1e-9, offsets=off)


@needs_cuda
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("k", [None, 5])
def test_cuda_matches_cpu_float32(weight, k):
    s, y, w, off = make_batch(LENGTHS, torch.float32, seed=2)
    cpu = run("cpu", s, y, w, off, "logistic", weight, k)
    assert_close_to_cpu(run("cuda", s, y, w, off, "logistic", weight, k), cpu, rtol=2e-4, offsets=off)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_low_precision_matches_cpu(dtype):
    s, y, w, off = make_batch([5, 40, 700, 5000], dtype, seed=3)
    for weight in ["none", "ndcg"]:
        cpu = run("cpu", s, y, None, off, "logistic", weight, None)
        out = run("cuda", s, y, None, off, "logistic", weight, None)
        assert out[0].dtype == torch.float32 and out[1].dtype == torch.float32
        assert_close_to_cpu(out, cpu, rtol=2e-4, offsets=off)


@needs_cuda
@pytest.mark.parametrize("weight", ["none", "ndcg", "ndcg2pp"])
def test_cuda_score_ties_and_nan(weight):
    s, y, w, off = make_batch([7, 32, 200, 4100, 5000], torch.float64, seed=4, ties=True)
    long0 = 7 + 32 + 200  # first item of the first long list
    for i in [3, long0 + 17, long0 + 4100 + 9]:  # NaN ranks last on both devices
        s[i] = float("nan")
    for i in [10, long0 + 50, long0 + 4100 + 70]:  # -0.0 ties with +0.0
        s[i], s[i + 1] = -0.0, 0.0
    cpu = run("cpu", s, y, None, off, "hinge", weight, 3)
    out = run("cuda", s, y, None, off, "hinge", weight, 3)
    assert torch.equal(out[2].cpu(), cpu[2])
    torch.testing.assert_close(out[0].cpu(), cpu[0], rtol=1e-9, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(out[1].cpu(), cpu[1], rtol=1e-9, atol=1e-12, equal_nan=True)


@needs_cuda
@pytest.mark.parametrize("weight", WEIGHTS)
def test_cuda_long_lists_top_k_around_tile_width(weight):
    # the narrowest tile width is 256: with k > 256 a tail row spans two column tiles
    s, y, w, off = make_batch([5000, 10, 300, 7000], torch.float64, seed=9)
    for k in [255, 256, 257, 300, 4999]:
        cpu = run("cpu", s, y, w, off, "logistic", weight, k)
        assert_close_to_cpu(run("cuda", s, y, w, off, "logistic", weight, k), cpu, rtol=1e-9, offsets=off)


@needs_cuda
@pytest.mark.parametrize("weight", ["none", "ndcg", "ndcg2pp"])
@pytest.mark.parametrize("lengths", [[200_000], [3, 40, 200_000, 600]])
def test_cuda_one_long_list_device_wide_sort(weight, lengths):
    # one long list in the call: device-wide radix sorts instead of segmented sorts
    s, y, w, off = make_batch(lengths, torch.float32, seed=10, ties=True)
    for k in [10, 1000]:
        cpu = run("cpu", s, y, w, off, "logistic", weight, k)
        assert_close_to_cpu(run("cuda", s, y, w, off, "logistic", weight, k), cpu, rtol=2e-4, offsets=off)


@needs_cuda
@pytest.mark.parametrize("weight", ["none", "ndcg2pp"])
def test_cuda_few_long_lists_among_many_short(weight):
    # the segmented sorts see only the long lists as segments, wherever they sit
    lengths = [10] * 500 + [5000] + [7] * 499 + [4500] + [33]
    s, y, w, off = make_batch(lengths, torch.float64, seed=12)
    for k in [None, 10]:
        cpu = run("cpu", s, y, w, off, "logistic", weight, k)
        assert_close_to_cpu(run("cuda", s, y, w, off, "logistic", weight, k), cpu, rtol=1e-9, offsets=off)


@needs_cuda
@pytest.mark.parametrize("weight", ["none", "ndcg"])
def test_cuda_hundreds_of_long_lists(weight):
    # > 500 long lists: cub's segmented sort groups the segments by size (its other path)
    g = torch.Generator().manual_seed(13)
    lengths = (torch.randint(4100, 4400, (600,), generator=g)).tolist() + [5, 40]
    s, y, w, off = make_batch(lengths, torch.float64, seed=13, ties=True)
    cpu = run("cpu", s, y, w, off, "hinge", weight, 10)
    assert_close_to_cpu(run("cuda", s, y, w, off, "hinge", weight, 10), cpu, rtol=1e-9, offsets=off)


@needs_cuda
@pytest.mark.parametrize("gain", ["exp2", "linear"])
@pytest.mark.parametrize("sigma,margin,mu", [(0.5, 2.0, 0.0), (3.0, 0.1, 12.0)])
def test_cuda_knobs_match_cpu(gain, sigma, margin, mu):
    s, y, w, off = make_batch(LENGTHS, torch.float64, seed=11)
    for fn in FNS:
        for weight in ["label_diff", "ndcg", "ndcg2pp"]:
            cpu = run("cpu", s, y, w, off, fn, weight, 7, sigma, margin, mu, gain)
            out = run("cuda", s, y, w, off, fn, weight, 7, sigma, margin, mu, gain)
            assert_close_to_cpu(out, cpu, rtol=1e-9, offsets=off)


@needs_cuda
def test_cuda_all_equal_labels_and_zero_idcg():
    lengths = [3, 40, 600, 5000]
    s, _, _, off = make_batch(lengths, torch.float32, seed=5)
    y = torch.zeros(sum(lengths), dtype=torch.float64)
    loss, grad, pairs = run("cuda", s, y, None, off, "logistic", "ndcg", None)
    assert torch.count_nonzero(loss).item() == 0 and torch.count_nonzero(grad).item() == 0
    assert torch.count_nonzero(pairs).item() == 0


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_deterministic(dtype):
    s, y, w, off = make_batch([16, 300, 3000, 9000] * 3, dtype, seed=6)
    for weight in ["none", "ndcg"]:
        a = run("cuda", s, y, w, off, "logistic", weight, None)
        b = run("cuda", s, y, w, off, "logistic", weight, None)
        for x, z in zip(a, b):
            assert torch.equal(x, z)


@needs_cuda
def test_cuda_backward_and_autograd():
    s, y, _, off = make_batch([4, 50, 800, 5000], torch.float64, seed=7)
    grads = []
    for device in ["cpu", "cuda"]:
        x = s.to(device).requires_grad_(True)
        loss = rankops.lambdarank_loss(x, y.to(device), offsets=off.to(device), reduction="sum")
        loss.backward()
        grads.append(x.grad.cpu())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-12)
    gl = torch.randn(off.numel() - 1, dtype=torch.float64)
    ig = torch.randn(s.numel(), dtype=torch.float64)
    torch.testing.assert_close(ops.pairwise_loss_backward(gl.cuda(), ig.cuda(), off.cuda()).cpu(),
                               ops.pairwise_loss_backward(gl, ig, off))


@needs_cuda
def test_cuda_gradcheck_float64():
    s, y, _, off = make_batch([3, 40], torch.float64, seed=8)
    x = s.cuda().requires_grad_(True)
    f = lambda t: rankops.ranknet_loss(t, y.cuda(), offsets=off.cuda(), reduction="sum")
    assert torch.autograd.gradcheck(f, (x,))


@needs_cuda
def test_cuda_empty_batch():
    s = torch.zeros(0, device="cuda")
    off = torch.zeros(1, dtype=torch.int64, device="cuda")
    loss, grad, pairs = ops.pairwise_loss(s, s, off, None, "logistic", "none", 1.0, 1.0, None, 5.0,
                                          "exp2", True)
    assert loss.numel() == 0 and grad.numel() == 0 and pairs.numel() == 0


@needs_cuda
def test_cuda_offsets_checked_on_empty_input():
    s = torch.zeros(0, device="cuda")
    for bad in [[1], [0, 1], [0, 0, 2]]:
        with pytest.raises(RuntimeError, match="offsets"):
            ops.pairwise_loss(s, s, torch.tensor(bad, device="cuda"), None, "logistic", "none",
                              1.0, 1.0, None, 5.0, "exp2", True)
