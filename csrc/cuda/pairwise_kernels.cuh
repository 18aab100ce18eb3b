// The pairwise CUDA kernels and their launches, by length class (see pairwise_cuda.cu for
// the design). Shared by the op (pairwise_cuda.cu), which only declares launch_pairs, and
// the three files that instantiate it, one per pair function (pairwise_<fn>.cu), so that
// nvcc compiles the 3 x 5 x 2 kernel sets in parallel.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

#include <cub/cub.cuh>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "../common/owner_pairs.h"
#include "../common/pair_block_list.h"
#include "../common/pair_long_path.h"
#include "../common/pair_math.h"
#include "../common/sort_keys.h"
#include "cuda_utils.cuh"

namespace rankops {
namespace pairwise_cuda {

constexpr int kShortMax = 32;             // warp-per-list class
constexpr int kMediumMaxCap = 4096;       // block-per-list class, at most
// Static shared memory the block kernel may use (block_sum's buffers: 384-640 bytes on
// sm_90) on top of its dynamic buffers; checked against ptxas by scripts/cuda_resources.py.
constexpr size_t kBlockKernelStaticSmem = 1024;
constexpr int kThreads = 256;             // threads per block (warp kernel: 8 lists a block)

// Classes: 0 short, 1 medium up to kMediumSplit, 2 medium above it, 3 long. The two
// medium tiers get their own launch, each with shared memory for its own longest list,
// so that one list of 4000 items does not cut the occupancy of thousands of lists of 100.
constexpr int kMediumSplit = 512;
constexpr int kClasses = 4;
constexpr int kLongClass = 3;

// The batch as the plan kernel's summary describes it, on the host: it sizes every launch.
struct Plan {
  int64_t B, N;
  int64_t count[kClasses];  // short, medium (two tiers), long
  int64_t max_n, max_medium_n[2], long_items, medium_cap;
  int64_t tile_width, long_tiles;  // long path: chosen tile width, tiles at that width
  at::Tensor ids;       // [kClasses, B] list ids by class
  at::Tensor long_len;  // [B + 1] n for long lists, else 0
};

// Launches every class's kernels for one batch (definition below; instantiated per pair
// function in pairwise_<fn>.cu, declared extern here so no other file compiles them).
template <PairFn F, PairWeight W, typename T>
void launch_pairs(const PairBatch<T>& p, const Plan& plan, cudaStream_t stream,
                  const at::Device& device);

#define RANKOPS_PAIRWISE_INSTANCE(PREFIX, F, W, T)                                          \
  PREFIX template void launch_pairs<F, W, T>(const PairBatch<T>&, const Plan&, cudaStream_t, \
                                             const at::Device&);
#define RANKOPS_PAIRWISE_INSTANCES_T(PREFIX, F, T)                   \
  RANKOPS_PAIRWISE_INSTANCE(PREFIX, F, PairWeight::None, T)          \
  RANKOPS_PAIRWISE_INSTANCE(PREFIX, F, PairWeight::LabelDiff, T)     \
  RANKOPS_PAIRWISE_INSTANCE(PREFIX, F, PairWeight::Ndcg, T)          \
  RANKOPS_PAIRWISE_INSTANCE(PREFIX, F, PairWeight::Ndcg2, T)         \
  RANKOPS_PAIRWISE_INSTANCE(PREFIX, F, PairWeight::Ndcg2pp, T)
// Every (weight, accumulation type) instance of pair function F.
#define RANKOPS_PAIRWISE_INSTANCES(PREFIX, F)      \
  RANKOPS_PAIRWISE_INSTANCES_T(PREFIX, F, float)   \
  RANKOPS_PAIRWISE_INSTANCES_T(PREFIX, F, double)

RANKOPS_PAIRWISE_INSTANCES(extern, PairFn::Logistic)
RANKOPS_PAIRWISE_INSTANCES(extern, PairFn::Hinge)
RANKOPS_PAIRWISE_INSTANCES(extern, PairFn::SoftZeroOne)

// ---- short lists: a warp per list -------------------------------------------------------
// The block-list algorithm (pair_block_list.h) run by a warp instead of a block, with
// buffers for 32 items in static shared memory, one slice per warp.

constexpr int kWarpsPerBlock = kThreads / 32;

template <PairFn F, PairWeight W, typename T>
__global__ void __launch_bounds__(kThreads)
    pairwise_warp_kernel(PairBatch<T> p, const int64_t* __restrict__ ids, int64_t count) {
  constexpr size_t kSliceBytes = (block_list_smem_bytes<T>(kShortMax) + 15) / 16 * 16;
  __shared__ __align__(16) unsigned char smem[kWarpsPerBlock][kSliceBytes];
  const int warp = threadIdx.x >> 5;
  const int64_t slot = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + warp;
  if (slot >= count) return;  // whole warp
  const BlockListSmem<T> m = carve_block_list_smem<T>(smem[warp], kShortMax, kShortMax);
  pair_block_list<F, W, T>(p, ids[slot], m, cuda::WarpTeam{});
}

// ---- medium lists: a block per list, everything in shared memory ----------------------

template <PairFn F, PairWeight W, typename T>
__global__ void __launch_bounds__(kThreads)
    pairwise_block_kernel(PairBatch<T> p, const int64_t* __restrict__ ids, int P, int cap) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const BlockListSmem<T> m = carve_block_list_smem<T>(smem_raw, P, cap);
  pair_block_list<F, W, T>(p, ids[blockIdx.x], m, cuda::BlockTeam{});
}

// ---- long lists: sorts into rank-order scratch, then (row, column tile) pieces ----------
// Long items live in a compacted space: list b's items at [cofs[b], cofs[b+1]) (cofs is
// the exclusive scan of the long lists' lengths, 0 for other lists).

// Per-item kernels run grid-stride over the compacted items (one huge list then fills the
// whole GPU); each finds its list with find_segment(cofs). Per-list kernels (a block per
// long list) only stream over their list's compacted entries for a fixed-order reduction.

// Grid-stride loop over [0, count) with 64-bit indices.
#define RANKOPS_GRID_STRIDE(i, count)                                                   \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (count); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// Sort inputs: score keys with the item's index in its list, label keys, and w*G.
template <typename T, typename KeyT>
__global__ void __launch_bounds__(kThreads)
    long_fill_kernel(PairBatch<T> p, int64_t B, const int64_t* __restrict__ cofs, int64_t n_long,
                     KeyT* __restrict__ keys, int* __restrict__ local_idx,
                     KeyT* __restrict__ label_keys, double* __restrict__ wg) {
  RANKOPS_GRID_STRIDE(c, n_long) {
    const int64_t b = find_segment(cofs, B, c);
    const int64_t i = p.off[b] + (c - cofs[b]);
    keys[c] = orderable_key(p.s[i]);
    local_idx[c] = static_cast<int>(c - cofs[b]);
    const T y = p.y[i];
    label_keys[c] = orderable_key(y);  // as the block path: NaN counts as -inf
    if (wg) {
      const T w = p.w ? p.w[i] : T(1);
      wg[c] = static_cast<double>(w) * static_cast<double>(gain_of(y, p.gain));
    }
  }
}

// below[c]: the items of c's list with a smaller label (from the sorted label keys).
template <typename KeyT>
__global__ void __launch_bounds__(kThreads)
    long_count_kernel(int64_t B, const int64_t* __restrict__ cofs, int64_t n_long,
                      const KeyT* __restrict__ sorted_label_keys, int64_t* __restrict__ below) {
  RANKOPS_GRID_STRIDE(c, n_long) {
    const int64_t b = find_segment(cofs, B, c);
    const int64_t base = cofs[b];
    below[c] = count_below_sorted(sorted_label_keys + base, cofs[b + 1] - base,
                                  sorted_label_keys[c]);
  }
}

// Per long list: the pair count (sum of below) and 1/IDCG@k (from the sorted w*G).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    long_list_kernel(PairBatch<T> p, const int64_t* __restrict__ ids,
                     const int64_t* __restrict__ cofs, const int64_t* __restrict__ below,
                     const double* __restrict__ sorted_wg, T* __restrict__ inv_idcg) {
  const int64_t b = ids[blockIdx.x];
  const int64_t base = cofs[b], n = cofs[b + 1] - base;
  long long part = 0;
  for (int64_t r = threadIdx.x; r < n; r += blockDim.x) part += below[base + r];
  const long long pairs = cuda::block_sum(part);
  if (threadIdx.x == 0) p.num_pairs[b] = pairs;
  if (pairs == 0 || !sorted_wg) return;
  const int64_t top = (p.k > 0 && p.k < n) ? p.k : n;
  double dcg = 0.0;
  for (int64_t r = threadIdx.x; r < top; r += blockDim.x)
    dcg += sorted_wg[base + r] / log2(2.0 + static_cast<double>(r));
  const double idcg = cuda::block_sum(dcg);
  if (threadIdx.x == 0) inv_idcg[b] = idcg > 0.0 ? T(1.0 / idcg) : T(0);
}

