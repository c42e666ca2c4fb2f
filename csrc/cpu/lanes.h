// Lane-wise sums of the CPU epilogues: kLanes<T> independent accumulators (a 64-byte vector's
// worth) reduced in a fixed order at the end, so GCC vectorises them without reassociating
// floating-point sums (no -ffast-math) and every clone (AVX-512, AVX2, baseline) adds in the
// same order.
#pragma once

#include "diva_ext/cpu/simd.h"

namespace diva_ext::cpu {

template <typename T>
constexpr int kLanes = 64 / static_cast<int>(sizeof(T));

template <typename T>
DIVA_ALWAYS_INLINE T lane_sum(const T* lanes) {
  T s = T(0);
  for (int u = 0; u < kLanes<T>; ++u) s += lanes[u];
  return s;
}

}  // namespace diva_ext::cpu
