// CPU kernels of the listwise family: softmax (ListNet, poly-1), ListMLE, unique softmax
// (ApproxNDCG: approx_ndcg_cpu.cpp).
//
// Each op returns (loss [B], item_grad [N] or [0]): the per-list loss and d loss_b / d s_i
// fused into the same pass; the *_backward ops scale item_grad by the incoming per-list
// gradient (list_grad.h). Memory is O(N); every sum runs in a fixed order that depends
// only on the list sizes, so results do not depend on the number of threads.
//  * softmax:     per list, a max, a sum of exp, a pass for the loss (and poly-1's sum of
//                 q p) that keeps each probability, and a pass for the gradient (ListNet's
//                 label softmax: a max and a sum of exp of the labels first);
//  * listmle:     per list, a stable sort by label (a radix sort beyond 64 items), the
//                 suffix log-sum-exps L_k through the suffix max (vector exps and logs
//                 around two cheap serial scans; the log-add-exp scan of listwise_math.h
//                 where a score is infinite or NaN) and a forward scan for the gradient;
//  * unique_softmax: ListMLE's label sort and suffix log-sum-exps, then one backward pass
//                 for the loss (each item's lower sum is the suffix at the next label
//                 group) and a forward scan over label groups for the gradient;
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../common/checks.h"
#include "../common/listwise_math.h"
#include "../common/pair_math.h"
#include "list_grad.h"
#include "list_utils.h"
#include "listwise_common.h"

namespace rankops {
namespace {

using listwise_cpu::linear_costs;
using listwise_cpu::prepare;
using listwise_cpu::run_by_cost;

// ---- softmax ----------------------------------------------------------------------

// sum t and sum |t| in blocks: float32 vector sums of 256 terms, added in double, so that
// n terms of 1e-5 each into one sum lose nothing measurable.
template <typename T>
void blocked_sums(const T* t, int64_t n, double& sum, double& abs_sum) {
  for (int64_t b = 0; b < n; b += 256) {
    const int64_t e = std::min<int64_t>(n, b + 256);
    T part = 0, part_abs = 0;
#pragma omp simd reduction(+ : part, part_abs)
    for (int64_t i = b; i < e; ++i) {
      part += t[i];
      part_abs += std::abs(t[i]);
    }
    sum += static_cast<double>(part);
    abs_sum += static_cast<double>(part_abs);
  }
}

template <typename scalar_t, typename T>
void softmax_kernel(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& weights,
                    const at::Tensor& offsets, bool label_norm, double poly_epsilon,
                    bool label_softmax, at::Tensor& loss, at::Tensor& item_grad) {
  const T list_epsilon = static_cast<T>(poly_epsilon);
  const int64_t B = offsets.size(0) - 1;
  const int64_t* off = offsets.data_ptr<int64_t>();
  const scalar_t* s_in = scores.data_ptr<scalar_t>();
  const T* y_in = labels.data_ptr<T>();
  const T* w_in = weights.defined() ? weights.data_ptr<T>() : nullptr;
  T* loss_out = loss.data_ptr<T>();
  T* grad_out = item_grad.numel() > 0 ? item_grad.data_ptr<T>() : nullptr;
  run_by_cost(linear_costs(off, B), [&](int64_t b0, int64_t b1) {
    std::vector<T> s, t;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = off[b], n = off[b + 1] - start;
      if (n == 0) continue;
      s.resize(n);
      t.resize(n);
      const T* y = y_in + start;
      const T* w = w_in ? w_in + start : nullptr;
      // The sums of n targets (and ListNet's sum of exps of the labels) in double: they add
      // many small terms into one, which float32 rounds by up to ~1e-4 on long lists (1
      // list of 65,536), and z and sum t scale the whole loss and gradient.
      T* tp = t.data();
      if (label_softmax) {  // one exp per label, kept for the targets
        T y_max = y[0];
        for (int64_t i = 1; i < n; ++i) y_max = y[i] > y_max ? y[i] : y_max;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) tp[i] = math::exp_nonpositive(y[i] - y_max);
        double z = 0, z_abs = 0;
        blocked_sums(tp, n, z, z_abs);
        const T inv_z = static_cast<T>(1.0 / z);
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) tp[i] = label_softmax_target(w ? w[i] : T(1), tp[i], inv_z);
      } else {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) tp[i] = y[i] * (w ? w[i] : T(1));
      }
      double tsum_d = 0, tabs_d = 0;
      blocked_sums(tp, n, tsum_d, tabs_d);
      T m = -T(INFINITY);
      for (int64_t i = 0; i < n; ++i) {
        s[i] = static_cast<T>(s_in[start + i]);
        m = s[i] > m ? s[i] : m;
      }
      const T tsum = static_cast<T>(tsum_d), tabs = static_cast<T>(tabs_d);
      T scale, mass;
      if (!softmax_target_factors(tsum, tabs, label_norm, scale, mass)) continue;
      const T epsilon = poly1_epsilon(list_epsilon, n);
      T* sp = s.data();
      T sumexp = 0;
#pragma omp simd reduction(+ : sumexp)
      for (int64_t i = 0; i < n; ++i) sumexp += math::exp_nonpositive(sp[i] - m);
      const T log_sumexp = std::log(sumexp);
      T total = 0;
      // the scores become p = softmax(s) (one exp per item, for the gradient), and poly-1's
      // pt = sum q p with q = t / sum |t| comes with the loss (unused when epsilon = 0)
      T pt = 0;
#pragma omp simd reduction(+ : total, pt)
      for (int64_t i = 0; i < n; ++i) {
        const T neg_log_p = softmax_neg_log_prob(sp[i], m, log_sumexp);
        total += tp[i] * neg_log_p;
        sp[i] = math::exp_nonpositive(-neg_log_p);
        pt += tp[i] * sp[i];
      }
      pt = poly1_mass(pt, tabs);
      loss_out[b] = total * scale + (epsilon != T(0) ? epsilon * (T(1) - pt) : T(0));
      if (!grad_out) continue;
      T* g = grad_out + start;
      const T inv_abs = T(1) / tabs;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i)
        g[i] = softmax_item_grad(sp[i], tp[i], scale, mass, epsilon, inv_abs, pt);
    }
  });
}

