// CPU kernels of the listwise family: softmax (ListNet), ListMLE, unique softmax,
// ApproxNDCG.
//
// Each op returns (loss [B], item_grad [N] or [0]): the per-list loss and d loss_b / d s_i
// fused into the same pass; the *_backward ops scale item_grad by the incoming per-list
// gradient (list_grad.h). Memory is O(N); every sum runs in a fixed order that depends
// only on the list sizes, so results do not depend on the number of threads.
//  * softmax:     per list, a max, a sum of exp and one pass for loss and gradient (poly-1:
//                 one more sum, of q p, before it);
//  * listmle:     per list, a stable sort by label (a radix sort beyond 64 items), the
//                 suffix log-sum-exps L_k through the suffix max (vector exps and logs
//                 around two cheap serial scans; the log-add-exp scan of listwise_math.h
//                 where a score is infinite or NaN) and a forward scan for the gradient;
//  * unique_softmax: ListMLE's label sort and suffix log-sum-exps, then one backward pass
//                 for the loss (each item's lower sum is the suffix at the next label
//                 group) and a forward scan over label groups for the gradient;
//  * approx_ndcg: two O(n^2) pair passes, each unordered pair evaluated once per pass
//                 (row i = the earlier item updates itself and, through a column buffer,
//                 the later item j): smooth ranks first, then the gradient. Long lists
//                 are split into chunks of rows with private column buffers, reduced in
//                 chunk order, as in pairwise_cpu.cpp.
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

