// CUDA emulation, part 3: device intrinsics (test-only; see csrc/emulation/README.md).
//
// Warp intrinsics are warp collectives with CUDA's semantics on 32-lane warps: every lane named
// in the mask must call the same intrinsic with the same mask. A lane that calls with a mask
// not naming itself, or naming exited or missing lanes, fails the launch at once; lanes that
// never meet (one waits in another collective, or at a barrier) are reported as a deadlock.
// A shuffle from a lane outside the mask returns
// 0xff bytes (NaN for floating types): the value is undefined on a GPU. Atomics are plain
// read-modify-writes (fibers switch only at yield points, never inside one) preceded by a yield
// point. Fast-math intrinsics compute the exact function (the GPU's approximations are within
// the tests' tolerances).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstring>
#include <math.h>  // CUDA's float overloads (sqrt(float), ...) in the global namespace
#include <source_location>
#include <type_traits>

#include "diva_ext/emulation/checked_ptr.h"
#include "diva_ext/emulation/runtime.h"

// ---- Synchronisation ----------------------------------------------------------------------

inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  diva_ext::emu::block_barrier("__syncthreads()", 0, 0, loc);
}
inline int __syncthreads_count(int predicate, std::source_location loc = std::source_location::current()) {
  return diva_ext::emu::block_barrier("__syncthreads_count()", 1, predicate, loc);
}
inline int __syncthreads_and(int predicate, std::source_location loc = std::source_location::current()) {
  return diva_ext::emu::block_barrier("__syncthreads_and()", 2, predicate, loc);
}
inline int __syncthreads_or(int predicate, std::source_location loc = std::source_location::current()) {
  return diva_ext::emu::block_barrier("__syncthreads_or()", 3, predicate, loc);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location loc = std::source_location::current()) {
  diva_ext::emu::warp_collective("__syncwarp", mask, 0, loc, [](diva_ext::emu::Thread* const*) {});
}
inline unsigned __activemask(std::source_location loc = std::source_location::current()) {
  return diva_ext::emu::converge(loc);
}
// Memory fences order this thread's accesses; the emulation's memory is sequentially
// consistent, so a fence is only a yield point.
inline void __threadfence() { diva_ext::emu::maybe_yield(); }
inline void __threadfence_block() { diva_ext::emu::maybe_yield(); }
[[noreturn]] inline void __trap() { diva_ext::emu::fail("__trap() called"); }

// ---- Warp shuffles and votes --------------------------------------------------------------

namespace diva_ext::emu {

enum class Shuffle { kIndex, kUp, kDown, kXor };

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
        case Shuffle::kIndex: src = segment + (a & (w - 1)); break;
        case Shuffle::kUp: src = lane - a; if (a < 0 || src < segment) src = lane; break;
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

// Ballot of the predicates of the lanes in the mask.
inline unsigned vote(const char* op, unsigned mask, int predicate, std::source_location loc) {
  Thread& self = current_thread();
  self.operand = predicate != 0;
  warp_collective(op, mask, 1, loc, [](Thread* const* lanes) {
    unsigned ballot = 0;
    for (int l = 0; l < kWarpSize; ++l) {
      if (lanes[l] != nullptr && lanes[l]->operand) ballot |= 1u << l;
    }
    for (int l = 0; l < kWarpSize; ++l) {
      if (lanes[l] != nullptr) lanes[l]->result = ballot;
    }
  });
  return static_cast<unsigned>(self.result);
}

}  // namespace diva_ext::emu

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
              std::source_location loc = std::source_location::current()) {
  return diva_ext::emu::shuffle("__shfl_sync", diva_ext::emu::Shuffle::kIndex, mask, var, src_lane, width, loc);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                 std::source_location loc = std::source_location::current()) {
  return diva_ext::emu::shuffle("__shfl_up_sync", diva_ext::emu::Shuffle::kUp, mask, var, static_cast<int>(delta), width, loc);
}
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
inline unsigned __ballot_sync(unsigned mask, int predicate, std::source_location loc = std::source_location::current()) {
  return diva_ext::emu::vote("__ballot_sync", mask, predicate, loc);
}
inline int __any_sync(unsigned mask, int predicate, std::source_location loc = std::source_location::current()) {
  return diva_ext::emu::vote("__any_sync", mask, predicate, loc) != 0;
}
inline int __all_sync(unsigned mask, int predicate, std::source_location loc = std::source_location::current()) {
  return diva_ext::emu::vote("__all_sync", mask, predicate, loc) == mask;
}

// ---- Atomics and loads --------------------------------------------------------------------

namespace diva_ext::emu {
template <typename T, typename F>
T atomic_rmw(T* address, F update) {
  maybe_yield();
  const T old = *address;
  *address = update(old);
  return old;
}
template <typename T>
T* atomic_target(checked_ptr<T> p) { return &p[0]; }  // bounds-checked
template <typename T>
T* atomic_target(T* p) { return p; }
template <typename T>
using same_t = std::type_identity_t<T>;
}  // namespace diva_ext::emu

