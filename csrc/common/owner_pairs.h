// Owner-computes pair loops of the CUDA kernels (csrc/cuda/pairwise_cuda.cu) and of the
// CPU emulation of their long-list path (csrc/cpu/pairwise_long_path_cpu.cpp).
//
// The thread that owns item a sums d loss / d s_a over its partners itself, so the
// gradient needs no atomics, and each unordered pair is evaluated twice (once per owner).
// A pair's loss is counted by its more relevant item (tied-label pairs weigh 0).
// The CPU kernel evaluates each pair once instead (row i, partners j > i, vectorised):
// same per-pair math (pair_math.h), different loop.
#pragma once
#include <cmath>
#include <cstdint>

#include "macros.h"
#include "pair_math.h"

namespace rankops {

template <typename T>
struct PairKnobs {
  T sigma, margin, mu;
};

// One list in rank order (scores descending, ties by position). gain and disc are
// read only by the ndcg-family weights (null otherwise).
template <typename T>
struct RankOrderList {
  const T* s;
  const T* y;
  const T* w;
  const T* gain;
  const T* disc;
};

// One pair seen by its owner a, partner b: adds d term / d s_a to grad and, when a is the
// more relevant item, the pair's loss to loss. The pair weight is symmetric and
// m * (s_a - s_b) is the same bits from either side, so both owners agree on the pair.
template <PairFn F, PairWeight W, typename T>
RANKOPS_HD void owner_pair(const PairItem<T>& a, T s_a, T w_a, const PairItem<T>& b, T s_b,
                           T w_b, T delta_disc, T inv_idcg, const PairKnobs<T>& knobs, T& grad,
                           T& loss) {
  const T dy = a.label - b.label;
  const T m = T(dy > T(0)) - T(dy < T(0));  // +1: a above b, -1: b above a, 0: tie
  const T w_hi = dy > T(0) ? w_a : w_b;
  const T lam = pair_weight_of<W>(a, b, delta_disc, inv_idcg, knobs.mu);
  const T c = w_hi * lam * m * m;
  T value, slope;
  pair_fn_value_slope<F>(counted_difference(c, m, s_a, s_b), knobs.sigma, knobs.margin, value,
                         slope);
  grad += c * slope * m;
  if (m >= T(0)) loss += c * value;  // counted once (ties: c = 0)
}

// Row r of a rank-order list against partners q in [q0, q1), q != r. delta is the ndcg2
// table D(d) - D(d+1) by rank distance d (ndcg2 / ndcg2pp only).
template <PairFn F, PairWeight W, typename T>
RANKOPS_HD void owner_row_sum(const RankOrderList<T>& list, int64_t r, int64_t q0, int64_t q1,
                              const T* delta, T inv_idcg, const PairKnobs<T>& knobs, T& grad,
                              T& loss) {
  constexpr bool kUsesNdcg = PairWeightTraits<W>::kUsesNdcg;
  constexpr bool kUsesDelta = PairWeightTraits<W>::kUsesDelta;
  const PairItem<T> a{list.y[r], kUsesNdcg ? list.gain[r] : T(0),
                      kUsesNdcg ? list.disc[r] : T(0)};
  const T s_a = list.s[r], w_a = list.w[r];
  for (int64_t q = q0; q < q1; ++q) {
    if (q == r) continue;
    const PairItem<T> b{list.y[q], kUsesNdcg ? list.gain[q] : T(0),
                        kUsesNdcg ? list.disc[q] : T(0)};
    const T dd = kUsesDelta ? delta[r > q ? r - q : q - r] : T(0);
    owner_pair<F, W, T>(a, s_a, w_a, b, list.s[q], list.w[q], dd, inv_idcg, knobs, grad, loss);
  }
}

// Top-k: row r meets partners [0, end). Head rows (r < k) meet the whole list, tail rows
// the k head items only, so exactly the pairs with an item ranked < k are evaluated.
RANKOPS_HD int64_t row_partner_end(int64_t r, int64_t n, int64_t k) {
  return (k > 0 && k < n && r >= k) ? k : n;
}

// Number of entries of the ascending sorted[0, n) smaller than x (the items a label
// beats: summed over a list, the pairs y_i > y_j).
template <typename T>
RANKOPS_HD int64_t count_below_sorted(const T* sorted, int64_t n, T x) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (sorted[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

}  // namespace rankops
