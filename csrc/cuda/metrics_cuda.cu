// CUDA kernel of the ranking metrics (same math as csrc/cpu/metrics_cpu.cpp, via
// csrc/common/metric_math.h).
//
//  1. keys: scores as float (double for float64), NaN -> -inf and -0 -> +0 so that the
//     radix order equals the CPU comparison; values: the item's index;
//  2. cub::DeviceSegmentedRadixSort, descending. Radix sort is stable, so equal scores
//     keep their input order: ties by position, as on the CPU. For NDCG the gains are
//     sorted the same way (the ideal order);
//  3. one warp per list scans the sorted prefix (32 ranks per step with warp shuffles,
//     carries between steps) into per-rank running DCG, hits, sum of P@r, ERR and ideal
//     DCG; it also counts the list's relevant items and finds its first relevant rank;
//  4. ties="average": one thread per list rescans its sorted prefix with
//     tie_averaged_scan (csrc/common/metric_math.h, the CPU's code), reading the tie
//     groups off the sorted keys, and overwrites the running sums (and writes the
//     expected reciprocal rank and the chance of a hit so far); a plain sequential
//     pass, simple rather than fast;
//  5. OPA: the label keys (orderable_key, as on the CPU) sorted within each list by a
//     second segmented radix sort; one thread per list gives its items dense label
//     ranks and walks the score order with ordered_pair_counts
//     (csrc/common/pair_accuracy_math.h, the CPU's code; a Fenwick tree in global
//     scratch); a sequential pass per list, simple rather than fast;
//  6. one thread per (metric, list) reads the running sums at metric_cut: min(k, n),
//     or R for R-precision, and the pair counts.
// No atomics: every output has one writer, so results are deterministic.
// Status: compiles with nvcc 13.0 for sm_90 (torch 2.14.1+cu130); not yet run on a GPU,
// tests/test_metrics.py::test_cuda_matches_cpu and the device-parametrised tests check it.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cub/cub.cuh>

#include <limits>
#include <string>

#include "../common/checks.h"
#include "../common/metric_args.h"
#include "../common/metric_math.h"
#include "../common/sort_keys.h"
#include "cuda_utils.cuh"

namespace rankops {
namespace {

constexpr int kMaxMetrics = 64;
constexpr int kWarpsPerBlock = 4;
constexpr unsigned kFull = 0xffffffffu;

// The requested (metric, k) rows, passed by value to the last kernel.
struct MetricTable {
  int count;
  int metric[kMaxMetrics];
  int64_t k[kMaxMetrics];
};

// Scalar options of the scan.
struct ScanArgs {
  Gain gain;
  double threshold;
  double inv_two_pow_max;
  int64_t max_k;       // 0: whole list
  int64_t max_ndcg_k;  // -1: no NDCG, 0: whole list
};

struct ScanOut {
  double* dcg;           // [N] running sums by rank, list b at [off[b], off[b] + top)
  double* hits;
  double* ap;
  double* err;
  double* idcg;          // [N] or nullptr without NDCG
  double* num_relevant;  // [B]
  bool* any_gain;        // [B]
  int64_t* first_rel;    // [B] 0-based rank, -1: none in the scanned prefix
  double* rr;            // [N] running expected 1/rank of the first relevant item
  double* found;         // [N] and chance that one was seen (ties="average" only;
                         // nullptr: read first_rel)
  int64_t* pair_counts;  // [2, B] twice the ordered pairs, twice the pairs (OPA only)
};

template <typename scalar_t, typename K>
__global__ void make_keys_kernel(const scalar_t* __restrict__ s, const double* __restrict__ y,
                                 int64_t n, Gain gain, K* __restrict__ keys,
                                 int* __restrict__ index, double* __restrict__ gains) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  K v = static_cast<K>(s[i]);
  if (v != v) v = -std::numeric_limits<K>::infinity();  // NaN ranks last, like -inf
  if (v == K(0)) v = K(0);                              // -0 and +0 tie
  keys[i] = v;
  index[i] = static_cast<int>(i);
  if (gains != nullptr) gains[i] = gain_of(y[i], gain);
}

__device__ __forceinline__ double warp_sum_scan(double v, int lane) {
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const double o = __shfl_up_sync(kFull, v, d);
    if (lane >= d) v += o;
  }
  return v;
}

__device__ __forceinline__ double warp_prod_scan(double v, int lane) {
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const double o = __shfl_up_sync(kFull, v, d);
    if (lane >= d) v *= o;
  }
  return v;
}

