// Runtime (pair function, pair weight) -> compile-time kernel instance, for every
// pairwise backend: body(fn_tag, weight_tag) is called with std::integral_constant tags,
// so each of the 3 x 5 combinations is its own specialised loop.
#pragma once
#include <type_traits>

#include "pair_math.h"

namespace rankops {

template <typename Body>
void dispatch_pair_kernel(PairFn fn, PairWeight weight, Body&& body) {
  auto with_weight = [&](auto fn_tag) {
    using P = PairWeight;
    switch (weight) {
      case P::None: return body(fn_tag, std::integral_constant<P, P::None>{});
      case P::LabelDiff: return body(fn_tag, std::integral_constant<P, P::LabelDiff>{});
      case P::Ndcg: return body(fn_tag, std::integral_constant<P, P::Ndcg>{});
      case P::Ndcg2: return body(fn_tag, std::integral_constant<P, P::Ndcg2>{});
      case P::Ndcg2pp: return body(fn_tag, std::integral_constant<P, P::Ndcg2pp>{});
    }
  };
  switch (fn) {
    case PairFn::Logistic: return with_weight(std::integral_constant<PairFn, PairFn::Logistic>{});
    case PairFn::Hinge: return with_weight(std::integral_constant<PairFn, PairFn::Hinge>{});
    case PairFn::SoftZeroOne:
      return with_weight(std::integral_constant<PairFn, PairFn::SoftZeroOne>{});
  }
}

}  // namespace rankops
