// Tiled passes of info_nce's CPU kernel over the [B, K] inner products, which exist one
// [rows, tile] block at a time (definitions and the work split in info_nce_sweeps.cpp).
// All tensors are contiguous CPU tensors of one dtype T (float or double); q: [B, D],
// k: [B, D], queue: [K, D].
#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>

#include "diva_ext/math/info_nce.h"

namespace diva_ext::cpu {

// The math policy of the per-row (not vectorised) steps: the C library's functions.
struct StdScalarMath {
  template <typename T>
  static T exp(T x) { return std::exp(x); }
  template <typename T>
  static T log(T x) { return std::log(x); }
  template <typename T>
  static T log1p(T x) { return std::log1p(x); }
  template <typename T>
  static T expm1(T x) { return std::expm1(x); }
};

template <typename T>
struct InfoNceProblem {
  at::Tensor q, k, queue;  // detached, contiguous
  T inv_t;                 // 1 / temperature
  bool dance;
  math::DanceParams<T> params;
};

// Row statistics of a forward pass, [B, kStatsColumns] of T: the layout of math/info_nce.h.
constexpr int64_t kStatsColumns = math::kNceStatsColumns;
constexpr int64_t kLse = math::kStatLse, kLoss = math::kStatLoss, kLseLo = math::kStatLseLo;

// Forward: returns stats; when o is defined ([B, D], T), also writes O_i = sum_j c_ij p_ij queue_j.
template <typename T>
at::Tensor info_nce_forward(const InfoNceProblem<T>& pr, at::Tensor o);

// Backward by recomputing the tiles. pos, neg: [B] factors of math::row_grad_factors; stats
// from info_nce_forward. grad_q (if defined, [B, D]) receives the negatives' part of q's gradient
// (added to what it holds); grad_queue (if defined, [K, D]) is overwritten.
template <typename T>
void info_nce_backward_sweep(const InfoNceProblem<T>& pr, const at::Tensor& stats,
                             const at::Tensor& neg, at::Tensor grad_q, at::Tensor grad_queue);

}  // namespace diva_ext::cpu
