// Torch glue of the emulated ops: tensors to bounds-checked kernel buffers, dtype dispatch and
// the schedule seed. Include torch headers first, then this, then the op's *_kernels.cuh.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "diva_ext/device.h"

namespace diva_ext::emulated {

// A contiguous CPU tensor's elements as a bounds-checked kernel pointer named `name`.
template <typename T>
gmem<T> buffer(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), "emulated kernel buffer '", name,
              "' must be a contiguous CPU tensor");
  return gmem<T>(t.data_ptr<std::remove_const_t<T>>(), static_cast<std::size_t>(t.numel()), name);
}

// Launches inside the scope follow the interleaving chosen by `seed`.
using emu::ScheduleScope;

// The stream argument of launch functions (ignored by the emulation).
inline cudaStream_t stream() { return nullptr; }

}  // namespace diva_ext::emulated

// The dtypes of the CUDA kernels: float32, float64, float16, bfloat16.
#define DIVA_EMULATED_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)
