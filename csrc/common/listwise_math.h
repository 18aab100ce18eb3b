// Per-item and per-pair math of the listwise family (DESIGN §3), written once for the
// CPU loops and the CUDA kernels.
//
//   softmax:     loss = sum_i t_i (lse(s) - s_i),  t_i = w_i y_i (label_norm: / sum |t|;
//                label_softmax, ListNet: t_i = w_i softmax(y)_i),
//                d loss / d s_i = (sum t) softmax(s)_i - t_i;
//                poly-1 adds epsilon (1 - pt), pt = sum_i q_i p_i, q = t / sum |t|, p = softmax(s),
//                whose gradient is -epsilon p_i (q_i - pt).
//   listmle:     with pi the order by label descending (ties by position),
//                L_k = log sum_{m >= k} exp(s_{pi_m})  (a reverse log-add-exp scan; the
//                CPU takes lists of finite scores through their suffix max instead),
//                loss = sum_k w_{pi_k} (L_k - s_{pi_k}),
//                d loss / d s_{pi_j} = sum_{k <= j} w_{pi_k} exp(s_{pi_j} - L_k) - w_{pi_j}.
//                The sum is R_j exp(s_{pi_j} - L_j) with R_j = R_{j-1} exp(L_j - L_{j-1}) + w_{pi_j}:
//                every exponent is <= 0, no max-shift enters the gradient, so tied scores
//                get the exact gradient. PListMLE: w_{pi_k} times a weight of position k.
//   approx_ndcg: smooth rank r_i = 1 + sum_{j != i} sigmoid((s_j - s_i) / T),
//                loss = -sum_{i: r_i <= k} w_i G(y_i) D(r_i) / IDCG@k,
//                d loss / d s_m = (1/T) sum_{j != m} sigmoid'((s_j - s_m) / T) (a_j - a_m),
//                a_i = d loss / d r_i = -w_i G(y_i) D'(r_i) / IDCG@k (0 beyond k).
//   unique softmax (Zhu & Klabjan 2020): with a_i = w_i G(y_i) and lower_i = log sum over
//                the list's items j with y_j < y_i of exp(s_j) (-inf: none),
//                loss = sum_i a_i log(1 + exp(lower_i - s_i)) = -sum_i a_i log p_i,
//                p_i = e^{s_i} / (e^{s_i} + e^{lower_i});
//                d loss / d s_i = -a_i (1 - p_i) + sum_{k: y_k > y_i} a_k e^{s_i} / (e^{s_k} + e^{lower_k}).
//                Items in order of label descending, label groups h = 0, 1, ...; U_h =
//                log sum over groups >= h of exp(s) (a suffix log-sum-exp read at the group's
//                first item). The second sum is e^{s_i - U_h} Q_h with
//                Q_h = Q_{h-1} e^{U_h - U_{h-1}} + C_{h-1}, Q_0 = 0, C_g = sum_{k in g} a_k (1 - p_k):
//                every exponent <= 0 and Q_h <= sum a, so no max-shift enters the gradient.
#pragma once
#include <cmath>
#include <cstdint>

#include "fast_math.h"
#include "macros.h"

