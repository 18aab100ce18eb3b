// CUDA kernels of the listwise family: softmax (ListNet, poly-1), ListMLE, unique softmax
// (ApproxNDCG: approx_ndcg_cuda.cu). Same outputs as csrc/cpu/listwise_cpu.cpp, same
// per-item math (csrc/common/listwise_math.h).
//
//  * softmax:     a block per list: block max, sum of exp and target mass, then loss and
//                 gradient in one more pass (poly-1: a block sum of q p before it; ListNet's
//                 label softmax: a block max and sum of exp of the labels first).
//  * listmle:     one cub segmented radix sort (stable: label ties keep input order) gives
//                 each list's order by label; then a block per list runs the reverse
//                 log-add-exp scan (L_k) and the forward affine scan (R_k) with cub::BlockScan,
//                 tile by tile, carrying the aggregate between tiles.
//  * unique_softmax: ListMLE's sort and reverse scan, then a block per list runs a
//                 reverse pass (loss; a min scan finds each item's next label group) and a
//                 forward scan of GroupScanMaps (gradient), tile by tile.
// Every reduction runs in a fixed order (cub block primitives, fixed strides), so results
// are the same bits run to run. No host sync: offsets are not checked here (the Python
// layer validates them), only clamped into [0, N] (cuda::offsets_within).
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
#include "cuda_utils.cuh"
#include "list_grad_cuda.h"
#include "listwise_common.cuh"
#include "../common/pair_math.h"

namespace rankops {
namespace {

using listwise_cuda::block_all_reduce;
using listwise_cuda::BlockReduceStorage;
using listwise_cuda::BlockScanStorage;
using listwise_cuda::ComposeOp;
using listwise_cuda::elementwise_blocks;
using listwise_cuda::grad_ptr;
using listwise_cuda::kThreads;
using listwise_cuda::LogAddExpOp;
using listwise_cuda::MaxOp;
using listwise_cuda::MinOp;
using listwise_cuda::prepare;
using listwise_cuda::ptr_or_null;
using listwise_cuda::segmented_sort_desc;
using listwise_cuda::SumOp;

// ---- softmax ----------------------------------------------------------------------

template <typename scalar_t, typename T>
__global__ void softmax_kernel(const scalar_t* __restrict__ s, const T* __restrict__ y,
                               const T* __restrict__ w, const int64_t* __restrict__ off,
                               bool label_norm, T list_epsilon, bool label_softmax,
                               T* __restrict__ loss, T* __restrict__ grad) {
  using Reduce = cub::BlockReduce<T, kThreads>;
  __shared__ union {
    typename Reduce::TempStorage t;
    BlockReduceStorage<double> d;
  } tmp;
  __shared__ T shared;
  __shared__ double shared_d;
  const int64_t b = blockIdx.x;
  const int64_t start = off[b], end = off[b + 1];
  if (end <= start) return;  // the same for the whole block
  // ListNet's label softmax (label_softmax is the same for the whole block). z and the sums
  // of the targets in double, as on the CPU: they scale the whole loss and gradient.
  T y_max = 0, inv_z = 1;
  if (label_softmax) {
    y_max = -T(INFINITY);
    for (int64_t i = start + threadIdx.x; i < end; i += kThreads)
      y_max = y[i] > y_max ? y[i] : y_max;
    y_max = block_all_reduce(y_max, MaxOp(), tmp.t, shared);
    double z = 0;
    for (int64_t i = start + threadIdx.x; i < end; i += kThreads)
      z += static_cast<double>(math::exp_nonpositive(y[i] - y_max));
    inv_z = static_cast<T>(1.0 / block_all_reduce(z, SumOp(), tmp.d, shared_d));
  }
  auto target = [&](int64_t i) {
    return softmax_target(y[i], w ? w[i] : T(1), label_softmax, y_max, inv_z);
  };
  T m = -T(INFINITY);
  double tsum_d = 0, tabs_d = 0;
  for (int64_t i = start + threadIdx.x; i < end; i += kThreads) {
    const T si = static_cast<T>(s[i]);
    const T ti = target(i);
    m = si > m ? si : m;
    tsum_d += static_cast<double>(ti);
    tabs_d += static_cast<double>(fabs(ti));
  }
  m = block_all_reduce(m, MaxOp(), tmp.t, shared);
  const T tsum = static_cast<T>(block_all_reduce(tsum_d, SumOp(), tmp.d, shared_d));
  const T tabs = static_cast<T>(block_all_reduce(tabs_d, SumOp(), tmp.d, shared_d));
  T scale, mass;
  if (!softmax_target_factors(tsum, tabs, label_norm, scale, mass)) return;
  const T epsilon = poly1_epsilon(list_epsilon, end - start);
  T sumexp = 0;
  for (int64_t i = start + threadIdx.x; i < end; i += kThreads)
    sumexp += math::exp_nonpositive(static_cast<T>(s[i]) - m);
  sumexp = block_all_reduce(sumexp, SumOp(), tmp.t, shared);
  const T log_sumexp = log(sumexp);
  // poly-1: pt = sum q p with q = t / sum |t| (epsilon is the same for the whole block)
  const T inv_abs = T(1) / tabs;
  T pt = 0;
  if (epsilon != T(0)) {
    for (int64_t i = start + threadIdx.x; i < end; i += kThreads) {
      pt += target(i) *
            math::exp_nonpositive(-softmax_neg_log_prob(static_cast<T>(s[i]), m, log_sumexp));
    }
    pt = poly1_mass(block_all_reduce(pt, SumOp(), tmp.t, shared), tabs);
  }
  T total = 0;
  for (int64_t i = start + threadIdx.x; i < end; i += kThreads) {
    const T si = static_cast<T>(s[i]);
    const T ti = target(i);
    const T neg_log_p = softmax_neg_log_prob(si, m, log_sumexp);
    total += ti * neg_log_p;
    if (grad)
      grad[i] = softmax_item_grad(math::exp_nonpositive(-neg_log_p), ti, scale, mass, epsilon,
                                  inv_abs, pt);
  }
  total = Reduce(tmp.t).Reduce(total, SumOp());
  if (threadIdx.x == 0)
    loss[b] = total * scale + (epsilon != T(0) ? epsilon * (T(1) - pt) : T(0));
}

// ---- ListMLE ----------------------------------------------------------------------

// Sort keys: labels with -0.0 made +0.0 (radix sorts tell them apart; labels compare
// equal on the CPU, where ties keep input order).
template <typename T>
__global__ void label_keys_kernel(const T* __restrict__ y, int64_t n, T* __restrict__ keys,
                                  int64_t* __restrict__ index) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    keys[i] = y[i] == T(0) ? T(0) : y[i];
    index[i] = i;
  }
}

