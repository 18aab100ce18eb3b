// CUDA kernel of the pairwise family (RankNet, hinge, soft 0-1; LambdaRank, LambdaLoss).
// Same outputs as csrc/cpu/pairwise_cpu.cpp (DESIGN §3), same per-pair math (csrc/common).
//
// Owner-computes: the thread that owns item i sums d loss / d s_i over all its partners
// itself, so each unordered pair is evaluated twice (once per owner) and the gradient
// needs no atomics; every sum runs in a fixed order, so results are the same bits run
// to run. A pair's loss is counted by its more relevant item (tied-label pairs weigh 0).
// Top-k: a pair is evaluated when at least one of its items has 0-based rank < k, so a
// tail owner (rank >= k) only meets the k head items.
//
// Lists are split by length n (lists with n < 2 keep their zero outputs):
//   short  (n <= 32):            a warp per list, lane = item; ranks, pair counts and the
//                                ideal order by counting with shuffles (32 compares).
//   medium (32 < n <= cap):      a block per list (two launches: n <= 512 and above,
//                                each with shared memory for its own longest list); a
//                                bitonic sort in shared memory on (orderable key, index)
//                                for the pair count (labels), the
//                                ideal DCG (w*G) and the ranks (scores); then the pair loop
//                                over rank-order arrays in shared memory. cap (<= 4096) is
//                                the longest list whose buffers fit the device's shared memory.
//   long   (n > cap):            cub segmented sorts into global rank-order scratch, then
//                                the pair space tiled as rows (owned items) x column strips
//                                over many blocks, partial row sums in scratch [strips x N_long],
//                                summed per row in fixed strip order (double) by a last kernel.
// One small plan kernel classifies the lists; its summary (class counts, longest lists) is
// copied to the host once per call to size the launches: that is this op's only host sync
// (it also checks the offsets for free). The sync means the op cannot be captured in a CUDA
// graph; removing it needs launches sized by bounds (e.g. B blocks per class) instead.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cub/cub.cuh>

#include <climits>
#include <type_traits>

#include "../common/checks.h"
#include "../common/pair_math.h"
#include "cuda_utils.cuh"
#include "list_grad_cuda.h"