// ---- ListMLE ----------------------------------------------------------------------

// L_r = log sum_{m >= r} exp(rs_m) for finite scores, without a serial chain of
// log-add-exps (each waits for the previous one's exp and log): with the suffix max
// M_r = max_{m >= r} rs_m, S_r = sum_{m >= r} exp(rs_m - M_r) lies in [1, n - r] and
// S_r = exp(rs_r - M_r) + exp(M_{r+1} - M_r) S_{r+1}, so L_r = M_r + log S_r. The
// serial parts are a max and a multiply-add; the exps and logs run as vector loops.
// With the radix sort, 2-6x faster than the log-add-exp scan and comparison sort
// (benchmarks/RESULTS.md), and more accurate in float32 (no rounding chain through n logs).
template <typename T>
void suffix_log_sum_exp(const T* __restrict rs, int64_t n, T* __restrict lse, T* __restrict e,
                        T* __restrict f) {
  lse[n - 1] = rs[n - 1];
  for (int64_t r = n - 2; r >= 0; --r) lse[r] = rs[r] > lse[r + 1] ? rs[r] : lse[r + 1];
#pragma omp simd
  for (int64_t r = 0; r < n; ++r) e[r] = math::exp_nonpositive(rs[r] - lse[r]);
#pragma omp simd
  for (int64_t r = 0; r < n - 1; ++r) f[r] = math::exp_nonpositive(lse[r + 1] - lse[r]);
  T sum = e[n - 1];
  for (int64_t r = n - 2; r >= 0; --r) {
    sum = e[r] + f[r] * sum;
    e[r] = sum;
  }
#pragma omp simd
  for (int64_t r = 0; r < n; ++r) lse[r] += math::log_at_least_one(e[r]);
}

// Scores in some order, rs, relative to their max (in place: the losses use differences
// only; finite after the shift, except that scores FLT_MAX apart overflow to -inf there),
// and their suffix log-sum-exps lse[r] = log sum_{m >= r} exp(rs_m). e, f: scratch of n.
template <typename T>
void shifted_suffix_log_sum_exp(T* rs, int64_t n, T* lse, T* e, T* f) {
  T max_score = -T(INFINITY);
  for (int64_t r = 0; r < n; ++r) max_score = rs[r] > max_score ? rs[r] : max_score;
  const T shift = finite_shift(max_score);
  bool finite = true;
  for (int64_t r = 0; r < n; ++r) {
    rs[r] -= shift;
    finite = finite && rs[r] - rs[r] == T(0);
  }
  if (finite) {
    suffix_log_sum_exp(rs, n, lse, e, f);
  } else {  // +-inf or NaN scores: the log-add-exp scan takes their limits
    lse[n - 1] = rs[n - 1];
    for (int64_t r = n - 2; r >= 0; --r) lse[r] = log_add_exp(rs[r], lse[r + 1]);
  }
}

