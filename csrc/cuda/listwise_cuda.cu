// CUDA kernels of the listwise family: softmax (ListNet), ListMLE, unique softmax,
// ApproxNDCG. Same outputs as csrc/cpu/listwise_cpu.cpp, same per-item / per-pair math
// (csrc/common/listwise_math.h).
//
//  * softmax:     a block per list: block max, sum of exp and target mass, then loss and
//                 gradient in one more pass (poly-1: a block sum of q p before it).
//  * listmle:     one cub segmented radix sort (stable: label ties keep input order) gives
//                 each list's order by label; then a block per list runs the reverse
//                 log-add-exp scan (L_k) and the forward affine scan (R_k) with cub::BlockScan,
//                 tile by tile, carrying the aggregate between tiles.
//  * unique_softmax: ListMLE's sort and reverse scan, then a block per list runs a
//                 reverse pass (loss; a min scan finds each item's next label group) and a
//                 forward scan of GroupScanMaps (gradient), tile by tile.
//  * approx_ndcg: a segmented sort of w*G for the ideal DCG@k; then two owner-computes pair
//                 kernels on a (list, owner slot) grid: the thread that owns item i sums over
//                 all partners j itself (smooth rank, then gradient), partners staged through
//                 shared memory. No atomics: each unordered pair is evaluated by both owners.
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
#include "../common/pair_math.h"

namespace rankops {
namespace {

// softmax, listmle, unique softmax: threads of the block that owns a list
constexpr int kThreads = 128;
constexpr int kPairThreads = 256;  // approx_ndcg: owners per block
// approx_ndcg: blocks per list (grid.y) = enough blocks for ~8 per multiprocessor over the
// batch, at most kMaxOwnerSlots (one list of 65,536 items has 256 owner chunks); long
// lists loop. Blocks past a short list's end return at once.
constexpr int kMaxOwnerSlots = 256;

struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return a + b; }
};
struct MaxOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return a > b ? a : b; }
};
struct LogAddExpOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return log_add_exp(a, b); }
};
struct MinOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return a < b ? a : b; }
};
struct ComposeOp {  // Affine (ListMLE) and GroupScanMap (unique softmax)
  template <typename Map>
  __device__ __forceinline__ Map operator()(const Map& a, const Map& b) const {
    return compose(a, b);
  }
};

// Block-wide reduction whose result every thread gets. Call from every thread.
template <typename T, typename Op>
__device__ __forceinline__ T block_all_reduce(T v, Op op,
                                              typename cub::BlockReduce<T, kThreads>::TempStorage& tmp,
                                              T& shared) {
  T r = cub::BlockReduce<T, kThreads>(tmp).Reduce(v, op);
  if (threadIdx.x == 0) shared = r;
  __syncthreads();
  r = shared;
  __syncthreads();  // tmp and shared are reused by the next call
  return r;
}

// ---- softmax ----------------------------------------------------------------------

