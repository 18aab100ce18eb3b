// CUDA op of the pairwise family (RankNet, hinge, soft 0-1; LambdaRank, LambdaLoss): the
// plan and the dispatch; the kernels are in pairwise_kernels.cuh, compiled once per pair
// function (pairwise_logistic.cu, pairwise_hinge.cu, pairwise_soft_zero_one.cu).
// Same outputs as csrc/cpu/pairwise_cpu.cpp (DESIGN §3), same per-pair math (csrc/common).
//
// Owner-computes (csrc/common/owner_pairs.h): the thread that owns item i sums
// d loss / d s_i over all its partners itself, so each unordered pair is evaluated twice
// (once per owner) and the gradient needs no atomics; every sum runs in a fixed order, so
// results are the same bits run to run. Top-k: a pair is evaluated when at least one of
// its items has 0-based rank < k, so a tail owner (rank >= k) only meets the k head items.
//
// Lists are split by length n (lists with n < 2 keep their zero outputs):
//   short  (n <= 32):        a warp per list;
//   medium (32 < n <= cap):  a block per list (two launches: n <= 512 and above, each with
//                            shared memory for its own longest list); cap (<= 4096) is the
//                            longest list whose buffers fit the device's shared memory.
//     Both run one algorithm (csrc/common/pair_block_list.h): bitonic sorts in shared
//     memory on (orderable key, index) for the pair count (labels), the ideal DCG (w*G)
//     and the ranks (scores), then the pair loop over rank-order arrays in shared memory.
//   long   (n > cap):        sorts into global rank-order scratch (cub: a device-wide radix
//                            sort when there is one long list, a segmented sort otherwise),
//                            then the pair space cut into (row, column tile) pieces, one
//                            thread each, partial sums in scratch, added per row in tile
//                            order (double) by a last kernel (csrc/common/pair_long_path.h).
//   The CPU emulation rankops::_pairwise_loss_emulated runs the shared-memory algorithm
//   and the long path's tiling in the tests (tests/test_kernel_emulation.py).
// One small plan kernel classifies the lists and prices the tile widths; its summary is
// copied to the host once per call to size the launches: that is this op's only host sync
// (it also checks the offsets for free), except with more than a few hundred long lists
// in one call, where cub's segmented sort reads its segment groups back too. The sync
// means the op cannot be captured in a CUDA graph (it says so with a clear error, and its
// schema carries the cudagraph_unsafe tag); removing it needs launches sized by bounds
// (e.g. B blocks per class) instead.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/checks.h"
#include "../common/pair_dispatch.h"
#include "list_grad_cuda.h"
#include "pairwise_kernels.cuh"

namespace rankops {
namespace pairwise_cuda {
namespace {

// Summary slots written by the plan kernel.
enum Summary : int {
  kCount = 0,          // [kClasses] lists per class
  kMaxN = 4,           // longest list
  kMaxMediumN = 5,     // [2] longest list of each medium tier
  kLongItems = 7,      // items in long lists
  kBadOffsets = 8,     // offsets failed the cheap checks
  kTileTotals = 9,     // [kTileWidthCandidates] long-path tiles for each candidate width
  kSummarySize = kTileTotals + kTileWidthCandidates
};

// ---- plan ---------------------------------------------------------------------------

__global__ void plan_kernel(const int64_t* __restrict__ off, int64_t B, int64_t N,
                            int64_t medium_cap, int64_t k, int64_t* __restrict__ ids,
                            int64_t* __restrict__ long_len, unsigned long long* summary) {
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (tid == 0) {
    long_len[B] = 0;
    if (off[0] != 0 || off[B] != N) atomicAdd(&summary[kBadOffsets], 1ull);
  }
  for (int64_t b = tid; b < B; b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t lo = off[b], hi = off[b + 1];
    int64_t n = hi - lo;
    if (lo < 0 || hi > N || n < 0) {
      atomicAdd(&summary[kBadOffsets], 1ull);
      n = 0;
    }
    const int cls = n < 2 ? -1
                    : n <= kShortMax ? 0
                    : n <= (medium_cap < kMediumSplit ? medium_cap : kMediumSplit) ? 1
                    : n <= medium_cap ? 2
                    : kLongClass;
    long_len[b] = cls == kLongClass ? n : 0;
    if (cls < 0) continue;
    // slots in arrival order: each list's result does not depend on its slot
    const auto slot = atomicAdd(&summary[kCount + cls], 1ull);
    ids[cls * B + static_cast<int64_t>(slot)] = b;
    atomicMax(&summary[kMaxN], static_cast<unsigned long long>(n));
    if (cls == 1 || cls == 2)
      atomicMax(&summary[kMaxMediumN + cls - 1], static_cast<unsigned long long>(n));
    if (cls == kLongClass) {
      atomicAdd(&summary[kLongItems], static_cast<unsigned long long>(n));
      for (int c = 0; c < kTileWidthCandidates; ++c) {
        const int64_t tiles = tile_count(list_tiles(n, k, tile_width_candidate(c)));
        atomicAdd(&summary[kTileTotals + c], static_cast<unsigned long long>(tiles));
      }
    }
  }
}

template <typename T>
__global__ void delta_table_kernel(T* __restrict__ delta, int64_t size) {
  for (int64_t d = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; d < size;
       d += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    delta[d] = ndcg2_delta<T>(d);
  }
}

template <typename T>
int64_t medium_cap_for_device(int device) {
  const int optin = cuda::device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  const size_t budget = static_cast<size_t>(optin) - kBlockKernelStaticSmem;
  int64_t cap = kMediumMaxCap;
  while (cap > 64 && block_list_smem_bytes<T>(cap) > budget) cap /= 2;
  return cap;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> pairwise_loss_cuda(
    const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& offsets,
    const c10::optional<at::Tensor>& weights, c10::string_view pair_fn,
    c10::string_view pair_weight, double sigma, double margin, c10::optional<int64_t> k,
    double mu, c10::string_view gain, bool compute_grad) {
  check_list_inputs(scores, labels, offsets, weights);
  TORCH_CHECK(scores.is_cuda(), "rankops: pairwise_loss_cuda needs CUDA tensors");
  check_top_k(k);
  const PairFn fn = parse_pair_fn(std::string(pair_fn));
  const PairWeight weight = parse_pair_weight(std::string(pair_weight));
  const Gain gain_kind = parse_gain(std::string(gain));

  const c10::cuda::CUDAGuard guard(scores.device());
  const auto acc = acc_dtype_of(scores.scalar_type());
  // float16/bfloat16 scores are widened once here, so the kernels are compiled for the two
  // accumulation types only (as the CPU kernel reads scalar_t scores into T).
  at::Tensor s;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(),
                                  "pairwise_loss_cuda", [&] { s = scores.to(acc).contiguous(); });
  const auto y = labels.to(acc).contiguous();
  const auto w = weights.has_value() ? weights->to(acc).contiguous() : at::Tensor();
  const auto off = offsets.contiguous();
  const int64_t B = off.size(0) - 1;
  const int64_t N = s.size(0);
  auto loss = at::zeros({B}, scores.options().dtype(acc));
  auto num_pairs = at::zeros({B}, scores.options().dtype(at::kLong));
  auto item_grad = at::zeros({compute_grad ? N : 0}, scores.options().dtype(acc));

  const at::Device device = scores.device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  // The plan's host read below is illegal while a CUDA graph is captured; say so before
  // it invalidates the capture with a bare "operation not permitted" error.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  TORCH_CHECK(capture == cudaStreamCaptureStatusNone,
              "rankops: the CUDA pairwise loss cannot be captured in a CUDA graph (it reads a "
              "per-call plan on the host to size its launches); call it outside "
              "torch.cuda.graph. torch.compile(mode=\"reduce-overhead\") keeps it out of its "
              "graphs by itself (torch >= 2.9).");