// The gradient's exps: decay[r] = exp(L_r - L_{r-1}) (0 for r = 0: R_0 = w_0 even where
// L_0 is infinite) and share[r] = exp(s_r - L_r).
template <typename T>
void grad_factors(const T* __restrict rs, const T* __restrict lse, int64_t n,
                  T* __restrict decay, T* __restrict share) {
  decay[0] = T(0);
#pragma omp simd
  for (int64_t r = 1; r < n; ++r) decay[r] = math::exp_nonpositive(lse[r] - lse[r - 1]);
#pragma omp simd
  for (int64_t r = 0; r < n; ++r) share[r] = math::exp_nonpositive(rs[r] - lse[r]);
}

template <typename scalar_t, typename T>
void listmle_kernel(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& weights,
                    const at::Tensor& offsets, PositionWeight position_weight, at::Tensor& loss,
                    at::Tensor& item_grad) {
  const int64_t B = offsets.size(0) - 1;
  const int64_t* off = offsets.data_ptr<int64_t>();
  const scalar_t* s_in = scores.data_ptr<scalar_t>();
  const T* y_in = labels.data_ptr<T>();
  const T* w_in = weights.defined() ? weights.data_ptr<T>() : nullptr;
  T* loss_out = loss.data_ptr<T>();
  T* grad_out = item_grad.numel() > 0 ? item_grad.data_ptr<T>() : nullptr;
  run_by_cost(linear_costs(off, B), [&](int64_t b0, int64_t b1) {
    cpu::StableRankOrder<T> label_order;
    std::vector<int64_t> order;
    std::vector<T> rs, rw, lse, e, f;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = off[b], n = off[b + 1] - start;
      if (n == 0) continue;
      order.resize(n);
      label_order(n, [&](int64_t i) { return y_in[start + i]; }, order.data());
      rs.resize(n);
      rw.resize(n);
      lse.resize(n);
      e.resize(n);
      f.resize(n);
      for (int64_t r = 0; r < n; ++r) {
        const int64_t i = start + order[r];
        rs[r] = static_cast<T>(s_in[i]);
        rw[r] = listmle_term_weight(w_in ? w_in[i] : T(1), position_weight, r, n);
      }
      shifted_suffix_log_sum_exp(rs.data(), n, lse.data(), e.data(), f.data());
      T total = 0;
      for (int64_t r = 0; r < n; ++r) total += rw[r] * (lse[r] - rs[r]);
      loss_out[b] = total;
      if (!grad_out) continue;
      // R_r = sum_{k <= r} w_k exp(L_r - L_k) = R_{r-1} exp(L_r - L_{r-1}) + w_r; the exps
      // first (a vector loop), then the multiply-add chain
      grad_factors(rs.data(), lse.data(), n, e.data(), f.data());
      T R = 0;
      for (int64_t r = 0; r < n; ++r) {
        R = R * e[r] + rw[r];
        grad_out[start + order[r]] = R * f[r] - rw[r];
      }
    }
  });
}

// ---- unique softmax ---------------------------------------------------------------

// Items per tile of the gradient's group scan: the CPU composes each tile's maps from the
// identity and then onto the carry of the tiles before, as the CUDA block does with its
// tiles of kThreads items, so the CPU tests run the composition the GPU relies on.
constexpr int64_t kGroupScanTile = 128;

