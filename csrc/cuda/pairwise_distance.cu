// CUDA entry points of pairwise_distance: validation, dtype dispatch, stream and device guard.
// The kernels themselves are in pairwise_distance_kernels.cuh.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>

#include "diva_ext/pairwise_distance_checks.h"
#include "pairwise_distance_kernels.cuh"

namespace diva_ext {
namespace {

at::Tensor pairwise_distance_cuda(const at::Tensor& x_in, const std::optional<at::Tensor>& y_opt,
                                  bool squared, double eps) {
  const at::Tensor y_in = y_opt.has_value() ? *y_opt : at::Tensor();
  check_pairwise_distance_args(x_in, y_in, eps, /*allow_half=*/true);
  check_pairwise_distance_finite(x_in, y_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor y = y_in.defined() ? y_in.contiguous() : x;
  const int64_t n = x.size(0), m = y.size(0), d = x.size(1);
  at::Tensor out = at::empty({n, m}, x.options());
  if (n == 0 || m == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "pairwise_distance_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    cuda::launch_pairwise_distance_forward<scalar_t, acc_t>(
        x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), n, m, d, squared, eps, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> pairwise_distance_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& x_in, const std::optional<at::Tensor>& y_opt,
    const at::Tensor& out_in, bool squared, double eps, bool needs_grad_x, bool needs_grad_y) {
  const at::Tensor y_in = y_opt.has_value() ? *y_opt : at::Tensor();
  check_pairwise_distance_backward_args(grad_in, x_in, y_in, out_in, eps, /*allow_half=*/true);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool self = !y_in.defined();
  const at::Tensor x = x_in.contiguous();
  const at::Tensor y = self ? x : y_in.contiguous();
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor out = out_in.contiguous();
  const int64_t n = x.size(0), m = y.size(0), d = x.size(1);
  const bool want_y = !self && needs_grad_y;

  at::Tensor grad_x = needs_grad_x ? at::empty_like(x) : at::empty({0}, x.options());
  at::Tensor grad_y = want_y ? at::empty_like(y) : at::empty({0}, x.options());
  if (n == 0 || m == 0 || d == 0) {
    grad_x.zero_();
    grad_y.zero_();
    return {grad_x, grad_y};
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "pairwise_distance_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    cuda::launch_pairwise_distance_backward<scalar_t, acc_t>(
        grad.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(),
        x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
        grad_x.mutable_data_ptr<scalar_t>(), grad_y.mutable_data_ptr<scalar_t>(), n, m, d, squared,
        eps, self, needs_grad_x, want_y, stream);
    // One check covers the launches: they are asynchronous and a failed launch stays reported.
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x, grad_y};
}

}  // namespace

TORCH_LIBRARY_IMPL(diva_ext, CUDA, m) {
  m.impl("pairwise_distance", &pairwise_distance_cuda);
  m.impl("_pairwise_distance_backward", &pairwise_distance_backward_cuda);
}

}  // namespace diva_ext
