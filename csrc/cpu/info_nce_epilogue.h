// Row epilogues of info_nce's CPU kernel (definitions in info_nce_epilogue.cpp, one clone per
// instruction set). Each takes one row of an inner-product tile s_ij = <q_i, queue_j> (n
// entries, j over one queue tile) and updates the row's online statistics; see
// diva_ext/math/info_nce.h for the math. Overloads for float and double.
#pragma once

#include <cstdint>

#include "diva_ext/math/info_nce.h"

namespace diva_ext::cpu {

// Online (max, sum) of a row's negative logits x_j = c_j s_j / T: max -> m, l <- l e^(m_old - m)
// + sum_j e^(x_j - m). With want_p, s is overwritten with c_j e^(x_j - m) (the tile of the O
// product); otherwise it is left as scratch. Returns e^(m_old - m), the factor for the row's O.
// dance: c_j = w_j from the row constants; scratch holds n weights; without dance both are unused.
float logits_row(float* s, float* scratch, int64_t n, float inv_t, bool dance,
                 const math::DanceParams<float>& p, const math::DanceRow<float>& row, float& m, float& l,
                 bool want_p);
double logits_row(double* s, double* scratch, int64_t n, double inv_t, bool dance,
                  const math::DanceParams<double>& p, const math::DanceRow<double>& row, double& m,
                  double& l, bool want_p);

// DaNCE first pass: folds the row's tile into its online state (math::DanceStats). scratch
// holds n log-weights.
void weight_stats_row(const float* s, float* scratch, int64_t n, const math::DanceParams<float>& p,
                      math::DanceStats<float>& st);
void weight_stats_row(const double* s, double* scratch, int64_t n,
                      const math::DanceParams<double>& p, math::DanceStats<double>& st);

// Backward: s_j -> factor * c_j * e^(c_j s_j / T - lse) (in place; lse as the pair lse + lse_lo,
// math::softmax_weight), the gradient of the row's objective with respect to s_j, where
// factor = (g + h) / T (math::row_grad_factors).
void grad_row(float* s, int64_t n, float inv_t, float lse, float lse_lo, float factor, bool dance,
              const math::DanceParams<float>& p, const math::DanceRow<float>& row);
void grad_row(double* s, int64_t n, double inv_t, double lse, double lse_lo, double factor,
              bool dance, const math::DanceParams<double>& p, const math::DanceRow<double>& row);

// <a, b> over n entries, accumulated lane-wise in a fixed order.
float dot(const float* a, const float* b, int64_t n);
double dot(const double* a, const double* b, int64_t n);

// True when every entry is finite.
bool all_finite(const float* x, int64_t n);
bool all_finite(const double* x, int64_t n);

}  // namespace diva_ext::cpu
