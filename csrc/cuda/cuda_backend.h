// The GPU backend of the ops' host glue (glue.h): raw device pointers, the current stream and
// device, torch's launch check. Included by the .cu files only.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "glue.h"

namespace diva_ext {

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
  static c10::cuda::CUDAGuard guard(const at::Tensor& t) { return c10::cuda::CUDAGuard(t.device()); }
  static at::Tensor unwritten(at::IntArrayRef sizes, const at::TensorOptions& options) {
    return at::empty(sizes, options);
  }
};

}  // namespace diva_ext
