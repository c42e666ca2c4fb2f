// A vectorisable exp for the CPU epilogues of info_nce.
//
// glibc's expf is a scalar call unless the whole build uses -ffast-math, so the loops over a
// tile would not vectorise. These are branch-free polynomial versions (Cody-Waite reduction, bit
// manipulation for the power of two) that GCC turns into SIMD code in every DIVA_CPU_CLONES clone.
//
// NB: accuracy: within 2 ulp (float: cephes' degree-5 polynomial, double: Taylor to r^13 on
// |r| <= ln2/2). Range: returns exactly 0 below the smallest normal result (x < -87.3 in float,
// x < -708 in double) instead of a denormal, and saturates above (x > 88.3 / 709): callers only
// pass x <= 0 (shifted by a running maximum) or bounded values. NaN stays NaN.
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

}  // namespace diva_ext::cpu