  // plan: classify the lists, one host sync for the summary (also for empty inputs: the
  // plan kernel is what checks the offsets)
  Plan plan;
  plan.B = B;
  plan.N = N;
  plan.medium_cap = acc == at::kDouble ? medium_cap_for_device<double>(device.index())
                                       : medium_cap_for_device<float>(device.index());
  auto summary = at::zeros({kSummarySize}, off.options());
  plan.ids = at::empty({kClasses, B}, off.options());
  plan.long_len = at::empty({B + 1}, off.options());
  {
    const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(ceil_div(B, kThreads), 1024));
    plan_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        off.data_ptr<int64_t>(), B, N, plan.medium_cap, k.value_or(0), plan.ids.data_ptr<int64_t>(),
        plan.long_len.data_ptr<int64_t>(),
        reinterpret_cast<unsigned long long*>(summary.data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const auto host = summary.cpu();
  const int64_t* h = host.data_ptr<int64_t>();
  TORCH_CHECK(h[kBadOffsets] == 0,
              "rankops: offsets must start at 0, be non-decreasing and end at N = ", N);
  int64_t lists = 0;
  for (int c = 0; c < kClasses; ++c) lists += plan.count[c] = h[kCount + c];
  plan.max_n = h[kMaxN];
  plan.max_medium_n[0] = h[kMaxMediumN];
  plan.max_medium_n[1] = h[kMaxMediumN + 1];
  plan.long_items = h[kLongItems];
  const int width_index = pick_tile_width(h + kTileTotals, plan.long_items);
  plan.tile_width = tile_width_candidate(width_index);
  plan.long_tiles = h[kTileTotals + width_index];
  if (lists == 0) return {loss, item_grad, num_pairs};

  AT_DISPATCH_FLOATING_TYPES(acc, "pairwise_loss_cuda_kernels", [&] {
    using T = scalar_t;
    at::Tensor delta;
    if (weight == PairWeight::Ndcg2 || weight == PairWeight::Ndcg2pp) {
      delta = at::empty({plan.max_n + 1}, s.options());
      const int64_t blocks = std::min<int64_t>(ceil_div(plan.max_n + 1, kThreads), 1024);
      delta_table_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
          delta.data_ptr<T>(), plan.max_n + 1);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    PairBatch<T> p;
    p.s = s.data_ptr<T>();
    p.y = y.data_ptr<T>();
    p.w = w.defined() ? w.data_ptr<T>() : nullptr;
    p.off = off.data_ptr<int64_t>();
    p.delta = delta.defined() ? delta.data_ptr<T>() : nullptr;
    p.loss = loss.data_ptr<T>();
    p.grad = compute_grad ? item_grad.data_ptr<T>() : nullptr;
    p.num_pairs = num_pairs.data_ptr<int64_t>();
    p.knobs = PairKnobs<T>{static_cast<T>(sigma), static_cast<T>(margin), static_cast<T>(mu)};
    p.k = k.value_or(0);
    p.gain = gain_kind;
    dispatch_pair_kernel(fn, weight, [&](auto fn_tag, auto weight_tag) {
      launch_pairs<decltype(fn_tag)::value, decltype(weight_tag)::value, T>(p, plan, stream,
                                                                           device);
    });
  });
  return {loss, item_grad, num_pairs};
}

}  // namespace pairwise_cuda

TORCH_LIBRARY_IMPL(rankops, CUDA, m) {
  m.impl("pairwise_loss", &pairwise_cuda::pairwise_loss_cuda);
  m.impl("pairwise_loss_backward", &scale_item_grad_cuda);
}

}  // namespace rankops
