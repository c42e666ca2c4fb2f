// Per-element math of pairwise_distance, shared by the CPU and CUDA kernels.
//
// s_ij = max(|x_i|^2 + |y_j|^2 - 2 <x_i, y_j>, 0);  out = squared ? s : sqrt(max(s, eps)).
//
// NB: the norm expansion cancels catastrophically for near points (torch.cdist returns ~1e-3
// for a unit vector's distance to itself in float32). Entries whose expanded value falls below
// kExactRelative * (|x_i|^2 + |y_j|^2) are recomputed by direct difference (pd_direct),
// accumulated in Acc in index order, identically on CPU and CUDA. The threshold bounds the
// float32 error of the expanded form at about 1e-4 relative; below it the direct form is exact
// to rounding.
//
// NB: range. The expansion also fails at the ends of Acc's range, and those entries take the
// direct path too (pd_needs_exact): where a square, a norm or the sum overflowed (s is inf or
// NaN: overflow is sticky, so a finite s is a faithful one; float32 rows beyond ~1.8e19), and
// where both rows are so small that their squares lose precision to underflow
// (|x_i|^2 + |y_j|^2 < pd_underflow_bound). The direct path itself rescales the differences by
// their largest magnitude when their squares would overflow or underflow, so every finite input
// gives a distance within a few ulps (inf only where the true value exceeds the dtype). The
// bounds follow from numeric_limits<Acc>. Non-finite inputs are rejected by the callers.
//
// NB: gradient convention: where a clamp is active (s <= 0 when squared, s <= eps otherwise)
// the gradient is zero. The backward reads the clamp from the saved output (pd_clamped_output).
#pragma once

#include <cmath>
#include <limits>

#include "diva_ext/device.h"

namespace diva_ext::math {

constexpr double kExactRelative = 1e-3;

template <typename Acc>
DIVA_HD Acc pd_expanded(Acc norm_x, Acc norm_y, Acc dot) {
  return norm_x + norm_y - Acc(2) * dot;
}

// Below this value of |x_i|^2 + |y_j|^2 the squares' underflow (at most half the smallest
// subnormal each, i.e. min * epsilon / 2) is no longer negligible next to epsilon * norms.
template <typename Acc>
constexpr Acc pd_underflow_bound() {
  return std::numeric_limits<Acc>::min() / std::numeric_limits<Acc>::epsilon();
}

// True where the expanded value s cannot be trusted: near points (cancellation), s inf or NaN
// (overflow) and rows in the underflow range.
template <typename Acc>
DIVA_HD bool pd_needs_exact(Acc s, Acc norm_x, Acc norm_y) {
  const Acc norms = norm_x + norm_y;
  const bool trusted = s >= Acc(kExactRelative) * norms && s <= std::numeric_limits<Acc>::max();
  return !trusted || norms < pd_underflow_bound<Acc>();
}

// A squared distance as scale^2 * sum, so that it exists where scale^2 * sum itself would
// overflow or underflow Acc.
template <typename Acc>
struct PdDirect {
  Acc scale;
  Acc sum;
};

DIVA_HD float pd_sqrt(float v) { return sqrtf(v); }
DIVA_HD double pd_sqrt(double v) { return sqrt(v); }
DIVA_HD float pd_abs(float v) { return fabsf(v); }
DIVA_HD double pd_abs(double v) { return fabs(v); }

// sum_k (a_k - b_k)^2 over a contiguous row pair, in index order. NB: a first pass finds the
// largest |a_k - b_k|; when its square (times D) would overflow, or fall where underflow costs
// precision, the differences are divided by it (scale = that largest difference). Otherwise
// scale = 1 and the sum is the plain one. A difference that overflows Acc means a distance
// beyond Acc's range: the sum is inf.
template <typename Acc, typename Ptr>
DIVA_HD PdDirect<Acc> pd_direct(Ptr a, Ptr b, long long dim) {
  Acc big = Acc(0);
  for (long long k = 0; k < dim; ++k) {
    const Acc diff = pd_abs(to_acc<Acc>(a[k]) - to_acc<Acc>(b[k]));
    big = diff > big ? diff : big;
  }
  const Acc big_sq = big * big;
  const bool plain = big == Acc(0) || (big_sq >= pd_underflow_bound<Acc>() &&
                                      big_sq * static_cast<Acc>(dim) <= std::numeric_limits<Acc>::max());
  if (!(big <= std::numeric_limits<Acc>::max())) {
    return {Acc(1), std::numeric_limits<Acc>::infinity()};
  }
  const Acc scale = plain ? Acc(1) : big;
  Acc s = Acc(0);
  for (long long k = 0; k < dim; ++k) {
    Acc diff = to_acc<Acc>(a[k]) - to_acc<Acc>(b[k]);
    if (!plain) diff /= scale;
    s += diff * diff;
  }
  return {scale, s};
}

// NB: NaN passes through (s < 0 and s < eps are false for NaN), so that an untrusted expanded
// value stays recognisable (pd_needs_exact) after finishing.
template <typename Acc>
DIVA_HD Acc pd_finish(Acc s, bool squared, Acc eps) {
  s = s < Acc(0) ? Acc(0) : s;
  if (squared) return s;
  return pd_sqrt(s < eps ? eps : s);
}

// pd_finish of scale^2 * sum without forming it: sqrt(max(s, eps)) = max(scale * sqrt(sum),
// sqrt(eps)), as sqrt is monotone; with scale = 1 it is pd_finish(sum) bit for bit.
template <typename Acc>
DIVA_HD Acc pd_finish(PdDirect<Acc> r, bool squared, Acc eps) {
  if (r.scale == Acc(1)) return pd_finish(r.sum, squared, eps);
  if (squared) return (r.sum * r.scale) * r.scale;
  const Acc d = r.scale * pd_sqrt(r.sum);
  const Acc floor = pd_sqrt(eps);
  return d < floor ? floor : d;
}

// The output value where the square-root clamp is active, as stored in T. The backward detects
// the clamp by comparing the saved output with it, in storage precision: comparing out^2 with
// eps instead misses it when storage rounds sqrt(eps) up (float16: sqrt(1e-12) is subnormal and
// becomes 1.0133e-6), and then w = grad / out ~ 1e6 cancels catastrophically.
template <typename T, typename Acc>
DIVA_HD Acc pd_clamped_output(Acc eps) {
  return to_acc<Acc>(from_acc<T>(pd_finish(Acc(0), false, eps)));
}

// d out_ij / d s_ij times the incoming gradient, with 2 folded in so that
// grad x_i = sum_j w_ij (x_i - y_j) and grad y_j = sum_i w_ij (y_j - x_i).
// NB: zero where a clamp is active: out == 0 (squared) or out <= clamped_out (see above).
template <typename Acc>
DIVA_HD Acc pd_grad_weight(Acc grad, Acc out, bool squared, Acc clamped_out) {
  if (squared) return out > Acc(0) ? Acc(2) * grad : Acc(0);
  return out > clamped_out ? grad / out : Acc(0);
}

}  // namespace diva_ext::math
