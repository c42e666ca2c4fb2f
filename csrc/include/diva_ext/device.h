// Portability layer shared by the CPU kernels, the CUDA kernels and the CUDA emulation.
//
// DIVA_HD marks per-element math that both a CPU loop and a CUDA thread call, so both
// compute one function. DIVA_LAUNCH(kernel, grid, block, smem, stream)(args...) launches a
// kernel with nvcc, and runs it on the CPU under DIVA_CUDA_EMULATION (csrc/emulation/).
// gmem<T> is a pointer into global memory: a raw pointer under nvcc, a bounds-checked
// pointer under the emulation.
#pragma once

#if defined(__CUDACC__)
#define DIVA_HD __host__ __device__ __forceinline__
#define DIVA_LAUNCH(kernel, grid, block, smem, stream) kernel<<<(grid), (block), (smem), (stream)>>>
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