namespace rankops {
namespace {

using cuda::ceil_div;
using cuda::kFullMask;

constexpr int kShortMax = 32;             // warp-per-list class
constexpr int kMediumMaxCap = 4096;       // block-per-list class, at most
constexpr int kThreads = 256;             // threads per block (warp kernel: 8 lists a block)
constexpr int64_t kLongTargetThreads = int64_t(1) << 18;  // rows x strips to aim for
constexpr int64_t kMaxStrips = 32;

// Summary slots written by the plan kernel.
// Classes: 0 short, 1 medium up to kMediumSplit, 2 medium above it, 3 long. The two
// medium tiers get their own launch, each with shared memory for its own longest list,
// so that one list of 4000 items does not cut the occupancy of thousands of lists of 100.
constexpr int kMediumSplit = 512;
constexpr int kClasses = 4;
constexpr int kLongClass = 3;
enum Summary : int {
  kCount = 0,          // [kClasses] lists per class
  kMaxN = 4,           // longest list
  kMaxMediumN = 5,     // [2] longest list of each medium tier
  kLongItems = 7,      // items in long lists
  kBadOffsets = 8,     // offsets failed the cheap checks
  kSummarySize = 16
};

template <typename T>
struct Params {
  const T* s;            // scores [N], converted to T
  const T* y;            // labels [N]
  const T* w;            // item weights [N] or null (= 1)
  const int64_t* off;    // [B+1]
  const T* delta;        // ndcg2 term D(d) - D(d+1) by rank distance d, or null
  T* loss;               // [B]
  T* grad;               // [N] or null (compute_grad false)
  int64_t* num_pairs;    // [B]
  T sigma, margin, mu;
  int64_t k;             // 0: whole list
  Gain gain;
};

template <PairWeight W>
struct WeightTraits {
  static constexpr bool kUsesDelta = W == PairWeight::Ndcg2 || W == PairWeight::Ndcg2pp;
  static constexpr bool kUsesNdcg =
      W == PairWeight::Ndcg || W == PairWeight::Ndcg2 || W == PairWeight::Ndcg2pp;
};

// One pair seen by its owner a, partner b: adds d term / d s_a to grad and, when a is the
// more relevant item, the pair's loss to loss. The same expressions as the CPU loop (the
// pair weight is symmetric, and m * (s_a - s_b) is the same bits from either side).
template <PairFn F, PairWeight W, typename T>
__device__ __forceinline__ void owner_pair(const PairItem<T>& a, T s_a, T w_a,
                                           const PairItem<T>& b, T s_b, T w_b, T delta_disc,
                                           T inv_idcg, const Params<T>& p, T& grad, T& loss) {
  const T dy = a.label - b.label;
  const T m = T(dy > T(0)) - T(dy < T(0));  // +1: a above b, -1: b above a, 0: tie
  const T w_hi = dy > T(0) ? w_a : w_b;
  const T lam = pair_weight_of<W>(a, b, delta_disc, inv_idcg, p.mu);
  const T c = w_hi * lam * m * m;
  T value, slope;
  pair_fn_value_slope<F>(m * (s_a - s_b), p.sigma, p.margin, value, slope);
  grad += c * slope * m;
  if (m >= T(0)) loss += c * value;  // counted once (ties: c = 0)
}

// D(r) for a 0-based rank r, 0 beyond the cut-off: the CPU's disc_table.
template <typename T>
__device__ __forceinline__ T rank_discount(int64_t r, int64_t k) {
  return (k == 0 || r < k) ? T(1.0 / log2(2.0 + static_cast<double>(r))) : T(0);
}

// ---- plan ---------------------------------------------------------------------------

__global__ void plan_kernel(const int64_t* __restrict__ off, int64_t B, int64_t N,
                            int64_t medium_cap, int64_t* __restrict__ ids,
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
    if (cls == kLongClass) atomicAdd(&summary[kLongItems], static_cast<unsigned long long>(n));
  }
}

template <typename T>
__global__ void delta_table_kernel(T* __restrict__ delta, int64_t size) {
  for (int64_t d = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; d < size;
       d += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double x = static_cast<double>(d);
    delta[d] = d == 0 ? T(0) : T(1.0 / log2(1.0 + x) - 1.0 / log2(2.0 + x));
  }
}

// ---- short lists: a warp per list ----------------------------------------------------

template <PairFn F, PairWeight W, typename T>
__global__ void __launch_bounds__(kThreads)
    pairwise_warp_kernel(Params<T> p, const int64_t* __restrict__ ids, int64_t count) {
  using Tr = WeightTraits<W>;
  const int64_t slot = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5;
  if (slot >= count) return;  // whole warp
  const int lane = threadIdx.x & 31;
  const int64_t b = ids[slot];
  const int64_t start = p.off[b];
  const int n = static_cast<int>(p.off[b + 1] - start);
  const bool active = lane < n;
  const int64_t i = start + lane;
  const T s = active ? p.s[i] : T(0);
  const T y = active ? p.y[i] : T(0);
  const T w = active ? (p.w ? p.w[i] : T(1)) : T(0);

  // pairs y_i > y_j: each owner counts its partners with a smaller label
  int below = 0;
  for (int q = 0; q < n; ++q) {
    const T yq = __shfl_sync(kFullMask, y, q);
    below += (active && y > yq) ? 1 : 0;
  }
  const int pairs = cuda::warp_sum(below);
  if (pairs == 0) return;  // zero loss and gradient (outputs start at 0)
  if (lane == 0) p.num_pairs[b] = pairs;

  // rank: items before me in (score descending, position) order
  const uint64_t key = active ? static_cast<uint64_t>(cuda::orderable_key(s)) : 0;
  int rank = 0;
  for (int q = 0; q < n; ++q) {
    const uint64_t kq = __shfl_sync(kFullMask, key, q);
    rank += (kq > key || (kq == key && q < lane)) ? 1 : 0;
  }

  T gain = T(0), disc = T(0), inv_idcg = T(0);
  if (Tr::kUsesNdcg) {
    gain = gain_of(y, p.gain);
    disc = rank_discount<T>(rank, p.k);
    // ideal DCG@k: position of my w*G in descending order (ties by position)
    const double wg = active ? static_cast<double>(w) * static_cast<double>(gain) : 0.0;
    int ideal_rank = 0;
    for (int q = 0; q < n; ++q) {
      const double wq = __shfl_sync(kFullMask, wg, q);
      ideal_rank += (wq > wg || (wq == wg && q < lane)) ? 1 : 0;
    }
    const int top = (p.k > 0 && p.k < n) ? static_cast<int>(p.k) : n;
    const double idcg = cuda::warp_sum(
        (active && ideal_rank < top) ? wg / log2(2.0 + static_cast<double>(ideal_rank)) : 0.0);
    inv_idcg = idcg > 0.0 ? T(1.0 / idcg) : T(0);
  }

  const PairItem<T> a{y, gain, disc};
  T row_grad = T(0), row_loss = T(0);
  for (int q = 0; q < n; ++q) {
    const T sq = __shfl_sync(kFullMask, s, q);
    const T yq = __shfl_sync(kFullMask, y, q);
    const T wq = __shfl_sync(kFullMask, w, q);
    const int rq = __shfl_sync(kFullMask, rank, q);
    T gq = T(0), dq = T(0);
    if (Tr::kUsesNdcg) {
      gq = __shfl_sync(kFullMask, gain, q);
      dq = __shfl_sync(kFullMask, disc, q);
    }
    const bool in_top = p.k == 0 || (rank < rq ? rank : rq) < p.k;
    if (!active || q == lane || !in_top) continue;
    const T dd = Tr::kUsesDelta ? p.delta[rank > rq ? rank - rq : rq - rank] : T(0);
    owner_pair<F, W, T>(a, s, w, PairItem<T>{yq, gq, dq}, sq, wq, dd, inv_idcg, p, row_grad,
                        row_loss);
  }
  if (active && p.grad) p.grad[i] = row_grad;
  const T loss = cuda::warp_sum(row_loss);
  if (lane == 0) p.loss[b] = loss;
}

// ---- medium lists: a block per list, everything in shared memory ----------------------

// Sorts (key, val) ascending, lexicographically, in shared memory; P a power of two.
// Call from every thread of the block, after the arrays were written and synced.
__device__ void block_bitonic_sort(uint64_t* key, int* val, int P) {
  for (int size = 2; size <= P; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < P; i += blockDim.x) {
        const int j = i ^ stride;
        if (j <= i) continue;
        const bool up = (i & size) == 0;
        const uint64_t ki = key[i], kj = key[j];
        const int vi = val[i], vj = val[j];
        const bool greater = ki > kj || (ki == kj && vi > vj);
        if (greater == up) {
          key[i] = kj;
          key[j] = ki;
          val[i] = vj;
          val[j] = vi;
        }
      }
      __syncthreads();
    }
  }
}

