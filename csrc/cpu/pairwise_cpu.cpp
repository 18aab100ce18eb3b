// CPU kernel of the pairwise family (RankNet, hinge, soft 0-1; LambdaRank, LambdaLoss).
//
// Three passes, all O(N) memory:
//  1. per list: count the pairs y_i > y_j, rank the items (stable sort by score when
//     a rank-dependent weight or top-k needs it), gather the list in rank order into
//     flat buffers, compute 1/IDCG@k;
//  2. the pair loop, one task per list or, for long lists, per chunk of rows (rows of
//     about equal pair count, each chunk with its own gradient buffer);
//  3. per list: add the chunk buffers in fixed order and scatter the gradient back to
//     input order.
// A pair (i, j) is evaluated once, by row i = the higher-ranked item, and top-k keeps
// rows i < k only: every pair with an item ranked <= k, O(n*k) work. The chunking
// depends only on list sizes, so results do not depend on the number of threads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "../common/checks.h"
#include "../common/pair_dispatch.h"
#include "../common/pair_math.h"
#include "list_grad.h"
#include "list_utils.h"

namespace rankops {
namespace {

constexpr int64_t kPairsPerChunk = int64_t(1) << 22;
constexpr int64_t kMaxChunks = 32;

// Pairs evaluated by rows [0, r) of a list of n: row i meets the n-1-i items below it.
int64_t pairs_before_row(int64_t n, int64_t r) { return r * (n - 1) - r * (r - 1) / 2; }

// Rows [row_begin, row_end) of one list in rank order. Adds d loss / d s into grad
// (rank order) and returns the rows' loss.
template <PairFn F, PairWeight W, typename T>
T pair_rows(const T* s, const T* y, const T* w, const T* gain, const T* disc,
            const T* delta_disc, int64_t n, int64_t row_begin, int64_t row_end, T sigma,
            T margin, T mu, T inv_idcg, T* grad) {
  constexpr bool kUsesDelta = PairWeightTraits<W>::kUsesDelta;
  constexpr bool kUsesGain = PairWeightTraits<W>::kUsesNdcg;
  T total = 0;
  for (int64_t i = row_begin; i < row_end; ++i) {
    const PairItem<T> a{y[i], kUsesGain ? gain[i] : T(0), kUsesGain ? disc[i] : T(0)};
    const T si = s[i];
    const T wi = w[i];
    T row_grad = 0;
    T row_loss = 0;
    // Start at i+1 rounded down to a multiple of 8, masking the lanes j <= i: short rows
    // then run as whole vectors instead of a scalar remainder loop (3-4x on lists of ~16).
    const int64_t j0 = (i + 1) & ~int64_t(7);
#pragma omp simd reduction(+ : row_grad, row_loss)
    for (int64_t j = j0; j < n; ++j) {
      const T dy = a.label - y[j];
      const T m = T(dy > T(0)) - T(dy < T(0));  // +1: i above j, -1: j above i, 0: tie
      const T w_hi = dy > T(0) ? wi : w[j];
      const PairItem<T> b{y[j], kUsesGain ? gain[j] : T(0), kUsesGain ? disc[j] : T(0)};
      // delta_disc is readable down to index -8 (zero padding) for the masked lanes
      const T lam = pair_weight_of<W>(a, b, kUsesDelta ? delta_disc[j - i] : T(0), inv_idcg, mu);
      const T c = w_hi * lam * m * m * T(j > i);
      T value, slope;
      pair_fn_value_slope<F>(counted_difference(c, m, si, s[j]), sigma, margin, value, slope);
      row_loss += c * value;
      const T g = c * slope * m;  // d term / d s_i; d term / d s_j = -g
      row_grad += g;
      grad[j] -= g;
    }
    grad[i] += row_grad;
    total += row_loss;
  }
  return total;
}

struct Options {
  PairFn fn;
  PairWeight weight;
  Gain gain;
  int64_t k;  // 0: whole list
  double sigma, margin, mu;
};

template <typename scalar_t, typename T>
void pairwise_loss_kernel(const at::Tensor& scores, const at::Tensor& labels,
                          const at::Tensor& weights, const at::Tensor& offsets,
                          const Options& opt, at::Tensor& loss, at::Tensor& item_grad,
                          at::Tensor& num_pairs) {
  const int64_t B = offsets.size(0) - 1;
  const int64_t N = scores.size(0);
  const int64_t* off = offsets.data_ptr<int64_t>();
  const scalar_t* s_in = scores.data_ptr<scalar_t>();
  const T* y_in = labels.data_ptr<T>();
  const T* w_in = weights.defined() ? weights.data_ptr<T>() : nullptr;
  const bool use_ndcg = weight_uses_ndcg(opt.weight);
  const bool need_ranks = use_ndcg || opt.k > 0;
  const int64_t k = opt.k;

  int64_t max_n = 0;
  for (int64_t b = 0; b < B; ++b) max_n = std::max(max_n, off[b + 1] - off[b]);

  // D(r) for 0-based rank r and the ndcg2 term D(d) - D(d+1) for rank distance d.
  // (delta_table is read at rank distances -7..-1 by masked vector lanes: 8 zeros of padding.)
  std::vector<T> disc_table(max_n + 1, T(0)), delta_storage(max_n + 1 + 8, T(0));
  T* delta_table = delta_storage.data() + 8;
  if (use_ndcg) {
    for (int64_t r = 0; r <= max_n; ++r) disc_table[r] = rank_discount<T>(r, 0);
    for (int64_t d = 1; d <= max_n; ++d) delta_table[d] = ndcg2_delta<T>(d);
  }

  // Rank-order buffers, O(N).
  std::vector<T> rs(N), ry(N), rw(N), rgain(use_ndcg ? N : 0), rdisc(use_ndcg ? N : 0);
  std::vector<T> rgrad(N, T(0));
  std::vector<int64_t> order(N);
  std::vector<T> inv_idcg(B, T(0));
  std::vector<int64_t> pairs(B, 0);

  // Pass 1: per list preparation (radix sorts, the ideal DCG's partial sort), ~ n log n.
  std::vector<double> prep_cost(B);
  for (int64_t b = 0; b < B; ++b) {
    const double n = static_cast<double>(off[b + 1] - off[b]);
    prep_cost[b] = n * std::log2(2.0 + n);
  }
  cpu::parallel_by_cost(prep_cost, [&](int64_t b0, int64_t b1) {
    std::vector<double> wg;
    cpu::StableRankOrder<T> rank;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = off[b], n = off[b + 1] - off[b];
      int64_t* ord = order.data() + start;
      if (n >= 2) pairs[b] = cpu::count_ordered_pairs(y_in + start, n, rank, ord);
      for (int64_t r = 0; r < n; ++r) ord[r] = r;
      if (pairs[b] == 0) continue;
      if (need_ranks)
        rank(n, [&](int64_t i) { return static_cast<T>(s_in[start + i]); }, ord);
      for (int64_t r = 0; r < n; ++r) {
        const int64_t i = start + ord[r];
        rs[start + r] = static_cast<T>(s_in[i]);
        ry[start + r] = y_in[i];
        rw[start + r] = w_in ? w_in[i] : T(1);
      }
      if (!use_ndcg) continue;
      wg.resize(n);
      for (int64_t r = 0; r < n; ++r) {
        const T g = gain_of(ry[start + r], opt.gain);
        rgain[start + r] = g;
        rdisc[start + r] = (k == 0 || r < k) ? disc_table[r] : T(0);
        wg[r] = static_cast<double>(rw[start + r]) * static_cast<double>(g);
      }
      const double idcg = cpu::ideal_dcg(wg, k);
      inv_idcg[b] = idcg > 0.0 ? T(1.0 / idcg) : T(0);
    }
  });

