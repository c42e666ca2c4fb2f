// Validation of pairwise_distance's arguments, shared by its CPU and CUDA kernels.
#pragma once

#include <ATen/ops/isfinite.h>
#include <ATen/ops/stack.h>

#include <cmath>

#include "diva_ext/checks.h"

namespace diva_ext {

inline void check_pairwise_distance_args(const at::Tensor& x, const at::Tensor& y, double eps,
                                         bool allow_half) {
  constexpr const char* op = "pairwise_distance";
  check_matrix(x, op, "x");
  check_float_dtype(x, op, "x", allow_half);
  TORCH_CHECK(std::isfinite(eps) && eps >= 0, op, ": eps must be finite and >= 0, got ", eps);
  if (!y.defined()) return;
  check_matrix(y, op, "y");
  check_same_device(x, "x", y, "y", op);
  check_same_dtype(x, "x", y, "y", op);
  TORCH_CHECK(x.size(1) == y.size(1), op, ": x and y must have the same feature dimension D, got x ",
              x.sizes(), " and y ", y.sizes());
}

// The values: NaN or inf in x or y would come out as plausible distances (the clamp maps NaN to
// 0), so they are errors, as in distance_weighted_negatives and info_nce. Tensor ops: one device
// synchronisation on CUDA. `y` may be undefined (y = None).
inline void check_pairwise_distance_finite(const at::Tensor& x, const at::Tensor& y) {
  constexpr const char* op = "pairwise_distance";
  const bool has_y = y.defined();
  const at::Tensor flags =
      (has_y ? at::stack({at::isfinite(x).all(), at::isfinite(y).all()})
             : at::isfinite(x).all().unsqueeze(0))
          .cpu();
  const bool* f = flags.const_data_ptr<bool>();
  TORCH_CHECK(f[0], op, ": x must be finite, got NaN or inf values");
  TORCH_CHECK(!has_y || f[1], op, ": y must be finite, got NaN or inf values");
}

inline void check_pairwise_distance_backward_args(const at::Tensor& grad, const at::Tensor& x,
                                                  const at::Tensor& y, const at::Tensor& out,
                                                  double eps, bool allow_half) {
  constexpr const char* op = "_pairwise_distance_backward";
  check_pairwise_distance_args(x, y, eps, allow_half);
  const int64_t m = y.defined() ? y.size(0) : x.size(0);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == x.size(0) && grad.size(1) == m, op,
              ": grad must have shape [", x.size(0), ", ", m, "], got ", grad.sizes());
  TORCH_CHECK(out.sizes() == grad.sizes(), op, ": out must have the shape of grad ", grad.sizes(),
              ", got ", out.sizes());
  check_same_device(x, "x", grad, "grad", op);
  check_same_device(x, "x", out, "out", op);
  check_same_dtype(x, "x", grad, "grad", op);
  check_same_dtype(x, "x", out, "out", op);
}

}  // namespace diva_ext
