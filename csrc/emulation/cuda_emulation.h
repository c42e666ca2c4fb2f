// CUDA execution model on the CPU, for running the project's CUDA kernels in CI without a GPU
// (docs/design.md §6). Test-only: diva_ext/device.h includes this header when DIVA_CUDA_EMULATION is
// defined, and only the diva_ext._cuda_emulated test extension defines it (csrc/emulation/).
//
//   runtime.h      blocks, threads as fibers, the randomised scheduler, barriers, launches
//   checked_ptr.h  bounds-checked global / dynamic shared memory; -fsanitize=bounds handler
//   intrinsics.h   __syncthreads, the warp shuffles, single-rounding intrinsics, half types
//   wmma.h         nvcuda::wmma fragments as plain arrays
//
// Include torch headers before this one: it defines CUDA's keywords as macros.
#pragma once

#include "runtime.h"
#include "checked_ptr.h"
#include "intrinsics.h"
#include "wmma.h"

// Built-in variables of the running emulated thread.
#define threadIdx (::diva_ext::emu::current_thread().idx)
#define blockIdx (::diva_ext::emu::current_block().block_idx)
#define blockDim (::diva_ext::emu::current_block().launch->block)
#define gridDim (::diva_ext::emu::current_block().launch->grid)

// Keywords. Kernels and device functions become inline host functions (one definition across
// the emulation library's translation units); write device helpers in headers as
// `__device__ __forceinline__` or `__device__ inline` (a bare `__device__` function defined in a
// header included by two emulated ops would be defined twice). __shared__ variables are
// function-level statics, private to the OS thread that runs the launch, so shared by the
// threads (fibers) of the block running on it; they keep their values from block to block
// (on a GPU they start undefined). __restrict__ is dropped (it cannot qualify a checked pointer).
#define __global__ inline
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __constant__ inline
#define __shared__ static thread_local
#define __restrict__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

namespace diva_ext {
template <typename T>
using gmem = emu::checked_ptr<T>;
}  // namespace diva_ext

#define DIVA_LAUNCH(kernel, grid, block, smem, stream) \
  ::diva_ext::emu::Launcher(kernel, #kernel, (grid), (block), (smem), (stream))
#define DIVA_DYNAMIC_SHARED(T, name) ::diva_ext::gmem<T> name = ::diva_ext::emu::dynamic_shared<T>()