namespace rankops {
namespace {

constexpr int64_t kPairsPerChunk = int64_t(1) << 22;
constexpr int64_t kMaxChunks = 32;

// Total cost (items or pairs) below which a call runs on the calling thread: waking the
// thread pool costs more than the work, and on a loaded machine a parallel region waits
// for a descheduled worker (milliseconds). Results do not depend on the grouping.
constexpr double kInlineCost = 1 << 17;

template <typename Fn>
void run_by_cost(const std::vector<double>& costs, Fn fn) {
  double total = 0;
  for (double c : costs) total += c;
  const int64_t items = static_cast<int64_t>(costs.size());
  if (total < kInlineCost || at::get_num_threads() == 1 || at::in_parallel_region()) {
    if (items > 0) fn(int64_t(0), items);
    return;
  }
  cpu::parallel_by_cost(costs, fn);
}

std::vector<double> linear_costs(const int64_t* off, int64_t B) {
  std::vector<double> cost(B);
  for (int64_t b = 0; b < B; ++b) cost[b] = static_cast<double>(off[b + 1] - off[b]);
  return cost;
}

// ---- softmax ----------------------------------------------------------------------

template <typename scalar_t, typename T>
void softmax_kernel(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& weights,
                    const at::Tensor& offsets, bool label_norm, double poly_epsilon,
                    at::Tensor& loss, at::Tensor& item_grad) {
  const T epsilon = static_cast<T>(poly_epsilon);
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
      T m = -T(INFINITY), tsum = 0, tabs = 0;
      for (int64_t i = 0; i < n; ++i) {
        s[i] = static_cast<T>(s_in[start + i]);
        t[i] = y_in[start + i] * (w_in ? w_in[start + i] : T(1));
        m = s[i] > m ? s[i] : m;
        tsum += t[i];
        tabs += std::abs(t[i]);
      }
      T scale, mass;
      if (!softmax_target_factors(tsum, tabs, label_norm, scale, mass)) continue;
      T* sp = s.data();
      const T* tp = t.data();
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
      const T grad_epsilon = poly1_grad_epsilon(epsilon, n);
      const T inv_abs = T(1) / tabs;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i)
        g[i] = softmax_item_grad(sp[i], tp[i], scale, mass, grad_epsilon, inv_abs, pt);
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
                    const at::Tensor& offsets, at::Tensor& loss, at::Tensor& item_grad) {
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
        rw[r] = w_in ? w_in[i] : T(1);
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

// ---- ApproxNDCG -------------------------------------------------------------------

// Rows [row_begin, row_end) of the smooth-rank pass: adds sigmoid((s_j - s_i) / T) to
// rank[i] and sigmoid((s_i - s_j) / T) to rank[j] for every j > i.
template <typename T>
void smooth_rank_rows(const T* s, int64_t n, int64_t row_begin, int64_t row_end, T inv_t,
                      T* rank) {
  for (int64_t i = row_begin; i < row_end; ++i) {
    const T si = s[i];
    T row = 0;
#pragma omp simd reduction(+ : row)
    for (int64_t j = i + 1; j < n; ++j) {
      T sig, one_minus;
      sigmoid_pair((s[j] - si) * inv_t, sig, one_minus);
      row += sig;
      rank[j] += one_minus;
    }
    rank[i] += row;
  }
}

// Rows of the gradient pass: sigmoid'((s_j - s_i) / T) (a_j - a_i) goes to grad[i],
// its negative to grad[j] (the 1/T factor is applied once per item later).
template <typename T>
void smooth_rank_grad_rows(const T* s, const T* a, int64_t n, int64_t row_begin,
                           int64_t row_end, T inv_t, T* grad) {
  for (int64_t i = row_begin; i < row_end; ++i) {
    const T si = s[i], ai = a[i];
    T row = 0;
#pragma omp simd reduction(+ : row)
    for (int64_t j = i + 1; j < n; ++j) {
      const T d = sigmoid_slope((s[j] - si) * inv_t) * (a[j] - ai);
      row += d;
      grad[j] -= d;
    }
    grad[i] += row;
  }
}

// Short lists run both pair passes as full rows (every partner j of item i, as the CUDA
// owner threads do): twice the pair evaluations of the triangle, but each row is one
// vector reduction over a copy padded to whole vectors (masked lanes), with no scatter
// into the partners' sums and no scalar remainder, which is what rows this short are
// bound by. Measured (forward + gradient, 16,384 items, 1 thread, AVX2): n = 6 / 8 / 12 /
// 16 / 32 / 48 take 0.82 / 0.57 / 0.76 / 0.61 / 0.88 / 0.96 of the triangle's time;
// n = 4 takes 1.17 (one half-empty vector per row), so tiny lists keep the triangle.
constexpr int64_t kFullRowMinList = 6;
constexpr int64_t kFullRowMaxList = 48;
constexpr int64_t kFullRowLanes = 8;  // pad rows to a multiple of this (AVX2 floats)

bool full_rows(int64_t n) { return n >= kFullRowMinList && n <= kFullRowMaxList; }

// The list's scores (and a) copied to a zero-padded buffer of whole vectors.
template <typename T>
int64_t padded_copy(const T* x, int64_t n, T* out) {
  const int64_t width = (n + kFullRowLanes - 1) / kFullRowLanes * kFullRowLanes;
  for (int64_t j = 0; j < width; ++j) out[j] = j < n ? x[j] : T(0);
  return width;
}

// rank[i] = sum_{j != i} sigmoid((s_j - s_i) / T), the triangle's sums row by row.
template <typename T>
void smooth_rank_full_rows(const T* s, int64_t n, T inv_t, T* rank) {
  T sp[kFullRowMaxList + kFullRowLanes];
  const int64_t width = padded_copy(s, n, sp);
  for (int64_t i = 0; i < n; ++i) {
    const T si = sp[i];
    T row = 0;
#pragma omp simd reduction(+ : row)
    for (int64_t j = 0; j < width; ++j) {
      T sig, one_minus;
      sigmoid_pair((sp[j] - si) * inv_t, sig, one_minus);
      row += (j == i || j >= n) ? T(0) : sig;
    }
    rank[i] = row;
  }
}

// grad[m] = sum_{j != m} sigmoid'((s_j - s_m) / T) (a_j - a_m) (times 1/T later).
template <typename T>
void smooth_rank_grad_full_rows(const T* s, const T* a, int64_t n, T inv_t, T* grad) {
  T sp[kFullRowMaxList + kFullRowLanes], ap[kFullRowMaxList + kFullRowLanes];
  const int64_t width = padded_copy(s, n, sp);
  padded_copy(a, n, ap);
  for (int64_t m = 0; m < n; ++m) {
    const T sm = sp[m], am = ap[m];
    T row = 0;
#pragma omp simd reduction(+ : row)
    for (int64_t j = 0; j < width; ++j) {
      const T d = sigmoid_slope((sp[j] - sm) * inv_t) * (ap[j] - am);
      row += (j == m || j >= n) ? T(0) : d;
    }
    grad[m] = row;
  }
}

int64_t pairs_before_row(int64_t n, int64_t r) { return r * (n - 1) - r * (r - 1) / 2; }

template <typename scalar_t, typename T>
void approx_ndcg_kernel(const at::Tensor& scores, const at::Tensor& labels,
                        const at::Tensor& weights, const at::Tensor& offsets, double temperature,
                        int64_t k, Gain gain, at::Tensor& loss, at::Tensor& item_grad) {
  const int64_t B = offsets.size(0) - 1;
  const int64_t N = scores.size(0);
  const int64_t* off = offsets.data_ptr<int64_t>();
  const scalar_t* s_in = scores.data_ptr<scalar_t>();
  const T* y_in = labels.data_ptr<T>();
  const T* w_in = weights.defined() ? weights.data_ptr<T>() : nullptr;
  const T inv_t = T(1.0 / temperature);
  const bool want_grad = item_grad.numel() > 0;

  std::vector<T> s(N), wg(N), rank(N, T(0)), a(want_grad ? N : 0), grad(want_grad ? N : 0, T(0));
  std::vector<T> inv_idcg(B, T(0));

  // Pass 1: gather, gains, ideal DCG@k.
  std::vector<double> prep_cost(B);
  for (int64_t b = 0; b < B; ++b) {
    const double n = static_cast<double>(off[b + 1] - off[b]);
    prep_cost[b] = n * std::log2(2.0 + n);
  }
  run_by_cost(prep_cost, [&](int64_t b0, int64_t b1) {
    std::vector<double> ideal;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = off[b], n = off[b + 1] - start;
      ideal.resize(n);
      for (int64_t i = start; i < start + n; ++i) {
        s[i] = static_cast<T>(s_in[i]);
        wg[i] = (w_in ? w_in[i] : T(1)) * gain_of(y_in[i], gain);
        ideal[i - start] = static_cast<double>(wg[i]);
      }
      const double idcg = cpu::ideal_dcg(ideal, k);
      inv_idcg[b] = idcg > 0.0 ? T(1.0 / idcg) : T(0);
    }
  });

  // Tasks: the rows of each list with a non-zero ideal DCG, long lists in chunks.
  struct Task {
    int64_t list, row_begin, row_end, buffer;  // buffer: -1 = the list's own arrays
  };
  std::vector<Task> tasks;
  std::vector<double> task_cost;
  std::vector<int64_t> first_task(B + 1, 0), chunk_base(B, -1);
  int64_t scratch_size = 0;
  for (int64_t b = 0; b < B; ++b) {
    first_task[b] = static_cast<int64_t>(tasks.size());
    const int64_t n = off[b + 1] - off[b];
    if (n < 2 || inv_idcg[b] == T(0)) continue;
    const int64_t total = pairs_before_row(n, n - 1);
    const int64_t chunks = std::min(kMaxChunks, (total + kPairsPerChunk - 1) / kPairsPerChunk);
    if (chunks <= 1) {
      tasks.push_back({b, 0, n - 1, -1});
      task_cost.push_back(static_cast<double>(total));
      continue;
    }
    chunk_base[b] = scratch_size;
    scratch_size += chunks * n;
    int64_t row = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t target = total * (c + 1) / chunks;
      int64_t lo = row, hi = n - 1;
      while (lo < hi) {
        const int64_t mid = (lo + hi) / 2;
        if (pairs_before_row(n, mid) >= target) hi = mid; else lo = mid + 1;
      }
      const int64_t end = c + 1 == chunks ? n - 1 : lo;
      tasks.push_back({b, row, end, chunk_base[b] + c * n});
      task_cost.push_back(static_cast<double>(pairs_before_row(n, end) - pairs_before_row(n, row)));
      row = end;
    }
  }
  first_task[B] = static_cast<int64_t>(tasks.size());
  std::vector<T> scratch(scratch_size, T(0));

