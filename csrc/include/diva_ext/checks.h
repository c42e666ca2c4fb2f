// Argument validation shared by the CPU and CUDA entry points. Every message names the
// operator and the argument, so a user sees which input is wrong.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <utility>

namespace diva_ext {

inline void check_matrix(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 2, op, ": ", name, " must be a 2-D tensor [rows, dim], got ", t.dim(),
              "-D with shape ", t.sizes());
}

inline void check_float_dtype(const at::Tensor& t, const char* op, const char* name,
                              bool allow_half) {
  auto dt = t.scalar_type();
  bool ok = dt == at::kFloat || dt == at::kDouble ||
            (allow_half && (dt == at::kHalf || dt == at::kBFloat16));
  TORCH_CHECK(ok, op, ": ", name, " must be ",
              allow_half ? "float16, bfloat16, float32 or float64" : "float32 or float64",
              " on ", t.device().type(), ", got ", dt);
}

inline void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                              const char* b_name, const char* op) {
  TORCH_CHECK(a.device() == b.device(), op, ": ", a_name, " and ", b_name,
              " must be on the same device, got ", a.device(), " and ", b.device());
}

inline void check_same_dtype(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                             const char* b_name, const char* op) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", a_name, " and ", b_name,
              " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
}

// The incoming gradients of a loss op's per-row outputs (loss, lse): [B] of q's dtype and device.
inline void check_row_gradients(const char* op, const at::Tensor& q, const at::Tensor& grad_loss,
                                const at::Tensor& grad_lse) {
  const int64_t b = q.size(0);
  const std::pair<const at::Tensor*, const char*> grads[] = {{&grad_loss, "grad_loss"},
                                                             {&grad_lse, "grad_lse"}};
  for (const auto& [g, name] : grads) {
    TORCH_CHECK(g->dim() == 1 && g->size(0) == b, op, ": ", name, " must have shape [", b,
                "], got ", g->sizes());
    check_same_device(q, "q", *g, name, op);
    check_same_dtype(q, "q", *g, name, op);
  }
}

}  // namespace diva_ext
