// Host-side parsing and checks of the ranking_metrics arguments, shared by the CPU and
// CUDA kernels. The Python layer validates first; these guard direct torch.ops calls.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "checks.h"
#include "metric_math.h"

namespace rankops {

struct MetricArgs {
  std::vector<Metric> metrics;
  std::vector<int64_t> ks;  // 0: whole list
  Gain gain;
  double threshold;
  double max_grade;
  bool precision_by_k;
  bool average_ties;   // ties="average": expected values over the orders of tie groups
  bool needs_err;      // an ERR metric is requested (ties="average" then runs its recurrences)
  bool needs_opa;      // OPA is requested (the labels' dense ranks and the pair counts)
  int64_t max_k;       // largest cut-off any metric reads (0: whole list)
  int64_t max_ndcg_k;  // same over the NDCG metrics; -1: no NDCG requested
};

inline Metric parse_metric(const std::string& s) {
  if (s == "ndcg") return Metric::Ndcg;
  if (s == "dcg") return Metric::Dcg;
  if (s == "mrr") return Metric::Mrr;
  if (s == "ap") return Metric::Ap;
  if (s == "precision") return Metric::Precision;
  if (s == "recall") return Metric::Recall;
  if (s == "err") return Metric::Err;
  if (s == "success") return Metric::Success;
  if (s == "rprec") return Metric::RPrecision;
  if (s == "opa") return Metric::Opa;
  TORCH_CHECK(false, "rankops: metrics must be among 'ndcg', 'dcg', 'mrr', 'ap', 'precision', "
              "'recall', 'err', 'success', 'rprec', 'opa', got '", s, "'");
}

inline MetricArgs parse_metric_args(c10::ArrayRef<c10::string_view> metrics, at::IntArrayRef ks,
                                    c10::string_view gain, double threshold, double max_grade,
                                    c10::string_view precision_divide_by, c10::string_view ties) {
  TORCH_CHECK(metrics.size() == ks.size(), "rankops: metrics and ks must have one entry each, got ",
              metrics.size(), " and ", ks.size());
  MetricArgs a;
  a.gain = parse_gain(std::string(gain));
  a.threshold = threshold;
  TORCH_CHECK(std::isfinite(max_grade) && max_grade >= 0.0,
              "rankops: max_grade must be a finite number >= 0, got ", max_grade);
  a.max_grade = max_grade;
  const std::string div(precision_divide_by);
  TORCH_CHECK(div == "min_k_n" || div == "k",
              "rankops: precision_divide_by must be 'min_k_n' or 'k', got '", div, "'");
  a.precision_by_k = div == "k";
  const std::string tie_rule(ties);
  TORCH_CHECK(tie_rule == "position" || tie_rule == "average",
              "rankops: ties must be 'position' or 'average', got '", tie_rule, "'");
  a.average_ties = tie_rule == "average";
  a.max_k = 0;
  a.max_ndcg_k = -1;
  a.needs_err = false;
  a.needs_opa = false;
  bool whole = false;
  for (size_t j = 0; j < metrics.size(); ++j) {
    const Metric m = parse_metric(std::string(metrics[j]));
    const int64_t k = ks[j];
    TORCH_CHECK(k >= 0, "rankops: ks must be >= 1, or 0 for the whole list, got ", k);
    TORCH_CHECK(m != Metric::RPrecision || k == 0,
                "rankops: rprec has no cut-off (it reads the first R items), got k = ", k);
    TORCH_CHECK(m != Metric::Opa || k == 0,
                "rankops: opa has no cut-off (it counts the pairs of the whole list), got k = ", k);
    a.metrics.push_back(m);
    a.ks.push_back(k);
    a.needs_err = a.needs_err || m == Metric::Err;
    a.needs_opa = a.needs_opa || m == Metric::Opa;
    whole = whole || k == 0;
    a.max_k = std::max(a.max_k, k);
    if (m == Metric::Ndcg)
      a.max_ndcg_k = (k == 0 || a.max_ndcg_k == 0) ? 0 : std::max(a.max_ndcg_k, k);
  }
  if (whole) a.max_k = 0;
  return a;
}

}  // namespace rankops
