// CPU kernel of ApproxNDCG (listwise family; the others are in listwise_cpu.cpp): two
// O(n^2) pair passes, each unordered pair evaluated once per pass (row i = the earlier item
// updates itself and, through a column buffer, the later item j): smooth ranks first, then
// the gradient. Long lists are split into chunks of rows with private column buffers,
// reduced in chunk order, as in pairwise_cpu.cpp. Returns (loss [B], item_grad [N] or [0]),
// the gradient fused into the forward; the backward scales it (list_grad.h). Every sum runs
// in a fixed order that depends only on the list sizes, so results do not depend on the
// number of threads.
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

using listwise_cpu::prepare;
using listwise_cpu::run_by_cost;

constexpr int64_t kPairsPerChunk = int64_t(1) << 22;
constexpr int64_t kMaxChunks = 32;

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

}  // namespace

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
  m.impl("approx_ndcg_loss", &approx_ndcg_loss_cpu);
  m.impl("approx_ndcg_loss_backward", &scale_item_grad_cpu);
}

}  // namespace rankops
