// CPU kernels of pairwise_distance.
//
// Work split: rows of x are processed in blocks sized to stay in cache. For each block the
// inner products come from one BLAS GEMM written straight into the output rows (no temporary),
// then a parallel epilogue over the block's rows turns them into distances while they are still
// in cache. The backward computes the [block, M] weight tile w_ij from the incoming gradient and
// the saved output, then two GEMMs: grad_x rows = x * rowsum(w) - w @ y, and
// grad_y += y * colsum(w) - w^T @ x_rows. Extra memory: one [block, M] tile plus O((N + M) D).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "diva_ext/cpu/simd.h"
#include "diva_ext/math/pairwise_distance.h"
#include "diva_ext/pairwise_distance_checks.h"

namespace diva_ext::cpu {
namespace {

using namespace diva_ext::math;

// Rows per block: about 8 MiB of output, at least 256 rows. NB: GEMMs of fewer rows run well
// below the BLAS peak (64-row blocks of 1 MiB made the forward 2-4x slower than one GEMM at
// B = 4096); the epilogue then reads its rows from L3 instead of L2, which costs less.
int64_t rows_per_block(int64_t m, int64_t elem_size) {
  return std::max<int64_t>(256, (int64_t{8} << 20) / std::max<int64_t>(1, m * elem_size));
}

// One output row: inner products in, distances out. A single vectorisable pass; entries that
// need the exact recompute (rare: near points) are found again from the finished value, which is
// monotone in the expanded one, and redone in a second, scalar pass.
template <typename scalar_t>
DIVA_ALWAYS_INLINE bool finish_row_impl(scalar_t* __restrict__ row,
                                        const scalar_t* __restrict__ norm_y, scalar_t nx,
                                        int64_t m, bool squared, scalar_t eps) {
  int any_exact = 0;
  if (squared) {
    for (int64_t j = 0; j < m; ++j) {
      const scalar_t s = pd_expanded(nx, norm_y[j], row[j]);
      any_exact |= pd_needs_exact(s, nx, norm_y[j]);
      row[j] = pd_finish(s, true, eps);
    }
  } else {
    for (int64_t j = 0; j < m; ++j) {
      const scalar_t s = pd_expanded(nx, norm_y[j], row[j]);
      any_exact |= pd_needs_exact(s, nx, norm_y[j]);
      row[j] = pd_finish(s, false, eps);
    }
  }
  return any_exact != 0;
}

DIVA_CPU_CLONES bool finish_row(float* row, const float* norm_y, float nx, int64_t m,
                                bool squared, float eps) {
  return finish_row_impl(row, norm_y, nx, m, squared, eps);
}
DIVA_CPU_CLONES bool finish_row(double* row, const double* norm_y, double nx, int64_t m,
                                bool squared, double eps) {
  return finish_row_impl(row, norm_y, nx, m, squared, eps);
}

template <typename scalar_t>
void forward_epilogue(const scalar_t* x, const scalar_t* y, const scalar_t* norm_x,
                      const scalar_t* norm_y, scalar_t* out, int64_t row_begin, int64_t row_end,
                      int64_t m, int64_t d, bool squared, scalar_t eps) {
  for (int64_t i = row_begin; i < row_end; ++i) {
    scalar_t* row = out + i * m;
    const scalar_t nx = norm_x[i];
    if (!finish_row(row, norm_y, nx, m, squared, eps)) continue;
    for (int64_t j = 0; j < m; ++j) {
      const scalar_t s_back = squared ? row[j] : row[j] * row[j];
      if (pd_needs_exact(s_back, nx, norm_y[j])) {
        row[j] = pd_finish(pd_direct<scalar_t>(x + i * d, y + j * d, d), squared, eps);
      }
    }
  }
}

// Backward weights of one row block: w_ij = pd_grad_weight(grad_ij, out_ij).
// `clamped` is pd_clamped_output<scalar_t>(eps).
template <typename scalar_t>
DIVA_ALWAYS_INLINE void grad_weights_impl(const scalar_t* __restrict__ grad,
                                          const scalar_t* __restrict__ out,
                                          scalar_t* __restrict__ w, int64_t count, bool squared,
                                          scalar_t clamped) {
  if (squared) {
    for (int64_t j = 0; j < count; ++j) w[j] = pd_grad_weight(grad[j], out[j], true, clamped);
  } else {
    for (int64_t j = 0; j < count; ++j) w[j] = pd_grad_weight(grad[j], out[j], false, clamped);
  }
}

DIVA_CPU_CLONES void grad_weights(const float* grad, const float* out, float* w, int64_t count,
                                  bool squared, float clamped) {
  grad_weights_impl(grad, out, w, count, squared, clamped);
}
DIVA_CPU_CLONES void grad_weights(const double* grad, const double* out, double* w,
                                  int64_t count, bool squared, double clamped) {
  grad_weights_impl(grad, out, w, count, squared, clamped);
}

bool all_finite(const at::Tensor& t) {
  bool finite = true;
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "pairwise_distance_all_finite", [&] {
    const scalar_t* p = t.const_data_ptr<scalar_t>();
    for (int64_t i = 0; i < t.numel(); ++i) finite &= std::isfinite(p[i]);
  });
  return finite;
}

at::Tensor pairwise_distance_cpu(const at::Tensor& x_in, const std::optional<at::Tensor>& y_opt,
                                 bool squared, double eps) {
  const at::Tensor y_in = y_opt.has_value() ? *y_opt : at::Tensor();
  check_pairwise_distance_args(x_in, y_in, eps, /*allow_half=*/false);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor y = y_in.defined() ? y_in.contiguous() : x;
  const int64_t n = x.size(0), m = y.size(0), d = x.size(1);
  at::Tensor out = at::empty({n, m}, x.options());
  if (n == 0 || m == 0) return out;
  if (d == 0) return out.fill_(squared ? 0.0 : std::sqrt(eps));

  const at::Tensor norm_x = x.square().sum(1);
  const at::Tensor norm_y = y_in.defined() ? y.square().sum(1) : norm_x;
  // A NaN or inf entry makes its row's squared norm non-finite, so the O(N + M) scan of the norms
  // spares the full check of the values unless it may fail (a huge finite row's norm can be inf
  // too; then the full check passes).
  if (!all_finite(norm_x) || !all_finite(norm_y)) check_pairwise_distance_finite(x_in, y_in);
  const at::Tensor y_t = y.t();
  const int64_t block = rows_per_block(m, x.element_size());

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pairwise_distance_cpu", [&] {
    for (int64_t r0 = 0; r0 < n; r0 += block) {
      const int64_t r1 = std::min(n, r0 + block);
      at::Tensor out_rows = out.narrow(0, r0, r1 - r0);
      at::mm_out(out_rows, x.narrow(0, r0, r1 - r0), y_t);
      at::parallel_for(r0, r1, 1, [&](int64_t begin, int64_t end) {
        forward_epilogue<scalar_t>(x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
                                   norm_x.const_data_ptr<scalar_t>(),
                                   norm_y.const_data_ptr<scalar_t>(),
                                   out.mutable_data_ptr<scalar_t>(), begin, end, m, d, squared,
                                   static_cast<scalar_t>(eps));
      });
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> pairwise_distance_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& x_in, const std::optional<at::Tensor>& y_opt,
    const at::Tensor& out_in, bool squared, double eps, bool needs_grad_x, bool needs_grad_y) {
  const at::Tensor y_in = y_opt.has_value() ? *y_opt : at::Tensor();
  check_pairwise_distance_backward_args(grad_in, x_in, y_in, out_in, eps, /*allow_half=*/false);
  const bool self = !y_in.defined();
  // With y = None, x receives both sides of the gradient.
  const bool want_x = needs_grad_x;
  const bool want_y = self ? needs_grad_x : needs_grad_y;
  const at::Tensor x = x_in.contiguous();
  const at::Tensor y = self ? x : y_in.contiguous();
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor out = out_in.contiguous();
  const int64_t n = x.size(0), m = y.size(0), d = x.size(1);

  at::Tensor grad_x = want_x ? at::zeros_like(x) : at::empty({0}, x.options());
  at::Tensor grad_y = want_y ? at::zeros_like(y) : at::empty({0}, x.options());
  if (n == 0 || m == 0 || d == 0 || (!want_x && !want_y)) {
    return {grad_x, self ? at::empty({0}, x.options()) : grad_y};
  }

  const int64_t block = rows_per_block(m, x.element_size());
  at::Tensor weights = at::empty({std::min(block, n), m}, x.options());
  at::Tensor col_sum = at::zeros({m}, x.options());

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pairwise_distance_backward_cpu", [&] {
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* o = out.const_data_ptr<scalar_t>();
    const auto clamped = pd_clamped_output<scalar_t>(static_cast<scalar_t>(eps));
    for (int64_t r0 = 0; r0 < n; r0 += block) {
      const int64_t rows = std::min(n, r0 + block) - r0;
      at::Tensor w = weights.narrow(0, 0, rows);
      scalar_t* wp = w.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
        grad_weights(g + (r0 + begin) * m, o + (r0 + begin) * m, wp + begin * m,
                     (end - begin) * m, squared, clamped);
      });
      const at::Tensor x_rows = x.narrow(0, r0, rows);
      if (want_x) {
        // grad_x rows = x * rowsum(w) - w @ y
        at::Tensor gx_rows = grad_x.narrow(0, r0, rows);
        at::mm_out(gx_rows, w, y);
        gx_rows.neg_().addcmul_(x_rows, w.sum(1, /*keepdim=*/true));
      }
      if (want_y) {
        // grad_y += y * colsum(w) - w^T @ x_rows (the y * colsum term is added once at the end)
        grad_y.addmm_(w.t(), x_rows, /*beta=*/1, /*alpha=*/-1);
        col_sum.add_(w.sum(0));
      }
    }
  });
  if (want_y) grad_y.addcmul_(y, col_sum.unsqueeze(1));
  if (self) {
    if (want_x) grad_x.add_(grad_y);
    return {grad_x, at::empty({0}, x.options())};
  }
  return {grad_x, grad_y};
}

}  // namespace

TORCH_LIBRARY_IMPL(diva_ext, CPU, m) {
  m.impl("pairwise_distance", &pairwise_distance_cpu);
  m.impl("_pairwise_distance_backward", &pairwise_distance_backward_cpu);
}

}  // namespace diva_ext::cpu