// Number of entries of the sorted key[0, n) smaller than x.
__device__ __forceinline__ int lower_bound_smem(const uint64_t* key, int n, uint64_t x) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (key[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

inline int next_pow2(int64_t n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

// Shared memory of the block kernel: sort buffers for P = next_pow2(cap) entries and
// rank-order arrays for cap items.
template <typename T>
size_t medium_smem_bytes(int64_t cap) {
  const int64_t P = next_pow2(cap);
  return static_cast<size_t>(P) * (sizeof(uint64_t) + sizeof(int)) +
         static_cast<size_t>(cap) * (5 * sizeof(T) + sizeof(int));
}

template <PairFn F, PairWeight W, typename T>
__global__ void __launch_bounds__(kThreads)
    pairwise_block_kernel(Params<T> p, const int64_t* __restrict__ ids, int P, int cap) {
  using Tr = WeightTraits<W>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  uint64_t* key = reinterpret_cast<uint64_t*>(smem_raw);
  T* rs = reinterpret_cast<T*>(key + P);
  T* ry = rs + cap;
  T* rw = ry + cap;
  T* rg = rw + cap;
  T* rd = rg + cap;
  int* val = reinterpret_cast<int*>(rd + cap);
  int* order = val + P;

  const int64_t b = ids[blockIdx.x];
  const int64_t start = p.off[b];
  const int n = static_cast<int>(p.off[b + 1] - start);
  const int tid = threadIdx.x;
  const T* s_in = p.s + start;
  const T* y_in = p.y + start;
  const T* w_in = p.w ? p.w + start : nullptr;

  // 1. pairs y_i > y_j: sort the labels, each item counts the labels below its own.
  for (int i = tid; i < P; i += blockDim.x) {
    key[i] = i < n ? static_cast<uint64_t>(cuda::orderable_key(y_in[i])) : ~0ull;
    val[i] = i < n ? i : INT_MAX;
  }
  __syncthreads();
  block_bitonic_sort(key, val, P);
  long long below = 0;
  for (int r = tid; r < n; r += blockDim.x) below += lower_bound_smem(key, n, key[r]);
  const long long pairs = cuda::block_sum(below);
  if (pairs == 0) return;  // whole block; zero loss and gradient
  if (tid == 0) p.num_pairs[b] = pairs;

  // 2. 1/IDCG@k: w*G sorted descending (complemented keys sort ascending).
  T inv_idcg = T(0);
  if (Tr::kUsesNdcg) {
    __syncthreads();  // key[] was read above
    for (int i = tid; i < P; i += blockDim.x) {
      if (i < n) {
        const T wi = w_in ? w_in[i] : T(1);
        const double wg = static_cast<double>(wi) * static_cast<double>(gain_of(y_in[i], p.gain));
        key[i] = ~cuda::orderable_key(wg);
      } else {
        key[i] = ~0ull;
      }
      val[i] = i < n ? i : INT_MAX;
    }
    __syncthreads();
    block_bitonic_sort(key, val, P);
    const int top = (p.k > 0 && p.k < n) ? static_cast<int>(p.k) : n;
    double part = 0.0;
    for (int r = tid; r < top; r += blockDim.x)
      part += cuda::from_orderable_key(~key[r]) / log2(2.0 + static_cast<double>(r));
    const double idcg = cuda::block_sum(part);
    inv_idcg = idcg > 0.0 ? T(1.0 / idcg) : T(0);
  }

  // 3. ranks: scores descending, ties by position (complemented keys, index as value).
  // Without top-k and rank-based weights no ranks are needed: input order is kept.
  const bool need_ranks = Tr::kUsesNdcg || p.k > 0;
  __syncthreads();
  for (int i = tid; i < P; i += blockDim.x) {
    key[i] = (i < n && need_ranks) ? ~static_cast<uint64_t>(cuda::orderable_key(s_in[i])) : ~0ull;
    val[i] = i < n ? i : INT_MAX;
  }
  __syncthreads();
  if (need_ranks) block_bitonic_sort(key, val, P);
  for (int r = tid; r < n; r += blockDim.x) {
    const int o = val[r];
    order[r] = o;
    rs[r] = s_in[o];
    ry[r] = y_in[o];
    rw[r] = w_in ? w_in[o] : T(1);
    if (Tr::kUsesNdcg) {
      rg[r] = gain_of(ry[r], p.gain);
      rd[r] = rank_discount<T>(r, p.k);
    }
  }
  __syncthreads();

  // 4. pairs: thread owns ranks tid, tid + blockDim, ... (head and tail rows interleave).
  T loss_part = T(0);
  for (int r = tid; r < n; r += blockDim.x) {
    const PairItem<T> a{ry[r], Tr::kUsesNdcg ? rg[r] : T(0), Tr::kUsesNdcg ? rd[r] : T(0)};
    const T sa = rs[r], wa = rw[r];
    const int end = (p.k > 0 && r >= p.k) ? static_cast<int>(p.k) : n;  // tail: head only
    T row_grad = T(0), row_loss = T(0);
    for (int q = 0; q < end; ++q) {
      if (q == r) continue;
      const PairItem<T> bq{ry[q], Tr::kUsesNdcg ? rg[q] : T(0), Tr::kUsesNdcg ? rd[q] : T(0)};
      const T dd = Tr::kUsesDelta ? p.delta[r > q ? r - q : q - r] : T(0);
      owner_pair<F, W, T>(a, sa, wa, bq, rs[q], rw[q], dd, inv_idcg, p, row_grad, row_loss);
    }
    if (p.grad) p.grad[start + order[r]] = row_grad;
    loss_part += row_loss;
  }
  const T loss = cuda::block_sum(loss_part);
  if (tid == 0) p.loss[b] = loss;
}

// ---- long lists: segmented sorts, then rows x strips over many blocks ------------------
// Long items live in a compacted space: list b's items at [cofs[b], cofs[b+1]) (cofs is
// the exclusive scan of the long lists' lengths, 0 for other lists).

template <typename T, typename KeyT>
__global__ void __launch_bounds__(kThreads)
    long_fill_kernel(Params<T> p, const int64_t* __restrict__ ids,
                     const int64_t* __restrict__ cofs, KeyT* __restrict__ keys,
                     int* __restrict__ local_idx, T* __restrict__ labels,
                     double* __restrict__ wg) {
  const int64_t b = ids[blockIdx.x];
  const int64_t start = p.off[b], n = p.off[b + 1] - start, base = cofs[b];
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    keys[base + i] = cuda::orderable_key(p.s[start + i]);
    local_idx[base + i] = static_cast<int>(i);
    const T y = p.y[start + i];
    labels[base + i] = y;
    if (wg) {
      const T w = p.w ? p.w[start + i] : T(1);
      wg[base + i] = static_cast<double>(w) * static_cast<double>(gain_of(y, p.gain));
    }
  }
}

// Per long list: the pair count (from the sorted labels), 1/IDCG@k (from the sorted w*G)
// and the rank-order arrays.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    long_prep_kernel(Params<T> p, const int64_t* __restrict__ ids,
                     const int64_t* __restrict__ cofs, const T* __restrict__ sorted_labels,
                     const double* __restrict__ sorted_wg, const int* __restrict__ order,
                     T* __restrict__ inv_idcg, T* __restrict__ rs, T* __restrict__ ry,
                     T* __restrict__ rw, T* __restrict__ rg, T* __restrict__ rd) {
  const int64_t b = ids[blockIdx.x];
  const int64_t start = p.off[b], n = p.off[b + 1] - start, base = cofs[b];
  const T* lab = sorted_labels + base;
  long long below = 0;
  for (int64_t r = threadIdx.x; r < n; r += blockDim.x) {
    const T x = lab[r];
    int64_t lo = 0, hi = n;
    while (lo < hi) {
      const int64_t mid = (lo + hi) >> 1;
      if (lab[mid] < x) lo = mid + 1; else hi = mid;
    }
    below += lo;
  }
  const long long pairs = cuda::block_sum(below);
  if (threadIdx.x == 0) p.num_pairs[b] = pairs;
  if (pairs == 0) return;
  if (sorted_wg) {
    const int64_t top = (p.k > 0 && p.k < n) ? p.k : n;
    double part = 0.0;
    for (int64_t r = threadIdx.x; r < top; r += blockDim.x)
      part += sorted_wg[base + r] / log2(2.0 + static_cast<double>(r));
    const double idcg = cuda::block_sum(part);
    if (threadIdx.x == 0) inv_idcg[b] = idcg > 0.0 ? T(1.0 / idcg) : T(0);
  }
  for (int64_t r = threadIdx.x; r < n; r += blockDim.x) {
    const int64_t i = start + order[base + r];
    const T y = p.y[i];
    rs[base + r] = p.s[i];
    ry[base + r] = y;
    rw[base + r] = p.w ? p.w[i] : T(1);
    if (sorted_wg) {
      rg[base + r] = gain_of(y, p.gain);
      rd[base + r] = rank_discount<T>(r, p.k);
    }
  }
}

// One thread per (owned row, column strip): blockIdx.y is the strip. Partners are read
// from global memory; the threads of a warp read the same partner (a broadcast).
template <PairFn F, PairWeight W, typename T>
__global__ void __launch_bounds__(kThreads)
    long_pairs_kernel(Params<T> p, int64_t B, const int64_t* __restrict__ cofs,
                      int64_t n_long, const T* __restrict__ inv_idcg_of,
                      const T* __restrict__ rs, const T* __restrict__ ry,
                      const T* __restrict__ rw, const T* __restrict__ rg,
                      const T* __restrict__ rd, T* __restrict__ part_grad,
                      T* __restrict__ part_loss) {
  using Tr = WeightTraits<W>;
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= n_long) return;
  const int64_t strip = blockIdx.y, strips = gridDim.y;
  // the long list holding c: the last b with cofs[b] <= c
  int64_t lo = 0, hi = B;
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) >> 1;
    if (cofs[mid] <= c) lo = mid; else hi = mid;
  }
  const int64_t b = lo, base = cofs[b], n = cofs[b + 1] - base, r = c - base;
  T row_grad = T(0), row_loss = T(0);
  if (p.num_pairs[b] > 0) {
    const int64_t width = (n + strips - 1) / strips;
    const int64_t q0 = strip * width;
    int64_t q1 = q0 + width < n ? q0 + width : n;
    if (p.k > 0 && r >= p.k && p.k < q1) q1 = p.k;  // tail rows meet the head only
    const T inv_idcg = Tr::kUsesNdcg ? inv_idcg_of[b] : T(0);
    const T* s = rs + base;
    const T* y = ry + base;
    const T* w = rw + base;
    const T* g = Tr::kUsesNdcg ? rg + base : nullptr;
    const T* d = Tr::kUsesNdcg ? rd + base : nullptr;
    const PairItem<T> a{y[r], Tr::kUsesNdcg ? g[r] : T(0), Tr::kUsesNdcg ? d[r] : T(0)};
    const T sa = s[r], wa = w[r];
    for (int64_t q = q0; q < q1; ++q) {
      if (q == r) continue;
      const PairItem<T> bq{y[q], Tr::kUsesNdcg ? g[q] : T(0), Tr::kUsesNdcg ? d[q] : T(0)};
      const T dd = Tr::kUsesDelta ? p.delta[r > q ? r - q : q - r] : T(0);
      owner_pair<F, W, T>(a, sa, wa, bq, s[q], w[q], dd, inv_idcg, p, row_grad, row_loss);
    }
  }
  part_grad[strip * n_long + c] = row_grad;
  part_loss[strip * n_long + c] = row_loss;
}

