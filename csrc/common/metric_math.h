// Per-item and per-list math of the ranking metrics (DESIGN §3 "Metrics"), written once
// for the CPU kernel and the CUDA kernel.
//
// One list, sorted by score descending (ties by position), k' = min(k, n) (k = 0: n):
//   DCG@k       = sum_{r <= k'} G(y_r) D(r),  G = 2^y - 1 or y,  D(r) = 1 / log2(1 + r)
//   NDCG@k      = DCG@k / IDCG@k                      (undefined when IDCG@k = 0)
//   MRR@k       = 1 / (rank of the first relevant item), 0 if it is below k
//                 (MetricPrefix::rr holds it: the 1/rank of the first relevant item so far)
//   AP@k        = sum_{r <= k', rel_r} P@r / R         (R = relevant items of the whole list)
//   P@k         = hits@k' / min(k, n)  or  hits@k' / k
//   recall@k    = hits@k' / R
//   ERR@k       = sum_{r <= k'} (1/r) p_r prod_{i < r} (1 - p_i),  p = (2^y - 1) / 2^max_grade
//   success@k   = 1 if a relevant item is among the first k', else 0 (MetricPrefix::found)
//   R-precision = hits@R / R: precision at the list's own number of relevant items
//   OPA         = share of the pairs y_i > y_j ranked in that order (pair_accuracy_math.h)
// relevant: y >= relevance_threshold. A metric is "defined" for a list when its
// denominator can be non-zero: a positive gain (ndcg, dcg, err) or a relevant item
// (the binary metrics), or a pair of different labels (OPA); the Python layer applies
// the `empty` option to the others.
// Ties: broken by position (MetricPrefix::add over the stable order), or averaged over
// every order of each tie group (tie_averaged_scan: ties="average").
#pragma once
#include <cmath>
#include <cstdint>

#include "macros.h"
#include "pair_accuracy_math.h"
#include "pair_math.h"