  // Pass 2: the pairs, in tasks of rows.
  struct Task {
    int64_t list, row_begin, row_end;
    T* grad;  // rank-order gradient buffer of this task
  };
  std::vector<Task> tasks;
  std::vector<double> task_cost;
  std::vector<int64_t> first_task(B + 1, 0), chunk_base(B, -1);
  int64_t scratch_size = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = off[b + 1] - off[b];
    if (pairs[b] == 0) continue;
    const int64_t rows = (k > 0 && k < n - 1) ? k : n - 1;
    const int64_t total = pairs_before_row(n, rows);
    const int64_t chunks = std::min(kMaxChunks, (total + kPairsPerChunk - 1) / kPairsPerChunk);
    if (chunks > 1) {
      chunk_base[b] = scratch_size;
      scratch_size += chunks * n;
    }
  }
  std::vector<T> scratch(scratch_size, T(0));
  for (int64_t b = 0; b < B; ++b) {
    first_task[b] = static_cast<int64_t>(tasks.size());
    const int64_t start = off[b], n = off[b + 1] - off[b];
    if (pairs[b] == 0) continue;
    const int64_t rows = (k > 0 && k < n - 1) ? k : n - 1;
    const int64_t total = pairs_before_row(n, rows);
    if (chunk_base[b] < 0) {
      tasks.push_back({b, 0, rows, rgrad.data() + start});
      task_cost.push_back(static_cast<double>(total));
      continue;
    }
    const int64_t chunks = std::min(kMaxChunks, (total + kPairsPerChunk - 1) / kPairsPerChunk);
    int64_t row = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      // last row of the chunk: the first row whose prefix cost reaches (c+1)/chunks
      const int64_t target = total * (c + 1) / chunks;
      int64_t lo = row, hi = rows;
      while (lo < hi) {
        const int64_t mid = (lo + hi) / 2;
        if (pairs_before_row(n, mid) >= target) hi = mid; else lo = mid + 1;
      }
      const int64_t end = c + 1 == chunks ? rows : lo;
      tasks.push_back({b, row, end, scratch.data() + chunk_base[b] + c * n});
      task_cost.push_back(static_cast<double>(pairs_before_row(n, end) - pairs_before_row(n, row)));
      row = end;
    }
  }
  first_task[B] = static_cast<int64_t>(tasks.size());

  std::vector<T> task_loss(tasks.size(), T(0));
  const T sigma = T(opt.sigma), margin = T(opt.margin), mu = T(opt.mu);
  auto run_tasks = [&](auto fn_tag, auto weight_tag) {
    constexpr PairFn F = decltype(fn_tag)::value;
    constexpr PairWeight W = decltype(weight_tag)::value;
    cpu::parallel_by_cost(task_cost, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const Task& task = tasks[t];
        const int64_t start = off[task.list], n = off[task.list + 1] - start;
        task_loss[t] = pair_rows<F, W, T>(
            rs.data() + start, ry.data() + start, rw.data() + start,
            use_ndcg ? rgain.data() + start : nullptr, use_ndcg ? rdisc.data() + start : nullptr,
            delta_table, n, task.row_begin, task.row_end, sigma, margin, mu,
            inv_idcg[task.list], task.grad);
      }
    });
  };
  dispatch_pair_kernel(opt.fn, opt.weight, run_tasks);

  // Pass 3: per list, reduce chunks in fixed order and scatter to input order.
  T* loss_out = loss.data_ptr<T>();
  int64_t* pairs_out = num_pairs.data_ptr<int64_t>();
  T* grad_out = item_grad.numel() > 0 ? item_grad.data_ptr<T>() : nullptr;
  cpu::parallel_by_cost(prep_cost, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = off[b], n = off[b + 1] - off[b];
      T total = 0;
      for (int64_t t = first_task[b]; t < first_task[b + 1]; ++t) total += task_loss[t];
      loss_out[b] = total;
      pairs_out[b] = pairs[b];
      if (!grad_out) continue;
      if (chunk_base[b] >= 0) {
        const int64_t chunks = first_task[b + 1] - first_task[b];
        for (int64_t c = 0; c < chunks; ++c) {
          const T* part = scratch.data() + chunk_base[b] + c * n;
          for (int64_t r = 0; r < n; ++r) rgrad[start + r] += part[r];
        }
      }
      for (int64_t r = 0; r < n; ++r) grad_out[start + order[start + r]] = rgrad[start + r];
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> pairwise_loss_cpu(
    const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& offsets,
    const c10::optional<at::Tensor>& weights, c10::string_view pair_fn,
    c10::string_view pair_weight, double sigma, double margin, c10::optional<int64_t> k,
    double mu, c10::string_view gain, bool compute_grad) {
  check_list_inputs(scores, labels, offsets, weights);
  const auto off = offsets.contiguous();
  check_offsets_values_cpu(off, scores.size(0));
  check_top_k(k);
  Options opt{parse_pair_fn(std::string(pair_fn)), parse_pair_weight(std::string(pair_weight)),
              parse_gain(std::string(gain)), k.value_or(0), sigma, margin, mu};

  const auto acc = acc_dtype_of(scores.scalar_type());
  const auto s = scores.contiguous();
  const auto y = labels.to(acc).contiguous();
  const auto w = weights.has_value() ? weights->to(acc).contiguous() : at::Tensor();
  const int64_t B = off.size(0) - 1;
  auto loss = at::zeros({B}, scores.options().dtype(acc));
  auto num_pairs = at::zeros({B}, scores.options().dtype(at::kLong));
  auto item_grad = at::zeros({compute_grad ? scores.size(0) : 0}, scores.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "pairwise_loss_cpu",
                                  [&] {
                                    using T = at::opmath_type<scalar_t>;
                                    pairwise_loss_kernel<scalar_t, T>(s, y, w, off, opt, loss,
                                                                      item_grad, num_pairs);
                                  });
  return {loss, item_grad, num_pairs};
}

TORCH_LIBRARY_IMPL(rankops, CPU, m) {
  m.impl("pairwise_loss", &pairwise_loss_cpu);
  m.impl("pairwise_loss_backward", &scale_item_grad_cpu);
}

}  // namespace rankops