__global__ void list_scan_kernel(const int64_t* __restrict__ off, int64_t B,
                                 const double* __restrict__ y, const int* __restrict__ order,
                                 const double* __restrict__ ideal, ScanArgs a, ScanOut out) {
  const int lane = threadIdx.x & 31;
  const int64_t b = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + (threadIdx.x >> 5);
  if (b >= B) return;  // the whole warp leaves together
  const int64_t start = off[b], n = off[b + 1] - start;

  // relevant count and "has a positive gain" over the whole list (any order)
  double rel_count = 0.0;
  bool any = false;
  for (int64_t i = lane; i < n; i += 32) {
    const double yi = y[start + i];
    rel_count += yi >= a.threshold ? 1.0 : 0.0;
    any = any || yi > 0.0;
  }
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) rel_count += __shfl_xor_sync(kFull, rel_count, d);
  any = __any_sync(kFull, any);

  // running sums over the sorted prefix
  const int64_t top = a.max_k == 0 ? n : (a.max_k < n ? a.max_k : n);
  double c_dcg = 0.0, c_hits = 0.0, c_ap = 0.0, c_err = 0.0, c_reach = 1.0;
  int64_t first = -1;
  for (int64_t base = 0; base < top; base += 32) {
    const int64_t p = base + lane;
    const bool in = p < top;
    const double yi = in ? y[order[start + p]] : 0.0;
    const bool rel = in && yi >= a.threshold;
    const double ep = in ? err_probability(yi, a.inv_two_pow_max) : 0.0;
    const double rank = static_cast<double>(p + 1);

    const double dcg = c_dcg + warp_sum_scan(in ? gain_of(yi, a.gain) * discount_at(p) : 0.0, lane);
    const double hits = c_hits + warp_sum_scan(rel ? 1.0 : 0.0, lane);
    const double ap = c_ap + warp_sum_scan(rel ? hits / rank : 0.0, lane);
    const double reach_incl = warp_prod_scan(1.0 - ep, lane);  // prod over this step, <= p
    double reach_excl = __shfl_up_sync(kFull, reach_incl, 1);
    if (lane == 0) reach_excl = 1.0;
    const double err = c_err + warp_sum_scan(c_reach * reach_excl * ep / rank, lane);
    if (in) {
      out.dcg[start + p] = dcg;
      out.hits[start + p] = hits;
      out.ap[start + p] = ap;
      out.err[start + p] = err;
    }
    const unsigned rel_mask = __ballot_sync(kFull, rel);
    if (first < 0 && rel_mask != 0u) first = base + (__ffs(rel_mask) - 1);
    // lanes past the end hold the identity, so lane 31 holds the step's totals
    c_dcg = __shfl_sync(kFull, dcg, 31);
    c_hits = __shfl_sync(kFull, hits, 31);
    c_ap = __shfl_sync(kFull, ap, 31);
    c_err = __shfl_sync(kFull, err, 31);
    c_reach *= __shfl_sync(kFull, reach_incl, 31);
  }

  if (out.idcg != nullptr) {
    const int64_t itop = a.max_ndcg_k == 0 ? n : (a.max_ndcg_k < n ? a.max_ndcg_k : n);
    double c_idcg = 0.0;
    for (int64_t base = 0; base < itop; base += 32) {
      const int64_t p = base + lane;
      const bool in = p < itop;
      const double v = c_idcg + warp_sum_scan(in ? ideal[start + p] * discount_at(p) : 0.0, lane);
      if (in) out.idcg[start + p] = v;
      c_idcg = __shfl_sync(kFull, v, 31);
    }
  }
  if (lane == 0) {
    out.num_relevant[b] = rel_count;
    out.any_gain[b] = any;
    out.first_rel[b] = first;
  }
}