// Each takes a raw pointer (shared memory, &buf[i]) or a gmem<T>.
#define DIVA_EMU_ATOMIC(name, expr)                                                            \
  template <typename T>                                                                        \
  T name(T* address, diva_ext::emu::same_t<T> val) {                                           \
    return diva_ext::emu::atomic_rmw(address, [&](T old) -> T { return expr; });               \
  }                                                                                            \
  template <typename T>                                                                        \
  T name(diva_ext::emu::checked_ptr<T> address, diva_ext::emu::same_t<T> val) {                \
    return name(diva_ext::emu::atomic_target(address), val);                                   \
  }
DIVA_EMU_ATOMIC(atomicAdd, static_cast<T>(old + val))
DIVA_EMU_ATOMIC(atomicSub, static_cast<T>(old - val))
DIVA_EMU_ATOMIC(atomicMax, val > old ? val : old)
DIVA_EMU_ATOMIC(atomicMin, val < old ? val : old)
DIVA_EMU_ATOMIC(atomicExch, val)
DIVA_EMU_ATOMIC(atomicAnd, static_cast<T>(old & val))
DIVA_EMU_ATOMIC(atomicOr, static_cast<T>(old | val))
DIVA_EMU_ATOMIC(atomicXor, static_cast<T>(old ^ val))
DIVA_EMU_ATOMIC(atomicInc, static_cast<T>(old >= val ? 0 : old + 1))
DIVA_EMU_ATOMIC(atomicDec, static_cast<T>((old == 0 || old > val) ? val : old - 1))
#undef DIVA_EMU_ATOMIC

template <typename T>
T atomicCAS(T* address, diva_ext::emu::same_t<T> compare, diva_ext::emu::same_t<T> val) {
  return diva_ext::emu::atomic_rmw(address, [&](T old) -> T { return old == compare ? val : old; });
}
template <typename T>
T atomicCAS(diva_ext::emu::checked_ptr<T> address, diva_ext::emu::same_t<T> compare, diva_ext::emu::same_t<T> val) {
  return atomicCAS(diva_ext::emu::atomic_target(address), compare, val);
}

template <typename T>
T __ldg(const T* p) {
  diva_ext::emu::maybe_yield();
  return *p;
}
template <typename T>
T __ldg(diva_ext::emu::checked_ptr<const T> p) {
  return p[0];
}

// ---- Arithmetic intrinsics ----------------------------------------------------------------

inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline void __sincosf(float x, float* s, float* c) { *s = std::sin(x); *c = std::cos(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fadd_rn(float x, float y) { return x + y; }
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __fmaf_rn(float x, float y, float z) { return std::fma(x, y, z); }
inline double __dadd_rn(double x, double y) { return x + y; }
inline double __dmul_rn(double x, double y) { return x * y; }
inline double __fma_rn(double x, double y, double z) { return std::fma(x, y, z); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : x > 0.0f ? x : 0.0f; }  // NaN -> 0
inline int __float2int_rn(float x) { return static_cast<int>(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(std::floor(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(std::ceil(x)); }
inline unsigned __float2uint_rn(float x) { return static_cast<unsigned>(std::nearbyint(x)); }
inline long long __float2ll_rn(float x) { return static_cast<long long>(std::nearbyint(x)); }
inline int __double2int_rn(double x) { return static_cast<int>(std::nearbyint(x)); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }
inline float __double2float_rn(double x) { return static_cast<float>(x); }

template <typename To, typename From>
To diva_emu_bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From));
  To out;
  std::memcpy(&out, &v, sizeof out);
  return out;
}
inline int __float_as_int(float x) { return diva_emu_bit_cast<int>(x); }
inline unsigned __float_as_uint(float x) { return diva_emu_bit_cast<unsigned>(x); }
inline float __int_as_float(int x) { return diva_emu_bit_cast<float>(x); }
inline float __uint_as_float(unsigned x) { return diva_emu_bit_cast<float>(x); }
inline long long __double_as_longlong(double x) { return diva_emu_bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return diva_emu_bit_cast<double>(x); }

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned __umulhi(unsigned x, unsigned y) { return static_cast<unsigned>((std::uint64_t{x} * y) >> 32); }
inline unsigned long long __umul64hi(unsigned long long x, unsigned long long y) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(x) * y) >> 64);
}

// CUDA's min/max overloads for arithmetic types (device code calls them unqualified).
template <typename A, typename B>
  requires(std::is_arithmetic_v<A> && std::is_arithmetic_v<B>)
std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
template <typename A, typename B>
  requires(std::is_arithmetic_v<A> && std::is_arithmetic_v<B>)
std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}

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
inline __half __hadd(__half a, __half b) { return __half(static_cast<float>(a) + static_cast<float>(b)); }
inline __half __hmul(__half a, __half b) { return __half(static_cast<float>(a) * static_cast<float>(b)); }
