// Per-element math of pairwise_distance, shared by the CPU and CUDA kernels.
//
// s_ij = max(|x_i|^2 + |y_j|^2 - 2 <x_i, y_j>, 0);  out = squared ? s : sqrt(max(s, eps)).
//
// NB: the norm expansion cancels catastrophically for near points (torch.cdist returns ~1e-3
// for a unit vector's distance to itself in float32). Entries whose expanded value falls below
// kExactRelative * (|x_i|^2 + |y_j|^2) are recomputed as sum_k (x_ik - y_jk)^2, accumulated in
// Acc in index order, identically on CPU and CUDA. The threshold bounds the float32 error of the
// expanded form at about 1e-4 relative; below it the direct form is exact to rounding.
//
// NB: gradient convention: where a clamp is active (s <= 0 when squared, s <= eps otherwise)
// the gradient is zero. The backward reads the clamp from the saved output (pd_clamped_output).
#pragma once

#include <cmath>

#include "diva_ext/device.h"

namespace diva_ext::math {

constexpr double kExactRelative = 1e-3;

template <typename Acc>
DIVA_HD Acc pd_expanded(Acc norm_x, Acc norm_y, Acc dot) {
  return norm_x + norm_y - Acc(2) * dot;
}

template <typename Acc>
DIVA_HD bool pd_needs_exact(Acc s, Acc norm_x, Acc norm_y) {
  return s < Acc(kExactRelative) * (norm_x + norm_y);
}

// sum_k (a_k - b_k)^2 over a contiguous row pair, in index order.
template <typename Acc, typename Ptr>
DIVA_HD Acc pd_direct(Ptr a, Ptr b, long long dim) {
  Acc s = Acc(0);
  for (long long k = 0; k < dim; ++k) {
    Acc diff = static_cast<Acc>(a[k]) - static_cast<Acc>(b[k]);
    s += diff * diff;
  }
  return s;
}

DIVA_HD float pd_sqrt(float v) { return sqrtf(v); }
DIVA_HD double pd_sqrt(double v) { return sqrt(v); }

template <typename Acc>
DIVA_HD Acc pd_finish(Acc s, bool squared, Acc eps) {
  s = s > Acc(0) ? s : Acc(0);
  if (squared) return s;
  return pd_sqrt(s > eps ? s : eps);
}

// The output value where the square-root clamp is active, as stored in T. The backward detects
// the clamp by comparing the saved output with it, in storage precision: comparing out^2 with
// eps instead misses it when storage rounds sqrt(eps) up (float16: sqrt(1e-12) is subnormal and
// becomes 1.0133e-6), and then w = grad / out ~ 1e6 cancels catastrophically.
template <typename T, typename Acc>
DIVA_HD Acc pd_clamped_output(Acc eps) {
  return static_cast<Acc>(static_cast<T>(pd_finish(Acc(0), false, eps)));
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
