// CPU kernel of the ranking metrics (NDCG, DCG, MRR, AP, P, recall, ERR, success at any
// cut-offs; R-precision, ordered pair accuracy).
//
// Per list, one task of at::parallel_for (chunked by n log n):
//  1. order the items by score descending, ties by position (NaN as -inf); only the
//     prefix that the largest cut-off reads is sorted (partial sort: the keys
//     (rank key, index) are unique, so the order is the stable one);
//  2. one pass over that prefix accumulates running DCG, hits, sum of P@r, ERR;
//  3. OPA (whole list, sorted in full): the labels' dense ranks (a sort of the label
//     keys), then ordered_pair_counts' walk in rank order (csrc/common/pair_accuracy_math.h);
//  4. every requested (metric, k) reads the running sums at min(k, n), plus IDCG@k
//     (a second partial sort, of the gains) and the number of relevant items.
// ties="average" sorts the whole list (a tie group can straddle the cut-off) and scans
// it with tie_averaged_scan (csrc/common/metric_math.h) instead of step 2.
// Each list writes only its own column of the output, so the result does not depend
// on the number of threads. Arithmetic in float64; output in the accumulation dtype.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "../common/checks.h"
#include "../common/metric_math.h"
#include "../common/sort_keys.h"
#include "list_utils.h"
#include "../common/metric_args.h"

namespace rankops {
namespace {

template <typename scalar_t>
void ranking_metrics_kernel(const at::Tensor& scores, const at::Tensor& labels,
                            const at::Tensor& offsets, const MetricArgs& args, at::Tensor& values,
                            at::Tensor& defined) {
  using T = at::opmath_type<scalar_t>;
  const int64_t B = offsets.size(0) - 1;
  const int64_t M = static_cast<int64_t>(args.metrics.size());
  const int64_t* off = offsets.data_ptr<int64_t>();
  const scalar_t* s_in = scores.data_ptr<scalar_t>();
  const double* y_in = labels.data_ptr<double>();
  const bool need_idcg = args.max_ndcg_k >= 0;
  const double inv_two_pow_max = 1.0 / std::exp2(args.max_grade);
  const Gain gain = args.gain;

  std::vector<double> cost(B);
  for (int64_t b = 0; b < B; ++b) {
    const double n = static_cast<double>(off[b + 1] - off[b]);
    cost[b] = n * std::log2(2.0 + n);
  }

  // Output rows are metrics; each list writes column b. Computed in double, stored
  // in the output dtype below.
  std::vector<double> out(static_cast<size_t>(M * B), 0.0);
  std::vector<uint8_t> ok(static_cast<size_t>(M * B), 0);

  cpu::parallel_by_cost(cost, [&](int64_t b0, int64_t b1) {
    using Key = typename OrderableKey<T>::type;
    std::vector<uint64_t> packed;                   // top-k selection, float keys
    std::vector<std::pair<Key, int64_t>> keyed;     // and double keys
    std::vector<int64_t> order;
    cpu::StableRankOrder<T> rank;
    std::vector<double> ideal;
    std::vector<double> idcg_prefix;
    std::vector<MetricPrefix> prefix;
    std::vector<Key> sorted_keys;      // ties="average": the groups
    std::vector<double> err_scratch;   // and ERR's recurrences
    std::vector<std::pair<uint64_t, int64_t>> by_label;  // OPA: (label key, item)
    std::vector<int64_t> label_rank, rank_tree;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = off[b], n = off[b + 1] - off[b];
      if (n == 0) continue;  // no relevant item: every metric 0 and undefined
      const double* y = y_in + start;

      double num_relevant = 0.0;
      bool any_gain = false;
      for (int64_t i = 0; i < n; ++i) {
        num_relevant += y[i] >= args.threshold ? 1.0 : 0.0;
        any_gain = any_gain || y[i] > 0.0;
      }

      // 1. stable order of the prefix the cut-offs read: the whole list through the
      // radix sort (insertion sort up to 64 items), or a partial sort for a top few
      const int64_t top = args.max_k == 0 ? n : std::min(args.max_k, n);
      order.resize(n);
      if (top == n || n <= 64 || args.average_ties) {
        rank(n, [&](int64_t i) { return static_cast<T>(s_in[start + i]); }, order.data());
      } else {
        // (rank key, index) as one integer (float keys, lists below 2^32 items) or an
        // integer pair: ascending = by score descending, NaN as -inf, -0.0 tied with +0.0,
        // ties by index, the radix sort's order; a partial (heap) sort of the top
        auto key_of = [&](int64_t i) { return ~orderable_key(static_cast<T>(s_in[start + i])); };
        if (sizeof(Key) == 4 && n <= int64_t(0xffffffff)) {
          packed.resize(n);
          for (int64_t i = 0; i < n; ++i)
            packed[i] = (static_cast<uint64_t>(key_of(i)) << 32) | static_cast<uint64_t>(i);
          std::partial_sort(packed.begin(), packed.begin() + top, packed.end());
          for (int64_t p = 0; p < top; ++p) order[p] = static_cast<int64_t>(packed[p] & 0xffffffffu);
        } else {
          keyed.resize(n);
          for (int64_t i = 0; i < n; ++i) keyed[i] = {key_of(i), i};
          std::partial_sort(keyed.begin(), keyed.begin() + top, keyed.end());
          for (int64_t p = 0; p < top; ++p) order[p] = keyed[p].second;
        }
      }

      // 2. running sums over the prefix; prefix[p] = sums of the first p items
      prefix.assign(top + 1, MetricPrefix{});
      if (args.average_ties) {
        sorted_keys.resize(n);
        for (int64_t p = 0; p < n; ++p) sorted_keys[p] = orderable_key(static_cast<T>(s_in[start + order[p]]));
        err_scratch.resize(args.needs_err ? 2 * (top + 2) : 0);
        tie_averaged_scan(
            n, top, [&](int64_t p) { return sorted_keys[p] == sorted_keys[p - 1]; },
            [&](int64_t p) { return y[order[p]]; }, gain, args.threshold, inv_two_pow_max,
            args.needs_err ? err_scratch.data() : nullptr,
            [&](int64_t p, const MetricPrefix& run) { prefix[p + 1] = run; });
      } else {
        MetricPrefix run;
        for (int64_t p = 0; p < top; ++p) {
          const double yi = y[order[p]];
          run.add(p, gain_of(yi, gain), yi >= args.threshold, err_probability(yi, inv_two_pow_max));
          prefix[p + 1] = run;
        }
      }

      // ideal DCG at every position up to the largest NDCG cut-off
      if (need_idcg) {
        const int64_t itop = args.max_ndcg_k == 0 ? n : std::min(args.max_ndcg_k, n);
        ideal.resize(n);
        for (int64_t i = 0; i < n; ++i) ideal[i] = gain_of(y[i], gain);
        // a heap (also bounded with NaN gains from validate=False, where std::sort is not)
        std::partial_sort(ideal.begin(), ideal.begin() + itop, ideal.end(), std::greater<double>());
        idcg_prefix.assign(itop + 1, 0.0);
        for (int64_t p = 0; p < itop; ++p) idcg_prefix[p + 1] = idcg_prefix[p] + ideal[p] * discount_at(p);
      }

      // 3. ordered pairs (OPA asks for k = 0, so order holds the whole list)
      PairCounts pairs;
      if (args.needs_opa) {
        by_label.resize(n);
        for (int64_t i = 0; i < n; ++i) by_label[i] = {orderable_key(y[i]), i};
        std::sort(by_label.begin(), by_label.end());
        label_rank.resize(n);
        int64_t twice_pairs = 0;
        const int64_t num_ranks = dense_label_ranks(
            n, [&](int64_t q) { return by_label[q].first; },
            [&](int64_t q, int64_t r) { label_rank[by_label[q].second] = r; }, &twice_pairs);
        if (twice_pairs > 0) {
          rank_tree.assign(num_ranks, 0);
          pairs = ordered_pair_counts(
              n, num_ranks, twice_pairs,
              [&](int64_t p) { return args.average_ties && sorted_keys[p] == sorted_keys[p - 1]; },
              [&](int64_t p) { return label_rank[order[p]]; }, rank_tree.data());
        }
      }

      // 4. every (metric, k)
      for (int64_t j = 0; j < M; ++j) {
        const Metric m = args.metrics[j];
        const int64_t k = args.ks[j];
        const int64_t cut = metric_cut(m, k, n, num_relevant);
        const double idcg = m == Metric::Ndcg ? idcg_prefix[cut] : 0.0;
        out[j * B + b] = metric_value(m, k, n, prefix[cut], idcg, num_relevant, pairs, args.precision_by_k);
        ok[j * B + b] = metric_defined(m, any_gain, num_relevant, pairs);
      }
    }
  });

