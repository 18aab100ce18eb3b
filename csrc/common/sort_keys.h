// Orderable sort keys: unsigned integers that sort like the floating values, so radix
// sorts (cub) and integer compares rank scores. Host and device, so the CPU emulation of
// the CUDA long-list path (csrc/cpu/pairwise_long_path_cpu.cpp) sorts the same keys.
// NaN becomes -inf (NaN ranks last, as on the CPU) and -0.0 becomes +0.0 (they compare
// equal on the CPU, so their order is decided by position).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "macros.h"

namespace rankops {

template <typename T>
struct OrderableKey;
template <>
struct OrderableKey<float> {
  using type = uint32_t;
};
template <>
struct OrderableKey<double> {
  using type = uint64_t;
};

RANKOPS_HD uint32_t orderable_key(float x) {
  if (x != x) x = -INFINITY;
  if (x == 0.0f) x = 0.0f;
#if RANKOPS_DEVICE_PASS
  const uint32_t u = __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
#endif
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

RANKOPS_HD uint64_t orderable_key(double x) {
  if (x != x) x = -INFINITY;
  if (x == 0.0) x = 0.0;
#if RANKOPS_DEVICE_PASS
  const uint64_t u = static_cast<uint64_t>(__double_as_longlong(x));
#else
  uint64_t u;
  std::memcpy(&u, &x, sizeof(u));
#endif
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

RANKOPS_HD double from_orderable_key(uint64_t k) {
  const uint64_t u = (k & 0x8000000000000000ull) ? (k & ~0x8000000000000000ull) : ~k;
#if RANKOPS_DEVICE_PASS
  return __longlong_as_double(static_cast<long long>(u));
#else
  double x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
#endif
}

}  // namespace rankops