namespace rankops {

enum class Metric : int {
  Ndcg = 0, Dcg = 1, Mrr = 2, Ap = 3, Precision = 4, Recall = 5, Err = 6, Success = 7, RPrecision = 8,
  Opa = 9
};

// Is metric m defined for a list (a non-zero denominator)? Graded metrics need a
// positive gain, the binary ones a relevant item, OPA a pair of different labels.
RANKOPS_HD bool metric_defined(Metric m, bool any_gain, double num_relevant, const PairCounts& pairs) {
  if (m == Metric::Ndcg || m == Metric::Dcg || m == Metric::Err) return any_gain;
  if (m == Metric::Opa) return pairs.defined();
  return num_relevant > 0.0;
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
  double rr = 0.0;              // 1 / rank of the first relevant item so far (0: none)
  double found = 0.0;           // 1 once a relevant item has been seen (0: none)

  RANKOPS_HD void add(int64_t p, double gain, bool relevant, double err_p) {
    const double rank = static_cast<double>(p + 1);
    dcg += gain * discount_at(p);
    if (relevant) {
      hits += 1.0;
      ap_sum += hits / rank;
      if (hits == 1.0) {
        rr = 1.0 / rank;
        found = 1.0;
      }
    }
    err += err_continue * err_p / rank;
    err_continue *= 1.0 - err_p;
  }
};

// How many leading items metric m with cut-off k (0: whole list) reads in a list of n
// items with R relevant ones: min(k, n), or R for R-precision (OPA reads no prefix:
// it has no cut-off, k = 0, and its counts come from ordered_pair_counts).
RANKOPS_HD int64_t metric_cut(Metric m, int64_t k, int64_t n, double num_relevant) {
  if (m == Metric::RPrecision) return static_cast<int64_t>(num_relevant);
  return k == 0 ? n : (k < n ? k : n);
}

// The value of metric m with cut-off k (0: whole list) for a list of n items, given the
// running sums over its first metric_cut(m, k, n, R) items, the ideal DCG at that cut-off
// the number of relevant items R and the list's ordered pair counts (OPA only).
// Undefined metrics (zero denominator) give 0.
RANKOPS_HD double metric_value(Metric m, int64_t k, int64_t n, const MetricPrefix& at_k,
                               double idcg_k, double num_relevant, const PairCounts& pairs,
                               bool precision_divides_by_k) {
  switch (m) {
    case Metric::Ndcg:
      return idcg_k > 0.0 ? at_k.dcg / idcg_k : 0.0;
    case Metric::Dcg:
      return at_k.dcg;
    case Metric::Mrr:
      return at_k.rr;
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
    case Metric::Success:
      return at_k.found;
    case Metric::RPrecision:
      return num_relevant > 0.0 ? at_k.hits / num_relevant : 0.0;
    case Metric::Opa:
      return pairs.accuracy();
  }
  return 0.0;
}

// ties="average": the expected running sums when every tie group (a run of equal
// scores in the sorted list; NaN ties with -inf, -0.0 with +0.0) is put in a uniformly
// random order, each group independently (McSherry & Najork, ECIR 2008; scikit-learn's
// ndcg_score does this for DCG). For a group of g items at 0-based positions
// [a, a + g), h of them relevant, H relevant items before it, and position p = a + q:
//   E[gain at p]              = the group's mean gain                  (DCG)
//   E[relevant at p]          = h / g                                  (hits: P, recall)
//   E[relevant at p * hits@p] = (h / g) (H + 1 + q (h - 1) / (g - 1))  (AP's term * (p+1))
//   P(first relevant at p)    = C(g-1-q, h-1) / C(g, h), in the first group with h > 0
//                               (MRR's term * (p+1))
//   P(no relevant item in the group's first q+1 positions) = prod_{t<=q} (g-h-t)/(g-t)
//                               (success: one minus it; exactly 0 from q = g - h on)
//   E[stop at p, passing the group's items before it] = pass_q - pass_{q+1}      (ERR)
// where pass_q is the mean over the group's q-item subsets of prod (1 - p_stop): the
// chance of passing q of the group's items. Only the group's r items with p_stop > 0
// matter: with P_j the mean over j-subsets of those r of prod (1 - p_stop), pass_q =
// sum_j P(j of them among q drawn) P_j, the draw hypergeometric. Both come from convex
// recurrences (no cancellation), in O((r + q) * min(r, q)) for the q positions scanned:
//   P_j  <- ((m - j) P_j + j c_m P_{j-1}) / m        as stoppable item m (c = 1 - p_stop) joins
//   D_j  <- D_j (1 - (r - j) / (g - q)) + D_{j-1} (r - j + 1) / (g - q)   one more draw
// so a long run of unjudged or irrelevant tied items (label 0, as the padding list of a
// padded batch) costs O(g), not O(g^2). Without ties (g = 1) every line is
// MetricPrefix::add's.
//
// n items in sorted order, positions < top scanned. same_as_previous(p): the item at p
// ties with the item at p - 1; label_at(p): its label. scratch: 2 (top + 2) doubles for
// ERR, or nullptr when ERR is not needed (run.err stays 0). sink(p, run) receives the
// sums of the first p + 1 positions.
RANKOPS_HD_TEMPLATE
template <typename SameAsPrevious, typename LabelAt, typename Sink>
RANKOPS_HD void tie_averaged_scan(int64_t n, int64_t top, SameAsPrevious same_as_previous,
                                  LabelAt label_at, Gain gain, double threshold,
                                  double inv_two_pow_max, double* scratch, Sink sink) {
  MetricPrefix run;
  double relevant_before = 0.0;
  bool relevant_seen = false;
  double* subset_pass = scratch;                                    // P_j, j <= J
  double* draws = scratch != nullptr ? scratch + (top + 2) : nullptr;  // D_j, j <= J
  for (int64_t a = 0; a < top;) {
    int64_t end = a + 1;
    while (end < n && same_as_previous(end)) ++end;
    double h = 0.0, gain_sum = 0.0;
    int64_t r = 0;
    for (int64_t p = a; p < end; ++p) {
      const double y = label_at(p);
      h += y >= threshold ? 1.0 : 0.0;
      gain_sum += gain_of(y, gain);
      if (scratch != nullptr) r += err_probability(y, inv_two_pow_max) > 0.0 ? 1 : 0;  // ERR only
    }
    const double g = static_cast<double>(end - a);
    const int64_t Q = (end < top ? end : top) - a;  // positions of the group scanned
    const int64_t J = r < Q ? r : Q;                // stoppable items among them, at most
    double pass_group = 1.0;                         // prod over the group of (1 - p_stop)
    if (scratch != nullptr) {
      subset_pass[0] = draws[0] = 1.0;
      for (int64_t j = 1; j <= J; ++j) subset_pass[j] = draws[j] = 0.0;
      int64_t m = 0;
      for (int64_t p = a; p < end; ++p) {
        const double c = 1.0 - err_probability(label_at(p), inv_two_pow_max);
        if (!(c < 1.0)) continue;
        ++m;
        const double dm = static_cast<double>(m);
        for (int64_t j = (m < J ? m : J); j >= 1; --j) {
          const double dj = static_cast<double>(j);
          subset_pass[j] = ((dm - dj) * subset_pass[j] + dj * c * subset_pass[j - 1]) / dm;
        }
        pass_group *= c;
      }
    }
    const double mean_gain = gain_sum / g, hit = h / g, dr = static_cast<double>(r);
    const bool first_group = !relevant_seen && h > 0.0;
    double p_first = hit;    // P(the group's first relevant item is at in-group position q)
    double p_none = 1.0;     // P(no relevant item in the group's first q + 1 positions)
    double pass_here = 1.0;  // pass_q
    for (int64_t q = 0; q < Q; ++q) {
      const int64_t p = a + q;
      const double rank = static_cast<double>(p + 1), dq = static_cast<double>(q);
      run.dcg += mean_gain * discount_at(p);
      run.hits += hit;
      if (h > 0.0)
        run.ap_sum += hit * (relevant_before + 1.0 + (g > 1.0 ? dq * (h - 1.0) / (g - 1.0) : 0.0)) / rank;
      if (first_group) {
        run.rr += p_first / rank;
        // as a complement, so that it reaches exactly 1 and never exceeds it
        p_none *= (g - h - dq) / (g - dq);
        run.found = 1.0 - p_none;
        if (q + 1 < Q) p_first *= (g - dq - h) / (g - 1.0 - dq);
      }
      if (scratch != nullptr) {
        // draw the (q+1)-th item: D over the stoppable items drawn, then pass_{q+1}
        const double left = g - dq;
        double pass_next = 0.0;
        for (int64_t j = (q + 1 < J ? q + 1 : J); j >= 0; --j) {
          const double dj = static_cast<double>(j);
          draws[j] = draws[j] * (1.0 - (dr - dj) / left) + (j > 0 ? draws[j - 1] * (dr - dj + 1.0) / left : 0.0);
          pass_next += draws[j] * subset_pass[j];
        }
        run.err += run.err_continue * (pass_here - pass_next) / rank;
        pass_here = pass_next;
      }
      sink(p, run);
    }
    run.err_continue *= pass_group;
    relevant_before += h;
    relevant_seen = relevant_seen || h > 0.0;
    a = end;
  }
}

}  // namespace rankops
