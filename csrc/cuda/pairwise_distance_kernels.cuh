// CUDA kernels of pairwise_distance (torch-free: compiled by nvcc through pairwise_distance.cu
// and on the CPU by the CUDA emulation, csrc/emulation/).
//
// Forward work split: one 256-thread block per 64 x 64 output tile. The block walks D in steps
// of 16, staging a 64 x 16 slice of x and of y in shared memory (k-major, converted to Acc);
// each thread accumulates a 4 x 4 micro-tile of inner products (rows ty + 16 i, columns
// tx + 16 j, so shared-memory reads are conflict-free). The threads that load a row slice also
// accumulate that row's squared norm; four lanes hold one row and combine it with shuffles. The
// epilogue (expansion, exact recompute of near points and of entries beyond the expansion's
// range, clamp, square root) runs in registers.
//
// Backward work split: grad_a[p, c] = a[p, c] * sum_k w_pk - sum_k w_pk * b[k, c], with
// w = pd_grad_weight(grad, out) built on the fly from the incoming gradient and the saved output
// (so no [N, M] temporary): for grad_x, a = x, b = y and w_pk is element (p, k) of grad;
// for grad_y (kTransposed), a = y, b = x and w_pk is element (k, p). One 256-thread block per
// 64 rows p x 64 columns c; the block walks k in steps of 16 with w and b staged in shared memory.
// Row sums of w are reduced through shared memory ("owner computes", no atomics: deterministic).
#pragma once

#include "diva_ext/device.h"
#include "diva_ext/math/pairwise_distance.h"

namespace diva_ext::cuda {

constexpr int kPdTile = 64;     // rows per block tile, both axes
constexpr int kPdStep = 16;     // reduction-axis step staged in shared memory
constexpr int kPdThreads = 256; // 16 x 16 threads, 4 x 4 outputs each
constexpr int kPdPad = 4;       // shared-memory row padding

template <typename T, typename Acc>
__global__ void __launch_bounds__(kPdThreads)
    pairwise_distance_forward_kernel(gmem<const T> x, gmem<const T> y, gmem<T> out, long long n,
                                     long long m, long long d, bool squared, Acc eps) {
  __shared__ Acc xs[kPdStep][kPdTile + kPdPad];
  __shared__ Acc ys[kPdStep][kPdTile + kPdPad];
  __shared__ Acc norm_xs[kPdTile];
  __shared__ Acc norm_ys[kPdTile];

  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const long long row0 = static_cast<long long>(blockIdx.y) * kPdTile;
  const long long col0 = static_cast<long long>(blockIdx.x) * kPdTile;
  // Loader mapping: thread tid stages row (tid / 4), reduction offsets 4 * (tid % 4) .. + 3.
  const int load_row = tid / 4;
  const int load_k = 4 * (tid % 4);

  Acc acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = Acc(0);
  Acc norm_x_part = Acc(0), norm_y_part = Acc(0);

  for (long long k0 = 0; k0 < d; k0 += kPdStep) {
    for (int e = 0; e < 4; ++e) {
      const long long k = k0 + load_k + e;
      const long long xr = row0 + load_row, yr = col0 + load_row;
      const Acc xv = (xr < n && k < d) ? static_cast<Acc>(x[xr * d + k]) : Acc(0);
      const Acc yv = (yr < m && k < d) ? static_cast<Acc>(y[yr * d + k]) : Acc(0);
      xs[load_k + e][load_row] = xv;
      ys[load_k + e][load_row] = yv;
      norm_x_part += xv * xv;
      norm_y_part += yv * yv;
    }
    __syncthreads();
    for (int kk = 0; kk < kPdStep; ++kk) {
      Acc a[4], b[4];
      for (int i = 0; i < 4; ++i) a[i] = xs[kk][ty + 16 * i];
      for (int j = 0; j < 4; ++j) b[j] = ys[kk][tx + 16 * j];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }

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
      out[r * m + c] = static_cast<T>(v);
    }
  }
}

