// Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the
// counter-based generator of distance_weighted_negatives' Gumbel noise.
//
// One copy, shared by the CPU kernels, the CUDA kernels and the CUDA emulation, so every device
// draws the same bits for the same (counter, key); curand's and ATen's Philox are device-only
// or wrap state differently. Checked against Random123's known-answer vectors
// (python_tests/test_distance_weighted_philox.py).
//
// NB: plain integer arithmetic, written so that GCC vectorises a loop of calls (the
// 32 x 32 -> 64-bit products become vpmuludq).
#pragma once

#include <cstdint>

#include "diva_ext/device.h"

namespace diva_ext::math {

constexpr std::uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr std::uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr std::uint32_t kPhiloxW0 = 0x9E3779B9u;  // golden ratio
constexpr std::uint32_t kPhiloxW1 = 0xBB67AE85u;  // sqrt(3) - 1
constexpr int kPhiloxRounds = 10;

struct Philox4x32 {
  std::uint32_t v[4];
};

// The high word of a * b (nvcc turns this into mul.hi.u32; one code path for every compiler).
DIVA_HD std::uint32_t philox_mulhi(std::uint32_t a, std::uint32_t b) {
  return static_cast<std::uint32_t>((static_cast<std::uint64_t>(a) * b) >> 32);
}

// The 4x32-10 bijection of the 128-bit counter (c0, c1, c2, c3) under the 64-bit key (k0, k1).
DIVA_HD Philox4x32 philox4x32_10(std::uint32_t c0, std::uint32_t c1, std::uint32_t c2,
                                 std::uint32_t c3, std::uint32_t k0, std::uint32_t k1) {
  for (int round = 0; round < kPhiloxRounds; ++round) {
    if (round > 0) {  // the key schedule bumps before every round but the first
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const std::uint32_t hi0 = philox_mulhi(kPhiloxM0, c0), lo0 = kPhiloxM0 * c0;
    const std::uint32_t hi1 = philox_mulhi(kPhiloxM1, c2), lo1 = kPhiloxM1 * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  return Philox4x32{{c0, c1, c2, c3}};
}

}  // namespace diva_ext::math
