// Vectorisable exp and log for the CPU epilogues of info_nce.
//
// glibc's expf/logf are scalar calls unless the whole build uses -ffast-math, so the loops over a
// tile would not vectorise. These are branch-free polynomial versions (Cody-Waite reduction, bit
// manipulation for the power of two) that GCC turns into SIMD code in every DIVA_CPU_CLONES clone.
//
// NB: accuracy: vexp within 2 ulp (float: cephes' degree-5 polynomial, double: Taylor to r^13 on
// |r| <= ln2/2); vlog within 2 ulp for positive normal inputs (float: cephes' polynomial, double:
// the atanh series to f^23). Ranges: vexp returns exactly 0 below the smallest normal result
// (x < -87.3 in float, x < -708 in double) instead of a denormal, and saturates above
// (x > 88.3 / 709): callers only pass x <= 0 (shifted by a running maximum) or bounded values.
// vlog expects finite x > 0 (callers clamp away from 0 first).
#pragma once

#include <bit>
#include <cstdint>

#include "diva_ext/cpu/simd.h"

namespace diva_ext::cpu {

DIVA_ALWAYS_INLINE float vexp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const bool underflow = x < -87.3f;
  float xc = x < -87.3f ? -87.3f : x;
  xc = xc > 88.3f ? 88.3f : xc;
  const float shifted = xc * kLog2e + kMagic;
  const float kf = shifted - kMagic;  // round(x / ln2)
  const std::int32_t ki = std::bit_cast<std::int32_t>(shifted) - std::bit_cast<std::int32_t>(kMagic);
  float r = xc - kf * kLn2Hi;
  r = r - kf * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * (r * r) + r + 1.0f;
  const float scale = std::bit_cast<float>((ki + 127) << 23);
  const float y = er * scale;
  return underflow ? 0.0f : y;
}

DIVA_ALWAYS_INLINE double vexp(double x) {
  constexpr double kLog2e = 1.4426950408889634074;
  constexpr double kLn2Hi = 6.93145751953125e-1;
  constexpr double kLn2Lo = 1.42860682030941723212e-6;
  constexpr double kMagic = 6755399441055744.0;  // 1.5 * 2^52
  const bool underflow = x < -708.0;
  double xc = x < -708.0 ? -708.0 : x;
  xc = xc > 709.0 ? 709.0 : xc;
  const double shifted = xc * kLog2e + kMagic;
  const double kf = shifted - kMagic;
  const std::int64_t ki = std::bit_cast<std::int64_t>(shifted) - std::bit_cast<std::int64_t>(kMagic);
  double r = xc - kf * kLn2Hi;
  r = r - kf * kLn2Lo;
  // Taylor series of exp(r) - 1 - r, Horner form, r^2 / 2 ... r^13 / 13!.
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  const double er = p * (r * r) + r + 1.0;
  const double scale = std::bit_cast<double>((ki + 1023) << 52);
  const double y = er * scale;
  return underflow ? 0.0 : y;
}

DIVA_ALWAYS_INLINE float vlog(float x) {
  constexpr float kSqrtHalf = 0.707106781186547524f;
  const std::int32_t bits = std::bit_cast<std::int32_t>(x);
  std::int32_t e = (bits >> 23) - 126;
  float m = std::bit_cast<float>((bits & 0x007fffff) | 0x3f000000);  // in [0.5, 1)
  const bool low = m < kSqrtHalf;
  e = low ? e - 1 : e;
  m = low ? m + m : m;
  const float f = m - 1.0f;  // in [sqrt(1/2) - 1, sqrt(2) - 1)
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const float ef = static_cast<float>(e);
  float y = p * f * z;
  y = y + ef * -2.12194440e-4f;
  y = y - 0.5f * z;
  return f + y + ef * 0.693359375f;
}

DIVA_ALWAYS_INLINE double vlog(double x) {
  constexpr double kSqrtHalf = 0.70710678118654752440;
  constexpr double kLn2Hi = 6.93147180369123816490e-01;
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  const std::int64_t bits = std::bit_cast<std::int64_t>(x);
  std::int64_t e = (bits >> 52) - 1022;
  double m = std::bit_cast<double>((bits & 0x000fffffffffffffLL) | 0x3fe0000000000000LL);
  const bool low = m < kSqrtHalf;
  e = low ? e - 1 : e;
  m = low ? m + m : m;
  // log(m) = 2 atanh(t), t = (m - 1) / (m + 1), |t| <= 0.1716.
  const double t = (m - 1.0) / (m + 1.0);
  const double t2 = t * t;
  double p = 1.0 / 23.0;
  p = p * t2 + 1.0 / 21.0;
  p = p * t2 + 1.0 / 19.0;
  p = p * t2 + 1.0 / 17.0;
  p = p * t2 + 1.0 / 15.0;
  p = p * t2 + 1.0 / 13.0;
  p = p * t2 + 1.0 / 11.0;
  p = p * t2 + 1.0 / 9.0;
  p = p * t2 + 1.0 / 7.0;
  p = p * t2 + 1.0 / 5.0;
  p = p * t2 + 1.0 / 3.0;
  const double ed = static_cast<double>(e);
  const double log_m = 2.0 * t + 2.0 * t * t2 * p;
  return ed * kLn2Hi + (log_m + ed * kLn2Lo);
}

}  // namespace diva_ext::cpu