// Rank-order arrays of the lists that have pairs.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    long_gather_kernel(PairBatch<T> p, int64_t B, const int64_t* __restrict__ cofs,
                       int64_t n_long, const int* __restrict__ order, T* __restrict__ rs,
                       T* __restrict__ ry, T* __restrict__ rw, T* __restrict__ rg,
                       T* __restrict__ rd) {
  RANKOPS_GRID_STRIDE(c, n_long) {
    const int64_t b = find_segment(cofs, B, c);
    if (p.num_pairs[b] == 0) continue;
    const int64_t r = c - cofs[b], i = p.off[b] + order[c];
    const T y = p.y[i];
    rs[c] = p.s[i];
    ry[c] = y;
    rw[c] = p.w ? p.w[i] : T(1);
    if (rg) {
      rg[c] = gain_of(y, p.gain);
      rd[c] = rank_discount<T>(r, p.k);
    }
  }
}

// Tiles per long list (0 for the other lists and at [B]), to be scanned into tofs.
// (static: this header is compiled into several files.)
static __global__ void long_tile_count_kernel(const int64_t* __restrict__ long_len, int64_t B,
                                       int64_t k, int64_t width, int64_t* __restrict__ tiles) {
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b <= B;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = b < B ? long_len[b] : 0;
    tiles[b] = n > 0 ? tile_count(list_tiles(n, k, width)) : 0;
  }
}