template <typename scalar_t, typename T>
__global__ void softmax_kernel(const scalar_t* __restrict__ s, const T* __restrict__ y,
                               const T* __restrict__ w, const int64_t* __restrict__ off,
                               bool label_norm, T epsilon, T* __restrict__ loss,
                               T* __restrict__ grad) {
  using Reduce = cub::BlockReduce<T, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ T shared;
  const int64_t b = blockIdx.x;
  const int64_t start = off[b], end = off[b + 1];
  if (end <= start) return;  // the same for the whole block
  T m = -T(INFINITY), tsum = 0, tabs = 0;
  for (int64_t i = start + threadIdx.x; i < end; i += kThreads) {
    const T si = static_cast<T>(s[i]);
    const T ti = y[i] * (w ? w[i] : T(1));
    m = si > m ? si : m;
    tsum += ti;
    tabs += fabs(ti);
  }
  m = block_all_reduce(m, MaxOp(), tmp, shared);
  tsum = block_all_reduce(tsum, SumOp(), tmp, shared);
  tabs = block_all_reduce(tabs, SumOp(), tmp, shared);
  T scale, mass;
  if (!softmax_target_factors(tsum, tabs, label_norm, scale, mass)) return;
  T sumexp = 0;
  for (int64_t i = start + threadIdx.x; i < end; i += kThreads)
    sumexp += math::exp_nonpositive(static_cast<T>(s[i]) - m);
  sumexp = block_all_reduce(sumexp, SumOp(), tmp, shared);
  const T log_sumexp = log(sumexp);
  // poly-1: pt = sum q p with q = t / sum |t| (epsilon is the same for the whole block)
  const T inv_abs = T(1) / tabs;
  T pt = 0;
  if (epsilon != T(0)) {
    for (int64_t i = start + threadIdx.x; i < end; i += kThreads) {
      const T ti = y[i] * (w ? w[i] : T(1));
      pt += ti * math::exp_nonpositive(-softmax_neg_log_prob(static_cast<T>(s[i]), m, log_sumexp));
    }
    pt = poly1_mass(block_all_reduce(pt, SumOp(), tmp, shared), tabs);
  }
  const T grad_epsilon = poly1_grad_epsilon(epsilon, end - start);
  T total = 0;
  for (int64_t i = start + threadIdx.x; i < end; i += kThreads) {
    const T si = static_cast<T>(s[i]);
    const T ti = y[i] * (w ? w[i] : T(1));
    const T neg_log_p = softmax_neg_log_prob(si, m, log_sumexp);
    total += ti * neg_log_p;
    if (grad)
      grad[i] = softmax_item_grad(math::exp_nonpositive(-neg_log_p), ti, scale, mass,
                                  grad_epsilon, inv_abs, pt);
  }
  total = Reduce(tmp).Reduce(total, SumOp());
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

template <typename scalar_t, typename T>
__global__ void listmle_kernel(const scalar_t* __restrict__ s, const T* __restrict__ w,
                               const int64_t* __restrict__ perm, const int64_t* __restrict__ off,
                               T* __restrict__ lse, T* __restrict__ loss, T* __restrict__ grad) {
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

  // scores relative to the list's max (finite_shift): the loss and gradient use
  // differences only, and the scan's values stay near 0
  T max_score = -T(INFINITY);
  for (int64_t i = start + threadIdx.x; i < start + n; i += kThreads) {
    const T si = static_cast<T>(s[i]);
    max_score = si > max_score ? si : max_score;
  }
  const T shift = finite_shift(block_all_reduce(max_score, MaxOp(), tmp.r, shared));

  // L_p = log sum_{m >= p} exp(s_{pi_m}): a scan over q = n-1-p, tile by tile from the end.
  T carry = -T(INFINITY);
  for (int64_t tile = 0; tile < n; tile += kThreads) {
    const int64_t q = tile + threadIdx.x;
    const int64_t p = n - 1 - q;
    const T v = q < n ? static_cast<T>(s[perm[start + p]]) - shift : -T(INFINITY);
    T out, aggregate;
    ScanL(tmp.l).InclusiveScan(v, out, LogAddExpOp(), aggregate);
    if (q < n) lse[start + p] = log_add_exp(carry, out);
    carry = log_add_exp(carry, aggregate);
    __syncthreads();
  }

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
      wr = w ? w[item] : T(1);
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

  T max_score = -T(INFINITY);
  for (int64_t i = start + threadIdx.x; i < start + n; i += kThreads) {
    const T si = static_cast<T>(s[i]);
    max_score = si > max_score ? si : max_score;
  }
  const T shift = finite_shift(block_all_reduce(max_score, MaxOp(), tmp.r, shared));

  // lse over q = n-1-p, tile by tile from the end (as listmle_kernel)
  T carry = -T(INFINITY);
  for (int64_t tile = 0; tile < n; tile += kThreads) {
    const int64_t q = tile + threadIdx.x;
    const int64_t p = n - 1 - q;
    const T v = q < n ? static_cast<T>(s[perm[start + p]]) - shift : -T(INFINITY);
    T out, aggregate;
    ScanL(tmp.l).InclusiveScan(v, out, LogAddExpOp(), aggregate);
    if (q < n) lse[start + p] = log_add_exp(carry, out);
    carry = log_add_exp(carry, aggregate);
    __syncthreads();
  }
  // (the barrier above also makes every lse written visible to the whole block)

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

// ---- ApproxNDCG -------------------------------------------------------------------

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

// ---- host side ----------------------------------------------------------------------

unsigned elementwise_blocks(int64_t n) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(n, 256), 65536)));
}

