// exp, log1p and log for the pair loops and the ListMLE scans.
//
// float (the accumulation type of float16/bfloat16/float32 inputs):
//   * on the GPU: the hardware's __expf / __logf (one MUFU op each);
//   * on the CPU: short branch-free polynomials (Cephes' expf/logf coefficients,
//     about 1 ulp on the ranges used here) that the compiler can vectorise; libm
//     calls would keep the pair loop scalar.
// double: the C library / CUDA libdevice versions, so float64 stays exact enough
// for gradcheck.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "macros.h"

namespace rankops {
namespace math {

RANKOPS_HD float bits_to_float(int32_t bits) {
#if RANKOPS_DEVICE_PASS
  return __int_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
#endif
}

RANKOPS_HD int32_t float_to_bits(float f) {
#if RANKOPS_DEVICE_PASS
  return __float_as_int(f);
#else
  int32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
#endif
}

// e^x for x <= 0 (callers pass -|z|); results below 2^-126 flush to 0.
RANKOPS_HD float exp_nonpositive(float x) {
#if RANKOPS_DEVICE_PASS
  return __expf(x);
#else
  x = x < -87.0f ? -87.0f : x;
  // x = n*ln2 + f, |f| <= ln2/2 (Cody-Waite split of ln2)
  // round to nearest by adding and removing 1.5 * 2^23 (vectorises, unlike libm)
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float f = x - n * 0.693359375f;
  f = f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  p = p * f * f + f + 1.0f;
  return p * bits_to_float((static_cast<int32_t>(n) + 127) << 23);
#endif
}

#if !RANKOPS_DEVICE_PASS
// log(2^e (1 + m)) for m in [sqrt(1/2) - 1, sqrt(2) - 1): Cephes' logf polynomial (host).
inline float log_of_parts(float m, float e) {
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y = y - 2.12194440e-4f * e - 0.5f * z;
  return m + y + 0.693359375f * e;
}
#endif

// log(1 + u) for u in [0, 1].
RANKOPS_HD float log1p_unit(float u) {
#if RANKOPS_DEVICE_PASS
  return log1pf(u);
#else
  const float w = 1.0f + u;  // in [1, 2]
  // w = 2^e * m with m in [sqrt(1/2), sqrt(2)): e is 0 or 1 here.
  const bool high = w > 1.41421356237f;
  const float e = high ? 1.0f : 0.0f;
  const float m = (high ? w * 0.5f : w) - 1.0f;
  const float log_w = log_of_parts(m, e);
  // 1 + u rounds: log(w) * u / (w - 1) recovers log1p's accuracy for small u.
  const float wm1 = w - 1.0f;
  return wm1 == 0.0f ? u : log_w * (u / wm1);
#endif
}

// log(x) for finite x >= 1 (ListMLE's scaled suffix sums, which lie in [1, n]); NaN, inf
// and x < 1 give wrong finite values on the CPU, so callers must stay in that domain.
RANKOPS_HD float log_at_least_one(float x) {
#if RANKOPS_DEVICE_PASS
  return __logf(x);
#else
  // x = 2^e * m with m in [sqrt(1/2), sqrt(2)), read from the bits (x is normal)
  const int32_t bits = float_to_bits(x);
  const int32_t e_half = ((bits >> 23) & 0xff) - 126;  // x = 2^e_half * [0.5, 1)
  const float half_m = bits_to_float((bits & 0x007fffff) | 0x3f000000);
  const bool low = half_m < 0.70710678118f;
  const float e = static_cast<float>(low ? e_half - 1 : e_half);
  const float m = (low ? half_m + half_m : half_m) - 1.0f;
  return log_of_parts(m, e);
#endif
}

RANKOPS_HD double exp_nonpositive(double x) { return exp(x); }
RANKOPS_HD double log1p_unit(double u) { return log1p(u); }
RANKOPS_HD double log_at_least_one(double x) { return log(x); }

}  // namespace math
}  // namespace rankops
