// The 64 x 64 tile product that every CUDA kernel of the project builds on (torch-free: nvcc and
// the CUDA emulation compile it). A 256-thread block computes a 64 x 64 tile of A B^T over the
// reduction axis, kTileStep = 16 steps at a time staged in shared memory:
//   CUDA cores (float, double, in Acc): thread (ty, tx) = (tid / 16, tid % 16) accumulates a
//     4 x 4 register block, rows ty + 16 i and columns col_of<kCols>(tx, j) (i, j < 4), from
//     k-major slices [kTileStep][kTileLd]; the loader thread stages row tid / 4, steps
//     4 (tid % 4) .. + 3;
//   tensor cores (float16, bfloat16, float accumulation): nvcuda::wmma m16n16k16, warp w owns the
//     two fragments (w / 2, 2 (w % 2) + f), f = 0, 1, of the 4 x 4 grid of 16 x 16 fragments.
// Names used by every kernel file: tid, tx, ty as above; a_s / b_s the staged slices; acc the
// register block or the warp's fragment pair; a0 / b0 (or row0 / col0) the tile's first rows.
#pragma once

#include <type_traits>

#include "diva_ext/device.h"

namespace diva_ext::cuda {

constexpr int kTile = 64;           // rows of a block tile, on both axes
constexpr int kTileStep = 16;       // reduction steps staged in shared memory at a time
constexpr int kTileThreads = 256;   // 16 x 16 threads, a 4 x 4 register block each
constexpr int kTileLd = kTile + 4;  // row stride of a k-major slice (padding: conflict-free)
constexpr int kWmmaStepLd = kTileStep + 8;  // [row][k] 16-bit slices: 48 bytes, a multiple of 16

// Columns of a register block: tx + 16 j (interleaved: conflict-free slice reads) or 4 tx + j
// (blocked: 4 adjacent columns per thread).
enum class TileCols { kInterleaved, kBlocked };

template <TileCols kCols>
__device__ __forceinline__ int col_of(int tx, int j) {
  return kCols == TileCols::kInterleaved ? tx + 16 * j : 4 * tx + j;
}

// Element (k, c) of a k-major slice: a [kTileStep][kTileLd] array, or a pointer to one.
template <typename Slice>
__device__ __forceinline__ decltype(auto) slice_at(Slice& s, int k, int c) {
  if constexpr (std::is_array_v<Slice>) {
    return (s[k][c]);
  } else {
    return (s[k * kTileLd + c]);
  }
}

template <typename Acc>
__device__ __forceinline__ void zero_block(Acc (&acc)[4][4]) {
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = Acc(0);
}

// acc[i][j] += sum over kk < kTileStep of a_at(kk, i) * b_at(kk, j): the register-blocked step.
template <typename Acc, typename AAt, typename BAt>
__device__ __forceinline__ void mma_block(Acc (&acc)[4][4], AAt&& a_at, BAt&& b_at) {
  for (int kk = 0; kk < kTileStep; ++kk) {
    Acc a[4], b[4];
    for (int i = 0; i < 4; ++i) a[i] = a_at(kk, i);
    for (int j = 0; j < 4; ++j) b[j] = b_at(kk, j);
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
  }
}

// One staged step from two k-major slices: rows ty + 16 i of a_s, columns col_of(tx, j) of b_s.
template <TileCols kCols, typename Acc, typename SliceA, typename SliceB>
__device__ __forceinline__ void mma_slices(Acc (&acc)[4][4], SliceA& a_s, SliceB& b_s, int tx,
                                           int ty) {
  mma_block(
      acc, [&](int kk, int i) { return slice_at(a_s, kk, ty + 16 * i); },
      [&](int kk, int j) { return slice_at(b_s, kk, col_of<kCols>(tx, j)); });
}

// acc += A B^T over the reduction axis [0, d) on CUDA cores. The loader thread's A row is row
// a_row of a [*, d] and its B row row b_row of b [*, d] (negative: beyond the end, read as 0).
// on_load(av, bv) sees each staged pair (pairwise_distance accumulates the rows' norms there).
// Ends with a barrier: the slices are free again.
template <TileCols kCols, typename Acc, typename T, typename SliceA, typename SliceB,
          typename OnLoad>
__device__ __forceinline__ void tile_mma(Acc (&acc)[4][4], gmem<const T> a, long long a_row,
                                         gmem<const T> b, long long b_row, long long d,
                                         SliceA& a_s, SliceB& b_s, OnLoad&& on_load) {
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int load_row = tid / 4, load_k = 4 * (tid % 4);
  for (long long k0 = 0; k0 < d; k0 += kTileStep) {
    for (int e = 0; e < 4; ++e) {
      const long long k = k0 + load_k + e;
      const Acc av = (a_row >= 0 && k < d) ? to_acc<Acc>(a[a_row * d + k]) : Acc(0);
      const Acc bv = (b_row >= 0 && k < d) ? to_acc<Acc>(b[b_row * d + k]) : Acc(0);
      slice_at(a_s, load_k + e, load_row) = av;
      slice_at(b_s, load_k + e, load_row) = bv;
      on_load(av, bv);
    }
    __syncthreads();
    mma_slices<kCols>(acc, a_s, b_s, tx, ty);
    __syncthreads();
  }
}

// Stages rows [k0, k0 + kTileStep) x columns [c0, c0 + 64) of v [rows, cols] (row-major) into the
// k-major slice v_s: thread tid loads row k0 + tid / 16, columns 4 (tid % 16) .. + 3 (0 beyond
// the ends).
template <typename Acc, typename T, typename Slice>
__device__ __forceinline__ void stage_rows(Slice& v_s, gmem<const T> v, long long k0,
                                           long long rows, long long c0, long long cols, int tid) {
  const int load_kk = tid / 16, load_c = 4 * (tid % 16);
  const long long vr = k0 + load_kk;
  for (int e = 0; e < 4; ++e) {
    const long long c = c0 + load_c + e;
    slice_at(v_s, load_kk, load_c + e) = (vr < rows && c < cols) ? to_acc<Acc>(v[vr * cols + c]) : Acc(0);
  }
}

// ---- tensor cores -------------------------------------------------------------------------

using WmmaAcc = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>;

// acc[f] += A B_f for one 16-step: a is the warp's 16-row block of A at this step (row-major),
// b_at(f) fragment f's block of B (in BLayout); both with leading dimension ld.
template <typename BLayout, typename T, typename BAt>
__device__ __forceinline__ void wmma_pair_step(WmmaAcc (&acc)[2], const T* a, BAt&& b_at, int ld) {
  namespace wmma = nvcuda::wmma;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
  wmma::load_matrix_sync(fa, a, ld);
  for (int f = 0; f < 2; ++f) {
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, BLayout> fb;
    wmma::load_matrix_sync(fb, b_at(f), ld);
    wmma::mma_sync(acc[f], fa, fb, acc[f]);
  }
}

// acc = A B^T over [0, d) on tensor cores: as tile_mma, with a_s / b_s [kTile][kWmmaStepLd]
// slices [row][k] of T (A row-major, B read col-major). Ends with a barrier.
template <typename T>
__device__ __forceinline__ void tile_mma_wmma(WmmaAcc (&acc)[2], gmem<const T> a, long long a_row,
                                              gmem<const T> b, long long b_row, long long d,
                                              T (&a_s)[kTile][kWmmaStepLd],
                                              T (&b_s)[kTile][kWmmaStepLd]) {
  const int tid = threadIdx.x, warp = tid / 32;
  const int wm = warp / 2, wn = 2 * (warp % 2);
  const int load_row = tid / 4, load_k = 4 * (tid % 4);
  const T zero = from_acc<T>(0.0f);
  nvcuda::wmma::fill_fragment(acc[0], 0.0f);
  nvcuda::wmma::fill_fragment(acc[1], 0.0f);
  for (long long k0 = 0; k0 < d; k0 += kTileStep) {
    for (int e = 0; e < 4; ++e) {
      const long long k = k0 + load_k + e;
      a_s[load_row][load_k + e] = (a_row >= 0 && k < d) ? a[a_row * d + k] : zero;
      b_s[load_row][load_k + e] = (b_row >= 0 && k < d) ? b[b_row * d + k] : zero;
    }
    __syncthreads();
    wmma_pair_step<nvcuda::wmma::col_major>(
        acc, &a_s[16 * wm][0], [&](int f) { return &b_s[16 * (wn + f)][0]; }, kWmmaStepLd);
    __syncthreads();
  }
}

// Stores the warp's fragment pair into the float tile c (row-major, leading dimension ldc).
template <typename P>
__device__ __forceinline__ void store_wmma_pair(P c, const WmmaAcc (&acc)[2], int ldc) {
  const int warp = threadIdx.x / 32;
  const int wm = warp / 2, wn = 2 * (warp % 2);
  for (int f = 0; f < 2; ++f) {
    nvcuda::wmma::store_matrix_sync(c + (16 * wm) * ldc + 16 * (wn + f), acc[f], ldc,
                                    nvcuda::wmma::mem_row_major);
  }
}

}  // namespace diva_ext::cuda