  // Adds the chunk buffers of list b into out, in chunk order, and clears them.
  auto reduce_chunks = [&](int64_t b, T* out) {
    if (chunk_base[b] < 0) return;
    const int64_t start = off[b], n = off[b + 1] - start;
    for (int64_t t = first_task[b]; t < first_task[b + 1]; ++t) {
      T* part = scratch.data() + tasks[t].buffer;
      for (int64_t r = 0; r < n; ++r) out[start + r] += part[r];
      std::fill(part, part + n, T(0));
    }
  };

  // Pass 2: smooth ranks.
  run_by_cost(task_cost, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const Task& task = tasks[t];
      const int64_t start = off[task.list], n = off[task.list + 1] - start;
      if (full_rows(n)) {
        smooth_rank_full_rows(s.data() + start, n, inv_t, rank.data() + start);
        continue;
      }
      T* buf = task.buffer < 0 ? rank.data() + start : scratch.data() + task.buffer;
      smooth_rank_rows(s.data() + start, n, task.row_begin, task.row_end, inv_t, buf);
    }
  });

  // Pass 3: per list, ranks -> loss and a_i = d loss / d r_i.
  T* loss_out = loss.data_ptr<T>();
  const T kk = T(k);
  run_by_cost(prep_cost, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      if (inv_idcg[b] == T(0)) continue;
      const int64_t start = off[b], n = off[b + 1] - start;
      reduce_chunks(b, rank.data());
      T dcg = 0;
      for (int64_t i = start; i < start + n; ++i) {
        T value, slope;
        approx_ndcg_item(wg[i], T(1) + rank[i], kk, inv_idcg[b], value, slope);
        dcg += value;
        if (want_grad) a[i] = slope;
      }
      loss_out[b] = -dcg * inv_idcg[b];
    }
  });
  if (!want_grad) return;

  // Pass 4: the gradient.
  run_by_cost(task_cost, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const Task& task = tasks[t];
      const int64_t start = off[task.list], n = off[task.list + 1] - start;
      if (full_rows(n)) {
        smooth_rank_grad_full_rows(s.data() + start, a.data() + start, n, inv_t,
                                   grad.data() + start);
        continue;
      }
      T* buf = task.buffer < 0 ? grad.data() + start : scratch.data() + task.buffer;
      smooth_rank_grad_rows(s.data() + start, a.data() + start, n, task.row_begin, task.row_end,
                            inv_t, buf);
    }
  });
  T* grad_out = item_grad.data_ptr<T>();
  run_by_cost(prep_cost, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      if (inv_idcg[b] == T(0)) continue;
      const int64_t start = off[b], n = off[b + 1] - start;
      reduce_chunks(b, grad.data());
      for (int64_t i = start; i < start + n; ++i) grad_out[i] = grad[i] * inv_t;
    }
  });
}

