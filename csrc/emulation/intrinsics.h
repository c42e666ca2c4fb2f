// CUDA emulation, part 3: the device intrinsics the kernels use (test-only; see
// csrc/emulation/README.md).
//
// Warp shuffles are warp collectives with CUDA's semantics on 32-lane warps: every lane named in
// the mask must call the same intrinsic with the same mask. A lane that calls with a mask not
// naming itself, or naming exited or missing lanes, fails the launch at once; lanes that never
// meet (one waits in another collective, or at a barrier) are reported as a deadlock. A shuffle
// from a lane outside the mask returns 0xff bytes (NaN for floating types): the value is
// undefined on a GPU.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstring>
#include <math.h>  // CUDA's float overloads (sqrt(float), ...) in the global namespace
#include <source_location>
#include <type_traits>

#include "checked_ptr.h"
#include "runtime.h"

// ---- Synchronisation ----------------------------------------------------------------------

inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  diva_ext::emu::block_barrier("__syncthreads()", loc);
}

// ---- Warp shuffles ------------------------------------------------------------------------

namespace diva_ext::emu {

enum class Shuffle { kDown, kXor };

template <typename T>
T shuffle(const char* op, Shuffle mode, unsigned mask, T var, int arg, int width, std::source_location loc) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move values of up to 8 bytes");
  if (width < 1 || width > kWarpSize || (width & (width - 1)) != 0) {
    fail(std::string(op) + " at " + format_site(loc) + ": width " + std::to_string(width) +
         " is not a power of two in [1, 32]");
  }
  Thread& self = current_thread();
  self.operand = 0;
  std::memcpy(&self.operand, &var, sizeof(T));
  self.arg = arg;
  self.width = width;
  warp_collective(op, mask, sizeof(T), loc, [mode](Thread* const* lanes) {
    for (int lane = 0; lane < kWarpSize; ++lane) {
      Thread* me = lanes[lane];
      if (me == nullptr) continue;
      const int w = me->width, a = me->arg, segment = lane & ~(w - 1);
      int src = lane;
      switch (mode) {
        case Shuffle::kDown: src = lane + a; if (a < 0 || src >= segment + w) src = lane; break;
        case Shuffle::kXor: src = lane ^ (a & (kWarpSize - 1)); if (src >= segment + w) src = lane; break;
      }
      // Reading a lane outside the mask is undefined: all-ones bytes (NaN for floats).
      me->result = lanes[src] != nullptr ? lanes[src]->operand : ~std::uint64_t{0};
    }
  });
  T out;
  std::memcpy(&out, &self.result, sizeof(T));
  return out;
}

}  // namespace diva_ext::emu

template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                   std::source_location loc = std::source_location::current()) {
  return diva_ext::emu::shuffle("__shfl_down_sync", diva_ext::emu::Shuffle::kDown, mask, var, static_cast<int>(delta), width, loc);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                  std::source_location loc = std::source_location::current()) {
  return diva_ext::emu::shuffle("__shfl_xor_sync", diva_ext::emu::Shuffle::kXor, mask, var, lane_mask, width, loc);
}

// ---- Arithmetic intrinsics: single roundings (math/info_nce.h) -----------------------------

inline float __fadd_rn(float x, float y) { return x + y; }
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __fmaf_rn(float x, float y, float z) { return std::fma(x, y, z); }
inline double __dadd_rn(double x, double y) { return x + y; }
inline double __dmul_rn(double x, double y) { return x * y; }
inline double __fma_rn(double x, double y, double z) { return std::fma(x, y, z); }

// ---- Half precision: __half and __nv_bfloat16 are c10's types ------------------------------

using __half = c10::Half;
using half = c10::Half;
using __nv_bfloat16 = c10::BFloat16;

inline __half __float2half(float x) { return __half(x); }
inline __half __float2half_rn(float x) { return __half(x); }
inline float __half2float(__half x) { return static_cast<float>(x); }
inline __nv_bfloat16 __float2bfloat16(float x) { return __nv_bfloat16(x); }
inline __nv_bfloat16 __float2bfloat16_rn(float x) { return __nv_bfloat16(x); }
inline float __bfloat162float(__nv_bfloat16 x) { return static_cast<float>(x); }
