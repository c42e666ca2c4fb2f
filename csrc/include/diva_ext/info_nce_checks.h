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
  parse_info_nce_weighting(weighting, op);
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