struct Prepared {
  at::Tensor scores, labels, weights, offsets, loss, item_grad;
};

Prepared prepare(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& offsets,
                 const c10::optional<at::Tensor>& weights, bool compute_grad) {
  check_list_inputs(scores, labels, offsets, weights);
  Prepared p;
  p.offsets = offsets.contiguous();
  check_offsets_values_cpu(p.offsets, scores.size(0));
  const auto acc = acc_dtype_of(scores.scalar_type());
  p.scores = scores.contiguous();
  p.labels = labels.to(acc).contiguous();
  p.weights = weights.has_value() ? weights->to(acc).contiguous() : at::Tensor();
  p.loss = at::zeros({p.offsets.size(0) - 1}, scores.options().dtype(acc));
  p.item_grad = at::zeros({compute_grad ? scores.size(0) : 0}, scores.options().dtype(acc));
  return p;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> softmax_loss_cpu(const at::Tensor& scores,
                                                    const at::Tensor& labels,
                                                    const at::Tensor& offsets,
                                                    const c10::optional<at::Tensor>& weights,
                                                    bool label_norm, double poly_epsilon,
                                                    bool compute_grad) {
  TORCH_CHECK(std::isfinite(poly_epsilon), "rankops: epsilon must be finite, got ", poly_epsilon);
  auto p = prepare(scores, labels, offsets, weights, compute_grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scores.scalar_type(),
                                  "softmax_loss_cpu", [&] {
                                    using T = at::opmath_type<scalar_t>;
                                    softmax_kernel<scalar_t, T>(p.scores, p.labels, p.weights,
                                                                p.offsets, label_norm,
                                                                poly_epsilon, p.loss, p.item_grad);
                                  });
  return {p.loss, p.item_grad};
}

std::tuple<at::Tensor, at::Tensor> listmle_loss_cpu(const at::Tensor& scores,
                                                    const at::Tensor& labels,
                                                    const at::Tensor& offsets,
                                                    const c10::optional<at::Tensor>& weights,
                                                    bool compute_grad) {
  auto p = prepare(scores, labels, offsets, weights, compute_grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scores.scalar_type(),
                                  "listmle_loss_cpu", [&] {
                                    using T = at::opmath_type<scalar_t>;
                                    listmle_kernel<scalar_t, T>(p.scores, p.labels, p.weights,
                                                                p.offsets, p.loss, p.item_grad);
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

std::tuple<at::Tensor, at::Tensor> approx_ndcg_loss_cpu(
    const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& offsets,
    const c10::optional<at::Tensor>& weights, double temperature, c10::optional<int64_t> k,
    c10::string_view gain, bool compute_grad) {
  TORCH_CHECK(temperature > 0.0, "rankops: temperature must be > 0, got ", temperature);
  check_top_k(k);
  const Gain g = parse_gain(std::string(gain));
  auto p = prepare(scores, labels, offsets, weights, compute_grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scores.scalar_type(),
                                  "approx_ndcg_loss_cpu", [&] {
                                    using T = at::opmath_type<scalar_t>;
                                    approx_ndcg_kernel<scalar_t, T>(
                                        p.scores, p.labels, p.weights, p.offsets, temperature,
                                        k.value_or(0), g, p.loss, p.item_grad);
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
  m.impl("approx_ndcg_loss", &approx_ndcg_loss_cpu);
  m.impl("approx_ndcg_loss_backward", &scale_item_grad_cpu);
}

}  // namespace rankops
