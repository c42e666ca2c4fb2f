// What the host glue of every op (csrc/cuda/<op>_glue.h) shares. Each glue is a class template
// over a Backend, instantiated by the CUDA op (csrc/cuda/<op>.cu with CudaBackend,
// cuda_backend.h) and by the CUDA emulation (csrc/emulation/<op>.cpp with EmulatedBackend,
// csrc/emulation/emulated.h), so both run one validation, one plan and one launch sequence.
//
// A Backend supplies:
//   template <typename T> static gmem<T> ptr(const at::Tensor& t, const char* name);
//       t's elements as a kernel pointer (bounds-checked and named under the emulation)
//   static cudaStream_t stream();                  the stream the launches go to
//   static int num_sms(const at::Tensor& t);       multiprocessors of t's device (the plans')
//   static void check_launch();                    after each launch sequence
//   static auto guard(const at::Tensor& t);        holds t's device current while alive
//   static at::Tensor unwritten(at::IntArrayRef sizes, const at::TensorOptions& options);
//       an output the kernels must write entirely: empty on a GPU, poisoned (NaN, -7) under
//       the emulation, so that an element a kernel misses shows
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

#include <type_traits>

#include "diva_ext/device.h"

namespace diva_ext {

// The element type the kernels are instantiated with for the dispatched scalar_t: CUDA's
// __half / __nv_bfloat16 for c10's half types (same bits), scalar_t otherwise. Under the
// emulation __half and __nv_bfloat16 are c10's types, so it is scalar_t there.
template <typename S>
using kernel_t =
    std::conditional_t<std::is_same_v<S, at::Half>, __half,
                       std::conditional_t<std::is_same_v<S, at::BFloat16>, __nv_bfloat16, S>>;

}  // namespace diva_ext

// The dtypes of the CUDA kernels: float32, float64, float16, bfloat16.
#define DIVA_CUDA_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)