template <typename scalar_t, typename T>
void unique_softmax_kernel(const at::Tensor& scores, const at::Tensor& labels,
                           const at::Tensor& weights, const at::Tensor& offsets, Gain gain,
                           at::Tensor& loss, at::Tensor& item_grad) {
  const int64_t B = offsets.size(0) - 1;
  const int64_t* off = offsets.data_ptr<int64_t>();
  const scalar_t* s_in = scores.data_ptr<scalar_t>();
  const T* y_in = labels.data_ptr<T>();
  const T* w_in = weights.defined() ? weights.data_ptr<T>() : nullptr;
  T* loss_out = loss.data_ptr<T>();
  T* grad_out = item_grad.numel() > 0 ? item_grad.data_ptr<T>() : nullptr;
  run_by_cost(linear_costs(off, B), [&](int64_t b0, int64_t b1) {
    cpu::StableRankOrder<T> label_order;
    std::vector<int64_t> order;
    std::vector<T> rs, ry, ra, lse, e, f;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = off[b], n = off[b + 1] - start;
      if (n < 2) continue;  // one item is alone in its softmax: 0
      order.resize(n);
      label_order(n, [&](int64_t i) { return y_in[start + i]; }, order.data());
      rs.resize(n);
      ry.resize(n);
      ra.resize(n);
      lse.resize(n);
      e.resize(n);
      f.resize(n);
      for (int64_t r = 0; r < n; ++r) {
        const int64_t i = start + order[r];
        rs[r] = static_cast<T>(s_in[i]);
        ry[r] = y_in[i];
        ra[r] = (w_in ? w_in[i] : T(1)) * gain_of(y_in[i], gain);
      }
      shifted_suffix_log_sum_exp(rs.data(), n, lse.data(), e.data(), f.data());
      // lower of the item at r = lse at the next group's first item; an item has lower
      // items unless its label is the list's smallest (the last one in this order).
      // e becomes miss = a (1 - p).
      T total = 0;
      int64_t next_group = n;
      for (int64_t r = n - 1; r >= 0; --r) {
        if (r + 1 < n && ry[r + 1] != ry[r]) next_group = r + 1;
        const bool has_lower = next_group < n;
        T term, miss;
        unique_softmax_item(ra[r], rs[r], has_lower ? lse[next_group] : -T(INFINITY), has_lower,
                            term, miss);
        total += term;
        e[r] = miss;
      }
      loss_out[b] = total;
      if (!grad_out) continue;
      GroupScanMap<T> carry = group_scan_identity<T>(), tile = carry;
      int64_t group = 0, previous_group = 0;
      for (int64_t r = 0; r < n; ++r) {
        if (r % kGroupScanTile == 0) {
          carry = compose(carry, tile);
          tile = group_scan_identity<T>();
        }
        const bool first = r == 0 || ry[r] != ry[r - 1];
        if (first) {
          previous_group = group;
          group = r;
        }
        const T decay = first && r > 0 ? exp_of_difference(lse[r], lse[previous_group]) : T(1);
        tile = compose(tile, group_scan_item(first, decay, e[r]));
        const T q = compose(carry, tile).gamma;
        grad_out[start + order[r]] = unique_softmax_grad(e[r], rs[r], lse[group], q);
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> softmax_loss_cpu(const at::Tensor& scores,
                                                    const at::Tensor& labels,
                                                    const at::Tensor& offsets,
                                                    const c10::optional<at::Tensor>& weights,
                                                    bool label_norm, double poly_epsilon,
                                                    bool label_softmax, bool compute_grad) {
  TORCH_CHECK(std::isfinite(poly_epsilon), "rankops: epsilon must be finite, got ", poly_epsilon);
  auto p = prepare(scores, labels, offsets, weights, compute_grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scores.scalar_type(),
                                  "softmax_loss_cpu", [&] {
                                    using T = at::opmath_type<scalar_t>;
                                    softmax_kernel<scalar_t, T>(p.scores, p.labels, p.weights,
                                                                p.offsets, label_norm,
                                                                poly_epsilon, label_softmax,
                                                                p.loss, p.item_grad);
                                  });
  return {p.loss, p.item_grad};
}

std::tuple<at::Tensor, at::Tensor> listmle_loss_cpu(const at::Tensor& scores,
                                                    const at::Tensor& labels,
                                                    const at::Tensor& offsets,
                                                    const c10::optional<at::Tensor>& weights,
                                                    c10::string_view position_weight,
                                                    bool compute_grad) {
  const PositionWeight pw = parse_position_weight(std::string(position_weight));
  auto p = prepare(scores, labels, offsets, weights, compute_grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scores.scalar_type(),
                                  "listmle_loss_cpu", [&] {
                                    using T = at::opmath_type<scalar_t>;
                                    listmle_kernel<scalar_t, T>(p.scores, p.labels, p.weights,
                                                                p.offsets, pw, p.loss,
                                                                p.item_grad);
                                  });
  return {p.loss, p.item_grad};
}

std::tuple<at::Tensor, at::Tensor> unique_softmax_loss_cpu(const at::Tensor& scores,
                                                           const at::Tensor& labels,
                                                           const at::Tensor& offsets,
                                                           const c10::optional<at::Tensor>& weights,
                                                           c10::string_view gain,
                                                           bool compute_grad) {
  const Gain g = parse_gain(std::string(gain));
  auto p = prepare(scores, labels, offsets, weights, compute_grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scores.scalar_type(),
                                  "unique_softmax_loss_cpu", [&] {
                                    using T = at::opmath_type<scalar_t>;
                                    unique_softmax_kernel<scalar_t, T>(p.scores, p.labels,
                                                                       p.weights, p.offsets, g,
                                                                       p.loss, p.item_grad);
                                  });
  return {p.loss, p.item_grad};
}

TORCH_LIBRARY_IMPL(rankops, CPU, m) {
  m.impl("softmax_loss", &softmax_loss_cpu);
  m.impl("softmax_loss_backward", &scale_item_grad_cpu);
  m.impl("listmle_loss", &listmle_loss_cpu);
  m.impl("listmle_loss_backward", &scale_item_grad_cpu);
  m.impl("unique_softmax_loss", &unique_softmax_loss_cpu);
  m.impl("unique_softmax_loss_backward", &scale_item_grad_cpu);
}

}  // namespace rankops
