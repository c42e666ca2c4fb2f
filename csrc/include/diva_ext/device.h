// Portability layer shared by the CPU kernels, the CUDA kernels and the CUDA emulation.
//
// DIVA_HD marks per-element math that both a CPU loop and a CUDA thread call, so both
// compute one function. DIVA_LAUNCH(kernel, grid, block, smem, stream)(args...) launches a
// kernel with nvcc, and runs it on the CPU under DIVA_CUDA_EMULATION (csrc/emulation/).
// gmem<T> is a pointer into global memory: a raw pointer under nvcc, a bounds-checked
// pointer under the emulation. DIVA_DYNAMIC_SHARED(T, name) declares `name`, the block's
// dynamic shared memory (the launch's smem bytes) as T elements: a T* under nvcc, a
// bounds-checked pointer under the emulation (write it instead of `extern __shared__`).
// to_acc<Acc>(v) and from_acc<T>(v) convert a kernel element to its accumulation type and back.
// Kernels include this header only: it brings __half, __nv_bfloat16 and nvcuda::wmma.
#pragma once

#include <type_traits>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#define DIVA_HD __host__ __device__ __forceinline__
#define DIVA_LAUNCH(kernel, grid, block, smem, stream) kernel<<<(grid), (block), (smem), (stream)>>>
#define DIVA_DYNAMIC_SHARED(T, name)                                 \
  extern __shared__ __align__(128) unsigned char diva_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(diva_dynamic_smem_)
namespace diva_ext {
template <typename T>
using gmem = T*;
}  // namespace diva_ext
#elif defined(DIVA_CUDA_EMULATION)
// csrc/emulation/ (test-only; csrc/ is on the include path of the emulation's build only).
#include "emulation/cuda_emulation.h"
#define DIVA_HD inline
#else
#define DIVA_HD inline
#endif

namespace diva_ext {

// Under nvcc, __half and __nv_bfloat16 convert through intrinsics: torch compiles CUDA with
// __CUDA_NO_HALF_CONVERSIONS__. Every other element type (c10's half types on the CPU and
// under the emulation, float, double) converts by static_cast.
template <typename Acc, typename T>
DIVA_HD Acc to_acc(T v) {
#if defined(__CUDACC__)
  if constexpr (std::is_same_v<T, __half>) {
    return static_cast<Acc>(__half2float(v));
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return static_cast<Acc>(__bfloat162float(v));
  } else {
    return static_cast<Acc>(v);
  }
#else
  return static_cast<Acc>(v);
#endif
}

template <typename T, typename Acc>
DIVA_HD T from_acc(Acc v) {
#if defined(__CUDACC__)
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half(static_cast<float>(v));
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16(static_cast<float>(v));
  } else {
    return static_cast<T>(v);
  }
#else
  return static_cast<T>(v);
#endif
}

}  // namespace diva_ext
