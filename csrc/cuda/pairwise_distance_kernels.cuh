// CUDA kernels of pairwise_distance (torch-free: compiled by nvcc through pairwise_distance.cu
// and on the CPU by the CUDA emulation, csrc/emulation/).
//
// Forward work split: one 256-thread block per 64 x 64 output tile, x y^T by tile_mma
// (tile_mma.cuh: D in steps of 16 staged in shared memory, k-major, converted to Acc; each
// thread a 4 x 4 register block, rows ty + 16 i, columns tx + 16 j). The threads that load a
// row slice also accumulate that row's squared norm; four lanes hold one row and combine it with shuffles. The
// epilogue (expansion, exact recompute of near points and of entries beyond the expansion's
// range, clamp, square root) runs in registers.
//
// Backward work split: grad_a[p, c] = a[p, c] * sum_k w_pk - sum_k w_pk * b[k, c], with
// w = pd_grad_weight(grad, out) built on the fly from the incoming gradient and the saved output
// (so no [N, M] temporary): for grad_x, a = x, b = y and w_pk is element (p, k) of grad;
// for grad_y (kTransposed), a = y, b = x and w_pk is element (k, p). One 256-thread block per
// 64 rows p x 64 columns c; the block walks k in steps of 16 with w and b staged in shared memory
// (tile_mma.cuh's register blocking, mma_slices).
// Row sums of w are reduced through shared memory ("owner computes", no atomics: deterministic).
#pragma once

#include "diva_ext/device.h"
#include "diva_ext/math/pairwise_distance.h"
#include "tile_mma.cuh"

