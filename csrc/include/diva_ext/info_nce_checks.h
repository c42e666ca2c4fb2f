// Validation of info_nce's arguments, shared by its CPU and CUDA kernels (and the emulation).
#pragma once

#include <cmath>
#include <string_view>
#include <utility>

#include <ATen/ops/isfinite.h>

#include "diva_ext/checks.h"
#include "diva_ext/math/info_nce.h"

namespace diva_ext {

// Returns true for weighting "dance", false for "none"; anything else is an error.
inline bool parse_info_nce_weighting(std::string_view weighting, const char* op) {
  if (weighting == "none") return false;
  if (weighting == "dance") return true;
  TORCH_CHECK(false, op, ": weighting must be \"none\" or \"dance\", got \"", weighting, "\"");
  return false;
}

// The smallest temperature 2^e that info_nce honours for every L2-normalised input, by the
// dtype of q (the accumulation dtype is float32 for half inputs) and the weighting. Logits are
// bounded by |s| / T with |s| <= 1 + D u < 2 (rounding of a unit dot product), weights c <= 1.
// - "none": loss = lse - a reaches 2 / T (+ log(K + 1)), which must be finite in q's dtype:
//   T >= 2^(1 - emax) with emax = 127 (float32, bfloat16), 1023 (float64), or 2^-14 in float16
//   (2 * 2^14 + log(K + 1) < 65504).
// - "dance": the online pass takes the row's reference m from rounded products c t, while each
//   term's offset c t - m is one fused, exact multiply-add (math::nce_logit_offset), so an offset
//   reaches ulp(m) / 2 > 0. exp of it must stay far from the Acc range (the CPU's vexp saturates
//   at 88.3 in float, 709 in double) and the sum of K + 1 such terms finite: with |m| < 2^31 in
//   float32 (ulp/2 <= 64: e^64 (K + 1) < FLT_MAX for K < 5e10), T >= 2^-30; with |m| < 2^62 in
//   float64 (ulp/2 <= 256), T >= 2^-61. float16 also needs the "none" bound 2^-14.
// Below these a run may overflow (seen from T ~ 1e-11 in float32) or, with one saturated term,
// return a wrong lse; python_tests/test_info_nce_temperature_range.py checks both ends.
inline int info_nce_min_temperature_exponent(at::ScalarType dtype, bool dance) {
  switch (dtype) {
    case at::kDouble: return dance ? -61 : -1022;
    case at::kHalf: return -14;
    default: return dance ? -30 : -126;  // float32 accumulation: float32, bfloat16
  }
}

inline void check_info_nce_args(const char* op, const at::Tensor& q, const at::Tensor& k,
                                const at::Tensor& queue, double temperature,
                                std::string_view weighting, double lower_cutoff,
                                double upper_cutoff, bool allow_half) {
  check_matrix(q, op, "q");
  check_matrix(k, op, "k");
  check_matrix(queue, op, "queue");
  check_float_dtype(q, op, "q", allow_half);
  check_same_device(q, "q", k, "k", op);
  check_same_device(q, "q", queue, "queue", op);
  check_same_dtype(q, "q", k, "k", op);
  check_same_dtype(q, "q", queue, "queue", op);
  TORCH_CHECK(q.sizes() == k.sizes(), op, ": q and k must have the same shape [B, D], got q ",
              q.sizes(), " and k ", k.sizes());
  TORCH_CHECK(queue.size(1) == q.size(1), op,
              ": queue must have the feature dimension D of q, got queue ", queue.sizes(),
              " and q ", q.sizes());
  TORCH_CHECK(std::isfinite(temperature) && temperature > 0, op,
              ": temperature must be finite and > 0, got ", temperature);
  const bool dance = parse_info_nce_weighting(weighting, op);
  const int min_exp = info_nce_min_temperature_exponent(q.scalar_type(), dance);
  TORCH_CHECK(temperature >= std::ldexp(1.0, min_exp), op, ": temperature must be >= 2^", min_exp,
              " = ", std::ldexp(1.0, min_exp), " for weighting \"", weighting, "\" in ",
              q.scalar_type(), " (logits |<q, k>| / T of unit rows must stay in range), got ",
              temperature);
  TORCH_CHECK(std::isfinite(lower_cutoff) && lower_cutoff > 0, op,
              ": lower_cutoff must be finite and > 0, got ", lower_cutoff);
  TORCH_CHECK(!std::isnan(upper_cutoff) && upper_cutoff >= lower_cutoff, op,
              ": upper_cutoff must be >= lower_cutoff (", lower_cutoff, "; inf for none), got ",
              upper_cutoff);
}

// The accumulation dtype of the saved statistics and O: float32 for half inputs.
inline at::ScalarType info_nce_acc_dtype(at::ScalarType dt) {
  return dt == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_info_nce_backward_args(const at::Tensor& grad_loss, const at::Tensor& grad_lse,
                                         const at::Tensor& q, const at::Tensor& k,
                                         const at::Tensor& queue, const at::Tensor& stats,
                                         const at::Tensor& o, double temperature,
                                         std::string_view weighting, double lower_cutoff,
                                         double upper_cutoff, bool allow_half) {
  constexpr const char* op = "_info_nce_backward";
  check_info_nce_args(op, q, k, queue, temperature, weighting, lower_cutoff, upper_cutoff,
                      allow_half);
  const int64_t b = q.size(0), d = q.size(1);
  check_row_gradients(op, q, grad_loss, grad_lse);
  const at::ScalarType acc = info_nce_acc_dtype(q.scalar_type());
  if (stats.defined()) {
    TORCH_CHECK(stats.dim() == 2 && stats.size(0) == b && stats.size(1) == math::kNceStatsColumns, op,
                ": stats must have shape [", b, ", ", math::kNceStatsColumns, "], got ", stats.sizes());
    TORCH_CHECK(stats.scalar_type() == acc, op, ": stats must be ", acc, ", got ",
                stats.scalar_type());
    check_same_device(q, "q", stats, "stats", op);
  }
  if (o.defined()) {
    TORCH_CHECK(o.dim() == 2 && o.size(0) == b && o.size(1) == d, op, ": o must have shape [",
                b, ", ", d, "], got ", o.sizes());
    TORCH_CHECK(o.scalar_type() == acc, op, ": o must be ", acc, ", got ", o.scalar_type());
    check_same_device(q, "q", o, "o", op);
  }
}

// Called after a forward pass whose row results came out non-finite: names the culprit.
inline void raise_info_nce_non_finite(const char* op, const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& queue) {
  const std::pair<const at::Tensor*, const char*> inputs[] = {{&q, "q"}, {&k, "k"}, {&queue, "queue"}};
  for (const auto& [t, name] : inputs) {
    TORCH_CHECK(t->numel() == 0 || at::isfinite(*t).all().item<bool>(), op, ": ", name,
                " contains non-finite values (NaN or inf)");
  }
  TORCH_CHECK(false, op, ": the logits overflowed although q, k and queue are finite; their rows "
              "should be L2-normalised");
}

}  // namespace diva_ext