// ties="average": one thread per list, the CPU's scan over the sorted prefix. keys:
// the sorted keys (NaN already -inf, -0 already +0, so == finds the tie groups);
// scratch: ERR's, 2 (n + 2) doubles for list b from 2 (off[b] + 2 b) (nullptr without ERR).
template <typename K>
__global__ void tie_average_kernel(const int64_t* __restrict__ off, int64_t B,
                                   const K* __restrict__ keys, const double* __restrict__ y,
                                   const int* __restrict__ order, ScanArgs a, double* scratch,
                                   ScanOut out) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= B) return;
  const int64_t start = off[b], n = off[b + 1] - start;
  const int64_t top = a.max_k == 0 ? n : (a.max_k < n ? a.max_k : n);
  const K* key = keys + start;
  const int* item = order + start;
  tie_averaged_scan(
      n, top, [&](int64_t p) { return key[p] == key[p - 1]; },
      [&](int64_t p) { return y[item[p]]; }, a.gain, a.threshold, a.inv_two_pow_max,
      scratch != nullptr ? scratch + 2 * (start + 2 * b) : nullptr,
      [&](int64_t p, const MetricPrefix& run) {
        out.dcg[start + p] = run.dcg;
        out.hits[start + p] = run.hits;
        out.ap[start + p] = run.ap_sum;
        out.err[start + p] = run.err;
        out.rr[start + p] = run.rr;
        out.found[start + p] = run.found;
      });
}

__global__ void label_keys_kernel(const double* __restrict__ y, int64_t n,
                                  uint64_t* __restrict__ keys, int* __restrict__ index) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  keys[i] = orderable_key(y[i]);
  index[i] = static_cast<int>(i);
}

// OPA, one thread per list. by_label_keys/by_label_items: the list's label keys sorted
// ascending and their items; order: the items by score; score_keys: the sorted score
// keys for ties="average" (nullptr: ties by position); label_rank, tree: [N] scratch.
template <typename K>
__global__ void pair_accuracy_kernel(const int64_t* __restrict__ off, int64_t B,
                                     const uint64_t* __restrict__ by_label_keys,
                                     const int* __restrict__ by_label_items,
                                     const int* __restrict__ order, const K* __restrict__ score_keys,
                                     int* __restrict__ label_rank, int* __restrict__ tree,
                                     int64_t* __restrict__ pair_counts) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= B) return;
  const int64_t start = off[b], n = off[b + 1] - start;
  int64_t twice_pairs = 0;
  const int64_t num_ranks = dense_label_ranks(
      n, [&](int64_t q) { return by_label_keys[start + q]; },
      [&](int64_t q, int64_t r) { label_rank[by_label_items[start + q]] = static_cast<int>(r); },
      &twice_pairs);
  PairCounts pairs;
  if (twice_pairs > 0) {
    int* list_tree = tree + start;
    for (int64_t r = 0; r < num_ranks; ++r) list_tree[r] = 0;
    const K* key = score_keys != nullptr ? score_keys + start : nullptr;
    pairs = ordered_pair_counts(
        n, num_ranks, twice_pairs, [&](int64_t p) { return key != nullptr && key[p] == key[p - 1]; },
        [&](int64_t p) { return static_cast<int64_t>(label_rank[order[start + p]]); }, list_tree);
  }
  pair_counts[b] = pairs.twice_ordered;
  pair_counts[B + b] = pairs.twice_pairs;
}