// Per long list: each row's strips summed in strip order (double), scattered to input
// order; the list's loss reduced in a fixed tree.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    long_finish_kernel(Params<T> p, const int64_t* __restrict__ ids,
                       const int64_t* __restrict__ cofs, const int* __restrict__ order,
                       int64_t n_long, int64_t strips, const T* __restrict__ part_grad,
                       const T* __restrict__ part_loss) {
  const int64_t b = ids[blockIdx.x];
  if (p.num_pairs[b] == 0) return;
  const int64_t start = p.off[b], n = p.off[b + 1] - start, base = cofs[b];
  double loss_part = 0.0;
  for (int64_t r = threadIdx.x; r < n; r += blockDim.x) {
    double g = 0.0, l = 0.0;
    for (int64_t st = 0; st < strips; ++st) {
      g += static_cast<double>(part_grad[st * n_long + base + r]);
      l += static_cast<double>(part_loss[st * n_long + base + r]);
    }
    if (p.grad) p.grad[start + order[base + r]] = static_cast<T>(g);
    loss_part += l;
  }
  const double loss = cuda::block_sum(loss_part);
  if (threadIdx.x == 0) p.loss[b] = static_cast<T>(loss);
}

// ---- host side ------------------------------------------------------------------------

struct Plan {
  int64_t B, N;
  int64_t count[kClasses];  // short, medium (two tiers), long
  int64_t max_n, max_medium_n[2], long_items, medium_cap;
  at::Tensor ids;       // [kClasses, B] list ids by class
  at::Tensor long_len;  // [B + 1] n for long lists, else 0
};