template <typename T, typename Acc, bool kTransposed>
__global__ void __launch_bounds__(kPdThreads)
    pairwise_distance_backward_kernel(gmem<const T> grad, gmem<const T> out, gmem<const T> a,
                                      gmem<const T> b, gmem<T> grad_a, long long rows_a,
                                      long long rows_b, long long d, bool squared, Acc eps,
                                      bool accumulate) {
  __shared__ Acc ws[kPdStep][kPdTile + kPdPad];
  __shared__ Acc bs[kPdStep][kPdTile + kPdPad];
  __shared__ Acc row_sum_parts[4][kPdTile];
  __shared__ Acc row_sums[kPdTile];

  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const long long p0 = static_cast<long long>(blockIdx.y) * kPdTile;
  const long long c0 = static_cast<long long>(blockIdx.x) * kPdTile;
  // grad/out are [rows_a, rows_b] (or transposed); consecutive threads read consecutive memory.
  const int w_p = kTransposed ? tid % kPdTile : tid / 4;
  const int w_group = kTransposed ? tid / kPdTile : tid % 4;
  const int w_k = 4 * w_group;
  const long long ld = kTransposed ? rows_a : rows_b;  // leading dimension of grad and out
  const int b_k = tid / 16;
  const int b_c = 4 * (tid % 16);

  Acc acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = Acc(0);
  Acc row_sum_part = Acc(0);
  const Acc clamped = math::pd_clamped_output<T>(eps);

  for (long long k0 = 0; k0 < rows_b; k0 += kPdStep) {
    for (int e = 0; e < 4; ++e) {
      const long long p = p0 + w_p, k = k0 + w_k + e;
      Acc w = Acc(0);
      if (p < rows_a && k < rows_b) {
        const long long idx = kTransposed ? k * ld + p : p * ld + k;
        w = math::pd_grad_weight(static_cast<Acc>(grad[idx]), static_cast<Acc>(out[idx]), squared,
                                 clamped);
      }
      ws[w_k + e][w_p] = w;
      row_sum_part += w;
    }
    for (int e = 0; e < 4; ++e) {
      const long long k = k0 + b_k, c = c0 + b_c + e;
      bs[b_k][b_c + e] = (k < rows_b && c < d) ? static_cast<Acc>(b[k * d + c]) : Acc(0);
    }
    __syncthreads();
    for (int kk = 0; kk < kPdStep; ++kk) {
      Acc wv[4], bv[4];
      for (int i = 0; i < 4; ++i) wv[i] = ws[kk][ty + 16 * i];
      for (int j = 0; j < 4; ++j) bv[j] = bs[kk][tx + 16 * j];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] += wv[i] * bv[j];
    }
    __syncthreads();
  }

  row_sum_parts[w_group][w_p] = row_sum_part;
  __syncthreads();
  if (tid < kPdTile) {
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
      Acc g = static_cast<Acc>(a[p * d + c]) * rs - acc[i][j];
      if (accumulate) g += static_cast<Acc>(grad_a[p * d + c]);
      grad_a[p * d + c] = static_cast<T>(g);
    }
  }
}

inline unsigned pd_blocks(long long extent) {
  return static_cast<unsigned>((extent + kPdTile - 1) / kPdTile);
}

// out [n, m] = distances between the rows of x [n, d] and y [m, d] (contiguous).
// Requires n, m >= 1; d may be 0.
template <typename T, typename Acc>
void launch_pairwise_distance_forward(gmem<const T> x, gmem<const T> y, gmem<T> out, long long n,
                                      long long m, long long d, bool squared, double eps,
                                      cudaStream_t stream) {
  const dim3 grid(pd_blocks(m), pd_blocks(n));
  DIVA_LAUNCH((pairwise_distance_forward_kernel<T, Acc>), grid, dim3(kPdThreads), 0, stream)(
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
    DIVA_LAUNCH((pairwise_distance_backward_kernel<T, Acc, true>), grid, dim3(kPdThreads), 0,
                stream)(grad, out, a, b, grad_a, rows_a, rows_b, d, squared, static_cast<Acc>(eps),
                        accumulate);
  } else {
    DIVA_LAUNCH((pairwise_distance_backward_kernel<T, Acc, false>), grid, dim3(kPdThreads), 0,
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
