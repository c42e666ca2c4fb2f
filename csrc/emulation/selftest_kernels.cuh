// Kernels that test the CUDA emulation itself (torch-free; nvcc compiles them too):
//  - intrinsic probes: their results are checked against Python references
//    (python_tests/test_cuda_emulation_harness.py);
//  - planted faults: each is a correct kernel with one classic GPU bug, next to its correct
//    twin, to prove the emulation catches the bug (a wrong result or a launch error).
#pragma once

#include <type_traits>

#include "diva_ext/device.h"

namespace diva_ext::emulation_selftest {

// ---- Intrinsic probes ---------------------------------------------------------------------

// out[r, i] for 7 shuffle variants of x[i]; one block of `n` threads (a multiple of 32).
template <typename T>
__global__ void shuffles_kernel(gmem<const T> x, gmem<T> out, int n) {
  const int i = threadIdx.x, lane = i % 32;
  const T v = x[i];
  out[0 * n + i] = __shfl_sync(0xffffffffu, v, (lane * 7 + 3) % 32);
  out[1 * n + i] = __shfl_sync(0xffffffffu, v, lane + 5, 8);
  out[2 * n + i] = __shfl_up_sync(0xffffffffu, v, 3);
  out[3 * n + i] = __shfl_down_sync(0xffffffffu, v, 5);
  out[4 * n + i] = __shfl_xor_sync(0xffffffffu, v, 9);
  out[5 * n + i] = __shfl_down_sync(0xffffffffu, v, 2, 16);
  out[6 * n + i] = __shfl_up_sync(0xffffffffu, v, 1, 4);
}

// Votes of p = x[i] > 0 (one block of n threads, a multiple of 32): out[0..4, i] =
// ballot, any, all, ballot over the even lanes (odd lanes: 0), __activemask() after the
// threads with x[i] < -1 returned (those: untouched).
__global__ void votes_kernel(gmem<const float> x, gmem<long long> out, int n) {
  const int i = threadIdx.x;
  const int p = x[i] > 0.0f;
  out[0 * n + i] = __ballot_sync(0xffffffffu, p);
  out[1 * n + i] = __any_sync(0xffffffffu, p);
  out[2 * n + i] = __all_sync(0xffffffffu, p);
  out[3 * n + i] = (i % 2 == 0) ? __ballot_sync(0x55555555u, p) : 0u;
  __syncwarp();
  if (x[i] < -1.0f) return;
  out[4 * n + i] = __activemask();
}

// Block reductions of p = x[i] > 0: out[b, 0..2] = __syncthreads_count, _and, _or.
__global__ void block_votes_kernel(gmem<const float> x, gmem<int> out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int p = x[i] > 0.0f;
  const int count = __syncthreads_count(p);
  const int all = __syncthreads_and(p);
  const int any = __syncthreads_or(p);
  if (threadIdx.x == 0) {
    out[blockIdx.x * 3 + 0] = count;
    out[blockIdx.x * 3 + 1] = all;
    out[blockIdx.x * 3 + 2] = any;
  }
}

// Atomics over x[0..n): out = {sum (float), sum (double), count of x > 0 (int),
// max and min of floor(100 x) (int), sum of 1 (unsigned long long), max x (CAS loop on float
// bits), count via atomicInc (unsigned), last value exchanged is some x (checked in Python)}.
__global__ void atomics_kernel(gmem<const float> x, gmem<float> f, gmem<double> d, gmem<int> k,
                               gmem<unsigned long long> u, gmem<unsigned> w, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = x[i];
  atomicAdd(&f[0], v);
  atomicAdd(d + 0, static_cast<double>(v));
  if (v > 0.0f) atomicAdd(&k[0], 1);
  const int q = __float2int_rd(v * 100.0f);
  atomicMax(&k[1], q);
  atomicMin(&k[2], q);
  atomicAdd(&u[0], 1ull);
  // Float max by compare-and-swap on the bit pattern.
  int* bits = reinterpret_cast<int*>(&f[1]);
  int old = *bits;
  while (__int_as_float(old) < v) {
    const int seen = atomicCAS(bits, old, __float_as_int(v));
    if (seen == old) break;
    old = seen;
  }
  atomicInc(&w[0], 0xffffffffu);
  atomicExch(&f[2], v);
}

// Fast-math and conversion intrinsics, one row per function (x > 0).
__global__ void fast_math_kernel(gmem<const float> x, gmem<float> out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = x[i];
  int r = 0;
  out[r++ * n + i] = __expf(v);
  out[r++ * n + i] = __logf(v);
  out[r++ * n + i] = rsqrtf(v);
  out[r++ * n + i] = __fdividef(v, 3.0f);
  out[r++ * n + i] = fmaf(v, v, 1.0f);
  out[r++ * n + i] = exp2f(v);
  out[r++ * n + i] = log2f(v);
  out[r++ * n + i] = __saturatef(v - 1.0f);
  out[r++ * n + i] = static_cast<float>(__float2int_rn(v * 10.0f));
  out[r++ * n + i] = fminf(v, 1.0f) + fmaxf(v, 2.0f);
  out[r++ * n + i] = __half2float(__float2half(v));
  out[r++ * n + i] = __bfloat162float(__float2bfloat16(v));
  out[r++ * n + i] = __ldg(x + i);
}

// One warp: d = a @ b + c with wmma. a [M, K] row-major is staged through dynamic shared memory,
// b [K, N] is read from global memory in the layout LayoutB (row-major: b[k * N + j];
// col-major: b[j * K + k]), c and d are [M, N] row-major float.
template <typename T, typename LayoutB, int M, int N, int K>
__global__ void wmma_kernel(gmem<const T> a, gmem<const T> b, gmem<const float> c, gmem<float> d) {
  namespace wmma = nvcuda::wmma;
  DIVA_DYNAMIC_SHARED(T, a_tile);
  for (int e = threadIdx.x; e < M * K; e += 32) a_tile[e] = a[e];
  __syncwarp();
  wmma::fragment<wmma::matrix_a, M, N, K, T, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, M, N, K, T, LayoutB> fb;
  wmma::fragment<wmma::accumulator, M, N, K, float> fc;
  wmma::load_matrix_sync(fa, a_tile, K);
  wmma::load_matrix_sync(fb, b, std::is_same_v<LayoutB, wmma::row_major> ? N : K);
  wmma::load_matrix_sync(fc, c, N, wmma::mem_row_major);
  wmma::mma_sync(fc, fa, fb, fc);
  for (int e = 0; e < fc.num_elements; ++e) fc.x[e] *= 2.0f;  // element-wise ops on x[] work
  wmma::store_matrix_sync(d, fc, N, wmma::mem_row_major);
}

// tf32 variant: one warp, m16n16k8, a [16, 8] and b [8, 16] row-major from global memory.
__global__ void wmma_tf32_kernel(gmem<const float> a, gmem<const float> b, gmem<float> d) {
  namespace wmma = nvcuda::wmma;
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> fc;
  wmma::fill_fragment(fc, 0.0f);
  wmma::load_matrix_sync(fa, a, 8);
  wmma::load_matrix_sync(fb, b, 16);
  for (int e = 0; e < fa.num_elements; ++e) fa.x[e] = wmma::__float_to_tf32(fa.x[e]);
  for (int e = 0; e < fb.num_elements; ++e) fb.x[e] = wmma::__float_to_tf32(fb.x[e]);
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

// Sums x into out[0]. Fault: a plain read-modify-write instead of atomicAdd (lost updates).
template <bool kAtomic>
__global__ void sum_kernel(gmem<const float> x, gmem<float> out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  if (kAtomic) {
    atomicAdd(&out[0], x[i]);
  } else {
    out[0] = out[0] + x[i];
  }
}

// Sums x into out[0] with a plain read-modify-write under a spin lock (lock[0], initially 0).
// Correct on Volta+ (independent thread scheduling); here it needs the forced yields of
// spinning threads to let the lock holder run.
__global__ void spin_lock_sum_kernel(gmem<const float> x, gmem<float> out, gmem<int> lock, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  while (atomicCAS(&lock[0], 0, 1) != 0) {
  }
  __threadfence();
  out[0] = out[0] + x[i];
  __threadfence();
  atomicExch(&lock[0], 0);
}

// Fault: each of two blocks spins until the other has set its flag, assuming both blocks run
// at the same time (nothing guarantees it without a cooperative launch).
__global__ void inter_block_spin_kernel(gmem<int> flags) {
  if (threadIdx.x != 0) return;
  atomicExch(&flags[blockIdx.x], 1);
  while (atomicAdd(&flags[1 - blockIdx.x], 0) == 0) {
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