// A list's scores in label order, relative to their max (finite_shift: the losses use
// differences only, and the scan's values stay near 0), and their suffix log-sum-exps
// lse[start + p] = log sum_{m >= p} exp(s[perm[start + m]] - shift): a scan over
// q = n-1-p, tile by tile from the end. Returns the shift. Call from every thread; ends
// on a barrier, so every lse written is visible to the whole block.
template <typename scalar_t, typename T>
__device__ T shifted_suffix_log_sum_exp(const scalar_t* __restrict__ s,
                                        const int64_t* __restrict__ perm, int64_t start,
                                        int64_t n, T* __restrict__ lse,
                                        BlockReduceStorage<T>& reduce, BlockScanStorage<T>& scan,
                                        T& shared) {
  T max_score = -T(INFINITY);
  for (int64_t i = start + threadIdx.x; i < start + n; i += kThreads) {
    const T si = static_cast<T>(s[i]);
    max_score = si > max_score ? si : max_score;
  }
  const T shift = finite_shift(block_all_reduce(max_score, MaxOp(), reduce, shared));
  T carry = -T(INFINITY);
  for (int64_t tile = 0; tile < n; tile += kThreads) {
    const int64_t q = tile + threadIdx.x;
    const int64_t p = n - 1 - q;
    const T v = q < n ? static_cast<T>(s[perm[start + p]]) - shift : -T(INFINITY);
    T out, aggregate;
    cub::BlockScan<T, kThreads>(scan).InclusiveScan(v, out, LogAddExpOp(), aggregate);
    if (q < n) lse[start + p] = log_add_exp(carry, out);
    carry = log_add_exp(carry, aggregate);
    __syncthreads();
  }
  return shift;
}

