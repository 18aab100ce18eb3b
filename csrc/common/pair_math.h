// Per-pair math of the pairwise family (DESIGN §3), written once for the CPU loops
// and the CUDA kernels.
//
// For one list, pairs P = {(i, j) : y_i > y_j} and
//     loss = sum_{(i,j) in P} w_i * lambda_ij * phi(s_i - s_j).
// phi is the pair function, lambda the pair weight (held constant: it depends on the
// scores only through integer ranks), w_i the weight of the more relevant item.
#pragma once
#include <cmath>
#include <cstdint>

#include "fast_math.h"
#include "macros.h"

namespace rankops {

enum class PairFn : int { Logistic = 0, Hinge = 1, SoftZeroOne = 2 };
enum class PairWeight : int { None = 0, LabelDiff = 1, Ndcg = 2, Ndcg2 = 3, Ndcg2pp = 4 };
enum class Gain : int { Exp2 = 0, Linear = 1 };

// Does the pair weight need ranks (a sort by score) and the ideal DCG?
RANKOPS_HD bool weight_uses_ndcg(PairWeight w) {
  return w == PairWeight::Ndcg || w == PairWeight::Ndcg2 || w == PairWeight::Ndcg2pp;
}

// What a pair weight reads, at compile time: ranks and the ideal DCG (ndcg family), and
// the ndcg2 table of D(d) - D(d+1) by rank distance.
template <PairWeight W>
struct PairWeightTraits {
  static constexpr bool kUsesNdcg =
      W == PairWeight::Ndcg || W == PairWeight::Ndcg2 || W == PairWeight::Ndcg2pp;
  static constexpr bool kUsesDelta = W == PairWeight::Ndcg2 || W == PairWeight::Ndcg2pp;
};

// phi(d) and dphi/dd for a score difference d = s_hi - s_lo.
//   logistic:      phi = log(1 + exp(-sigma d))        phi' = -sigma * sigmoid(-sigma d)
//   hinge:         phi = max(0, margin - d)             phi' = -1 if margin - d > 0 else 0
//   soft_zero_one: phi = sigmoid(-sigma d)              phi' = -sigma * phi * (1 - phi)
// Logistic and soft 0-1 share e = exp(-|sigma d|) <= 1, so no overflow for any gap.
template <PairFn F, typename T>
RANKOPS_HD void pair_fn_value_slope(T d, T sigma, T margin, T& value, T& slope) {
  if constexpr (F == PairFn::Hinge) {
    const T gap = margin - d;
    const bool nan = gap != gap;  // a NaN score: NaN out, as the other pair functions
    value = gap > T(0) || nan ? gap : T(0);
    slope = nan ? gap : gap > T(0) ? T(-1) : T(0);
    return;
  }
  const T z = -sigma * d;  // the argument of softplus / sigmoid
  const T abs_z = z < T(0) ? -z : z;
  const T e = math::exp_nonpositive(-abs_z);
  const T inv_1pe = T(1) / (T(1) + e);
  const T sig_z = z >= T(0) ? inv_1pe : e * inv_1pe;  // sigmoid(z), stable
  if constexpr (F == PairFn::Logistic) {
    value = (z > T(0) ? z : T(0)) + math::log1p_unit(e);  // softplus(z)
    slope = -sigma * sig_z;
  } else {  // SoftZeroOne
    value = sig_z;
    const T sig_neg = z >= T(0) ? e * inv_1pe : inv_1pe;  // 1 - sigmoid(z), no cancellation
    slope = -sigma * sig_z * sig_neg;
  }
}

// The argument of phi for a pair with coefficient c (= w_hi * lambda, 0 for tied labels
// or masked lanes) and orientation m = sign(y_a - y_b): m * (s_a - s_b), or 0 where c is
// 0. Such a pair contributes nothing, and without the select an infinite score would
// make its 0 * phi(inf) or 0 * (inf - inf) a NaN.
template <typename T>
RANKOPS_HD T counted_difference(T c, T m, T s_a, T s_b) {
  return c != T(0) ? m * (s_a - s_b) : T(0);
}

// Gain G(y): 2^y - 1 (exp2) or y (linear).
template <typename T>
RANKOPS_HD T gain_of(T y, Gain g) {
  return g == Gain::Exp2 ? T(std::exp2(y)) - T(1) : y;
}

// Discount D(r) = 1 / log2(1 + r) for a 1-based rank r.
template <typename T>
RANKOPS_HD T discount_of(T rank) {
  return T(1) / T(std::log2(T(1) + rank));
}

// D(r + 1) for a 0-based rank r; 0 at or beyond a cut-off k (0: no cut-off).
template <typename T>
RANKOPS_HD T rank_discount(int64_t r, int64_t k) {
  return (k == 0 || r < k) ? T(1.0 / std::log2(2.0 + static_cast<double>(r))) : T(0);
}

// The ndcg2 term D(d) - D(d + 1) for a rank distance d >= 1 (0 for d = 0).
template <typename T>
RANKOPS_HD T ndcg2_delta(int64_t d) {
  const double x = static_cast<double>(d);
  return d == 0 ? T(0) : T(1.0 / std::log2(1.0 + x) - 1.0 / std::log2(2.0 + x));
}

// Everything lambda_ij needs about one item, in rank order.
template <typename T>
struct PairItem {
  T label;     // y
  T gain;      // G(y)
  T discount;  // D(r), 0 beyond the top-k cut-off (ndcg weight)
};

// lambda_ij (DESIGN §3), with inv_idcg = 1 / IDCG@k and
// delta_discount = |D(|r_i - r_j|) - D(|r_i - r_j| + 1)| (the ndcg2 term).
template <PairWeight W, typename T>
RANKOPS_HD T pair_weight_of(const PairItem<T>& a, const PairItem<T>& b, T delta_discount,
                            T inv_idcg, T mu) {
  const T abs_dgain = a.gain > b.gain ? a.gain - b.gain : b.gain - a.gain;
  const T abs_ddisc = a.discount > b.discount ? a.discount - b.discount : b.discount - a.discount;
  switch (W) {
    case PairWeight::None:
      return T(1);
    case PairWeight::LabelDiff:
      return a.label > b.label ? a.label - b.label : b.label - a.label;
    case PairWeight::Ndcg:
      return abs_dgain * abs_ddisc * inv_idcg;
    case PairWeight::Ndcg2:
      return abs_dgain * delta_discount * inv_idcg;
    case PairWeight::Ndcg2pp:
      return abs_dgain * (abs_ddisc + mu * delta_discount) * inv_idcg;
  }
  return T(0);
}

}  // namespace rankops
