// Torch glue of pairwise_distance's CUDA kernels, shared by csrc/cuda/pairwise_distance.cu (on
// the GPU) and csrc/emulation/pairwise_distance.cpp (the same kernels on the CPU): validation,
// allocation, dtype dispatch and the launch sequences of pairwise_distance_kernels.cuh. The
// Backend is described in glue.h.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>

#include <optional>
#include <tuple>

#include "diva_ext/pairwise_distance_checks.h"
#include "glue.h"
#include "pairwise_distance_kernels.cuh"

namespace diva_ext {

template <typename Backend>
struct PairwiseDistanceGlue {
  static at::Tensor forward(const at::Tensor& x_in, const std::optional<at::Tensor>& y_opt,
                            bool squared, double eps) {
    const at::Tensor y_in = y_opt.has_value() ? *y_opt : at::Tensor();
    check_pairwise_distance_args(x_in, y_in, eps, /*allow_half=*/true);
    check_pairwise_distance_finite(x_in, y_in);
    [[maybe_unused]] const auto guard = Backend::guard(x_in);
    const at::Tensor x = x_in.contiguous();
    const at::Tensor y = y_in.defined() ? y_in.contiguous() : x;
    const int64_t n = x.size(0), m = y.size(0), d = x.size(1);
    at::Tensor out = Backend::unwritten({n, m}, x.options());
    if (n == 0 || m == 0) return out;
    DIVA_CUDA_DISPATCH(x.scalar_type(), "pairwise_distance_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      using kt = kernel_t<scalar_t>;
      cuda::launch_pairwise_distance_forward<kt, acc_t>(
          Backend::template ptr<const kt>(x, "x"), Backend::template ptr<const kt>(y, "y"),
          Backend::template ptr<kt>(out, "out"), n, m, d, squared, eps, Backend::stream());
      Backend::check_launch();
    });
    return out;
  }

  static std::tuple<at::Tensor, at::Tensor> backward(
      const at::Tensor& grad_in, const at::Tensor& x_in, const std::optional<at::Tensor>& y_opt,
      const at::Tensor& out_in, bool squared, double eps, bool needs_grad_x, bool needs_grad_y) {
    const at::Tensor y_in = y_opt.has_value() ? *y_opt : at::Tensor();
    check_pairwise_distance_backward_args(grad_in, x_in, y_in, out_in, eps, /*allow_half=*/true);
    [[maybe_unused]] const auto guard = Backend::guard(x_in);
    const bool self = !y_in.defined();
    const at::Tensor x = x_in.contiguous();
    const at::Tensor y = self ? x : y_in.contiguous();
    const at::Tensor grad = grad_in.contiguous();
    const at::Tensor out = out_in.contiguous();
    const int64_t n = x.size(0), m = y.size(0), d = x.size(1);
    const bool want_y = !self && needs_grad_y;

    at::Tensor grad_x = needs_grad_x ? Backend::unwritten(x.sizes(), x.options()) : at::empty({0}, x.options());
    at::Tensor grad_y = want_y ? Backend::unwritten(y.sizes(), y.options()) : at::empty({0}, x.options());
    if (n == 0 || m == 0 || d == 0) {
      grad_x.zero_();
      grad_y.zero_();
      return {grad_x, grad_y};
    }
    DIVA_CUDA_DISPATCH(x.scalar_type(), "pairwise_distance_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      using kt = kernel_t<scalar_t>;
      cuda::launch_pairwise_distance_backward<kt, acc_t>(
          Backend::template ptr<const kt>(grad, "grad"), Backend::template ptr<const kt>(out, "out"),
          Backend::template ptr<const kt>(x, "x"), Backend::template ptr<const kt>(y, "y"),
          Backend::template ptr<kt>(grad_x, "grad_x"), Backend::template ptr<kt>(grad_y, "grad_y"),
          n, m, d, squared, eps, self, needs_grad_x, want_y, Backend::stream());
      // One check covers the launches: they are asynchronous and a failed launch stays reported.
      Backend::check_launch();
    });
    return {grad_x, grad_y};
  }
};

}  // namespace diva_ext
