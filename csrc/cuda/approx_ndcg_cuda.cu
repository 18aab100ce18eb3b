// CUDA kernels of ApproxNDCG (listwise family; the others are in listwise_cuda.cu). Same
// outputs as csrc/cpu/approx_ndcg_cpu.cpp, same per-pair math (csrc/common/listwise_math.h):
// a segmented sort of w*G for the ideal DCG@k; then two owner-computes pair kernels on a
// (list, owner slot) grid: the thread that owns item i sums over all partners j itself
// (smooth rank, then gradient), partners staged through shared memory. No atomics: each
// unordered pair is evaluated by both owners. Every reduction runs in a fixed order, so
// results are the same bits run to run. No host sync: offsets are not checked here (the
// Python layer validates them), only clamped into [0, N] (cuda::offsets_within).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cub/cub.cuh>

#include <algorithm>
#include <climits>

#include "../common/checks.h"
#include "../common/listwise_math.h"
#include "../common/pair_math.h"
#include "cuda_utils.cuh"
#include "list_grad_cuda.h"
#include "listwise_common.cuh"

namespace rankops {
namespace {

using listwise_cuda::elementwise_blocks;
using listwise_cuda::grad_ptr;
using listwise_cuda::kThreads;
using listwise_cuda::prepare;
using listwise_cuda::ptr_or_null;
using listwise_cuda::segmented_sort_desc;
using listwise_cuda::SumOp;

constexpr int kPairThreads = 256;  // approx_ndcg: owners per block
// approx_ndcg: blocks per list (grid.y) = enough blocks for ~8 per multiprocessor over the
// batch, at most kMaxOwnerSlots (one list of 65,536 items has 256 owner chunks); long
// lists loop. Blocks past a short list's end return at once.
constexpr int kMaxOwnerSlots = 256;

template <typename scalar_t, typename T>
__global__ void gains_kernel(const scalar_t* __restrict__ s_in, const T* __restrict__ y,
                             const T* __restrict__ w, int64_t n, Gain gain, T* __restrict__ s,
                             T* __restrict__ wg) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    s[i] = static_cast<T>(s_in[i]);
    wg[i] = (w ? w[i] : T(1)) * gain_of(y[i], gain);
  }
}

// 1 / IDCG@k per list (0 when IDCG = 0) from w*G sorted descending. Summed in double and
// rounded once, as the CPU's cpu::ideal_dcg does, so both devices scale by the same value.
template <typename T>
__global__ void inv_idcg_kernel(const T* __restrict__ wg_sorted, const int64_t* __restrict__ off,
                                int64_t k, T* __restrict__ inv_idcg) {
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const int64_t b = blockIdx.x;
  const int64_t start = off[b], n = off[b + 1] - start;
  const int64_t top = (k > 0 && k < n) ? k : n;
  double idcg = 0.0;
  for (int64_t r = threadIdx.x; r < top; r += kThreads)
    idcg += static_cast<double>(wg_sorted[start + r]) / log2(2.0 + static_cast<double>(r));
  idcg = Reduce(tmp).Reduce(idcg, SumOp());
  if (threadIdx.x == 0) inv_idcg[b] = idcg > 0.0 ? static_cast<T>(1.0 / idcg) : T(0);
}

// Owner-computes smooth ranks; writes each item's DCG term and a_i = d loss / d r_i.
template <typename T>
__global__ void smooth_rank_kernel(const T* __restrict__ s, const T* __restrict__ wg,
                                   const int64_t* __restrict__ off, const T* __restrict__ inv_idcg,
                                   T inv_t, T k, T* __restrict__ value, T* __restrict__ slope) {
  __shared__ T tile_s[kPairThreads];
  const int64_t b = blockIdx.x;
  const int64_t start = off[b], n = off[b + 1] - start;
  const T inv = inv_idcg[b];
  // the same for the whole block; a single item still gets its term (rank 1)
  if (n < 1 || inv == T(0)) return;
  for (int64_t base = static_cast<int64_t>(blockIdx.y) * kPairThreads; base < n;
       base += static_cast<int64_t>(gridDim.y) * kPairThreads) {
    const int64_t i = base + threadIdx.x;
    const bool own = i < n;
    const T si = own ? s[start + i] : T(0);
    T sum = 0;
    for (int64_t jt = 0; jt < n; jt += kPairThreads) {
      __syncthreads();
      if (jt + threadIdx.x < n) tile_s[threadIdx.x] = s[start + jt + threadIdx.x];
      __syncthreads();
      const int m = static_cast<int>(n - jt < kPairThreads ? n - jt : kPairThreads);
      for (int q = 0; q < m; ++q) {
        T sig, one_minus;
        sigmoid_pair((tile_s[q] - si) * inv_t, sig, one_minus);
        sum += jt + q != i ? sig : T(0);
      }
    }
    if (own) {
      T v, a;
      approx_ndcg_item(wg[start + i], T(1) + sum, k, inv, v, a);
      value[start + i] = v;
      slope[start + i] = a;
    }
  }
}

template <typename T>
__global__ void approx_ndcg_loss_kernel(const T* __restrict__ value, const int64_t* __restrict__ off,
                                        const T* __restrict__ inv_idcg, T* __restrict__ loss) {
  using Reduce = cub::BlockReduce<T, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const int64_t b = blockIdx.x;
  const int64_t start = off[b], end = off[b + 1];
  const T inv = inv_idcg[b];
  if (inv == T(0) || end - start < 1) return;
  T dcg = 0;
  for (int64_t i = start + threadIdx.x; i < end; i += kThreads) dcg += value[i];
  dcg = Reduce(tmp).Reduce(dcg, SumOp());
  if (threadIdx.x == 0) loss[b] = -dcg * inv;
}

