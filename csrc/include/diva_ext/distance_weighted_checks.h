// Validation of distance_weighted_negatives' arguments, shared by its CPU and CUDA kernels (and
// the CUDA emulation). Every message names the operator and the argument.
#pragma once

#include <ATen/ops/stack.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "diva_ext/checks.h"

namespace diva_ext {

constexpr const char* kDwOp = "distance_weighted_negatives";

// Checks of shapes, dtypes, devices and scalars: no access to the tensors' values.
inline void check_distance_weighted_args(const at::Tensor& x, const at::Tensor& labels,
                                         const at::Tensor& anchors, double lower_cutoff,
                                         double upper_cutoff, int64_t dim, bool allow_half) {
  constexpr const char* op = kDwOp;
  check_matrix(x, op, "x");
  check_float_dtype(x, op, "x", allow_half);
  TORCH_CHECK(labels.dim() == 1, op, ": labels must be a 1-D tensor [B], got shape ",
              labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, op, ": labels must be int64, got ",
              labels.scalar_type());
  TORCH_CHECK(labels.size(0) == x.size(0), op, ": labels must have one entry per row of x (",
              x.size(0), "), got ", labels.size(0));
  TORCH_CHECK(anchors.dim() == 1, op, ": anchors must be a 1-D tensor [T], got shape ",
              anchors.sizes());
  TORCH_CHECK(anchors.scalar_type() == at::kLong, op, ": anchors must be int64, got ",
              anchors.scalar_type());
  check_same_device(x, "x", labels, "labels", op);
  check_same_device(x, "x", anchors, "anchors", op);
  TORCH_CHECK(std::isfinite(lower_cutoff) && lower_cutoff > 0, op,
              ": lower_cutoff must be finite and > 0 (the weight diverges at distance 0), got ",
              lower_cutoff);
  TORCH_CHECK(!std::isnan(upper_cutoff) && upper_cutoff > 0, op,
              ": upper_cutoff must be > 0 (inf for no cutoff), got ", upper_cutoff);
  // As info_nce: candidates lie below upper_cutoff, distances below lower_cutoff count as it.
  TORCH_CHECK(upper_cutoff >= lower_cutoff, op, ": upper_cutoff must be >= lower_cutoff (",
              lower_cutoff, "), got ", upper_cutoff);
  TORCH_CHECK(dim >= 0, op, ": dim must be >= 0 (0 means x.size(1)), got ", dim);
  // The weight is the inverse density of distances on the (n - 1)-sphere.
  TORCH_CHECK(dim != 1, op, ": dim must be 0 (meaning x.size(1)) or >= 2, got ", dim);
  // Indices and anchor positions are 32-bit inside the kernels (and key the noise).
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  TORCH_CHECK(x.size(0) < kMax, op, ": x may have at most ", kMax - 1, " rows, got ", x.size(0));
  TORCH_CHECK(anchors.size(0) < kMax, op, ": anchors may have at most ", kMax - 1,
              " entries, got ", anchors.size(0));
}

// Tolerance of the unit-norm check on |x_i|^2.
inline double distance_weighted_norm_tolerance(const at::Tensor& x) {
  const bool half = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  return half ? 2e-2 : 1e-3;
}

// The checks of the values from their summary: norm_error = max_i | |x_i|^2 - 1 | (NaN or inf
// when x has a non-finite value), anchors within [anchor_min, anchor_max]. Call with T > 0.
inline void check_distance_weighted_stats(const at::Tensor& x, double norm_error,
                                          double anchor_min, double anchor_max) {
  constexpr const char* op = kDwOp;
  TORCH_CHECK(anchor_min >= 0 && anchor_max < static_cast<double>(x.size(0)), op,
              ": anchors must index rows of x, in [0, ", x.size(0), "), got values in [",
              static_cast<int64_t>(anchor_min), ", ", static_cast<int64_t>(anchor_max), "]");
  if (!std::isfinite(norm_error)) {
    TORCH_CHECK(x.isfinite().all().item<bool>(), op, ": x must be finite, got NaN or inf values");
  }
  TORCH_CHECK(norm_error <= distance_weighted_norm_tolerance(x), op,
              ": x rows must be L2-normalised (|x_i| = 1, e.g. by ",
              "torch.nn.functional.normalize), got a row whose squared norm is off by ", norm_error);
}

// Checks of the values with tensor ops (one device synchronisation on CUDA): x finite with
// unit-norm rows (the log-weight is computed from the cosine), anchors within [0, B). Call with
// T > 0.
inline void check_distance_weighted_values(const at::Tensor& x, const at::Tensor& anchors) {
  constexpr const char* op = kDwOp;
  TORCH_CHECK(x.size(0) > 0, op, ": anchors must index rows of x, but x has no rows");
  TORCH_CHECK(x.size(1) > 0, op, ": x has D = 0 columns, so its rows cannot be L2-normalised");
  const bool half = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  const at::Tensor xf = half ? x.to(at::kFloat) : x;
  // max propagates NaN; inf - 1 stays inf.
  const at::Tensor norm_error = xf.square().sum(1).sub(1).abs().max();
  const at::Tensor stats = at::stack({norm_error.to(at::kDouble), anchors.min().to(at::kDouble),
                                      anchors.max().to(at::kDouble)})
                               .cpu();
  const double* s = stats.const_data_ptr<double>();
  check_distance_weighted_stats(x, s[0], s[1], s[2]);
}

}  // namespace diva_ext