template <typename T>
int64_t medium_cap_for_device(int device) {
  const int optin = cuda::device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  const size_t budget = static_cast<size_t>(optin) - 1024;  // block_sum's static buffers
  int64_t cap = kMediumMaxCap;
  while (cap > 64 && medium_smem_bytes<T>(cap) > budget) cap /= 2;
  return cap;
}

template <PairFn F, PairWeight W, typename T>
void launch_pairs(const Params<T>& p, const Plan& plan, cudaStream_t stream,
                  const at::Device& device) {
  using Tr = WeightTraits<W>;
  const int64_t B = plan.B;
  const int64_t* ids = plan.ids.data_ptr<int64_t>();

  if (plan.count[0] > 0) {
    const int64_t blocks = ceil_div(plan.count[0] * 32, kThreads);
    pairwise_warp_kernel<F, W, T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        p, ids, plan.count[0]);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  for (int tier = 0; tier < 2; ++tier) {
    const int64_t count = plan.count[1 + tier];
    if (count == 0) continue;
    const int cap = static_cast<int>(plan.max_medium_n[tier]);
    const int P = next_pow2(cap);
    const size_t smem = medium_smem_bytes<T>(cap);
    const int threads = P >= kThreads ? kThreads : (P < 64 ? 64 : P);
    auto kernel = pairwise_block_kernel<F, W, T>;
    // Always the same (largest) value, so concurrent host threads cannot undercut each other.
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(medium_smem_bytes<T>(plan.medium_cap))));
    kernel<<<static_cast<unsigned>(count), threads, smem, stream>>>(p, ids + (1 + tier) * B, P,
                                                                   cap);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  if (plan.count[kLongClass] > 0) {
    using KeyT = typename cuda::OrderableKey<T>::type;
    const int64_t L = plan.count[kLongClass];
    const int64_t n_long = plan.long_items;
    const int64_t* long_ids = ids + kLongClass * B;
    TORCH_CHECK(plan.max_n < INT_MAX, "rankops: lists longer than 2^31 - 1 items are not supported");
    // cub's item and segment counts are int in several CCCL versions
    TORCH_CHECK(n_long < INT_MAX && B < INT_MAX,
                "rankops: more than 2^31 - 1 items in long lists, or lists, in one CUDA call");
    const at::TensorOptions opt = at::TensorOptions().device(device);
    const at::TensorOptions opt_t = opt.dtype(c10::CppTypeToScalarType<T>::value);
    const at::TensorOptions opt_key = opt.dtype(sizeof(KeyT) == 4 ? at::kInt : at::kLong);

    // compacted offsets of the long lists
    at::Tensor cofs = at::empty({B + 1}, opt.dtype(at::kLong));
    const int64_t* len_p = plan.long_len.data_ptr<int64_t>();
    int64_t* cofs_p = cofs.data_ptr<int64_t>();
    cuda::cub_call(device, [&](void* t, size_t& bytes) {
      return cub::DeviceScan::ExclusiveSum(t, bytes, len_p, cofs_p, B + 1, stream);
    });

    at::Tensor keys = at::empty({n_long}, opt_key), keys_sorted = at::empty({n_long}, opt_key);
    at::Tensor local_idx = at::empty({n_long}, opt.dtype(at::kInt));
    at::Tensor order = at::empty({n_long}, opt.dtype(at::kInt));
    at::Tensor labels = at::empty({n_long}, opt_t), labels_sorted = at::empty({n_long}, opt_t);
    at::Tensor wg, wg_sorted;
    if (Tr::kUsesNdcg) {
      wg = at::empty({n_long}, opt.dtype(at::kDouble));
      wg_sorted = at::empty({n_long}, opt.dtype(at::kDouble));
    }
    double* wg_p = Tr::kUsesNdcg ? wg.data_ptr<double>() : nullptr;
    double* wg_sorted_p = Tr::kUsesNdcg ? wg_sorted.data_ptr<double>() : nullptr;
    KeyT* keys_p = reinterpret_cast<KeyT*>(keys.data_ptr());
    KeyT* keys_sorted_p = reinterpret_cast<KeyT*>(keys_sorted.data_ptr());
    int* local_p = local_idx.data_ptr<int>();
    int* order_p = order.data_ptr<int>();
    T* labels_p = labels.data_ptr<T>();
    T* labels_sorted_p = labels_sorted.data_ptr<T>();

    long_fill_kernel<T, KeyT><<<static_cast<unsigned>(L), kThreads, 0, stream>>>(
        p, long_ids, cofs_p, keys_p, local_p, labels_p, wg_p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    // ranks: stable sort by score key descending (ties keep position order)
    cuda::cub_call(device, [&](void* t, size_t& bytes) {
      return cub::DeviceSegmentedSort::StableSortPairsDescending(
          t, bytes, keys_p, keys_sorted_p, local_p, order_p, n_long, B, cofs_p, cofs_p + 1,
          stream);
    });
    // labels ascending, for the pair count
    cuda::cub_call(device, [&](void* t, size_t& bytes) {
      return cub::DeviceSegmentedSort::SortKeys(t, bytes, labels_p, labels_sorted_p, n_long, B,
                                                cofs_p, cofs_p + 1, stream);
    });
    // w*G descending, for IDCG@k
    if (Tr::kUsesNdcg) {
      cuda::cub_call(device, [&](void* t, size_t& bytes) {
        return cub::DeviceSegmentedSort::SortKeysDescending(t, bytes, wg_p, wg_sorted_p, n_long,
                                                            B, cofs_p, cofs_p + 1, stream);
      });
    }

    at::Tensor inv_idcg = at::zeros({B}, opt_t);
    at::Tensor rs = at::empty({n_long}, opt_t), ry = at::empty({n_long}, opt_t),
               rw = at::empty({n_long}, opt_t);
    at::Tensor rg = Tr::kUsesNdcg ? at::empty({n_long}, opt_t) : at::empty({0}, opt_t);
    at::Tensor rd = Tr::kUsesNdcg ? at::empty({n_long}, opt_t) : at::empty({0}, opt_t);
    long_prep_kernel<T><<<static_cast<unsigned>(L), kThreads, 0, stream>>>(
        p, long_ids, cofs_p, labels_sorted_p, wg_sorted_p, order_p, inv_idcg.data_ptr<T>(),
        rs.data_ptr<T>(), ry.data_ptr<T>(), rw.data_ptr<T>(), rg.data_ptr<T>(),
        rd.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    // strips: enough (row, strip) threads to fill the device, at most kMaxStrips
    int64_t strips = ceil_div(kLongTargetThreads, n_long);
    strips = std::max<int64_t>(1, std::min<int64_t>(strips, kMaxStrips));
    at::Tensor part_grad = at::empty({strips * n_long}, opt_t);
    at::Tensor part_loss = at::empty({strips * n_long}, opt_t);
    const dim3 grid(static_cast<unsigned>(ceil_div(n_long, kThreads)),
                    static_cast<unsigned>(strips));
    long_pairs_kernel<F, W, T><<<grid, kThreads, 0, stream>>>(
        p, B, cofs_p, n_long, inv_idcg.data_ptr<T>(), rs.data_ptr<T>(), ry.data_ptr<T>(),
        rw.data_ptr<T>(), rg.data_ptr<T>(), rd.data_ptr<T>(), part_grad.data_ptr<T>(),
        part_loss.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    long_finish_kernel<T><<<static_cast<unsigned>(L), kThreads, 0, stream>>>(
        p, long_ids, cofs_p, order_p, n_long, strips, part_grad.data_ptr<T>(),
        part_loss.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename T>
void dispatch_pairs(PairFn fn, PairWeight weight, const Params<T>& p, const Plan& plan,
                    cudaStream_t stream, const at::Device& device) {
  auto with_weight = [&](auto fn_tag) {
    constexpr PairFn F = decltype(fn_tag)::value;
    using P = PairWeight;
    switch (weight) {
      case P::None: return launch_pairs<F, P::None, T>(p, plan, stream, device);
      case P::LabelDiff: return launch_pairs<F, P::LabelDiff, T>(p, plan, stream, device);
      case P::Ndcg: return launch_pairs<F, P::Ndcg, T>(p, plan, stream, device);
      case P::Ndcg2: return launch_pairs<F, P::Ndcg2, T>(p, plan, stream, device);
      case P::Ndcg2pp: return launch_pairs<F, P::Ndcg2pp, T>(p, plan, stream, device);
    }
  };
  switch (fn) {
    case PairFn::Logistic: with_weight(std::integral_constant<PairFn, PairFn::Logistic>{}); break;
    case PairFn::Hinge: with_weight(std::integral_constant<PairFn, PairFn::Hinge>{}); break;
    case PairFn::SoftZeroOne:
      with_weight(std::integral_constant<PairFn, PairFn::SoftZeroOne>{});
      break;
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> pairwise_loss_cuda(
    const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& offsets,
    const c10::optional<at::Tensor>& weights, c10::string_view pair_fn,
    c10::string_view pair_weight, double sigma, double margin, c10::optional<int64_t> k,
    double mu, c10::string_view gain, bool compute_grad) {
  check_list_inputs(scores, labels, offsets, weights);
  TORCH_CHECK(scores.is_cuda(), "rankops: pairwise_loss_cuda needs CUDA tensors");
  TORCH_CHECK(!k.has_value() || *k >= 1, "rankops: k must be >= 1 (or None), got ", k.value_or(0));
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
  if (B == 0 || N == 0) return {loss, item_grad, num_pairs};

  const at::Device device = scores.device();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();

  // plan: classify the lists, one host sync for the summary
  Plan plan;
  plan.B = B;
  plan.N = N;
  plan.medium_cap = acc == at::kDouble ? medium_cap_for_device<double>(device.index())
                                       : medium_cap_for_device<float>(device.index());
  auto summary = at::zeros({kSummarySize}, off.options());
  plan.ids = at::empty({kClasses, B}, off.options());
  plan.long_len = at::empty({B + 1}, off.options());
  {
    const int64_t blocks = std::min<int64_t>(ceil_div(B, kThreads), 1024);
    plan_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        off.data_ptr<int64_t>(), B, N, plan.medium_cap, plan.ids.data_ptr<int64_t>(),
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
    Params<T> p;
    p.s = s.data_ptr<T>();
    p.y = y.data_ptr<T>();
    p.w = w.defined() ? w.data_ptr<T>() : nullptr;
    p.off = off.data_ptr<int64_t>();
    p.delta = delta.defined() ? delta.data_ptr<T>() : nullptr;
    p.loss = loss.data_ptr<T>();
    p.grad = compute_grad ? item_grad.data_ptr<T>() : nullptr;
    p.num_pairs = num_pairs.data_ptr<int64_t>();
    p.sigma = static_cast<T>(sigma);
    p.margin = static_cast<T>(margin);
    p.mu = static_cast<T>(mu);
    p.k = k.value_or(0);
    p.gain = gain_kind;
    dispatch_pairs<T>(fn, weight, p, plan, stream, device);
  });
  return {loss, item_grad, num_pairs};
}

TORCH_LIBRARY_IMPL(rankops, CUDA, m) {
  m.impl("pairwise_loss", &pairwise_loss_cuda);
  m.impl("pairwise_loss_backward", &scale_item_grad_cuda);
}

}  // namespace rankops