// d loss / d s_m = (1/T) sum_j sigmoid'((s_j - s_m) / T) (a_j - a_m), owner-computes.
template <typename T>
__global__ void smooth_rank_grad_kernel(const T* __restrict__ s, const T* __restrict__ slope,
                                        const int64_t* __restrict__ off,
                                        const T* __restrict__ inv_idcg, T inv_t,
                                        T* __restrict__ grad) {
  __shared__ T tile_s[kPairThreads];
  __shared__ T tile_a[kPairThreads];
  const int64_t b = blockIdx.x;
  const int64_t start = off[b], n = off[b + 1] - start;
  if (n < 2 || inv_idcg[b] == T(0)) return;
  for (int64_t base = static_cast<int64_t>(blockIdx.y) * kPairThreads; base < n;
       base += static_cast<int64_t>(gridDim.y) * kPairThreads) {
    const int64_t i = base + threadIdx.x;
    const bool own = i < n;
    const T si = own ? s[start + i] : T(0);
    const T ai = own ? slope[start + i] : T(0);
    T sum = 0;
    for (int64_t jt = 0; jt < n; jt += kPairThreads) {
      __syncthreads();
      if (jt + threadIdx.x < n) {
        tile_s[threadIdx.x] = s[start + jt + threadIdx.x];
        tile_a[threadIdx.x] = slope[start + jt + threadIdx.x];
      }
      __syncthreads();
      const int m = static_cast<int>(n - jt < kPairThreads ? n - jt : kPairThreads);
      for (int q = 0; q < m; ++q)  // j == i skipped: with s_i = +-inf, (s_i - s_i) is NaN
        sum += jt + q != i ? sigmoid_slope((tile_s[q] - si) * inv_t) * (tile_a[q] - ai) : T(0);
    }
    if (own) grad[start + i] = sum * inv_t;
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> approx_ndcg_loss_cuda(
    const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& offsets,
    const c10::optional<at::Tensor>& weights, double temperature, c10::optional<int64_t> k,
    c10::string_view gain, bool compute_grad) {
  TORCH_CHECK(temperature > 0.0, "rankops: temperature must be > 0, got ", temperature);
  check_top_k(k);
  const Gain g = parse_gain(std::string(gain));
  const c10::cuda::CUDAGuard guard(scores.device());
  auto p = prepare(scores, labels, offsets, weights, compute_grad);
  const int64_t B = p.offsets.size(0) - 1, N = p.scores.size(0);
  if (B == 0 || N == 0) return {p.loss, p.item_grad};
  TORCH_CHECK(B <= INT_MAX, "rankops: more than 2^31 lists");
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t kk = k.value_or(0);
  const int sms = cuda::device_attribute(cudaDevAttrMultiProcessorCount, scores.get_device());
  const int64_t slots = std::min<int64_t>(kMaxOwnerSlots, std::max<int64_t>(1, ceil_div(8 * sms, B)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scores.scalar_type(),
                                  "approx_ndcg_loss_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    auto s = at::empty_like(p.labels);
    auto wg = at::empty_like(p.labels);
    auto wg_sorted = at::empty_like(p.labels);
    auto inv_idcg = at::empty({B}, p.labels.options());
    auto value = at::empty_like(p.labels);
    auto slope = at::empty_like(p.labels);
    gains_kernel<scalar_t, T><<<elementwise_blocks(N), 256, 0, stream>>>(
        p.scores.data_ptr<scalar_t>(), p.labels.data_ptr<T>(), ptr_or_null<T>(p.weights), N, g,
        s.data_ptr<T>(), wg.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    segmented_sort_desc<T, int64_t>(wg, wg_sorted, nullptr, nullptr, p.offsets, stream);
    inv_idcg_kernel<T><<<static_cast<unsigned>(B), kThreads, 0, stream>>>(
        wg_sorted.data_ptr<T>(), p.offsets.data_ptr<int64_t>(), kk, inv_idcg.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const dim3 grid(static_cast<unsigned>(B), static_cast<unsigned>(slots));
    const T inv_t = T(1.0 / temperature);
    smooth_rank_kernel<T><<<grid, kPairThreads, 0, stream>>>(
        s.data_ptr<T>(), wg.data_ptr<T>(), p.offsets.data_ptr<int64_t>(), inv_idcg.data_ptr<T>(),
        inv_t, T(kk), value.data_ptr<T>(), slope.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    approx_ndcg_loss_kernel<T><<<static_cast<unsigned>(B), kThreads, 0, stream>>>(
        value.data_ptr<T>(), p.offsets.data_ptr<int64_t>(), inv_idcg.data_ptr<T>(),
        p.loss.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (p.item_grad.numel() > 0) {
      smooth_rank_grad_kernel<T><<<grid, kPairThreads, 0, stream>>>(
          s.data_ptr<T>(), slope.data_ptr<T>(), p.offsets.data_ptr<int64_t>(),
          inv_idcg.data_ptr<T>(), inv_t, p.item_grad.data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {p.loss, p.item_grad};
}

TORCH_LIBRARY_IMPL(rankops, CUDA, m) {
  m.impl("approx_ndcg_loss", &approx_ndcg_loss_cuda);
  m.impl("approx_ndcg_loss_backward", &scale_item_grad_cuda);
}

}  // namespace rankops
