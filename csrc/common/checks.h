// Argument checks shared by every op and both backends. Each message names the
// argument, as the Python layer does; the Python wrappers raise ValueError/TypeError
// before these are reached, so these guard direct torch.ops calls.
#pragma once
#include <ATen/ATen.h>

#include <string>

#include "listwise_math.h"
#include "pair_math.h"

namespace rankops {

inline void check_list_inputs(const at::Tensor& scores, const at::Tensor& labels,
                              const at::Tensor& offsets,
                              const c10::optional<at::Tensor>& weights) {
  TORCH_CHECK(scores.dim() == 1, "rankops: scores must be 1-D (packed), got ", scores.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(scores.scalar_type()),
              "rankops: scores must be a floating tensor, got ", scores.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == scores.size(0),
              "rankops: labels must be 1-D with the length of scores (", scores.size(0),
              "), got shape ", labels.sizes());
  TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) >= 1,
              "rankops: offsets must be 1-D with B+1 >= 1 entries, got shape ", offsets.sizes());
  TORCH_CHECK(offsets.scalar_type() == at::kLong, "rankops: offsets must be int64, got ",
              offsets.scalar_type());
  TORCH_CHECK(labels.device() == scores.device() && offsets.device() == scores.device(),
              "rankops: scores, labels and offsets must be on one device, got ", scores.device(),
              ", ", labels.device(), ", ", offsets.device());
  if (weights.has_value()) {
    TORCH_CHECK(weights->dim() == 1 && weights->size(0) == scores.size(0),
                "rankops: weights must be 1-D with the length of scores, got shape ",
                weights->sizes());
    TORCH_CHECK(weights->device() == scores.device(),
                "rankops: weights must be on the device of scores");
  }
}

// k of a top-k cut-off: None (the whole list) or >= 1.
inline void check_top_k(const c10::optional<int64_t>& k) {
  TORCH_CHECK(!k.has_value() || *k >= 1, "rankops: k must be >= 1 (or None), got ", k.value_or(0));
}

// Offsets values (CPU tensors only: on CUDA this would cost a host sync, so the
// Python layer validates there).
inline void check_offsets_values_cpu(const at::Tensor& offsets, int64_t n_items) {
  const int64_t* o = offsets.data_ptr<int64_t>();
  const int64_t B = offsets.size(0) - 1;
  TORCH_CHECK(o[0] == 0, "rankops: offsets must start at 0, got ", o[0]);
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(o[b + 1] >= o[b], "rankops: offsets must be non-decreasing (offsets[", b + 1,
                "] = ", o[b + 1], " < offsets[", b, "] = ", o[b], ")");
  }
  TORCH_CHECK(o[B] == n_items, "rankops: offsets must end at N = ", n_items, ", got ", o[B]);
}

inline PairFn parse_pair_fn(const std::string& s) {
  if (s == "logistic") return PairFn::Logistic;
  if (s == "hinge") return PairFn::Hinge;
  if (s == "soft_zero_one") return PairFn::SoftZeroOne;
  TORCH_CHECK(false, "rankops: pair_fn must be 'logistic', 'hinge' or 'soft_zero_one', got '", s,
              "'");
}

inline PairWeight parse_pair_weight(const std::string& s) {
  if (s == "none") return PairWeight::None;
  if (s == "label_diff") return PairWeight::LabelDiff;
  if (s == "ndcg") return PairWeight::Ndcg;
  if (s == "ndcg2") return PairWeight::Ndcg2;
  if (s == "ndcg2pp") return PairWeight::Ndcg2pp;
  TORCH_CHECK(false,
              "rankops: weight must be 'none', 'label_diff', 'ndcg', 'ndcg2' or 'ndcg2pp', got '",
              s, "'");
}

inline PositionWeight parse_position_weight(const std::string& s) {
  if (s == "none") return PositionWeight::None;
  if (s == "exp2") return PositionWeight::Exp2;
  TORCH_CHECK(false, "rankops: position_weight must be 'none' or 'exp2', got '", s, "'");
}

inline Gain parse_gain(const std::string& s) {
  if (s == "exp2") return Gain::Exp2;
  if (s == "linear") return Gain::Linear;
  TORCH_CHECK(false, "rankops: gain must be 'exp2' or 'linear', got '", s, "'");
}

// Accumulation dtype: float32 for float16/bfloat16/float32, float64 for float64.
inline at::ScalarType acc_dtype_of(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace rankops