namespace rankops {

// log(e^a + e^b); exact when an operand is -inf (an empty sum); NaN if either is NaN, in
// either order (the CPU and CUDA scans pass their operands in different orders).
template <typename T>
RANKOPS_HD T log_add_exp(T a, T b) {
  if (a != a || b != b) return a + b;
  const T hi = a > b ? a : b;
  const T lo = a > b ? b : a;
  if (hi == -T(INFINITY)) return hi;
  if (lo == -T(INFINITY)) return hi;
  return hi + math::log1p_unit(math::exp_nonpositive(lo - hi));
}

// softmax's per-list factors from the target sums (t = w y): `scale` multiplies every t
// (1, or 1 / sum |t| with label_norm: |t| so that signed weights never divide by a sum
// near 0) and `mass` = scale * sum t weighs softmax(s) in the gradient. False when every
// t is 0: the list has no target, its loss and gradient are 0.
template <typename T>
RANKOPS_HD bool softmax_target_factors(T t_sum, T t_abs_sum, bool label_norm, T& scale, T& mass) {
  if (t_abs_sum == T(0)) return false;
  scale = label_norm ? T(1) / t_abs_sum : T(1);
  mass = t_sum * scale;
  return true;
}

// The gradient of item i of the softmax loss (with its poly-1 term when epsilon != 0):
// mass p - scale t - epsilon p (t / t_abs_sum - pt), p = softmax(s)_i.
template <typename T>
RANKOPS_HD T softmax_item_grad(T p, T t, T scale, T mass, T epsilon, T inv_abs_sum, T pt) {
  const T grad = mass * p - t * scale;
  return epsilon == T(0) ? grad : grad - epsilon * p * (t * inv_abs_sum - pt);
}

// Poly-1's pt from sum t p (a division: t / |t| is exactly +-1 for one item).
template <typename T>
RANKOPS_HD T poly1_mass(T tp_sum, T t_abs_sum) {
  return tp_sum / t_abs_sum;
}

// The epsilon poly-1 applies to a list of n items: none for a single item, whose loss is
// 0 like every loss's (its p is 1; q would be -1 for a negative weight, where Rax's
// normalised target gives +1 and 0), and whose gradient q - pt would only round.
template <typename T>
RANKOPS_HD T poly1_epsilon(T epsilon, int64_t n) {
  return n > 1 ? epsilon : T(0);
}

// The softmax loss's target of an item: w y, or with label_softmax (ListNet's top-one
// probabilities of the labels) w exp(y - y_max) / z, inv_z = 1 / sum_j exp(y_j - y_max).
template <typename T>
RANKOPS_HD T label_softmax_target(T w, T label_exp, T inv_z) {
  return w * label_exp * inv_z;  // label_exp = exp(y - y_max)
}

template <typename T>
RANKOPS_HD T softmax_target(T y, T w, bool label_softmax, T y_max, T inv_z) {
  return label_softmax ? label_softmax_target(w, math::exp_nonpositive(y - y_max), inv_z) : w * y;
}

// -log softmax(s)_i = lse - s_i with lse = m + log_sumexp (m the list's max), taken as
// (m - s_i) + log_sumexp: with |s| near 1e4 a float32 lse is rounded to ~1e-3, which the
// difference lse - s_i would keep; m - s_i is exact for nearby scores.
template <typename T>
RANKOPS_HD T softmax_neg_log_prob(T s, T m, T log_sumexp) {
  return (m - s) + log_sumexp;
}

// The shift a list's scores are taken relative to before a log-sum-exp scan (ListMLE): its
// max where finite, so the scan's values stay near 0 (float32 keeps their low bits);
// 0 where the max is +-inf or the list is all NaN, which leaves those cases as they were.
template <typename T>
RANKOPS_HD T finite_shift(T max_score) {
  return (max_score - max_score == T(0)) ? max_score : T(0);
}

// PListMLE (position-aware ListMLE, Lan et al. 2014): the term of label-order position r
// (0-based) of a list of n is weighted by alpha_r = (2^(n-r) - 1) / sum_q (2^(n-q) - 1).
// Numerator and denominator times 2^-n give (2^-r - 2^-n) / (2 - (n + 2) 2^-n), which
// never forms 2^n (inf past n = 1023 in double, 127 in float) and is exact in double.
enum class PositionWeight : int { None = 0, Exp2 = 1 };

template <typename T>
RANKOPS_HD T exp2_position_weight(int64_t r, int64_t n) {
  const double tail = std::exp2(-static_cast<double>(n));
  return static_cast<T>((std::exp2(-static_cast<double>(r)) - tail) /
                        (2.0 - (static_cast<double>(n) + 2.0) * tail));
}

// An item's weight at label-order position r: its own weight w times the position's.
template <typename T>
RANKOPS_HD T listmle_term_weight(T w, PositionWeight pw, int64_t r, int64_t n) {
  return pw == PositionWeight::Exp2 ? w * exp2_position_weight<T>(r, n) : w;
}

// ListMLE's forward scan R_j = R_{j-1} * decay_j + w_j as an associative operator on
// affine maps x -> x * a + b, so a parallel scan (CUDA) gives the same recurrence.
template <typename T>
struct Affine {
  T a, b;
};

template <typename T>
RANKOPS_HD Affine<T> compose(const Affine<T>& first, const Affine<T>& second) {
  return Affine<T>{first.a * second.a, first.b * second.a + second.b};
}

// sigmoid(z) and 1 - sigmoid(z), without cancellation, for any z.
template <typename T>
RANKOPS_HD void sigmoid_pair(T z, T& sig, T& one_minus_sig) {
  const T e = math::exp_nonpositive(z < T(0) ? z : -z);  // exp(-|z|) <= 1
  const T inv = T(1) / (T(1) + e);
  sig = z >= T(0) ? inv : e * inv;
  one_minus_sig = z >= T(0) ? e * inv : inv;
}

// sigmoid'(z) = sigmoid(z) (1 - sigmoid(z)) = e / (1 + e)^2 with e = exp(-|z|).
template <typename T>
RANKOPS_HD T sigmoid_slope(T z) {
  const T e = math::exp_nonpositive(z < T(0) ? z : -z);
  const T inv = T(1) / (T(1) + e);
  return e * inv * inv;
}

// ApproxNDCG per item: value = w G D(r) and a = d(-value / IDCG) / d r for a smooth rank
// r >= 1; both 0 when r > k (k <= 0: no cut-off).
template <typename T>
RANKOPS_HD void approx_ndcg_item(T weighted_gain, T rank, T k, T inv_idcg, T& value,
                                 T& dloss_drank) {
  if (k > T(0) && rank > k) {
    value = T(0);
    dloss_drank = T(0);
    return;
  }
  const T ln1p = log(T(1) + rank);
  const T ln2 = T(0.693147180559945309417);
  value = weighted_gain * ln2 / ln1p;  // w G / log2(1 + r)
  // D'(r) = -ln2 / ((1 + r) ln(1 + r)^2)
  dloss_drank = weighted_gain * inv_idcg * ln2 / ((T(1) + rank) * ln1p * ln1p);
}

// e^(a - b) for a <= b, with e^(a - b) = 1 where a == b (also both -inf or both +inf:
// the limit every caller here wants, where a - b would be NaN).
template <typename T>
RANKOPS_HD T exp_of_difference(T a, T b) {
  return math::exp_nonpositive(a == b ? T(0) : a - b);
}

// log(1 + e^x) without overflow or cancellation.
template <typename T>
RANKOPS_HD T softplus(T x) {
  if (x > T(0)) return x + math::log1p_unit(math::exp_nonpositive(-x));
  return math::log1p_unit(math::exp_nonpositive(x));
}

// Unique softmax, one item: a = w G(y), s its score, lower = log sum exp(s_j) over the
// items with a smaller label, has_lower = whether there are any (their scores may be
// -inf). term = a log(1 + e^(lower - s)) = -a log p, miss = a (1 - p) = a sigmoid(lower - s).
// An item of the lowest label group is alone in its softmax: p = 1, term = miss = 0.
template <typename T>
RANKOPS_HD void unique_softmax_item(T a, T s, T lower, bool has_lower, T& term, T& miss) {
  if (!has_lower || a == T(0)) {
    term = T(0);
    miss = T(0);
    return;
  }
  const T z = lower - s;
  term = a * softplus(z);
  T sig, one_minus_sig;
  sigmoid_pair(z, sig, one_minus_sig);
  miss = a * sig;
}

// The unique softmax gradient's recurrence over label groups as a scan over items (the
// CUDA kernel composes these in parallel, the CPU in sequence): the state (Q, C), Q the
// carried sum of the current group and C the sum of a (1 - p) over its items so far, maps
// to (alpha Q + beta C + gamma, delta C + eps). At a group's first item (decay =
// e^{U_h - U_{h-1}}; 1 for the first group): Q' = decay Q + C, C' = miss. At any other
// item: Q' = Q, C' = C + miss. Q after an item's map is the Q_h of its group. Maps of
// this form are closed under composition.
template <typename T>
struct GroupScanMap {
  T alpha, beta, gamma, delta, eps;
};

template <typename T>
RANKOPS_HD GroupScanMap<T> group_scan_identity() {
  return GroupScanMap<T>{T(1), T(0), T(0), T(1), T(0)};
}

template <typename T>
RANKOPS_HD GroupScanMap<T> group_scan_item(bool group_start, T decay, T miss) {
  return group_start ? GroupScanMap<T>{decay, T(1), T(0), T(0), miss}
                     : GroupScanMap<T>{T(1), T(0), T(0), T(1), miss};
}

// first, then second.
template <typename T>
RANKOPS_HD GroupScanMap<T> compose(const GroupScanMap<T>& first, const GroupScanMap<T>& second) {
  return GroupScanMap<T>{second.alpha * first.alpha,
                         second.alpha * first.beta + second.beta * first.delta,
                         second.alpha * first.gamma + second.beta * first.eps + second.gamma,
                         second.delta * first.delta, second.delta * first.eps + second.eps};
}

// The gradient of an item of group h: -a (1 - p) + e^{s - U_h} Q_h; q = the gamma of the
// composed map (the state starts at (0, 0)).
template <typename T>
RANKOPS_HD T unique_softmax_grad(T miss, T s, T group_lse, T q) {
  return q * exp_of_difference(s, group_lse) - miss;
}

}  // namespace rankops