// Begin and end (compacted item offsets) of each long list, in long_ids order: the
// segmented sorts get the L long lists as segments, not all B lists (most of them empty
// here), which keeps cub on its single-kernel path below a few hundred segments; above,
// cub groups segments by size and reads the group sizes back on the host.
static __global__ void long_segments_kernel(const int64_t* __restrict__ long_ids, int64_t L,
                                            const int64_t* __restrict__ cofs,
                                            int64_t* __restrict__ seg_begin,
                                            int64_t* __restrict__ seg_end) {
  for (int64_t l = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; l < L;
       l += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = long_ids[l];
    seg_begin[l] = cofs[b];
    seg_end[l] = cofs[b + 1];
  }
}

// One thread per tile (grid-stride). The threads of a warp take consecutive tiles: the
// column tiles of one head row, or the one tile of consecutive tail rows (which all read
// the same k head items, a broadcast).
template <PairFn F, PairWeight W, typename T>
__global__ void __launch_bounds__(kThreads)
    long_pairs_kernel(LongPathArgs<T> a, int64_t tiles) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < tiles;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x)
    long_path_tile<F, W, T>(a, t);
}

// Each row's tiles added in tile order (double): the gradient, scattered to input order,
// and the row's loss, kept for the list's reduction.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    long_rows_kernel(PairBatch<T> p, LongPathArgs<T> a, int64_t n_long,
                     const int* __restrict__ order, double* __restrict__ row_loss) {
  RANKOPS_GRID_STRIDE(c, n_long) {
    const int64_t b = find_segment(a.cofs, a.B, c);
    double g = 0.0, l = 0.0;
    if (p.num_pairs[b] > 0) long_path_row_total(a, b, c - a.cofs[b], g, l);
    if (p.grad && p.num_pairs[b] > 0) p.grad[p.off[b] + order[c]] = static_cast<T>(g);
    row_loss[c] = l;
  }
}

// Per long list: the loss, its rows' losses reduced in a fixed tree.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    long_loss_kernel(PairBatch<T> p, const int64_t* __restrict__ ids,
                     const int64_t* __restrict__ cofs, const double* __restrict__ row_loss) {
  const int64_t b = ids[blockIdx.x];
  if (p.num_pairs[b] == 0) return;
  const int64_t base = cofs[b], n = cofs[b + 1] - base;
  double part = 0.0;
  for (int64_t r = threadIdx.x; r < n; r += blockDim.x) part += row_loss[base + r];
  const double loss = cuda::block_sum(part);
  if (threadIdx.x == 0) p.loss[b] = static_cast<T>(loss);
}

