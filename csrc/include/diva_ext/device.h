// Portability layer shared by the CPU kernels, the CUDA kernels and the CUDA emulation.
//
// DIVA_HD marks per-element math that both a CPU loop and a CUDA thread call, so both
// compute one function. DIVA_LAUNCH(kernel, grid, block, smem, stream)(args...) launches a
// kernel with nvcc, and runs it on the CPU under DIVA_CUDA_EMULATION (csrc/emulation/).
// gmem<T> is a pointer into global memory: a raw pointer under nvcc, a bounds-checked
// pointer under the emulation. DIVA_DYNAMIC_SHARED(T, name) declares `name`, the block's
// dynamic shared memory (the launch's smem bytes) as T elements: a T* under nvcc, a
// bounds-checked pointer under the emulation (write it instead of `extern __shared__`).
// Kernels include this header only: it brings __half, __nv_bfloat16 and nvcuda::wmma.
#pragma once

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
#include "diva_ext/emulation/cuda_emulation.h"
#define DIVA_HD inline
#else
#define DIVA_HD inline
#endif
