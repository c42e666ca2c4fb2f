// Validation of supervised_info_nce's arguments, shared by its CPU and CUDA kernels (and the
// emulation). Every message names the operator and the argument.
#pragma once

#include <cmath>
#include <utility>

#include <ATen/ATen.h>

#include "diva_ext/checks.h"
#include "diva_ext/math/supervised_info_nce.h"

namespace diva_ext {

inline void check_label_vector(const at::Tensor& labels, const char* name, const at::Tensor& rows,
                               const char* rows_name, const char* op) {
  TORCH_CHECK(labels.dim() == 1, op, ": ", name, " must be a 1-D tensor, got shape ",
              labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ",
              labels.scalar_type());
  TORCH_CHECK(labels.size(0) == rows.size(0), op, ": ", name, " must have one entry per row of ",
              rows_name, " (", rows.size(0), "), got ", labels.size(0));
  check_same_device(rows, rows_name, labels, name, op);
}

inline void check_supervised_info_nce_args(const char* op, const at::Tensor& q,
                                           const at::Tensor& labels, const at::Tensor& memory,
                                           const at::Tensor& memory_labels, double temperature,
                                           bool allow_half) {
  check_matrix(q, op, "q");
  check_matrix(memory, op, "memory");
  check_float_dtype(q, op, "q", allow_half);
  check_same_device(q, "q", memory, "memory", op);
  check_same_dtype(q, "q", memory, "memory", op);
  TORCH_CHECK(memory.size(1) == q.size(1), op,
              ": memory must have the feature dimension D of q, got memory ", memory.sizes(),
              " and q ", q.sizes());
  check_label_vector(labels, "labels", q, "q", op);
  check_label_vector(memory_labels, "memory_labels", memory, "memory", op);
  TORCH_CHECK(std::isfinite(temperature) && temperature > 0, op,
              ": temperature must be finite and > 0, got ", temperature);
}

// The accumulation dtype of the saved statistics and O: float32 for half inputs.
inline at::ScalarType supervised_info_nce_acc_dtype(at::ScalarType dt) {
  return dt == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_supervised_info_nce_backward_args(
    const at::Tensor& grad_loss, const at::Tensor& grad_lse, const at::Tensor& q,
    const at::Tensor& labels, const at::Tensor& memory, const at::Tensor& memory_labels,
    const at::Tensor& stats, const at::Tensor& positives, const at::Tensor& o, double temperature,
    bool allow_half) {
  constexpr const char* op = "_supervised_info_nce_backward";
  check_supervised_info_nce_args(op, q, labels, memory, memory_labels, temperature, allow_half);
  const int64_t b = q.size(0), d = q.size(1);
  check_row_gradients(op, q, grad_loss, grad_lse);
  TORCH_CHECK(stats.defined() == positives.defined(), op,
              ": stats and positives must be given together (or both None)");
  const at::ScalarType acc = supervised_info_nce_acc_dtype(q.scalar_type());
  if (stats.defined()) {
    constexpr int cols = math::kNceStatsColumns;
    TORCH_CHECK(stats.dim() == 2 && stats.size(0) == b && stats.size(1) == cols, op,
                ": stats must have shape [", b, ", ", cols, "], got ", stats.sizes());
    TORCH_CHECK(stats.scalar_type() == acc, op, ": stats must be ", acc, ", got ",
                stats.scalar_type());
    check_same_device(q, "q", stats, "stats", op);
    TORCH_CHECK(positives.dim() == 1 && positives.size(0) == b, op,
                ": positives must have shape [", b, "], got ", positives.sizes());
    TORCH_CHECK(positives.scalar_type() == at::kLong, op, ": positives must be int64, got ",
                positives.scalar_type());
    check_same_device(q, "q", positives, "positives", op);
  }
  if (o.defined()) {
    TORCH_CHECK(stats.defined(), op, ": o needs the stats of the same forward pass");
    TORCH_CHECK(o.dim() == 3 && o.size(0) == 2 && o.size(1) == b && o.size(2) == d, op,
                ": o must have shape [2, ", b, ", ", d, "], got ", o.sizes());
    TORCH_CHECK(o.scalar_type() == acc, op, ": o must be ", acc, ", got ", o.scalar_type());
    check_same_device(q, "q", o, "o", op);
  }
}

// Called after a forward pass whose row results came out non-finite: names the culprit.
inline void raise_supervised_info_nce_non_finite(const char* op, const at::Tensor& q,
                                                 const at::Tensor& memory) {
  const std::pair<const at::Tensor*, const char*> inputs[] = {{&q, "q"}, {&memory, "memory"}};
  for (const auto& [t, name] : inputs) {
    TORCH_CHECK(t->numel() == 0 || at::isfinite(*t).all().item<bool>(), op, ": ", name,
                " contains non-finite values (NaN or inf)");
  }
  TORCH_CHECK(false, op, ": the logits overflowed although q and memory are finite; their rows "
              "should be L2-normalised");
}

// The mean of the memory rows with each query's label, [B, D] of acc (0 for a query without
// positives): the second half of a saved O (grad q = ((g + h) O - g mbar) / T, see
// math/supervised_info_nce.h). Per class, not per query: O(K log K + K D + B D) by segment sums,
// far below the tile pass's B K D; index_add on the CPU adds in memory order.
inline at::Tensor supervised_positive_means(const at::Tensor& labels, const at::Tensor& memory,
                                            const at::Tensor& memory_labels, at::ScalarType acc) {
  const int64_t b = labels.size(0), d = memory.size(1);
  at::Tensor out = at::zeros({b, d}, memory.options().dtype(acc));
  if (b == 0 || memory.size(0) == 0) return out;
  const auto [classes, class_of_row, counts] =
      at::_unique2(memory_labels, /*sorted=*/true, /*return_inverse=*/true, /*return_counts=*/true);
  at::Tensor sums = at::zeros({classes.size(0), d}, out.options());
  sums.index_add_(0, class_of_row, memory.to(acc));
  sums.div_(counts.to(acc).unsqueeze(1));
  const at::Tensor at_class = at::searchsorted(classes, labels).clamp_max_(classes.size(0) - 1);
  const at::Tensor found = classes.index_select(0, at_class).eq(labels);
  out.index_copy_(0, found.nonzero().squeeze(1), sums.index_select(0, at_class.masked_select(found)));
  return out;
}

}  // namespace diva_ext