__global__ void finalize_kernel(const int64_t* __restrict__ off, int64_t B, MetricTable table,
                                bool precision_by_k, ScanOut in, double* __restrict__ values,
                                bool* __restrict__ defined) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= table.count * B) return;
  const int j = static_cast<int>(t / B);
  const int64_t b = t - j * B;
  const Metric m = static_cast<Metric>(table.metric[j]);
  const int64_t k = table.k[j];
  const int64_t start = off[b], n = off[b + 1] - start;
  const double R = in.num_relevant[b];
  const int64_t cut = metric_cut(m, k, n, R);
  MetricPrefix at;
  double idcg = 0.0;
  if (cut > 0) {
    const int64_t q = start + cut - 1;
    at.dcg = in.dcg[q];
    at.hits = in.hits[q];
    at.ap_sum = in.ap[q];
    at.err = in.err[q];
    const int64_t first = in.first_rel[b];
    const bool first_in = first >= 0 && first < cut;
    at.rr = in.rr != nullptr ? in.rr[q] : (first_in ? 1.0 / static_cast<double>(first + 1) : 0.0);
    at.found = in.found != nullptr ? in.found[q] : (first_in ? 1.0 : 0.0);
    if (m == Metric::Ndcg) idcg = in.idcg[q];
  }
  PairCounts pairs;
  if (in.pair_counts != nullptr) {
    pairs.twice_ordered = in.pair_counts[b];
    pairs.twice_pairs = in.pair_counts[B + b];
  }
  values[t] = metric_value(m, k, n, at, idcg, R, pairs, precision_by_k);
  defined[t] = metric_defined(m, in.any_gain[b], R, pairs);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> ranking_metrics_cuda(
    const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& offsets,
    c10::ArrayRef<c10::string_view> metrics, at::IntArrayRef ks, c10::string_view gain,
    double relevance_threshold, double max_grade, c10::string_view precision_divide_by,
    c10::string_view ties) {
  check_list_inputs(scores, labels, offsets, c10::nullopt);
  const c10::cuda::CUDAGuard guard(scores.device());
  const MetricArgs args = parse_metric_args(metrics, ks, gain, relevance_threshold, max_grade,
                                            precision_divide_by, ties);
  const int64_t N = scores.size(0);
  const int64_t B = offsets.size(0) - 1;
  const int64_t M = static_cast<int64_t>(args.metrics.size());
  TORCH_CHECK(M <= kMaxMetrics, "rankops: at most ", kMaxMetrics, " metrics per call, got ", M);
  TORCH_CHECK(N < std::numeric_limits<int>::max() && B < std::numeric_limits<int>::max(),
              "rankops: ranking_metrics on CUDA supports fewer than 2^31 items and lists");
  const auto acc = acc_dtype_of(scores.scalar_type());
  auto values = at::zeros({M, B}, scores.options().dtype(at::kDouble));
  auto defined = at::zeros({M, B}, scores.options().dtype(at::kBool));
  if (M == 0 || B == 0) return {values.to(acc), defined};

  const auto s = scores.contiguous();
  const auto y = labels.to(at::kDouble).contiguous();
  const auto off = cuda::offsets_within(offsets, N);
  const bool need_idcg = args.max_ndcg_k >= 0;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto dopt = scores.options();

  auto index_in = at::empty({N}, dopt.dtype(at::kInt));
  auto index_out = at::empty({N}, dopt.dtype(at::kInt));
  auto gains_in = need_idcg ? at::empty({N}, dopt.dtype(at::kDouble)) : at::Tensor();
  auto gains_out = need_idcg ? at::empty({N}, dopt.dtype(at::kDouble)) : at::Tensor();
  const int64_t* off_p = off.data_ptr<int64_t>();
  at::Tensor keys_sorted;  // kept for ties="average"

  if (N > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "ranking_metrics_cuda", [&] {
      using K = typename std::conditional<std::is_same<scalar_t, double>::value, double, float>::type;
      const auto key_type = std::is_same<K, double>::value ? at::kDouble : at::kFloat;
      auto keys_in = at::empty({N}, dopt.dtype(key_type));
      auto keys_out = at::empty({N}, dopt.dtype(key_type));
      const int threads = 256;
      const int64_t blocks = (N + threads - 1) / threads;
      make_keys_kernel<scalar_t, K><<<blocks, threads, 0, stream>>>(
          s.data_ptr<scalar_t>(), y.data_ptr<double>(), N, args.gain, keys_in.data_ptr<K>(),
          index_in.data_ptr<int>(), need_idcg ? gains_in.data_ptr<double>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();

      cuda::cub_call(scores.device(), [&](void* temp, size_t& bytes) {
        return cub::DeviceSegmentedRadixSort::SortPairsDescending(
            temp, bytes, keys_in.data_ptr<K>(), keys_out.data_ptr<K>(), index_in.data_ptr<int>(),
            index_out.data_ptr<int>(), static_cast<int>(N), static_cast<int>(B), off_p, off_p + 1,
            0, static_cast<int>(sizeof(K) * 8), stream);
      });
      keys_sorted = keys_out;
    });
    if (need_idcg) {
      cuda::cub_call(scores.device(), [&](void* temp, size_t& bytes) {
        return cub::DeviceSegmentedRadixSort::SortKeysDescending(
            temp, bytes, gains_in.data_ptr<double>(), gains_out.data_ptr<double>(),
            static_cast<int>(N), static_cast<int>(B), off_p, off_p + 1, 0, 64, stream);
      });
    }
  }

  auto prefix = at::empty({args.average_ties ? 6 : 4, N}, dopt.dtype(at::kDouble));
  auto idcg = need_idcg ? at::empty({N}, dopt.dtype(at::kDouble)) : at::Tensor();
  auto num_relevant = at::empty({B}, dopt.dtype(at::kDouble));
  auto any_gain = at::empty({B}, dopt.dtype(at::kBool));
  auto first_rel = at::empty({B}, dopt.dtype(at::kLong));
  auto pair_counts = args.needs_opa ? at::zeros({2, B}, dopt.dtype(at::kLong)) : at::Tensor();
  double* pre = prefix.data_ptr<double>();
  ScanOut scan{pre, pre + N, pre + 2 * N, pre + 3 * N,
               need_idcg ? idcg.data_ptr<double>() : nullptr, num_relevant.data_ptr<double>(),
               any_gain.data_ptr<bool>(), first_rel.data_ptr<int64_t>(),
               args.average_ties ? pre + 4 * N : nullptr, args.average_ties ? pre + 5 * N : nullptr,
               args.needs_opa ? pair_counts.data_ptr<int64_t>() : nullptr};
  ScanArgs sa{args.gain, args.threshold, 1.0 / std::exp2(args.max_grade), args.max_k,
              args.max_ndcg_k};
  const int64_t scan_blocks = (B + kWarpsPerBlock - 1) / kWarpsPerBlock;
  list_scan_kernel<<<scan_blocks, kWarpsPerBlock * 32, 0, stream>>>(
      off_p, B, y.data_ptr<double>(), index_out.data_ptr<int>(),
      need_idcg ? gains_out.data_ptr<double>() : nullptr, sa, scan);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (args.average_ties && N > 0) {
    auto scratch = args.needs_err ? at::empty({2 * (N + 2 * B)}, dopt.dtype(at::kDouble)) : at::Tensor();
    const int threads = 128;
    const int64_t blocks = (B + threads - 1) / threads;
    AT_DISPATCH_FLOATING_TYPES(keys_sorted.scalar_type(), "ranking_metrics_cuda_ties", [&] {
      tie_average_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
          off_p, B, keys_sorted.data_ptr<scalar_t>(), y.data_ptr<double>(),
          index_out.data_ptr<int>(), sa, args.needs_err ? scratch.data_ptr<double>() : nullptr, scan);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  if (args.needs_opa && N > 0) {
    auto label_keys_in = at::empty({N}, dopt.dtype(at::kLong));
    auto label_keys_out = at::empty({N}, dopt.dtype(at::kLong));
    auto label_items_in = at::empty({N}, dopt.dtype(at::kInt));
    auto label_items_out = at::empty({N}, dopt.dtype(at::kInt));
    auto label_rank = at::empty({N}, dopt.dtype(at::kInt));
    auto tree = at::empty({N}, dopt.dtype(at::kInt));
    auto* keys_in = reinterpret_cast<uint64_t*>(label_keys_in.data_ptr<int64_t>());
    auto* keys_out = reinterpret_cast<uint64_t*>(label_keys_out.data_ptr<int64_t>());
    const int threads = 256;
    label_keys_kernel<<<(N + threads - 1) / threads, threads, 0, stream>>>(
        y.data_ptr<double>(), N, keys_in, label_items_in.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    cuda::cub_call(scores.device(), [&](void* temp, size_t& bytes) {
      return cub::DeviceSegmentedRadixSort::SortPairs(
          temp, bytes, keys_in, keys_out, label_items_in.data_ptr<int>(), label_items_out.data_ptr<int>(),
          static_cast<int>(N), static_cast<int>(B), off_p, off_p + 1, 0, 64, stream);
    });
    const int list_threads = 128;
    const int64_t blocks = (B + list_threads - 1) / list_threads;
    AT_DISPATCH_FLOATING_TYPES(keys_sorted.scalar_type(), "ranking_metrics_cuda_opa", [&] {
      pair_accuracy_kernel<scalar_t><<<blocks, list_threads, 0, stream>>>(
          off_p, B, keys_out, label_items_out.data_ptr<int>(), index_out.data_ptr<int>(),
          args.average_ties ? keys_sorted.data_ptr<scalar_t>() : nullptr, label_rank.data_ptr<int>(),
          tree.data_ptr<int>(), pair_counts.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  MetricTable table{};
  table.count = static_cast<int>(M);
  for (int64_t j = 0; j < M; ++j) {
    table.metric[j] = static_cast<int>(args.metrics[j]);
    table.k[j] = args.ks[j];
  }
  const int threads = 256;
  const int64_t blocks = (M * B + threads - 1) / threads;
  finalize_kernel<<<blocks, threads, 0, stream>>>(off_p, B, table, args.precision_by_k, scan,
                                                  values.data_ptr<double>(),
                                                  defined.data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {values.to(acc), defined};
}

TORCH_LIBRARY_IMPL(rankops, CUDA, m) { m.impl("ranking_metrics", &ranking_metrics_cuda); }

}  // namespace rankops
