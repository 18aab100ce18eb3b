// Per-list helpers of the CPU kernels: stable ranking (a radix sort beyond 64 items),
// pair counting, ideal DCG, and cost-balanced parallelism over work items.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "../common/sort_keys.h"

namespace rankops {
namespace cpu {

// order[r] = the index (0..n-1) of the r-th smallest of n unsigned keys, ties by index
// (a stable sort); the keys are used as scratch. Short lists take an insertion sort;
// longer ones an LSD radix sort by bytes that skips every byte all keys share (labels
// 0..4 as float bits differ in one byte, so one or two O(n) passes replace an
// O(n log n) comparison sort).
template <typename K>
struct StableKeyOrder {
  std::vector<K> key_tmp;
  std::vector<int64_t> idx_tmp;

  void operator()(K* keys, int64_t n, int64_t* order) {
    if (n <= 64) {
      for (int64_t i = 0; i < n; ++i) order[i] = i;
      for (int64_t i = 1; i < n; ++i) {
        const int64_t v = order[i];
        int64_t j = i;
        for (; j > 0 && keys[v] < keys[order[j - 1]]; --j) order[j] = order[j - 1];
        order[j] = v;
      }
      return;
    }
    K all_and = ~K(0), all_or = 0;
    for (int64_t i = 0; i < n; ++i) {
      all_and &= keys[i];
      all_or |= keys[i];
    }
    const K varying = all_and ^ all_or;
    key_tmp.resize(n);
    idx_tmp.resize(n);
    for (int64_t i = 0; i < n; ++i) order[i] = i;
    K* src_key = keys;
    K* dst_key = key_tmp.data();
    int64_t* src_idx = order;
    int64_t* dst_idx = idx_tmp.data();
    for (int shift = 0; shift < static_cast<int>(8 * sizeof(K)); shift += 8) {
      if (((varying >> shift) & K(0xff)) == 0) continue;
      int64_t count[257] = {0};
      for (int64_t i = 0; i < n; ++i) ++count[((src_key[i] >> shift) & K(0xff)) + 1];
      for (int d = 0; d < 256; ++d) count[d + 1] += count[d];
      for (int64_t i = 0; i < n; ++i) {
        const int64_t at = count[(src_key[i] >> shift) & K(0xff)]++;
        dst_key[at] = src_key[i];
        dst_idx[at] = src_idx[i];
      }
      std::swap(src_key, dst_key);
      std::swap(src_idx, dst_idx);
    }
    if (src_idx != order) std::copy(src_idx, src_idx + n, order);
  }
};

// order[r] = index (0..n-1) of the item ranked r+1: values get(i) descending, ties by
// position (stable), NaN last (tied with -inf by position). Reuses its buffers.
template <typename T>
struct StableRankOrder {
  using Key = typename OrderableKey<T>::type;  // float or double only
  std::vector<Key> keys;
  StableKeyOrder<Key> sort;

  template <typename Get>
  void operator()(int64_t n, Get get, int64_t* order) {
    keys.resize(n);
    // ~orderable_key: ascending keys in descending value order (NaN as -inf, -0.0 as +0.0)
    for (int64_t i = 0; i < n; ++i) keys[i] = ~orderable_key(static_cast<T>(get(i)));
    sort(keys.data(), n, order);
  }
};

// Number of pairs (i, j) with y_i > y_j: n(n-1)/2 minus the pairs inside tie groups,
// read off the labels' order (`order` is scratch of n entries).
template <typename T>
int64_t count_ordered_pairs(const T* y, int64_t n, StableRankOrder<T>& rank, int64_t* order) {
  rank(n, [&](int64_t i) { return y[i]; }, order);
  int64_t pairs = n * (n - 1) / 2;
  for (int64_t i = 0; i < n;) {
    int64_t j = i + 1;
    while (j < n && y[order[j]] == y[order[i]]) ++j;
    const int64_t c = j - i;
    pairs -= c * (c - 1) / 2;
    i = j;
  }
  return pairs;
}

// Ideal DCG@k of the weighted gains `wg` (reordered in place): the DCG of the
// ordering by w*G descending, D(r) = 1/log2(1+r). k <= 0 means the whole list.
inline double ideal_dcg(std::vector<double>& wg, int64_t k) {
  const int64_t n = static_cast<int64_t>(wg.size());
  const int64_t top = (k > 0 && k < n) ? k : n;
  std::partial_sort(wg.begin(), wg.begin() + top, wg.end(), std::greater<double>());
  double idcg = 0.0;
  for (int64_t r = 0; r < top; ++r) idcg += wg[r] / std::log2(2.0 + static_cast<double>(r));
  return idcg;
}

// Calls fn(begin, end) on contiguous ranges of [0, costs.size()) in parallel, the
// ranges of about equal total cost: at::parallel_for alone splits by count, and one
// long list can cost as much as thousands of short ones. Results must not depend on
// the grouping (each item writes only its own outputs), so they do not depend on the
// number of threads either.
template <typename Fn>
void parallel_by_cost(const std::vector<double>& costs, Fn fn) {
  const int64_t items = static_cast<int64_t>(costs.size());
  if (items == 0) return;
  std::vector<double> prefix(items + 1, 0.0);
  for (int64_t i = 0; i < items; ++i) prefix[i + 1] = prefix[i] + costs[i] + 1.0;
  // Small jobs run on the calling thread: waking the pool costs more than they do
  // (and much more when the other cores are busy).
  if (prefix[items] < 32768.0 || at::get_num_threads() == 1 || at::in_parallel_region()) {
    fn(int64_t(0), items);
    return;
  }
  const int64_t groups = std::min<int64_t>(items, 8 * at::get_num_threads());
  std::vector<int64_t> bounds(groups + 1, items);
  bounds[0] = 0;
  for (int64_t g = 1; g < groups; ++g) {
    const double target = prefix[items] * static_cast<double>(g) / static_cast<double>(groups);
    const int64_t b = std::lower_bound(prefix.begin(), prefix.end(), target) - prefix.begin();
    bounds[g] = std::min(std::max(b, bounds[g - 1]), items);
  }
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g)
      if (bounds[g] < bounds[g + 1]) fn(bounds[g], bounds[g + 1]);
  });
}

}  // namespace cpu
}  // namespace rankops