namespace diva_ext::cuda {

template <typename T, typename Acc>
__global__ void __launch_bounds__(kTileThreads)
    pairwise_distance_forward_kernel(gmem<const T> x, gmem<const T> y, gmem<T> out, long long n,
                                     long long m, long long d, bool squared, Acc eps) {
  __shared__ Acc xs[kTileStep][kTileLd];
  __shared__ Acc ys[kTileStep][kTileLd];
  __shared__ Acc norm_xs[kTile];
  __shared__ Acc norm_ys[kTile];

  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const long long row0 = static_cast<long long>(blockIdx.y) * kTile;
  const long long col0 = static_cast<long long>(blockIdx.x) * kTile;
  // tile_mma's loader thread stages row tid / 4 of x and of y (and sums its squares here).
  const int load_row = tid / 4;
  const long long xr = row0 + load_row, yr = col0 + load_row;

  Acc acc[4][4];
  zero_block(acc);
  Acc norm_x_part = Acc(0), norm_y_part = Acc(0);
  tile_mma<TileCols::kInterleaved>(acc, x, xr < n ? xr : -1, y, yr < m ? yr : -1, d, xs, ys,
                                   [&](Acc xv, Acc yv) {
                                     norm_x_part += xv * xv;
                                     norm_y_part += yv * yv;
                                   });

  // The four lanes that loaded one row are adjacent within a warp.
  for (int offset = 1; offset < 4; offset *= 2) {
    norm_x_part += __shfl_xor_sync(0xffffffffu, norm_x_part, offset);
    norm_y_part += __shfl_xor_sync(0xffffffffu, norm_y_part, offset);
  }
  if (tid % 4 == 0) {
    norm_xs[load_row] = norm_x_part;
    norm_ys[load_row] = norm_y_part;
  }
  __syncthreads();

  for (int i = 0; i < 4; ++i) {
    const long long r = row0 + ty + 16 * i;
    if (r >= n) continue;
    const Acc nx = norm_xs[ty + 16 * i];
    for (int j = 0; j < 4; ++j) {
      const long long c = col0 + tx + 16 * j;
      if (c >= m) continue;
      const Acc ny = norm_ys[tx + 16 * j];
      const Acc s = math::pd_expanded(nx, ny, acc[i][j]);
      const Acc v = math::pd_needs_exact(s, nx, ny)
                        ? math::pd_finish(math::pd_direct<Acc>(x + r * d, y + c * d, d), squared, eps)
                        : math::pd_finish(s, squared, eps);
      out[r * m + c] = from_acc<T>(v);
    }
  }
}

template <typename T, typename Acc, bool kTransposed>
__global__ void __launch_bounds__(kTileThreads)
    pairwise_distance_backward_kernel(gmem<const T> grad, gmem<const T> out, gmem<const T> a,
                                      gmem<const T> b, gmem<T> grad_a, long long rows_a,
                                      long long rows_b, long long d, bool squared, Acc eps,
                                      bool accumulate) {
  __shared__ Acc ws[kTileStep][kTileLd];
  __shared__ Acc bs[kTileStep][kTileLd];
  __shared__ Acc row_sum_parts[4][kTile];
  __shared__ Acc row_sums[kTile];

  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const long long p0 = static_cast<long long>(blockIdx.y) * kTile;
  const long long c0 = static_cast<long long>(blockIdx.x) * kTile;
  // grad/out are [rows_a, rows_b] (or transposed); consecutive threads read consecutive memory.
  const int w_p = kTransposed ? tid % kTile : tid / 4;
  const int w_group = kTransposed ? tid / kTile : tid % 4;
  const int w_k = 4 * w_group;
  const long long ld = kTransposed ? rows_a : rows_b;  // leading dimension of grad and out

  Acc acc[4][4];
  zero_block(acc);
  Acc row_sum_part = Acc(0);
  const Acc clamped = math::pd_clamped_output<T>(eps);

  for (long long k0 = 0; k0 < rows_b; k0 += kTileStep) {
    for (int e = 0; e < 4; ++e) {
      const long long p = p0 + w_p, k = k0 + w_k + e;
      Acc w = Acc(0);
      if (p < rows_a && k < rows_b) {
        const long long idx = kTransposed ? k * ld + p : p * ld + k;
        w = math::pd_grad_weight(to_acc<Acc>(grad[idx]), to_acc<Acc>(out[idx]), squared,
                                 clamped);
      }
      ws[w_k + e][w_p] = w;
      row_sum_part += w;
    }
    stage_rows<Acc>(bs, b, k0, rows_b, c0, d, tid);
    __syncthreads();
    mma_slices<TileCols::kInterleaved>(acc, ws, bs, tx, ty);
    __syncthreads();
  }

  row_sum_parts[w_group][w_p] = row_sum_part;
  __syncthreads();
  if (tid < kTile) {
    row_sums[tid] = row_sum_parts[0][tid] + row_sum_parts[1][tid] + row_sum_parts[2][tid] +
                    row_sum_parts[3][tid];
  }
  __syncthreads();

  for (int i = 0; i < 4; ++i) {
    const long long p = p0 + ty + 16 * i;
    if (p >= rows_a) continue;
    const Acc rs = row_sums[ty + 16 * i];
    for (int j = 0; j < 4; ++j) {
      const long long c = c0 + tx + 16 * j;
      if (c >= d) continue;
      Acc g = to_acc<Acc>(a[p * d + c]) * rs - acc[i][j];
      if (accumulate) g += to_acc<Acc>(grad_a[p * d + c]);
      grad_a[p * d + c] = from_acc<T>(g);
    }
  }
}

inline unsigned pd_blocks(long long extent) {
  return static_cast<unsigned>((extent + kTile - 1) / kTile);
}

// out [n, m] = distances between the rows of x [n, d] and y [m, d] (contiguous).
// Requires n, m >= 1; d may be 0.
template <typename T, typename Acc>
void launch_pairwise_distance_forward(gmem<const T> x, gmem<const T> y, gmem<T> out, long long n,
                                      long long m, long long d, bool squared, double eps,
                                      cudaStream_t stream) {
  const dim3 grid(pd_blocks(m), pd_blocks(n));
  DIVA_LAUNCH((pairwise_distance_forward_kernel<T, Acc>), grid, dim3(kTileThreads), 0, stream)(
      x, y, out, n, m, d, squared, static_cast<Acc>(eps));
}

// grad_a [rows_a, d] (+)= gradient of sum(grad * out) with respect to a, where out = dist(a, b)
// if !transposed (grad, out: [rows_a, rows_b]) or out = dist(b, a) if transposed
// (grad, out: [rows_b, rows_a]). Requires rows_a, rows_b, d >= 1.
template <typename T, typename Acc>
void launch_pairwise_distance_backward_side(gmem<const T> grad, gmem<const T> out, gmem<const T> a,
                                            gmem<const T> b, gmem<T> grad_a, long long rows_a,
                                            long long rows_b, long long d, bool squared,
                                            double eps, bool transposed, bool accumulate,
                                            cudaStream_t stream) {
  const dim3 grid(pd_blocks(d), pd_blocks(rows_a));
  if (transposed) {
    DIVA_LAUNCH((pairwise_distance_backward_kernel<T, Acc, true>), grid, dim3(kTileThreads), 0,
                stream)(grad, out, a, b, grad_a, rows_a, rows_b, d, squared, static_cast<Acc>(eps),
                        accumulate);
  } else {
    DIVA_LAUNCH((pairwise_distance_backward_kernel<T, Acc, false>), grid, dim3(kTileThreads), 0,
                stream)(grad, out, a, b, grad_a, rows_a, rows_b, d, squared, static_cast<Acc>(eps),
                        accumulate);
  }
}

// The whole backward of out = pairwise_distance(x, y): grad_x [n, d] when want_x and
// grad_y [m, d] when want_y. With self (y = None; y must then be x and m = n) x stands on both
// sides and grad_x receives both, in two launches (the second accumulates). Requires n, m, d >= 1.
template <typename T, typename Acc>
void launch_pairwise_distance_backward(gmem<const T> grad, gmem<const T> out, gmem<const T> x,
                                       gmem<const T> y, gmem<T> grad_x, gmem<T> grad_y,
                                       long long n, long long m, long long d, bool squared,
                                       double eps, bool self, bool want_x, bool want_y,
                                       cudaStream_t stream) {
  if (want_x) {
    launch_pairwise_distance_backward_side<T, Acc>(grad, out, x, y, grad_x, n, m, d, squared, eps,
                                                   /*transposed=*/false, /*accumulate=*/false,
                                                   stream);
    if (self) {
      launch_pairwise_distance_backward_side<T, Acc>(grad, out, x, x, grad_x, n, n, d, squared,
                                                     eps, /*transposed=*/true,
                                                     /*accumulate=*/true, stream);
    }
  }
  if (want_y && !self) {
    launch_pairwise_distance_backward_side<T, Acc>(grad, out, y, x, grad_y, m, n, d, squared, eps,
                                                   /*transposed=*/true, /*accumulate=*/false,
                                                   stream);
  }
}

}  // namespace diva_ext::cuda
