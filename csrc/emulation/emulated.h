// The emulation's side of the ops' host glue (csrc/cuda/glue.h): tensors as bounds-checked
// kernel buffers, a small emulated GPU, poisoned outputs, and each op's schema and entry point
// with a trailing schedule seed. Include this first, then the op's glue: the emulation defines
// CUDA's keywords as macros, so the torch headers the glues use come before it.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <string>

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

// The glue's Backend (csrc/cuda/glue.h) on a "GPU" of kSms multiprocessors: few, so that small
// test sizes already exercise the plans' split axes.
template <int kSms>
struct EmulatedBackend {
  template <typename T>
  static gmem<T> ptr(const at::Tensor& t, const char* name) {
    return buffer<T>(t, name);
  }
  static cudaStream_t stream() { return emulated::stream(); }
  static int num_sms(const at::Tensor&) { return kSms; }
  static void check_launch() {}
  static int guard(const at::Tensor&) { return 0; }
  static at::Tensor unwritten(at::IntArrayRef sizes, const at::TensorOptions& options) {
    if (at::isFloatingType(options.dtype().toScalarType())) return at::full(sizes, NAN, options);
    return at::full(sizes, -7, options);
  }
};

// The emulated op of an entry point: its arguments plus a trailing schedule seed.
template <auto kEntry>
struct Seeded;

template <typename R, typename... Args, R (*kEntry)(Args...)>
struct Seeded<kEntry> {
  static R run(Args... args, int64_t schedule_seed) {
    ScheduleScope schedule(static_cast<std::uint64_t>(schedule_seed));
    return kEntry(args...);
  }
};

// Declares the emulated op of `schema` (csrc/op_schemas.h): its arguments plus a trailing
// `int schedule_seed`.
inline void def_seeded(torch::Library& m, const char* schema) {
  std::string s(schema);
  const std::size_t close = s.find(") ->");
  TORCH_CHECK(close != std::string::npos, "not an operator schema: ", schema);
  m.def(s.insert(close, ", int schedule_seed").c_str());
}

}  // namespace diva_ext::emulated