template <typename scalar_t, typename T>
__global__ void listmle_kernel(const scalar_t* __restrict__ s, const T* __restrict__ w,
                               const int64_t* __restrict__ perm, const int64_t* __restrict__ off,
                               PositionWeight position_weight, T* __restrict__ lse,
                               T* __restrict__ loss, T* __restrict__ grad) {
  using ScanL = cub::BlockScan<T, kThreads>;
  using ScanA = cub::BlockScan<Affine<T>, kThreads>;
  using Reduce = cub::BlockReduce<T, kThreads>;
  __shared__ union {
    typename ScanL::TempStorage l;
    typename ScanA::TempStorage a;
    typename Reduce::TempStorage r;
  } tmp;
  __shared__ T shared;
  const int64_t b = blockIdx.x;
  const int64_t start = off[b], n = off[b + 1] - start;
  if (n == 0) return;

  const T shift = shifted_suffix_log_sum_exp(s, perm, start, n, lse, tmp.r, tmp.l, shared);

  // R_r = R_{r-1} exp(L_r - L_{r-1}) + w_r as a scan of affine maps; the gradient of the
  // item at position r is R_r exp(s_r - L_r) - w_r.
  Affine<T> carry_map{T(1), T(0)};
  T total = 0;
  for (int64_t tile = 0; tile < n; tile += kThreads) {
    const int64_t r = tile + threadIdx.x;
    Affine<T> v{T(1), T(0)};
    T sr = 0, wr = 0, lr = 0;
    int64_t item = 0;
    if (r < n) {
      item = perm[start + r];
      sr = static_cast<T>(s[item]) - shift;
      wr = listmle_term_weight(w ? w[item] : T(1), position_weight, r, n);
      lr = lse[start + r];
      const T decay = r > 0 ? math::exp_nonpositive(lr - lse[start + r - 1]) : T(0);
      v = Affine<T>{decay, wr};
      total += wr * (lr - sr);
    }
    Affine<T> out, aggregate;
    ScanA(tmp.a).InclusiveScan(v, out, ComposeOp(), aggregate);
    const Affine<T> upto = compose(carry_map, out);
    if (r < n && grad) grad[item] = upto.b * math::exp_nonpositive(sr - lr) - wr;
    carry_map = compose(carry_map, aggregate);
    __syncthreads();
  }
  total = Reduce(tmp.r).Reduce(total, SumOp());
  if (threadIdx.x == 0) loss[b] = total;
}

// ---- unique softmax ---------------------------------------------------------------