template <PairFn F, PairWeight W, typename T>
void launch_long_path(const PairBatch<T>& p, const Plan& plan, cudaStream_t stream,
                      const at::Device& device);

template <PairFn F, PairWeight W, typename T>
void launch_pairs(const PairBatch<T>& p, const Plan& plan, cudaStream_t stream,
                  const at::Device& device) {
  const int64_t B = plan.B;
  const int64_t* ids = plan.ids.data_ptr<int64_t>();

  if (plan.count[0] > 0) {
    const int64_t blocks = ceil_div(plan.count[0], kWarpsPerBlock);
    pairwise_warp_kernel<F, W, T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        p, ids, plan.count[0]);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  for (int tier = 0; tier < 2; ++tier) {
    const int64_t count = plan.count[1 + tier];
    if (count == 0) continue;
    const int cap = static_cast<int>(plan.max_medium_n[tier]);
    const int P = next_pow2(cap);
    const size_t smem = block_list_smem_bytes<T>(cap);
    const int threads = P >= kThreads ? kThreads : (P < 64 ? 64 : P);
    auto kernel = pairwise_block_kernel<F, W, T>;
    // Always the same (largest) value, so concurrent host threads cannot undercut each other.
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(block_list_smem_bytes<T>(plan.medium_cap))));
    kernel<<<static_cast<unsigned>(count), threads, smem, stream>>>(p, ids + (1 + tier) * B, P,
                                                                   cap);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  if (plan.count[kLongClass] > 0) launch_long_path<F, W, T>(p, plan, stream, device);
}

// Sorts n_long (key, value) pairs per long list, or keys only when values are null; the
// lists are the segments [seg_begin[l], seg_end[l]) of the compacted arrays.
// One long list (the common case of one huge list): a device-wide radix sort, which
// spreads one segment over the whole GPU; cub's segmented sort gives a huge segment a
// single block. Both are stable.
template <typename KeyT, typename ValueT>
void sort_long_lists(const at::Device& device, cudaStream_t stream, int64_t lists,
                     int64_t n_long, const int64_t* seg_begin, const int64_t* seg_end,
                     const KeyT* keys_in, KeyT* keys_out, const ValueT* values_in,
                     ValueT* values_out, bool descending) {
  const int n = static_cast<int>(n_long);
  const int segments = static_cast<int>(lists);
  if (lists == 1) {
    cuda::cub_call(device, [&](void* t, size_t& bytes) {
      if (values_in == nullptr)
        return descending ? cub::DeviceRadixSort::SortKeysDescending(t, bytes, keys_in, keys_out,
                                                                     n, 0, int(sizeof(KeyT) * 8),
                                                                     stream)
                          : cub::DeviceRadixSort::SortKeys(t, bytes, keys_in, keys_out, n, 0,
                                                           int(sizeof(KeyT) * 8), stream);
      return descending ? cub::DeviceRadixSort::SortPairsDescending(
                              t, bytes, keys_in, keys_out, values_in, values_out, n, 0,
                              int(sizeof(KeyT) * 8), stream)
                        : cub::DeviceRadixSort::SortPairs(t, bytes, keys_in, keys_out, values_in,
                                                          values_out, n, 0,
                                                          int(sizeof(KeyT) * 8), stream);
    });
    return;
  }
  cuda::cub_call(device, [&](void* t, size_t& bytes) {
    if (values_in == nullptr)
      return descending ? cub::DeviceSegmentedSort::SortKeysDescending(
                              t, bytes, keys_in, keys_out, n, segments, seg_begin, seg_end, stream)
                        : cub::DeviceSegmentedSort::SortKeys(t, bytes, keys_in, keys_out, n,
                                                             segments, seg_begin, seg_end, stream);
    return descending ? cub::DeviceSegmentedSort::StableSortPairsDescending(
                            t, bytes, keys_in, keys_out, values_in, values_out, n, segments,
                            seg_begin, seg_end, stream)
                      : cub::DeviceSegmentedSort::StableSortPairs(t, bytes, keys_in, keys_out,
                                                                  values_in, values_out, n,
                                                                  segments, seg_begin, seg_end,
                                                                  stream);
  });
}