  auto out_t = at::from_blob(out.data(), {M, B}, at::TensorOptions().dtype(at::kDouble));
  values.copy_(out_t);
  auto ok_t = at::from_blob(ok.data(), {M, B}, at::TensorOptions().dtype(at::kByte));
  defined.copy_(ok_t);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> ranking_metrics_cpu(
    const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& offsets,
    c10::ArrayRef<c10::string_view> metrics, at::IntArrayRef ks, c10::string_view gain,
    double relevance_threshold, double max_grade, c10::string_view precision_divide_by,
    c10::string_view ties) {
  check_list_inputs(scores, labels, offsets, c10::nullopt);
  const auto off = offsets.contiguous();
  check_offsets_values_cpu(off, scores.size(0));
  const MetricArgs args =
      parse_metric_args(metrics, ks, gain, relevance_threshold, max_grade, precision_divide_by, ties);
  const int64_t B = off.size(0) - 1;
  const int64_t M = static_cast<int64_t>(args.metrics.size());
  const auto acc = acc_dtype_of(scores.scalar_type());
  auto values = at::zeros({M, B}, scores.options().dtype(acc));
  auto defined = at::zeros({M, B}, scores.options().dtype(at::kBool));
  if (M == 0 || B == 0) return {values, defined};
  const auto s = scores.contiguous();
  const auto y = labels.to(at::kDouble).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.scalar_type(), "ranking_metrics_cpu",
                                  [&] { ranking_metrics_kernel<scalar_t>(s, y, off, args, values, defined); });
  return {values, defined};
}

TORCH_LIBRARY_IMPL(rankops, CPU, m) { m.impl("ranking_metrics", &ranking_metrics_cpu); }

}  // namespace rankops