// Sorts (keys, values) descending within each list; radix sort is stable.
template <typename K, typename V>
void segmented_sort_desc(const at::Tensor& keys_in, at::Tensor& keys_out, const V* values_in,
                         V* values_out, const at::Tensor& offsets, cudaStream_t stream) {
  const int64_t N = keys_in.size(0), B = offsets.size(0) - 1;
  TORCH_CHECK(N < INT_MAX && B < INT_MAX, "rankops: more than 2^31 items or lists");
  const int64_t* off = offsets.data_ptr<int64_t>();
  size_t bytes = 0;
  auto call = [&](void* temp) {
    if (values_in)
      return cub::DeviceSegmentedRadixSort::SortPairsDescending(
          temp, bytes, keys_in.data_ptr<K>(), keys_out.data_ptr<K>(), values_in, values_out,
          static_cast<int>(N), static_cast<int>(B), off, off + 1, 0, int(sizeof(K) * 8), stream);
    return cub::DeviceSegmentedRadixSort::SortKeysDescending(
        temp, bytes, keys_in.data_ptr<K>(), keys_out.data_ptr<K>(), static_cast<int>(N),
        static_cast<int>(B), off, off + 1, 0, int(sizeof(K) * 8), stream);
  };
  C10_CUDA_CHECK(call(nullptr));
  auto temp = at::empty({static_cast<int64_t>(bytes) + 1}, keys_in.options().dtype(at::kByte));
  C10_CUDA_CHECK(call(temp.data_ptr()));
}

struct Prepared {
  at::Tensor scores, labels, weights, offsets, loss, item_grad;
};

Prepared prepare(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& offsets,
                 const c10::optional<at::Tensor>& weights, bool compute_grad) {
  check_list_inputs(scores, labels, offsets, weights);
  TORCH_CHECK(scores.is_cuda(), "rankops: expected CUDA tensors");
  Prepared p;
  const auto acc = acc_dtype_of(scores.scalar_type());
  p.offsets = cuda::offsets_within(offsets, scores.size(0));
  p.scores = scores.contiguous();
  p.labels = labels.to(acc).contiguous();
  p.weights = weights.has_value() ? weights->to(acc).contiguous() : at::Tensor();
  p.loss = at::zeros({p.offsets.size(0) - 1}, scores.options().dtype(acc));
  p.item_grad = at::zeros({compute_grad ? scores.size(0) : 0}, scores.options().dtype(acc));
  return p;
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

template <typename T>
T* grad_ptr(at::Tensor& t) {
  return t.numel() > 0 ? t.data_ptr<T>() : nullptr;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> softmax_loss_cuda(const at::Tensor& scores,
                                                     const at::Tensor& labels,
                                                     const at::Tensor& offsets,
                                                     const c10::optional<at::Tensor>& weights,
                                                     bool label_norm, double poly_epsilon,
                                                     bool compute_grad) {
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
        p.offsets.data_ptr<int64_t>(), label_norm, static_cast<T>(poly_epsilon),
        p.loss.data_ptr<T>(), grad_ptr<T>(p.item_grad));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {p.loss, p.item_grad};
}

std::tuple<at::Tensor, at::Tensor> listmle_loss_cuda(const at::Tensor& scores,
                                                     const at::Tensor& labels,
                                                     const at::Tensor& offsets,
                                                     const c10::optional<at::Tensor>& weights,
                                                     bool compute_grad) {
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
        p.offsets.data_ptr<int64_t>(), lse.data_ptr<T>(), p.loss.data_ptr<T>(),
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
  m.impl("softmax_loss", &softmax_loss_cuda);
  m.impl("softmax_loss_backward", &scale_item_grad_cuda);
  m.impl("listmle_loss", &listmle_loss_cuda);
  m.impl("listmle_loss_backward", &scale_item_grad_cuda);
  m.impl("unique_softmax_loss", &unique_softmax_loss_cuda);
  m.impl("unique_softmax_loss_backward", &scale_item_grad_cuda);
  m.impl("approx_ndcg_loss", &approx_ndcg_loss_cuda);
  m.impl("approx_ndcg_loss_backward", &scale_item_grad_cuda);
}

}  // namespace rankops
