"""CUDA graphs. The listwise losses and the metrics run inside torch.cuda.graph (no host
read on their path: the Python checks that read data step aside during capture); the
pairwise op reads a per-call plan on the host, so it refuses capture with a clear error,
and its schema carries the cudagraph_unsafe tag that makes torch.compile's
"reduce-overhead" mode keep it out of its graphs. The GPU tests skip without a GPU."""
import pytest
import torch

import rankops

HAS_CUDA = torch.cuda.is_available() and rankops.build_info().get("cuda", False)
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device or rankops built without CUDA")
TORCH_2_9 = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 9)


@pytest.mark.skipif(not TORCH_2_9, reason="the cudagraph_unsafe tag exists from torch 2.9")
def test_only_the_pairwise_op_is_tagged_cudagraph_unsafe():
    ops = torch.ops.rankops
    assert torch.Tag.cudagraph_unsafe in ops.pairwise_loss.default.tags
    for op in (ops.pairwise_loss_backward, ops.softmax_loss, ops.listmle_loss,
               ops.unique_softmax_loss, ops.approx_ndcg_loss, ops.ranking_metrics):
        assert torch.Tag.cudagraph_unsafe not in op.default.tags, op


def _batch(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 0, 40, 1, 300, 17])
    n = int(lengths.sum())
    scores = torch.randn(n, generator=g).to(device)
    labels = torch.randint(0, 5, (n,), generator=g).float().to(device)
    return scores, labels, rankops.segments.offsets_from_lengths(lengths).to(device)


LISTWISE = {
    "softmax": lambda s, y, o: rankops.softmax_loss(s, y, offsets=o),
    "poly1_softmax": lambda s, y, o: rankops.poly1_softmax_loss(s, y, offsets=o, epsilon=2.0),
    "listnet": lambda s, y, o: rankops.listnet_loss(s, y, offsets=o),
    "listmle": lambda s, y, o: rankops.listmle_loss(s, y, offsets=o),
    "plistmle": lambda s, y, o: rankops.plistmle_loss(s, y, offsets=o),
    "unique_softmax": lambda s, y, o: rankops.unique_softmax_loss(s, y, offsets=o),
    "approx_ndcg": lambda s, y, o: rankops.approx_ndcg_loss(s, y, offsets=o, k=10),
}


@needs_cuda
@pytest.mark.parametrize("name", sorted(LISTWISE))
def test_cuda_graph_capture_and_replay_listwise(name):
    loss_fn = LISTWISE[name]
    s, y, off = _batch("cuda")
    s_static = s.clone().requires_grad_()
    # warm up on a side stream (as torch.cuda.graph's docs ask), then capture
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        loss_fn(s_static, y, off).backward()
    torch.cuda.current_stream().wait_stream(side)
    s_static.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = loss_fn(s_static, y, off)
        loss.backward()
    for seed in (1, 2):
        new_s, _, _ = _batch("cuda", seed)
        with torch.no_grad():
            s_static.copy_(new_s)
        graph.replay()
        torch.cuda.synchronize()
        eager_s = new_s.clone().requires_grad_()
        eager = loss_fn(eager_s, y, off)
        eager.backward()
        assert torch.equal(loss, eager)  # same kernels, same bits
        assert torch.equal(s_static.grad, eager_s.grad)


@needs_cuda
def test_cuda_graph_capture_without_layout_and_padded():
    # no layout (one list, offsets made on the device) and padded [B, L] input
    s, y, _ = _batch("cuda")
    S, Y = s[:360].reshape(6, 60).clone(), y[:360].reshape(6, 60).clone()
    calls = lambda: (rankops.softmax_loss(s, y), rankops.listmle_loss(S, Y),  # noqa: E731
                     rankops.approx_ndcg_loss(S, Y, lengths=torch.full((6,), 50, device="cuda")))
    calls()  # warm-up
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = calls()
    graph.replay()
    for got, want in zip(captured, calls()):
        assert torch.equal(got, want)


@needs_cuda
@pytest.mark.parametrize("empty", ["zero", "one", "skip"])
def test_cuda_graph_capture_of_metrics(empty):
    s, y, off = _batch("cuda")
    metrics = ["ndcg@10", "auc", "map", "mrr", "dcg", "opa"]  # auc: a second kernel call, stitched
    rankops.metrics.evaluate(s, y, offsets=off, metrics=metrics, empty=empty)  # warm-up
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = rankops.metrics.evaluate(s, y, offsets=off, metrics=metrics, empty=empty)
    new_s, _, _ = _batch("cuda", 3)
    s.copy_(new_s)
    graph.replay()
    eager = rankops.metrics.evaluate(new_s, y, offsets=off, metrics=metrics, empty=empty)
    for m in metrics:
        assert torch.equal(captured[m], eager[m]), m


@needs_cuda
def test_cuda_graph_capture_of_pairwise_loss_is_a_clear_error():
    s, y, off = _batch("cuda")
    rankops.ranknet_loss(s, y, offsets=off)  # warm-up
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="cannot be captured in a CUDA graph"):
        with torch.cuda.graph(graph):
            rankops.ranknet_loss(s, y, offsets=off)
    # the device is still usable
    torch.testing.assert_close(rankops.ranknet_loss(s, y, offsets=off).cpu(),
                               rankops.ranknet_loss(s.cpu(), y.cpu(), offsets=off.cpu()),
                               rtol=1e-5, atol=1e-6)


@needs_cuda
@pytest.mark.skipif(not TORCH_2_9, reason="the cudagraph_unsafe tag exists from torch 2.9")
def test_cuda_torch_compile_reduce_overhead_with_pairwise_and_listwise_losses():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 1)).cuda()
    x = torch.randn(363, 6, device="cuda")
    _, y, off = _batch("cuda")

    def step(x, y, off):
        s = model(x).squeeze(-1)
        return rankops.lambdarank_loss(s, y, offsets=off, k=10) + rankops.softmax_loss(s, y, offsets=off)

    compiled = torch.compile(step, mode="reduce-overhead")
    for _ in range(3):  # cudagraph trees record on the second call, replay after
        got = compiled(x, y, off)
        got.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        eager = step(x, y, off)
        eager.backward()
        torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-6)
        for g, p in zip(grads, model.parameters()):
            torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)
        model.zero_grad()