template <PairFn F, PairWeight W, typename T>
void launch_long_path(const PairBatch<T>& p, const Plan& plan, cudaStream_t stream,
                      const at::Device& device) {
  using Tr = PairWeightTraits<W>;
  using KeyT = typename OrderableKey<T>::type;
  const int64_t B = plan.B;
  const int64_t L = plan.count[kLongClass];
  const int64_t n_long = plan.long_items;
  const int64_t* long_ids = plan.ids.data_ptr<int64_t>() + kLongClass * B;
  TORCH_CHECK(plan.max_n < INT_MAX, "rankops: lists longer than 2^31 - 1 items are not supported");
  // cub's item and segment counts are int in several CCCL versions
  TORCH_CHECK(n_long < INT_MAX && B < INT_MAX,
              "rankops: more than 2^31 - 1 items in long lists, or lists, in one CUDA call");
  const at::TensorOptions opt = at::TensorOptions().device(device);
  const at::TensorOptions opt_t = opt.dtype(c10::CppTypeToScalarType<T>::value);
  const at::TensorOptions opt_key = opt.dtype(sizeof(KeyT) == 4 ? at::kInt : at::kLong);

  // compacted item offsets and tile offsets of the long lists
  at::Tensor cofs = at::empty({B + 1}, opt.dtype(at::kLong));
  at::Tensor tofs = at::empty({B + 1}, opt.dtype(at::kLong));
  at::Tensor tiles_of = at::empty({B + 1}, opt.dtype(at::kLong));
  const int64_t* len_p = plan.long_len.data_ptr<int64_t>();
  int64_t* cofs_p = cofs.data_ptr<int64_t>();
  int64_t* tofs_p = tofs.data_ptr<int64_t>();
  int64_t* tiles_p = tiles_of.data_ptr<int64_t>();
  cuda::cub_call(device, [&](void* t, size_t& bytes) {
    return cub::DeviceScan::ExclusiveSum(t, bytes, len_p, cofs_p, B + 1, stream);
  });
  {
    const int64_t blocks = std::min<int64_t>(ceil_div(B + 1, kThreads), 1024);
    long_tile_count_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        len_p, B, p.k, plan.tile_width, tiles_p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  cuda::cub_call(device, [&](void* t, size_t& bytes) {
    return cub::DeviceScan::ExclusiveSum(t, bytes, tiles_p, tofs_p, B + 1, stream);
  });

  // grid of the per-item kernels: enough blocks to fill any GPU, grid-stride beyond
  const unsigned item_blocks =
      static_cast<unsigned>(std::min<int64_t>(ceil_div(n_long, kThreads), 65535));

  at::Tensor keys = at::empty({n_long}, opt_key), keys_sorted = at::empty({n_long}, opt_key);
  at::Tensor label_keys = at::empty({n_long}, opt_key);
  at::Tensor label_keys_sorted = at::empty({n_long}, opt_key);
  at::Tensor local_idx = at::empty({n_long}, opt.dtype(at::kInt));
  at::Tensor order = at::empty({n_long}, opt.dtype(at::kInt));
  at::Tensor wg, wg_sorted;
  if (Tr::kUsesNdcg) {
    wg = at::empty({n_long}, opt.dtype(at::kDouble));
    wg_sorted = at::empty({n_long}, opt.dtype(at::kDouble));
  }
  double* wg_p = Tr::kUsesNdcg ? wg.data_ptr<double>() : nullptr;
  double* wg_sorted_p = Tr::kUsesNdcg ? wg_sorted.data_ptr<double>() : nullptr;
  KeyT* keys_p = reinterpret_cast<KeyT*>(keys.data_ptr());
  KeyT* keys_sorted_p = reinterpret_cast<KeyT*>(keys_sorted.data_ptr());
  KeyT* label_keys_p = reinterpret_cast<KeyT*>(label_keys.data_ptr());
  KeyT* label_keys_sorted_p = reinterpret_cast<KeyT*>(label_keys_sorted.data_ptr());
  int* local_p = local_idx.data_ptr<int>();
  int* order_p = order.data_ptr<int>();

  long_fill_kernel<T, KeyT><<<item_blocks, kThreads, 0, stream>>>(
      p, B, cofs_p, n_long, keys_p, local_p, label_keys_p, wg_p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // the long lists as sort segments
  at::Tensor segs = at::empty({2, L}, opt.dtype(at::kLong));
  int64_t* seg_begin = segs.data_ptr<int64_t>();
  int64_t* seg_end = seg_begin + L;
  long_segments_kernel<<<static_cast<unsigned>(std::min<int64_t>(ceil_div(L, kThreads), 1024)),
                         kThreads, 0, stream>>>(long_ids, L, cofs_p, seg_begin, seg_end);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  // ranks: stable sort by score key descending (ties keep position order)
  sort_long_lists(device, stream, L, n_long, seg_begin, seg_end, keys_p, keys_sorted_p, local_p,
                  order_p, true);
  // label keys ascending, for the pair count
  sort_long_lists<KeyT, int>(device, stream, L, n_long, seg_begin, seg_end, label_keys_p,
                             label_keys_sorted_p, nullptr, nullptr, false);
  // w*G descending, for IDCG@k
  if (Tr::kUsesNdcg)
    sort_long_lists<double, int>(device, stream, L, n_long, seg_begin, seg_end, wg_p, wg_sorted_p,
                                 nullptr, nullptr, true);

  // pair counts and 1/IDCG@k per list
  at::Tensor below = at::empty({n_long}, opt.dtype(at::kLong));
  long_count_kernel<KeyT><<<item_blocks, kThreads, 0, stream>>>(
      B, cofs_p, n_long, label_keys_sorted_p, below.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor inv_idcg = at::zeros({B}, opt_t);
  long_list_kernel<T><<<static_cast<unsigned>(L), kThreads, 0, stream>>>(
      p, long_ids, cofs_p, below.data_ptr<int64_t>(), wg_sorted_p, inv_idcg.data_ptr<T>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // rank-order arrays
  at::Tensor rs = at::empty({n_long}, opt_t), ry = at::empty({n_long}, opt_t),
             rw = at::empty({n_long}, opt_t);
  at::Tensor rg = Tr::kUsesNdcg ? at::empty({n_long}, opt_t) : at::Tensor();
  at::Tensor rd = Tr::kUsesNdcg ? at::empty({n_long}, opt_t) : at::Tensor();
  T* rg_p = Tr::kUsesNdcg ? rg.data_ptr<T>() : nullptr;
  T* rd_p = Tr::kUsesNdcg ? rd.data_ptr<T>() : nullptr;
  long_gather_kernel<T><<<item_blocks, kThreads, 0, stream>>>(
      p, B, cofs_p, n_long, order_p, rs.data_ptr<T>(), ry.data_ptr<T>(), rw.data_ptr<T>(), rg_p,
      rd_p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // the tiles, then per row and per list totals
  at::Tensor part_grad = at::empty({plan.long_tiles}, opt_t);
  at::Tensor part_loss = at::empty({plan.long_tiles}, opt_t);
  LongPathArgs<T> a;
  a.B = B;
  a.k = p.k;
  a.width = plan.tile_width;
  a.cofs = cofs_p;
  a.tofs = tofs_p;
  a.num_pairs = p.num_pairs;
  a.inv_idcg = inv_idcg.data_ptr<T>();
  a.delta = p.delta;
  a.ranked = RankOrderList<T>{rs.data_ptr<T>(), ry.data_ptr<T>(), rw.data_ptr<T>(), rg_p, rd_p};
  a.knobs = p.knobs;
  a.part_grad = part_grad.data_ptr<T>();
  a.part_loss = part_loss.data_ptr<T>();
  const int64_t tile_blocks = std::min<int64_t>(ceil_div(plan.long_tiles, kThreads), INT_MAX);
  long_pairs_kernel<F, W, T><<<static_cast<unsigned>(tile_blocks), kThreads, 0, stream>>>(
      a, plan.long_tiles);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  at::Tensor row_loss = at::empty({n_long}, opt.dtype(at::kDouble));
  long_rows_kernel<T><<<item_blocks, kThreads, 0, stream>>>(p, a, n_long, order_p,
                                                           row_loss.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  long_loss_kernel<T><<<static_cast<unsigned>(L), kThreads, 0, stream>>>(
      p, long_ids, cofs_p, row_loss.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace pairwise_cuda
}  // namespace rankops
