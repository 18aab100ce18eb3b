// Per-item and per-list math of the ranking metrics (DESIGN §3 "Metrics"), written once
// for the CPU kernel and the CUDA kernel.
//
// One list, sorted by score descending (ties by position), k' = min(k, n) (k = 0: n):
//   DCG@k       = sum_{r <= k'} G(y_r) D(r),  G = 2^y - 1 or y,  D(r) = 1 / log2(1 + r)
//   NDCG@k      = DCG@k / IDCG@k                      (undefined when IDCG@k = 0)
//   MRR@k       = 1 / (rank of the first relevant item), 0 if it is below k
//   AP@k        = sum_{r <= k', rel_r} P@r / R         (R = relevant items of the whole list)
//   P@k         = hits@k' / min(k, n)  or  hits@k' / k
//   recall@k    = hits@k' / R
//   ERR@k       = sum_{r <= k'} (1/r) p_r prod_{i < r} (1 - p_i),  p = (2^y - 1) / 2^max_grade
// relevant: y >= relevance_threshold. A metric is "defined" for a list when its
// denominator can be non-zero: a positive gain (ndcg, dcg, err) or a relevant item
// (the binary metrics); the Python layer applies the `empty` option to the others.
#pragma once
#include <cmath>
#include <cstdint>

#include "macros.h"
#include "pair_math.h"

namespace rankops {

enum class Metric : int { Ndcg = 0, Dcg = 1, Mrr = 2, Ap = 3, Precision = 4, Recall = 5, Err = 6 };

// Does the metric's "defined" flag come from positive gains (graded) or from the
// relevance threshold (binary)?
RANKOPS_HD bool metric_is_graded(Metric m) {
  return m == Metric::Ndcg || m == Metric::Dcg || m == Metric::Err;
}

// D(r) for a 0-based rank position p (rank p + 1).
RANKOPS_HD double discount_at(int64_t p) { return 1.0 / log2(2.0 + static_cast<double>(p)); }

// ERR's stopping probability of an item of grade y, clamped to [0, 1].
RANKOPS_HD double err_probability(double y, double inv_two_pow_max) {
  const double p = (exp2(y) - 1.0) * inv_two_pow_max;
  return p < 0.0 ? 0.0 : (p > 1.0 ? 1.0 : p);
}

// Running sums of one list in rank order; after item at 0-based position p they hold
// the values of the prefix of p + 1 items.
struct MetricPrefix {
  double dcg = 0.0;
  double hits = 0.0;
  double ap_sum = 0.0;          // sum of P@r over relevant r
  double err = 0.0;
  double err_continue = 1.0;    // prod (1 - p_i) so far
  int64_t first_relevant = -1;  // 0-based position, -1: none yet

  RANKOPS_HD void add(int64_t p, double gain, bool relevant, double err_p) {
    const double rank = static_cast<double>(p + 1);
    dcg += gain * discount_at(p);
    if (relevant) {
      hits += 1.0;
      ap_sum += hits / rank;
      if (first_relevant < 0) first_relevant = p;
    }
    err += err_continue * err_p / rank;
    err_continue *= 1.0 - err_p;
  }
};

// The value of metric m with cut-off k (0: whole list) for a list of n items, given the
// running sums over its first min(k, n) items, the ideal DCG at that cut-off and the
// number of relevant items R. Undefined metrics (zero denominator) give 0.
RANKOPS_HD double metric_value(Metric m, int64_t k, int64_t n, const MetricPrefix& at_k,
                               double idcg_k, double num_relevant, bool precision_divides_by_k) {
  switch (m) {
    case Metric::Ndcg:
      return idcg_k > 0.0 ? at_k.dcg / idcg_k : 0.0;
    case Metric::Dcg:
      return at_k.dcg;
    case Metric::Mrr:
      return at_k.first_relevant >= 0 ? 1.0 / static_cast<double>(at_k.first_relevant + 1) : 0.0;
    case Metric::Ap:
      return num_relevant > 0.0 ? at_k.ap_sum / num_relevant : 0.0;
    case Metric::Precision: {
      const int64_t cut = k > 0 ? (precision_divides_by_k ? k : (k < n ? k : n)) : n;
      return cut > 0 ? at_k.hits / static_cast<double>(cut) : 0.0;
    }
    case Metric::Recall:
      return num_relevant > 0.0 ? at_k.hits / num_relevant : 0.0;
    case Metric::Err:
      return at_k.err;
  }
  return 0.0;
}

}  // namespace rankops
