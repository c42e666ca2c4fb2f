// CUDA entry points of info_nce, _info_nce_forward and _info_nce_backward: device guard, current
// stream, launch checks. Allocation, dispatch and the launch sequences are shared with the CUDA
// emulation (info_nce_glue.h, info_nce_kernels.cuh).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "info_nce_kernels.cuh"
#include "info_nce_glue.h"

namespace diva_ext {
namespace {

struct CudaBackend {
  template <typename T>
  static gmem<T> ptr(const at::Tensor& t, const char*) {
    return static_cast<T*>(t.data_ptr());
  }
  static cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }
  static int num_sms(const at::Tensor& t) {
    return at::cuda::getDeviceProperties(t.device().index())->multiProcessorCount;
  }
  static void check_launch() { C10_CUDA_KERNEL_LAUNCH_CHECK(); }
};

using Glue = InfoNceGlue<CudaBackend>;

std::tuple<at::Tensor, at::Tensor> info_nce_cuda(const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& queue, double temperature,
                                                 c10::string_view weighting, double lower_cutoff,
                                                 double upper_cutoff) {
  const c10::cuda::CUDAGuard guard(q.device());
  auto [loss, lse, stats, o] = Glue::forward("info_nce", q, k, queue, temperature, weighting,
                                             lower_cutoff, upper_cutoff, false);
  return {loss, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> info_nce_forward_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& queue, double temperature,
    c10::string_view weighting, double lower_cutoff, double upper_cutoff, bool save_o) {
  const c10::cuda::CUDAGuard guard(q.device());
  return Glue::forward("_info_nce_forward", q, k, queue, temperature, weighting, lower_cutoff,
                       upper_cutoff, save_o);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> info_nce_backward_cuda(
    const at::Tensor& grad_loss, const at::Tensor& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& queue, const std::optional<at::Tensor>& stats,
    const std::optional<at::Tensor>& o, double temperature, c10::string_view weighting,
    double lower_cutoff, double upper_cutoff, bool needs_q, bool needs_k, bool needs_queue) {
  const c10::cuda::CUDAGuard guard(q.device());
  return Glue::backward(grad_loss, grad_lse, q, k, queue, stats, o, temperature, weighting,
                        lower_cutoff, upper_cutoff, needs_q, needs_k, needs_queue);
}

}  // namespace

TORCH_LIBRARY_IMPL(diva_ext, CUDA, m) {
  m.impl("info_nce", &info_nce_cuda);
  m.impl("_info_nce_forward", &info_nce_forward_cuda);
  m.impl("_info_nce_backward", &info_nce_backward_cuda);
}

}  // namespace diva_ext
