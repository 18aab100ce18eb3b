// What the CPU kernels of the listwise family share (listwise_cpu.cpp: softmax, ListMLE,
// unique softmax; approx_ndcg_cpu.cpp): the dispatch of lists to threads by cost and the
// preparation of an op's inputs and outputs.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <vector>

#include "../common/checks.h"
#include "list_utils.h"

namespace rankops {
namespace listwise_cpu {

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

inline std::vector<double> linear_costs(const int64_t* off, int64_t B) {
  std::vector<double> cost(B);
  for (int64_t b = 0; b < B; ++b) cost[b] = static_cast<double>(off[b + 1] - off[b]);
  return cost;
}

// Inputs made contiguous (labels and weights in the accumulation type), offsets checked,
// and the outputs: loss [B] and item_grad [N] (or [0] without compute_grad), zeroed.
struct Prepared {
  at::Tensor scores, labels, weights, offsets, loss, item_grad;
};

inline Prepared prepare(const at::Tensor& scores, const at::Tensor& labels,
                        const at::Tensor& offsets, const c10::optional<at::Tensor>& weights,
                        bool compute_grad) {
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

}  // namespace listwise_cpu
}  // namespace rankops
