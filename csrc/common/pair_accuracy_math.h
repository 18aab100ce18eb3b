// Ordered pair accuracy (OPA) of one list, written once for the CPU and CUDA metric
// kernels (csrc/common/metric_math.h reads its result).
//
//   OPA = #{(i, j): y_i > y_j, i ranked above j} / #{(i, j): y_i > y_j}
//
// (Rax's opa_metric, TF-Ranking's OrderedPairAccuracy; with binary labels it is the
// per-query AUC, whose impression-weighted mean is recommendation's "GAUC"). Ranks
// are by score; ties="position" breaks score ties by position like every rankops
// metric, ties="average" counts a pair of tied scores as half ordered (its expected
// value over the orders of the tie group, scikit-learn's roc_auc_score).
//
// O(n log n), no pair is visited: walking the list in rank order, a Fenwick tree over
// the labels' dense ranks counts, for each item, the items above it with a larger label
// (ordered pairs) and with a smaller one (reversed pairs). A tie group is queried as a
// whole before any of its items is inserted, so those counts leave out the pairs inside
// the group; the pairs with different labels inside groups are the rest of the total,
//   tied = pairs - ordered - reversed,
// which is 0 when every group has one item (ties="position"). Counts are integers:
// the value is exact up to the one division.
#pragma once
#include <cstdint>

#include "macros.h"

namespace rankops {

// Twice the ordered pairs (a tied pair counts 1 of 2) and twice the pairs with
// different labels, so that both stay integers.
struct PairCounts {
  int64_t twice_ordered = 0;
  int64_t twice_pairs = 0;

  RANKOPS_HD bool defined() const { return twice_pairs > 0; }
  RANKOPS_HD double accuracy() const {
    return twice_pairs > 0 ? static_cast<double>(twice_ordered) / static_cast<double>(twice_pairs) : 0.0;
  }
};

// Dense ranks of one list's labels, from its items sorted by an orderable label key
// (csrc/common/sort_keys.h: equal labels, -0.0 and +0.0 included, have equal keys).
// key_at(q): the key of the q-th item in label order; set_rank(q, r): that item's dense
// rank r (0 = smallest label). Returns the number of distinct labels; *twice_pairs gets
// n^2 - sum over labels of count^2, twice the pairs with different labels.
RANKOPS_HD_TEMPLATE
template <typename KeyAt, typename SetRank>
RANKOPS_HD int64_t dense_label_ranks(int64_t n, KeyAt key_at, SetRank set_rank, int64_t* twice_pairs) {
  int64_t rank = -1, run = 0, same_label_pairs = 0;
  for (int64_t q = 0; q < n; ++q) {
    if (q == 0 || !(key_at(q) == key_at(q - 1))) {
      same_label_pairs += run * run;
      run = 0;
      ++rank;
    }
    ++run;
    set_rank(q, rank);
  }
  same_label_pairs += run * run;
  *twice_pairs = n * n - same_label_pairs;
  return rank + 1;
}

// The counts of one list: n items in rank order, label_rank(p) the dense label rank of
// the item at 0-based rank position p (< num_ranks), same_as_previous(p) whether it ties
// in score with the item at p - 1 (always false for ties="position"); twice_pairs from
// dense_label_ranks; tree: num_ranks counters, any integer type holding n, set to 0.
RANKOPS_HD_TEMPLATE
template <typename SameAsPrevious, typename LabelRank, typename Counter>
RANKOPS_HD PairCounts ordered_pair_counts(int64_t n, int64_t num_ranks, int64_t twice_pairs,
                                          SameAsPrevious same_as_previous, LabelRank label_rank,
                                          Counter* tree) {
  // Fenwick tree: tree[i - 1] counts the inserted ranks in (i - (i & -i), i]
  auto count_at_most = [&](int64_t r) {  // inserted items of label rank <= r
    int64_t c = 0;
    for (int64_t i = r + 1; i > 0; i -= i & -i) c += static_cast<int64_t>(tree[i - 1]);
    return c;
  };
  int64_t ordered = 0, reversed = 0, seen = 0;
  for (int64_t a = 0; a < n;) {
    int64_t end = a + 1;
    while (end < n && same_as_previous(end)) ++end;
    for (int64_t p = a; p < end; ++p) {
      const int64_t r = label_rank(p);
      ordered += seen - count_at_most(r);              // above it, larger label
      reversed += r > 0 ? count_at_most(r - 1) : 0;    // above it, smaller label
    }
    for (int64_t p = a; p < end; ++p)
      for (int64_t i = label_rank(p) + 1; i <= num_ranks; i += i & -i) tree[i - 1] += 1;
    seen += end - a;
    a = end;
  }
  PairCounts out;
  out.twice_pairs = twice_pairs;
  // tied pairs with different labels: twice_pairs / 2 - ordered - reversed, each half ordered
  out.twice_ordered = 2 * ordered + (twice_pairs / 2 - ordered - reversed);
  return out;
}

}  // namespace rankops