// A block per list, its items in label order (the ListMLE sort: `labels` sorted
// descending, `perm` the items): lse[p] = log sum_{m >= p} exp(s - shift) by ListMLE's
// reverse scan; then a reverse pass for the loss, each item's lower sum being lse at the
// next label group's first item (a min scan of group ends); then a forward pass for the
// gradient: the start of each item's group by a max scan, and Q_h by a scan of the
// GroupScanMaps of listwise_math.h. miss: scratch [N].
template <typename scalar_t, typename T>
__global__ void unique_softmax_kernel(const scalar_t* __restrict__ s,
                                      const T* __restrict__ labels, const T* __restrict__ w,
                                      Gain gain, const int64_t* __restrict__ perm,
                                      const int64_t* __restrict__ off, T* __restrict__ lse,
                                      T* __restrict__ miss, T* __restrict__ loss,
                                      T* __restrict__ grad) {
  using ScanL = cub::BlockScan<T, kThreads>;
  using ScanI = cub::BlockScan<int64_t, kThreads>;
  using ScanG = cub::BlockScan<GroupScanMap<T>, kThreads>;
  using Reduce = cub::BlockReduce<T, kThreads>;
  __shared__ union {
    typename ScanL::TempStorage l;
    typename ScanI::TempStorage i;
    typename ScanG::TempStorage g;
    typename Reduce::TempStorage r;
  } tmp;
  __shared__ T shared;
  const int64_t b = blockIdx.x;
  const int64_t start = off[b], n = off[b + 1] - start;
  if (n < 2) return;  // one item is alone in its softmax: 0 (the same for the whole block)
  const T* y = labels + start;

  const T shift = shifted_suffix_log_sum_exp(s, perm, start, n, lse, tmp.r, tmp.l, shared);

  // loss: next = the first position of the next label group (n: none), the min over
  // positions >= p of (p' + 1 where p' ends a group)
  int64_t next_carry = n;
  T total = 0;
  for (int64_t tile = 0; tile < n; tile += kThreads) {
    const int64_t q = tile + threadIdx.x;
    const int64_t p = n - 1 - q;
    const int64_t key = (q < n && p + 1 < n && y[p + 1] != y[p]) ? p + 1 : n;
    int64_t out, aggregate;
    ScanI(tmp.i).InclusiveScan(key, out, MinOp(), aggregate);
    const int64_t next = out < next_carry ? out : next_carry;
    next_carry = aggregate < next_carry ? aggregate : next_carry;
    if (q < n) {
      const int64_t item = perm[start + p];
      const bool has_lower = next < n;
      T term, m;
      unique_softmax_item((w ? w[item] : T(1)) * gain_of(y[p], gain),
                          static_cast<T>(s[item]) - shift,
                          has_lower ? lse[start + next] : -T(INFINITY), has_lower, term, m);
      total += term;
      miss[start + p] = m;
    }
    __syncthreads();
  }
  total = Reduce(tmp.r).Reduce(total, SumOp());
  if (threadIdx.x == 0) loss[b] = total;
  if (!grad) return;
  __syncthreads();  // tmp reused; every miss written visible

  // gradient: before = the first position of the group of p - 1 (-1 for p = 0)
  int64_t group_carry = -1;
  GroupScanMap<T> carry_map = group_scan_identity<T>();
  for (int64_t tile = 0; tile < n; tile += kThreads) {
    const int64_t r = tile + threadIdx.x;
    const bool first = r < n && (r == 0 || y[r] != y[r - 1]);
    int64_t before, group_aggregate;
    ScanI(tmp.i).ExclusiveScan(first ? r : int64_t(-1), before, group_carry, MaxOp(),
                               group_aggregate);
    group_carry = group_aggregate > group_carry ? group_aggregate : group_carry;
    __syncthreads();  // tmp reused by the map scan
    GroupScanMap<T> v = group_scan_identity<T>();
    T sr = 0, m = 0;
    int64_t item = 0;
    const int64_t group = first ? r : before;
    if (r < n) {
      item = perm[start + r];
      sr = static_cast<T>(s[item]) - shift;
      m = miss[start + r];
      const T decay =
          first && r > 0 ? exp_of_difference(lse[start + r], lse[start + before]) : T(1);
      v = group_scan_item(first, decay, m);
    }
    GroupScanMap<T> out, aggregate;
    ScanG(tmp.g).InclusiveScan(v, out, ComposeOp(), aggregate);
    const GroupScanMap<T> upto = compose(carry_map, out);
    if (r < n) grad[item] = unique_softmax_grad(m, sr, lse[start + group], upto.gamma);
    carry_map = compose(carry_map, aggregate);
    __syncthreads();
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> softmax_loss_cuda(const at::Tensor& scores,
                                                     const at::Tensor& labels,
                                                     const at::Tensor& offsets,
                                                     const c10::optional<at::Tensor>& weights,
                                                     bool label_norm, double poly_epsilon,
                                                     bool label_softmax, bool compute_grad) {
  TORCH_CHECK(std::isfinite(poly_epsilon), "rankops: epsilon must be finite, got ", poly_epsilon);
  const c10::cuda::CUDAGuard guard(scores.device());
  auto p = prepare(scores, labels, offsets, weights, compute_grad);
  const int64_t B = p.offsets.size(0) - 1;
  if (B == 0 || p.scores.size(0) == 0) return {p.loss, p.item_grad};
  TORCH_CHECK(B <= INT_MAX, "rankops: more than 2^31 - 1 lists in one CUDA call");
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scores.scalar_type(),
                                  "softmax_loss_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    softmax_kernel<scalar_t, T><<<static_cast<unsigned>(B), kThreads, 0, stream>>>(
        p.scores.data_ptr<scalar_t>(), p.labels.data_ptr<T>(), ptr_or_null<T>(p.weights),
        p.offsets.data_ptr<int64_t>(), label_norm, static_cast<T>(poly_epsilon), label_softmax,
        p.loss.data_ptr<T>(), grad_ptr<T>(p.item_grad));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {p.loss, p.item_grad};
}

std::tuple<at::Tensor, at::Tensor> listmle_loss_cuda(const at::Tensor& scores,
                                                     const at::Tensor& labels,
                                                     const at::Tensor& offsets,
                                                     const c10::optional<at::Tensor>& weights,
                                                     c10::string_view position_weight,
                                                     bool compute_grad) {
  const PositionWeight pw = parse_position_weight(std::string(position_weight));
  const c10::cuda::CUDAGuard guard(scores.device());
  auto p = prepare(scores, labels, offsets, weights, compute_grad);
  const int64_t B = p.offsets.size(0) - 1, N = p.scores.size(0);
  if (B == 0 || N == 0) return {p.loss, p.item_grad};
  TORCH_CHECK(B <= INT_MAX, "rankops: more than 2^31 - 1 lists in one CUDA call");
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scores.scalar_type(),
                                  "listmle_loss_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    auto keys = at::empty_like(p.labels);
    auto keys_sorted = at::empty_like(p.labels);
    auto index = at::empty({N}, p.offsets.options());
    auto perm = at::empty({N}, p.offsets.options());
    label_keys_kernel<T><<<elementwise_blocks(N), 256, 0, stream>>>(
        p.labels.data_ptr<T>(), N, keys.data_ptr<T>(), index.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    segmented_sort_desc<T, int64_t>(keys, keys_sorted, index.data_ptr<int64_t>(),
                                    perm.data_ptr<int64_t>(), p.offsets, stream);
    auto lse = at::empty_like(p.labels);
    listmle_kernel<scalar_t, T><<<static_cast<unsigned>(B), kThreads, 0, stream>>>(
        p.scores.data_ptr<scalar_t>(), ptr_or_null<T>(p.weights), perm.data_ptr<int64_t>(),
        p.offsets.data_ptr<int64_t>(), pw, lse.data_ptr<T>(), p.loss.data_ptr<T>(),
        grad_ptr<T>(p.item_grad));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {p.loss, p.item_grad};
}

std::tuple<at::Tensor, at::Tensor> unique_softmax_loss_cuda(const at::Tensor& scores,
                                                            const at::Tensor& labels,
                                                            const at::Tensor& offsets,
                                                            const c10::optional<at::Tensor>& weights,
                                                            c10::string_view gain,
                                                            bool compute_grad) {
  const Gain g = parse_gain(std::string(gain));
  const c10::cuda::CUDAGuard guard(scores.device());
  auto p = prepare(scores, labels, offsets, weights, compute_grad);
  const int64_t B = p.offsets.size(0) - 1, N = p.scores.size(0);
  if (B == 0 || N == 0) return {p.loss, p.item_grad};
  TORCH_CHECK(B <= INT_MAX, "rankops: more than 2^31 - 1 lists in one CUDA call");
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scores.scalar_type(),
                                  "unique_softmax_loss_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    auto keys = at::empty_like(p.labels);
    auto keys_sorted = at::empty_like(p.labels);
    auto index = at::empty({N}, p.offsets.options());
    auto perm = at::empty({N}, p.offsets.options());
    label_keys_kernel<T><<<elementwise_blocks(N), 256, 0, stream>>>(
        p.labels.data_ptr<T>(), N, keys.data_ptr<T>(), index.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    segmented_sort_desc<T, int64_t>(keys, keys_sorted, index.data_ptr<int64_t>(),
                                    perm.data_ptr<int64_t>(), p.offsets, stream);
    auto lse = at::empty_like(p.labels);
    auto miss = at::empty_like(p.labels);
    unique_softmax_kernel<scalar_t, T><<<static_cast<unsigned>(B), kThreads, 0, stream>>>(
        p.scores.data_ptr<scalar_t>(), keys_sorted.data_ptr<T>(), ptr_or_null<T>(p.weights), g,
        perm.data_ptr<int64_t>(), p.offsets.data_ptr<int64_t>(), lse.data_ptr<T>(),
        miss.data_ptr<T>(), p.loss.data_ptr<T>(), grad_ptr<T>(p.item_grad));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {p.loss, p.item_grad};
}

TORCH_LIBRARY_IMPL(rankops, CUDA, m) {
  m.impl("softmax_loss", &softmax_loss_cuda);
  m.impl("softmax_loss_backward", &scale_item_grad_cuda);
  m.impl("listmle_loss", &listmle_loss_cuda);
  m.impl("listmle_loss_backward", &scale_item_grad_cuda);
  m.impl("unique_softmax_loss", &unique_softmax_loss_cuda);
  m.impl("unique_softmax_loss_backward", &scale_item_grad_cuda);
}

}  // namespace rankops
