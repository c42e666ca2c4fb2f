// pairwise_distance's CUDA kernels (csrc/cuda/pairwise_distance_kernels.cuh) run through the
// CUDA emulation, as torch.ops.diva_ext_emulated.pairwise_distance / _pairwise_distance_backward.
// The launch sequence is the kernels' own (launch_pairwise_distance_*); this file only mirrors the
// torch glue of csrc/cuda/pairwise_distance.cu (validation, allocation). Tested against the CPU kernels by
// python_tests/test_cuda_emulation_pairwise_distance.py.
#include <ATen/ops/empty.h>
#include <ATen/ops/full_like.h>
#include <torch/library.h>

#include "emulated.h"
#include "cuda/pairwise_distance_kernels.cuh"
#include "diva_ext/pairwise_distance_checks.h"

namespace diva_ext::emulated {
namespace {

at::Tensor pairwise_distance(const at::Tensor& x_in, const std::optional<at::Tensor>& y_opt,
                             bool squared, double eps, int64_t schedule_seed) {
  const at::Tensor y_in = y_opt.has_value() ? *y_opt : at::Tensor();
  check_pairwise_distance_args(x_in, y_in, eps, /*allow_half=*/true);
  check_pairwise_distance_finite(x_in, y_in);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor y = y_in.defined() ? y_in.contiguous() : x;
  const int64_t n = x.size(0), m = y.size(0), d = x.size(1);
  at::Tensor out = at::empty({n, m}, x.options());
  if (n == 0 || m == 0) return out;
  ScheduleScope schedule(static_cast<std::uint64_t>(schedule_seed));
  DIVA_EMULATED_DISPATCH(x.scalar_type(), "pairwise_distance_emulated", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    cuda::launch_pairwise_distance_forward<scalar_t, acc_t>(
        buffer<const scalar_t>(x, "x"), buffer<const scalar_t>(y, "y"), buffer<scalar_t>(out, "out"),
        n, m, d, squared, eps, stream());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> pairwise_distance_backward(
    const at::Tensor& grad_in, const at::Tensor& x_in, const std::optional<at::Tensor>& y_opt,
    const at::Tensor& out_in, bool squared, double eps, bool needs_grad_x, bool needs_grad_y,
    int64_t schedule_seed) {
  const at::Tensor y_in = y_opt.has_value() ? *y_opt : at::Tensor();
  check_pairwise_distance_backward_args(grad_in, x_in, y_in, out_in, eps, /*allow_half=*/true);
  const bool self = !y_in.defined();
  const at::Tensor x = x_in.contiguous();
  const at::Tensor y = self ? x : y_in.contiguous();
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor out = out_in.contiguous();
  const int64_t n = x.size(0), m = y.size(0), d = x.size(1);
  const bool want_y = !self && needs_grad_y;

  // Poisoned (NaN) rather than empty: an element the kernels fail to write shows.
  at::Tensor grad_x = needs_grad_x ? at::full_like(x, NAN) : at::empty({0}, x.options());
  at::Tensor grad_y = want_y ? at::full_like(y, NAN) : at::empty({0}, x.options());
  if (n == 0 || m == 0 || d == 0) {
    grad_x.zero_();
    grad_y.zero_();
    return {grad_x, grad_y};
  }
  ScheduleScope schedule(static_cast<std::uint64_t>(schedule_seed));
  DIVA_EMULATED_DISPATCH(x.scalar_type(), "pairwise_distance_backward_emulated", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    cuda::launch_pairwise_distance_backward<scalar_t, acc_t>(
        buffer<const scalar_t>(grad, "grad"), buffer<const scalar_t>(out, "out"),
        buffer<const scalar_t>(x, "x"), buffer<const scalar_t>(y, "y"),
        buffer<scalar_t>(grad_x, "grad_x"), buffer<scalar_t>(grad_y, "grad_y"), n, m, d, squared,
        eps, self, needs_grad_x, want_y, stream());
  });
  return {grad_x, grad_y};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(diva_ext_emulated, m) {
  m.def("pairwise_distance(Tensor x, Tensor? y, bool squared, float eps, int schedule_seed) -> Tensor");
  m.def(
      "_pairwise_distance_backward(Tensor grad, Tensor x, Tensor? y, Tensor out, bool squared, "
      "float eps, bool needs_grad_x, bool needs_grad_y, int schedule_seed) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(diva_ext_emulated, CPU, m) {
  m.impl("pairwise_distance", &pairwise_distance);
  m.impl("_pairwise_distance_backward", &pairwise_distance_backward);
}

}  // namespace diva_ext::emulated
