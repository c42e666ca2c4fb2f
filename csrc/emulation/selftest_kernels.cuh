// Kernels that test the CUDA emulation itself (torch-free; nvcc compiles them too):
//  - intrinsic probes: their results are checked against Python references
//    (python_tests/test_cuda_emulation_harness.py);
//  - planted faults: each is a correct kernel with one classic GPU bug, next to its correct
//    twin, to prove the emulation catches the bug (a wrong result or a launch error).
#pragma once

#include "diva_ext/device.h"

namespace diva_ext::emulation_selftest {

// ---- Intrinsic probes ---------------------------------------------------------------------

// out[r, i] for the shuffle variants the kernels and the planted faults use, of x[i]; one block
// of `n` threads (a multiple of 32).
template <typename T>
__global__ void shuffles_kernel(gmem<const T> x, gmem<T> out, int n) {
  const int i = threadIdx.x;
  const T v = x[i];
  out[0 * n + i] = __shfl_xor_sync(0xffffffffu, v, 9);
  out[1 * n + i] = __shfl_xor_sync(0xffffffffu, v, 2);
  out[2 * n + i] = __shfl_down_sync(0xffffffffu, v, 5);
  out[3 * n + i] = __shfl_down_sync(0xffffffffu, v, 2, 16);
}

// The conversions and single-rounding intrinsics of the kernels, one row per function (x > 0).
__global__ void conversions_kernel(gmem<const float> x, gmem<float> out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = x[i];
  int r = 0;
  out[r++ * n + i] = __half2float(__float2half(v));
  out[r++ * n + i] = __bfloat162float(__float2bfloat16(v));
  out[r++ * n + i] = __fmul_rn(v, 3.0f);
  out[r++ * n + i] = __fadd_rn(v, 1.0f);
  out[r++ * n + i] = __fmaf_rn(v, v, 1.0f);
}

// One warp: d = a @ b with wmma m16n16k16. a [16, 16] row-major is staged through dynamic
// shared memory, b [16, 16] is read from global memory in the layout LayoutB (row-major:
// b[k * 16 + j]; col-major: b[j * 16 + k]), d is [16, 16] row-major float.
template <typename T, typename LayoutB>
__global__ void wmma_kernel(gmem<const T> a, gmem<const T> b, gmem<float> d) {
  namespace wmma = nvcuda::wmma;
  DIVA_DYNAMIC_SHARED(T, a_tile);
  for (int e = threadIdx.x; e < 16 * 16; e += 32) a_tile[e] = a[e];
  __syncthreads();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, T, LayoutB> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
  wmma::fill_fragment(fc, 0.0f);
  wmma::load_matrix_sync(fa, a_tile, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(d, fc, 16, wmma::mem_row_major);
}

// ---- Planted faults -----------------------------------------------------------------------

constexpr int kBlock = 64;

// Reverses each 64-element chunk of x through shared memory. Fault: no barrier between the
// writes and the reads of the tile (read-after-write race).
template <bool kBarrier>
__global__ void reverse_kernel(gmem<const float> x, gmem<float> out) {
  __shared__ float tile[kBlock];
  const int t = threadIdx.x, base = blockIdx.x * kBlock;
  tile[t] = x[base + t];
  if (kBarrier) __syncthreads();
  out[base + t] = tile[kBlock - 1 - t];
}

// Every thread of the single block sums x[0..n) through a shared tile, chunk by chunk.
// Fault: no barrier at the end of the loop body, so a fast thread overwrites the tile while
// others still read it (write-after-read race).
template <bool kSecondBarrier>
__global__ void tile_sum_kernel(gmem<const float> x, gmem<float> out, int n) {
  __shared__ float tile[kBlock];
  const int t = threadIdx.x;
  float acc = 0.0f;
  for (int k0 = 0; k0 < n; k0 += kBlock) {
    tile[t] = k0 + t < n ? x[k0 + t] : 0.0f;
    __syncthreads();
    for (int j = 0; j < kBlock; ++j) acc += tile[j];
    if (kSecondBarrier) __syncthreads();
  }
  out[t] = acc;
}

// Doubles x into out (n elements). Fault: `i <= n` writes one element past the end.
template <bool kOffByOne>
__global__ void scale_kernel(gmem<const float> x, gmem<float> out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (kOffByOne ? i <= n : i < n) out[i] = 2.0f * (i < n ? x[i] : 0.0f);
}

// Rotates each 64-chunk by one through a static shared tile. Fault: the tile is indexed
// t + 1 instead of (t + 1) % 64: index 64 of a 64-element __shared__ array.
template <bool kFault>
__global__ void shared_rotate_kernel(gmem<const float> x, gmem<float> out) {
  __shared__ float tile[kBlock];
  const int t = threadIdx.x, base = blockIdx.x * kBlock;
  tile[kFault ? t + 1 : (t + 1) % kBlock] = x[base + t];
  __syncthreads();
  out[base + t] = tile[t];
}

// Same through dynamic shared memory (64 floats). Fault: index t + 1 past the end.
template <bool kFault>
__global__ void dynamic_rotate_kernel(gmem<const float> x, gmem<float> out) {
  DIVA_DYNAMIC_SHARED(float, tile);
  const int t = threadIdx.x, base = blockIdx.x * kBlock;
  tile[kFault ? t + 1 : (t + 1) % kBlock] = x[base + t];
  __syncthreads();
  out[base + t] = tile[t];
}

// Warp sums of x (blocks of 64 threads): out[w] = sum of the 32 values of warp w.
// Faults: kind 1 starts the shuffle-down tree at offset 8 (sums half the warp); kind 2 uses
// the half-warp mask 0x0000ffff while all 32 lanes take part; kind 3 is a butterfly that misses
// offset 16.
template <int kFault>
__global__ void warp_sum_kernel(gmem<const float> x, gmem<float> out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = x[i];
  if (kFault == 3) {
    for (int offset = 1; offset < 16; offset *= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  } else {
    const unsigned mask = kFault == 2 ? 0x0000ffffu : 0xffffffffu;
    for (int offset = kFault == 1 ? 8 : 16; offset > 0; offset /= 2) v += __shfl_down_sync(mask, v, offset);
  }
  if (i % 32 == 0) out[i / 32] = v;
}

// Fault: each of two blocks spins until the other has set its flag, assuming both blocks run
// at the same time (nothing guarantees it without a cooperative launch). The emulation runs the
// blocks one after another, so the spin never ends; it must fail the launch, not hang.
__global__ void inter_block_spin_kernel(gmem<int> flags) {
  if (threadIdx.x != 0) return;
  flags[blockIdx.x] = 1;
  while (flags[1 - blockIdx.x] == 0) {
  }
}

// Divergent barrier: only the first warp reaches __syncthreads, the others return.
__global__ void divergent_barrier_kernel(gmem<const float> x, gmem<float> out) {
  const int t = threadIdx.x;
  if (t >= 32) return;
  __shared__ float tile[32];
  tile[t] = x[t];
  __syncthreads();
  out[t] = tile[31 - t];
}

// Deadlock: half a warp shuffles with a full mask, the other half waits at the barrier.
__global__ void warp_deadlock_kernel(gmem<const float> x, gmem<float> out) {
  const int t = threadIdx.x;
  float v = x[t];
  if (t % 32 < 16) v += __shfl_xor_sync(0xffffffffu, v, 1);
  __syncthreads();
  out[t] = v;
}

}  // namespace diva_ext::emulation_selftest
