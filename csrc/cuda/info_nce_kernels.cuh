// CUDA kernels of info_nce (torch-free: compiled by nvcc through info_nce.cu and on the CPU by
// the CUDA emulation, csrc/emulation/info_nce.cpp). Math: diva_ext/math/info_nce.h.
//
// One tile kernel serves every pass over the [B, K] inner products. A 256-thread block owns 64
// "A" rows and walks a range of 64-row "B" tiles (a split); per tile it
//   1. computes the 64 x 64 inner products S = A B^T into shared memory (tile_products on
//      tile_mma.cuh: CUDA cores in Acc for float32/float64, nvcuda::wmma tensor-core tiles with
//      float accumulation for float16/bfloat16; step 3 likewise, with P rounded to the input
//      dtype as in FlashAttention). NB: float32 stays off TF32 tensor cores on purpose: TF32's 10-bit inputs
//      would put ~1e-3 relative errors into logits scaled by 1/T (up to 100), far outside the
//      float32 contract the tests hold CPU and CUDA to (~1e-5);
//   2. runs the epilogue of its mode on S, 4 threads per row, 16 entries each (the row's
//      reductions are shuffles among those 4 lanes, in a fixed order);
//   3. for modes with an output, adds P V to its [64, D] output rows (V = the B tile's rows, P
//      the epilogue's tile), D in chunks of 64 columns, read-modify-write in global memory: the
//      thread that owns an element keeps it for the whole kernel, so no atomics.
// Modes (NceMode):
//   kNceWeights    A = q, B = queue: DaNCE's first pass, online (math::DanceStats).
//   kNceLogits     A = q, B = queue: online (max, sum) of the logits; with an output, O += P V
//                  rescaled by e^(m_old - m_new) (FlashAttention), P = c e^(x - m).
//   kNceGradQ      A = q, B = queue: out += P' queue, P' = (g + h)/T c e^(c s / T - lse)
//                  (math::softmax_weight: lse as the pair lse + lse_lo).
//   kNceGradQueue  A = queue, B = q: out += P'^T q (one split: a block owns its queue rows).
// Splits: when B has few row blocks, K is split across blocks (grid.x); each split keeps its own
// partial (max, sum[, O]) per row, merged afterwards in split order by info_nce_finish_kernel
// (deterministic: nothing depends on the block schedule).
#pragma once

#include <cstdint>
#include <type_traits>

#include "diva_ext/device.h"
#include "diva_ext/math/info_nce.h"
#include "tile_mma.cuh"

namespace diva_ext::cuda {

constexpr int kNceFinishThreads = 128;

enum NceMode : int { kNceWeights = 0, kNceLogits = 1, kNceGradQ = 2, kNceGradQueue = 3 };

// The math policy of device code: CUDA's math functions (the host's under the emulation).
struct NceDeviceMath {
  __device__ static __forceinline__ float exp(float x) { return ::expf(x); }
  __device__ static __forceinline__ double exp(double x) { return ::exp(x); }
  __device__ static __forceinline__ float log(float x) { return ::logf(x); }
  __device__ static __forceinline__ double log(double x) { return ::log(x); }
  __device__ static __forceinline__ float log1p(float x) { return ::log1pf(x); }
  __device__ static __forceinline__ double log1p(double x) { return ::log1p(x); }
  __device__ static __forceinline__ float expm1(float x) { return ::expm1f(x); }
  __device__ static __forceinline__ double expm1(double x) { return ::expm1(x); }
};

// float16/bfloat16 run both products of a tile on tensor cores (nvcuda::wmma m16n16k16, float
// accumulators); float32/float64 on CUDA cores in Acc.
template <typename T>
constexpr bool kNceTensorCores = sizeof(T) == 2;

// Row stride of the S / P tile: 65 (no bank conflicts) on CUDA cores; 68 on tensor cores, where
// wmma stores need a multiple of 16 bytes.
template <typename T>
constexpr int nce_s_pad() {
  return kNceTensorCores<T> ? 68 : 65;
}

// The 16-bit tiles of the tensor-core path: A and B slices [row][k] (A row-major, B read as
// col-major), P [row][c] and a V chunk [c][col]; leading dimensions are multiples of 16 bytes and
// fragment origins 32-byte aligned. One row each for the other dtypes (unused).
template <typename T>
struct NceHalfTiles {
  static constexpr int kRows = kNceTensorCores<T> ? kTile : 1;
  static constexpr int kPvLd = kTile + 8;  // 72 halves: 144 bytes
  __align__(32) T a[kRows][kWmmaStepLd];
  __align__(32) T b[kRows][kWmmaStepLd];
  __align__(32) T p[kRows][kPvLd];
  __align__(32) T v[kRows][kPvLd];
};

template <typename Acc>
__device__ __forceinline__ Acc nce_neg_inf() {
  return -static_cast<Acc>(INFINITY);
}

template <typename T, typename Acc>
struct NceTileArgs {
  gmem<const T> a;         // [rows_a, d]: the rows a block owns
  gmem<const T> b;         // [rows_b, d]: the rows its tiles walk
  long long rows_a, rows_b, d;
  long long tiles_per_split;
  Acc inv_t;
  math::DanceParams<Acc> dance;
  gmem<const Acc> stats;   // [B, kNceStatsColumns] by q row (math/info_nce.h)
  gmem<const Acc> factor;  // [B] by q row: (g + h) / T (gradient modes)
  gmem<Acc> part_m;        // [splits, rows_a] (kNceWeights, kNceLogits)
  gmem<Acc> part_l;        // [splits, rows_a]
  gmem<std::int64_t> part_floored;  // [splits, rows_a] (kNceWeights)
  gmem<Acc> part_m_in;     // [splits, rows_a] (kNceWeights): DanceStats::max_in
  gmem<Acc> out;           // [splits, rows_a, d] (see the modes; kNceLogits only if want_out)
  bool want_out;
  // supervised_info_nce only (labels_a null otherwise): the labels of the a and b rows; the
  // positives' partial sums of s and counts (kNceLogits, [splits, rows_a]); w_i / T by q row
  // (gradient modes: subtracted at the positives, math/supervised_info_nce.h).
  gmem<const std::int64_t> labels_a{};
  gmem<const std::int64_t> labels_b{};
  gmem<Acc> part_sigma{};
  gmem<std::int64_t> part_count{};
  gmem<const Acc> positive{};
};

// ---- 1. the tile of inner products --------------------------------------------------------

// S[r][c] = <a_r, b_c> for the 64 x 64 tile at rows a0 of a and b0 of b, into s_tile (row stride
// nce_s_pad<T>()); rows beyond the ends read as 0. CUDA cores: the staging slices live inside
// s_tile's storage (s_tile is written only after the last slice is consumed).
template <typename T, typename Acc>
__device__ __forceinline__ void tile_products(const NceTileArgs<T, Acc>& p, long long a0,
                                              long long b0, gmem<Acc> s_tile, NceHalfTiles<T>& ht) {
  constexpr int S = nce_s_pad<T>();
  const int tid = threadIdx.x;
  const int load_row = tid / 4;
  const long long ar = a0 + load_row, br = b0 + load_row;
  const long long a_row = ar < p.rows_a ? ar : -1, b_row = br < p.rows_b ? br : -1;
  if constexpr (kNceTensorCores<T>) {
    WmmaAcc acc[2];
    tile_mma_wmma(acc, p.a, a_row, p.b, b_row, p.d, ht.a, ht.b);
    store_wmma_pair(s_tile, acc, S);
    return;
  }
  gmem<Acc> a_s = s_tile;                        // [kTileStep][kTileLd], k-major
  gmem<Acc> b_s = s_tile + kTileStep * kTileLd;  // [kTileStep][kTileLd]
  const int tx = tid % 16, ty = tid / 16;
  Acc acc[4][4];
  zero_block(acc);
  tile_mma<TileCols::kInterleaved>(acc, p.a, a_row, p.b, b_row, p.d, a_s, b_s, [](Acc, Acc) {});
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) s_tile[(ty + 16 * i) * S + tx + 16 * j] = acc[i][j];
}

// ---- 3. out rows += P V -------------------------------------------------------------------

// out[r][c] = add (first tile) or out * row_scale + add for the thread's register-block entries
// (rows a0 + ty + 16 i, columns d0 + tx + 16 j) inside out, add = add_at(i, j).
template <typename T, typename Acc, typename AddAt>
__device__ __forceinline__ void add_pv_block(const NceTileArgs<T, Acc>& p, long long a0,
                                             long long d0, const Acc* row_scale, gmem<Acc> out,
                                             bool first, int tx, int ty, AddAt&& add_at) {
  for (int i = 0; i < 4; ++i) {
    const long long r = a0 + ty + 16 * i;
    if (r >= p.rows_a) continue;
    const Acc scale = row_scale[ty + 16 * i];
    for (int j = 0; j < 4; ++j) {
      const long long c = d0 + tx + 16 * j;
      if (c >= p.d) continue;
      const long long idx = r * p.d + c;
      const Acc add = add_at(i, j);
      out[idx] = first ? add : out[idx] * scale + add;
    }
  }
}

// Tensor cores: P (T, in ht.p) times a 64-column chunk of V (T, staged in ht.v) into float
// fragments, stored through s_tile (free once P is in ht.p), then added to out by the threads
// that own the elements, as on CUDA cores.
template <typename T, typename Acc>
__device__ __forceinline__ void accumulate_pv_wmma(const NceTileArgs<T, Acc>& p, long long a0,
                                                   long long b0, gmem<Acc> s_tile,
                                                   const Acc* row_scale, gmem<Acc> out, bool first,
                                                   NceHalfTiles<T>& ht) {
  constexpr int S = nce_s_pad<T>();
  constexpr int ld = NceHalfTiles<T>::kPvLd;
  const int tid = threadIdx.x, warp = tid / 32;
  const int tx = tid % 16, ty = tid / 16;
  const int wm = warp / 2, wn = 2 * (warp % 2);
  const T zero = from_acc<T>(0.0f);
  for (long long d0 = 0; d0 < p.d; d0 += kTile) {
    for (int e = 0; e < 16; ++e) {  // thread: row tid / 4 of the chunk, 16 columns
      const int r = tid / 4, c = 16 * (tid % 4) + e;
      const long long vr = b0 + r, vc = d0 + c;
      ht.v[r][c] = (vr < p.rows_b && vc < p.d) ? p.b[vr * p.d + vc] : zero;
    }
    __syncthreads();
    WmmaAcc acc[2];
    nvcuda::wmma::fill_fragment(acc[0], 0.0f);
    nvcuda::wmma::fill_fragment(acc[1], 0.0f);
    for (int kk0 = 0; kk0 < kTile; kk0 += 16) {
      wmma_pair_step<nvcuda::wmma::row_major>(
          acc, &ht.p[16 * wm][kk0], [&](int f) { return &ht.v[kk0][16 * (wn + f)]; }, ld);
    }
    store_wmma_pair(s_tile, acc, S);
    __syncthreads();
    add_pv_block(p, a0, d0, row_scale, out, first, tx, ty,
                 [&](int i, int j) { return s_tile[(ty + 16 * i) * S + tx + 16 * j]; });
    // (No barrier here: the next chunk writes ht.v, whose reads all precede the barrier above,
    // and s_tile only after its own first barrier.)
  }
}

// out[a0 + r][:] = out * row_scale[r] + sum_c P[r][c] v[b0 + c][:] (out = the sum on the first
// tile). P is s_tile; v_s is a [kTileStep][kTileLd] staging slice.
template <typename T, typename Acc>
__device__ __forceinline__ void accumulate_pv(const NceTileArgs<T, Acc>& p, long long a0,
                                              long long b0, gmem<Acc> s_tile, gmem<Acc> v_s,
                                              const Acc* row_scale, gmem<Acc> out, bool first,
                                              NceHalfTiles<T>& ht) {
  if constexpr (kNceTensorCores<T>) {
    accumulate_pv_wmma(p, a0, b0, s_tile, row_scale, out, first, ht);
    return;
  }
  constexpr int S = nce_s_pad<T>();
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  for (long long d0 = 0; d0 < p.d; d0 += kTile) {
    Acc acc[4][4];
    zero_block(acc);
    for (int kk0 = 0; kk0 < kTile; kk0 += kTileStep) {
      stage_rows<Acc>(v_s, p.b, b0 + kk0, p.rows_b, d0, p.d, tid);
      __syncthreads();
      mma_block(
          acc, [&](int kk, int i) { return s_tile[(ty + 16 * i) * S + kk0 + kk]; },
          [&](int kk, int j) { return slice_at(v_s, kk, tx + 16 * j); });
      __syncthreads();
    }
    add_pv_block(p, a0, d0, row_scale, out, first, tx, ty, [&](int i, int j) { return acc[i][j]; });
  }
}

// ---- the tile kernel ----------------------------------------------------------------------

template <typename Acc>
__device__ __forceinline__ Acc quad_max(Acc v) {
  for (int offset = 1; offset < 4; offset *= 2) {
    const Acc o = __shfl_xor_sync(0xffffffffu, v, offset);
    v = o > v ? o : v;
  }
  return v;
}

template <typename V>
__device__ __forceinline__ V quad_sum(V v) {
  // (a + b) + (c + d) in every lane: the same bits wherever the row's lanes sit.
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v;
}

template <typename T, typename Acc, int kMode, bool kDance>
__global__ void __launch_bounds__(kTileThreads) info_nce_tiles_kernel(NceTileArgs<T, Acc> p) {
  DIVA_DYNAMIC_SHARED(Acc, smem);
  constexpr int S = nce_s_pad<T>();
  gmem<Acc> s_tile = smem;                           // [kTile][S]
  gmem<Acc> v_s = smem + kTile * S;               // [kTileStep][kTileLd] (CUDA cores)
  __shared__ NceHalfTiles<T> ht;
  __shared__ Acc row_scale[kTile];
  __shared__ Acc q_lse[kTile], q_lse_lo[kTile], q_factor[kTile];
  __shared__ math::DanceRow<Acc> q_dance[kTile];
  __shared__ std::int64_t q_label[kTile];
  __shared__ Acc q_positive[kTile];

  using M = NceDeviceMath;
  const int tid = threadIdx.x;
  const int er = tid / 4, eq = tid % 4;  // epilogue: row er, entries 16 eq .. 16 eq + 15
  const long long a0 = static_cast<long long>(blockIdx.y) * kTile;
  const long long split = blockIdx.x;
  const long long tiles = (p.rows_b + kTile - 1) / kTile;
  const long long t0 = split * p.tiles_per_split;
  const long long t1 = t0 + p.tiles_per_split < tiles ? t0 + p.tiles_per_split : tiles;
  const bool has_pv = kMode == kNceGradQ || kMode == kNceGradQueue || (kMode == kNceLogits && p.want_out);
  gmem<Acc> out = has_pv ? p.out + split * p.rows_a * p.d : p.out;

  // Statistics of the q rows: per A row for the q-side modes (loaded once), per B row for
  // kNceGradQueue (loaded per tile).
  auto load_q_stats = [&](long long q0, long long q_rows) {
    if (tid < kTile) {
      const long long r = q0 + tid;
      const bool ok = r < q_rows;
      q_lse[tid] = ok ? p.stats[r * math::kNceStatsColumns + math::kStatLse] : Acc(0);
      q_lse_lo[tid] = ok ? p.stats[r * math::kNceStatsColumns + math::kStatLseLo] : Acc(0);
      q_factor[tid] = ok && p.factor ? p.factor[r] : Acc(0);
      q_dance[tid] = ok ? math::load_dance_row<Acc>(p.stats, r) : math::DanceRow<Acc>{Acc(0), Acc(0), Acc(0)};
    }
  };
  // supervised_info_nce: labels of the q rows (as load_q_stats: per A row or per tile) and of
  // the memory rows (per entry; for kNceGradQueue the thread's A row).
  const bool sup = static_cast<bool>(p.labels_a);
  const gmem<const std::int64_t> q_labels = kMode == kNceGradQueue ? p.labels_b : p.labels_a;
  const gmem<const std::int64_t> mem_labels = kMode == kNceGradQueue ? p.labels_a : p.labels_b;
  auto load_q_labels = [&](long long q0, long long q_rows) {
    if (sup && tid < kTile) {
      const long long r = q0 + tid;
      q_label[tid] = r < q_rows ? q_labels[r] : std::int64_t(0);
      q_positive[tid] = r < q_rows && p.positive ? p.positive[r] : Acc(0);
    }
  };
  if (kMode == kNceGradQ || (kMode == kNceLogits && kDance)) load_q_stats(a0, p.rows_a);
  if (kMode != kNceGradQueue) load_q_labels(a0, p.rows_a);
  const std::int64_t a_label = sup && kMode == kNceGradQueue && a0 + er < p.rows_a ? mem_labels[a0 + er] : 0;
  // Whether entry e of the thread's tile row pairs a q row with a memory row of its label.
  auto positive_at = [&](long long b0, int e, bool valid) -> bool {
    if (!sup || !valid) return false;
    const int c = 16 * eq + e;
    return kMode == kNceGradQueue ? q_label[c] == a_label : mem_labels[b0 + c] == q_label[er];
  };
  Acc sigma = Acc(0);  // (kNceLogits, supervised: the positives' sum of s and their count)
  std::int64_t count = 0;
  if (tid < kTile) row_scale[tid] = Acc(1);
  // (No barrier here: tile_products is followed by one before anything reads these.)

  // The epilogue's P: in place in s_tile (CUDA cores) or as T in ht.p (tensor cores).
  auto put_p = [&](int e, Acc value) {
    if constexpr (kNceTensorCores<T>) {
      ht.p[er][16 * eq + e] = from_acc<T>(value);
    } else {
      s_tile[er * S + 16 * eq + e] = value;
    }
  };

  // (kNceWeights: m, l, m_in, floored are the DanceStats max_lw, sum_in, max_in, floored)
  Acc m = nce_neg_inf<Acc>(), l = Acc(0), m_in = nce_neg_inf<Acc>();
  std::int64_t floored = 0;

  for (long long t = t0; t < t1; ++t) {
    const long long b0 = t * kTile;
    if (kMode == kNceGradQueue) {
      load_q_stats(b0, p.rows_b);
      load_q_labels(b0, p.rows_b);
    }
    tile_products(p, a0, b0, s_tile, ht);
    __syncthreads();

    Acc x[16];
    bool valid[16];
    for (int e = 0; e < 16; ++e) {
      const int c = 16 * eq + e;
      valid[e] = b0 + c < p.rows_b;
      x[e] = s_tile[er * S + c];
    }
    if (kMode == kNceWeights) {
      Acc tile_max = nce_neg_inf<Acc>(), tile_max_in = nce_neg_inf<Acc>();
      bool in[16];
      for (int e = 0; e < 16; ++e) {
        in[e] = valid[e] & math::dance_in_cutoff(x[e], p.dance);
        x[e] = valid[e] ? math::dance_log_weight(x[e], p.dance) : nce_neg_inf<Acc>();
        tile_max = x[e] > tile_max ? x[e] : tile_max;
        tile_max_in = in[e] & (x[e] > tile_max_in) ? x[e] : tile_max_in;
      }
      tile_max = quad_max(tile_max);
      tile_max_in = quad_max(tile_max_in);
      const Acc m_new = tile_max > m ? tile_max : m;
      const Acc m_in_new = tile_max_in > m_in ? tile_max_in : m_in;
      const Acc rescale = m_in == m_in_new ? Acc(1) : M::exp(m_in - m_in_new);
      Acc sum = Acc(0);
      int count = 0;
      for (int e = 0; e < 16; ++e) {
        const bool keep = math::dance_kept(x[e], m_new, in[e]);
        sum += keep ? M::exp(x[e] - m_in_new) : Acc(0);
        count += valid[e] & !keep;
      }
      sum = quad_sum(sum);
      count = quad_sum(count);
      l = l * rescale + sum;
      m = m_new;
      m_in = m_in_new;
      floored += count;
    } else if (kMode == kNceLogits) {
      if (sup) {
        Acc tile_sigma = Acc(0);
        int tile_count = 0;
        for (int e = 0; e < 16; ++e) {
          const bool pos = positive_at(b0, e, valid[e]);
          tile_sigma += pos ? x[e] : Acc(0);
          tile_count += pos;
        }
        sigma += quad_sum(tile_sigma);
        count += quad_sum(tile_count);
      }
      // x = c t with t = s * inv_t (x[e] holds t from here on); x - m by nce_logit_offset.
      Acc c[16];
      Acc tile_max = nce_neg_inf<Acc>();
      for (int e = 0; e < 16; ++e) {
        c[e] = kDance ? math::dance_weight<M>(x[e], q_dance[er], p.dance) : Acc(1);
        x[e] = math::nce_mul_rn(x[e], p.inv_t);
        const Acc logit = valid[e] ? math::nce_mul_rn(c[e], x[e]) : nce_neg_inf<Acc>();
        tile_max = logit > tile_max ? logit : tile_max;
      }
      tile_max = quad_max(tile_max);
      const Acc m_new = tile_max > m ? tile_max : m;
      const Acc rescale = m == m_new ? Acc(1) : M::exp(m - m_new);
      Acc sum = Acc(0);
      for (int e = 0; e < 16; ++e) {
        const Acc ex = valid[e] ? M::exp(math::nce_logit_offset(c[e], x[e], m_new)) : Acc(0);
        sum += ex;
        if (p.want_out) put_p(e, c[e] * ex);
      }
      sum = quad_sum(sum);
      l = l * rescale + sum;
      m = m_new;
      if (eq == 0) row_scale[er] = rescale;
    } else {
      for (int e = 0; e < 16; ++e) {
        const int qi = kMode == kNceGradQ ? er : 16 * eq + e;  // the q row of this entry
        const Acc c = kDance ? math::dance_weight<M>(x[e], q_dance[qi], p.dance) : Acc(1);
        const Acc g = q_factor[qi] * c *
                      math::softmax_weight<M>(c, math::nce_mul_rn(x[e], p.inv_t), q_lse[qi], q_lse_lo[qi]);
        const Acc w = positive_at(b0, e, valid[e]) ? q_positive[qi] : Acc(0);
        put_p(e, valid[e] ? g - w : Acc(0));
      }
    }
    // Without P V (kNceWeights, kNceLogits without O) this orders the epilogue's reads of the
    // tile before the next tile's staging overwrites its storage; with P V, accumulate_pv's own
    // barriers order both its reads of P and the next staging.
    __syncthreads();  // write-after-read only (test_cuda_emulation_info_nce.py: WAR_ONLY)
    if (has_pv) accumulate_pv(p, a0, b0, s_tile, v_s, row_scale, out, t == t0, ht);
  }

  if ((kMode == kNceWeights || kMode == kNceLogits) && eq == 0 && a0 + er < p.rows_a) {
    const long long idx = split * p.rows_a + a0 + er;
    p.part_m[idx] = m;
    p.part_l[idx] = l;
    if (kMode == kNceWeights) {
      p.part_floored[idx] = floored;
      p.part_m_in[idx] = m_in;
    }
    if (kMode == kNceLogits && sup) {
      p.part_sigma[idx] = sigma;
      p.part_count[idx] = count;
    }
  }
}

// ---- merges and per-row work --------------------------------------------------------------

// DaNCE: the weights' row constants (math::DanceRow) into stats, from the splits' partials
// of the first pass (k: the queue length K).
template <typename Acc>
__global__ void info_nce_weights_merge_kernel(gmem<const Acc> part_m, gmem<const Acc> part_l,
                                              gmem<const Acc> part_m_in,
                                              gmem<const std::int64_t> part_floored, long long splits,
                                              long long rows, long long k, gmem<Acc> stats) {
  const long long r = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  math::DanceStats<Acc> st{nce_neg_inf<Acc>(), nce_neg_inf<Acc>(), Acc(0), 0};
  for (long long s = 0; s < splits; ++s) {
    const long long i = s * rows + r;
    math::merge_dance_stats<NceDeviceMath>(
        st, math::DanceStats<Acc>{part_m[i], part_m_in[i], part_l[i], part_floored[i]});
  }
  math::store_dance_row(stats, r, math::dance_row(st, k));
}

// Row r of O (threads of a kNceFinishThreads block over its D columns): the splits' parts merged
// in split order with the rescaling of their (max, sum) pairs, times o_scale.
template <typename Acc>
__device__ __forceinline__ void merge_split_o(gmem<const Acc> part_m, gmem<const Acc> part_l,
                                              gmem<const Acc> part_o, long long splits,
                                              long long rows, long long d, long long r,
                                              Acc o_scale, gmem<Acc> o) {
  for (long long c = threadIdx.x; c < d; c += kNceFinishThreads) {
    Acc acc = Acc(0), mm = nce_neg_inf<Acc>(), ll = Acc(0), sa, sb;
    for (long long s = 0; s < splits; ++s) {
      math::merge_max_sum<NceDeviceMath>(mm, ll, part_m[s * rows + r], part_l[s * rows + r], sa, sb);
      acc = acc * sa + part_o[(s * rows + r) * d + c] * sb;
    }
    o[r * d + c] = acc * o_scale;
  }
}

// One block per row: merges the splits' (max, sum, O) in split order, adds the positive logit
// and writes loss, lse and their stats columns (and zero DaNCE columns unless weight_stats: the
// DaNCE pass wrote them) and O.
template <typename T, typename Acc>
__global__ void __launch_bounds__(kNceFinishThreads)
    info_nce_finish_kernel(gmem<const T> q, gmem<const T> k, gmem<const Acc> part_m,
                           gmem<const Acc> part_l, gmem<const Acc> part_o, long long splits,
                           long long rows, long long d, Acc inv_t, bool weight_stats, gmem<Acc> stats,
                           gmem<T> loss_out, gmem<T> lse_out, gmem<Acc> o) {
  __shared__ Acc partial[kNceFinishThreads];
  __shared__ Acc o_scale_s;
  using M = NceDeviceMath;
  const long long r = blockIdx.x;
  const int tid = threadIdx.x;
  Acc dot = Acc(0);
  for (long long c = tid; c < d; c += kNceFinishThreads) {
    dot += to_acc<Acc>(q[r * d + c]) * to_acc<Acc>(k[r * d + c]);
  }
  partial[tid] = dot;
  __syncthreads();
  for (int width = kNceFinishThreads / 2; width > 0; width /= 2) {
    if (tid < width) partial[tid] += partial[tid + width];
    __syncthreads();
  }
  // Every thread merges the (max, sum) pairs (a few values per split), in split order.
  Acc m = nce_neg_inf<Acc>(), l = Acc(0), sa, sb;
  for (long long s = 0; s < splits; ++s) {
    math::merge_max_sum<M>(m, l, part_m[s * rows + r], part_l[s * rows + r], sa, sb);
  }
  if (tid == 0) {
    Acc loss, lse, lse_lo, o_scale;
    math::finish_row<M>(m, l, math::nce_mul_rn(partial[0], inv_t), loss, lse, lse_lo, o_scale);
    stats[r * math::kNceStatsColumns + math::kStatLse] = lse;
    stats[r * math::kNceStatsColumns + math::kStatLoss] = loss;
    stats[r * math::kNceStatsColumns + math::kStatLseLo] = lse_lo;
    if (!weight_stats) math::store_dance_row(stats, r, math::DanceRow<Acc>{Acc(0), Acc(0), Acc(0)});
    loss_out[r] = from_acc<T>(loss);
    lse_out[r] = from_acc<T>(lse);
    o_scale_s = o_scale;
  }
  __syncthreads();
  if (o) merge_split_o<Acc>(part_m, part_l, part_o, splits, rows, d, r, o_scale_s, o);
}

// Per row: pos = (g (p_pos - 1) + h p_pos) / T and factor = (g + h) / T (math::row_grad_factors).
template <typename T, typename Acc>
__global__ void info_nce_grad_rows_kernel(gmem<const T> grad_loss, gmem<const T> grad_lse,
                                          gmem<const Acc> stats, long long rows, Acc inv_t,
                                          gmem<Acc> pos, gmem<Acc> factor) {
  const long long r = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  Acc ps, ng;
  math::row_grad_factors<NceDeviceMath>(stats[r * math::kNceStatsColumns + math::kStatLoss], to_acc<Acc>(grad_loss[r]),
                                        to_acc<Acc>(grad_lse[r]), ps, ng);
  pos[r] = ps * inv_t;
  factor[r] = ng * inv_t;
}

// grad_k = pos * q; grad_q = pos * k + (factor * O, or the splits' recomputed parts in order).
template <typename T, typename Acc>
__global__ void info_nce_grad_finish_kernel(gmem<const T> q, gmem<const T> k, gmem<const Acc> o,
                                            gmem<const Acc> part_q, long long splits,
                                            gmem<const Acc> pos, gmem<const Acc> factor,
                                            long long rows, long long d, gmem<T> grad_q,
                                            gmem<T> grad_k) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * d) return;
  const long long r = i / d;
  if (grad_k) grad_k[i] = from_acc<T>(pos[r] * to_acc<Acc>(q[i]));
  if (grad_q) {
    Acc g = pos[r] * to_acc<Acc>(k[i]);
    if (o) {
      g += factor[r] * o[i];
    } else {
      Acc neg = Acc(0);
      for (long long s = 0; s < splits; ++s) neg += part_q[s * rows * d + i];
      g += neg;
    }
    grad_q[i] = from_acc<T>(g);
  }
}

// ---- host side: the plan and the launch sequences -----------------------------------------

struct NcePlan {
  long long row_blocks, tiles, tiles_per_split, splits;
};

// Splits of rows_b's tiles so that row_blocks x splits fills about two waves of num_sms; one
// split when single_split. rows_a, rows_b >= 1.
inline NcePlan plan_info_nce(long long rows_a, long long rows_b, int num_sms, bool single_split) {
  NcePlan plan;
  plan.row_blocks = (rows_a + kTile - 1) / kTile;
  plan.tiles = (rows_b + kTile - 1) / kTile;
  long long splits = 1;
  if (!single_split) {
    const long long target = 2LL * (num_sms > 0 ? num_sms : 1);
    splits = (target + plan.row_blocks - 1) / plan.row_blocks;
    splits = splits < plan.tiles ? splits : plan.tiles;
    splits = splits > 1 ? splits : 1;
  }
  plan.tiles_per_split = (plan.tiles + splits - 1) / splits;
  plan.splits = (plan.tiles + plan.tiles_per_split - 1) / plan.tiles_per_split;
  return plan;
}

// Dynamic shared memory of the tile kernel: the S tile, plus the V slice on CUDA cores (the
// tensor-core path stages V in its static NceHalfTiles). At most 42 KiB (float64).
template <typename T, typename Acc>
constexpr unsigned nce_smem_bytes() {
  const int v_slice = kNceTensorCores<T> ? 0 : kTileStep * kTileLd;
  return static_cast<unsigned>((kTile * nce_s_pad<T>() + v_slice) * sizeof(Acc));
}

template <typename T, typename Acc, int kMode>
void launch_info_nce_tiles(const NceTileArgs<T, Acc>& args, bool dance, const NcePlan& plan,
                           cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(plan.splits), static_cast<unsigned>(plan.row_blocks));
  if (dance) {
    DIVA_LAUNCH((info_nce_tiles_kernel<T, Acc, kMode, true>), grid, dim3(kTileThreads),
                (nce_smem_bytes<T, Acc>()), stream)(args);
  } else {
    DIVA_LAUNCH((info_nce_tiles_kernel<T, Acc, kMode, false>), grid, dim3(kTileThreads),
                (nce_smem_bytes<T, Acc>()), stream)(args);
  }
}

inline unsigned nce_blocks(long long n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

// Buffers of the forward pass (all contiguous): q, k [b, d], queue [kq, d]; stats [b, 5];
// loss, lse [b]; o [b, d] or null; with kq > 0, part_m, part_l [plan.splits, b], with dance
// also part_floored, part_m_in [plan.splits, b],
// and (when o) part_o [plan.splits, b, d], plan = plan_info_nce(b, kq, num_sms, false).
// Requires b >= 1.
template <typename T, typename Acc>
void launch_info_nce_forward(gmem<const T> q, gmem<const T> k, gmem<const T> queue, long long b,
                             long long kq, long long d, double temperature, bool dance,
                             const math::DanceParams<Acc>& dance_params, const NcePlan& plan,
                             gmem<Acc> part_m, gmem<Acc> part_l, gmem<std::int64_t> part_floored,
                             gmem<Acc> part_m_in, gmem<Acc> part_o, gmem<Acc> stats, gmem<T> loss, gmem<T> lse,
                             gmem<Acc> o, cudaStream_t stream) {
  const Acc inv_t = static_cast<Acc>(1.0 / temperature);
  if (kq > 0) {
    NceTileArgs<T, Acc> args{q, queue, b, kq, d, plan.tiles_per_split, inv_t, dance_params,
                             stats, nullptr, part_m, part_l, part_floored, part_m_in, part_o, false};
    if (dance) {
      launch_info_nce_tiles<T, Acc, kNceWeights>(args, true, plan, stream);
      DIVA_LAUNCH((info_nce_weights_merge_kernel<Acc>), nce_blocks(b, 256), dim3(256), 0, stream)(
          part_m, part_l, part_m_in, part_floored, plan.splits, b, kq, stats);
    }
    args.want_out = static_cast<bool>(o);
    launch_info_nce_tiles<T, Acc, kNceLogits>(args, dance, plan, stream);
  }
  DIVA_LAUNCH((info_nce_finish_kernel<T, Acc>), dim3(static_cast<unsigned>(b)),
              dim3(kNceFinishThreads), 0, stream)(q, k, part_m, part_l, part_o,
                                                  kq > 0 ? plan.splits : 0, b, d, inv_t,
                                                  dance && kq > 0, stats, loss, lse, o);
}

// Buffers of the backward pass: grad_loss, grad_lse [b]; stats [b, 5] (from the forward); o [b, d]
// or null; pos, factor [b]; grad_q [b, d] or null (then q's part is not computed), grad_k [b, d]
// or null; grad_queue_acc [kq, d] (Acc) or null. When grad_q and not o and kq > 0: part_q
// [plan_q.splits, b, d], plan_q = plan_info_nce(b, kq, num_sms, false). Requires b, d >= 1.
template <typename T, typename Acc>
void launch_info_nce_backward(gmem<const T> grad_loss, gmem<const T> grad_lse, gmem<const T> q,
                              gmem<const T> k, gmem<const T> queue, long long b, long long kq,
                              long long d, double temperature, bool dance,
                              const math::DanceParams<Acc>& dance_params, gmem<const Acc> stats,
                              gmem<const Acc> o, const NcePlan& plan_q, gmem<Acc> part_q,
                              gmem<Acc> pos, gmem<Acc> factor, gmem<T> grad_q, gmem<T> grad_k,
                              gmem<Acc> grad_queue_acc, cudaStream_t stream) {
  const Acc inv_t = static_cast<Acc>(1.0 / temperature);
  DIVA_LAUNCH((info_nce_grad_rows_kernel<T, Acc>), nce_blocks(b, 256), dim3(256), 0, stream)(
      grad_loss, grad_lse, stats, b, inv_t, pos, factor);
  const bool recompute_q = grad_q && !o && kq > 0;
  if (recompute_q) {
    NceTileArgs<T, Acc> args{q, queue, b, kq, d, plan_q.tiles_per_split, inv_t, dance_params,
                             stats, factor, nullptr, nullptr, nullptr, nullptr, part_q, true};
    launch_info_nce_tiles<T, Acc, kNceGradQ>(args, dance, plan_q, stream);
  }
  if (grad_q || grad_k) {
    DIVA_LAUNCH((info_nce_grad_finish_kernel<T, Acc>), nce_blocks(b * d, 256), dim3(256), 0,
                stream)(q, k, o, part_q, recompute_q ? plan_q.splits : 0, pos, factor, b, d,
                        grad_q, grad_k);
  }
  if (grad_queue_acc && kq > 0) {
    const NcePlan plan = plan_info_nce(kq, b, 1, /*single_split=*/true);
    NceTileArgs<T, Acc> args{queue, q, kq, b, d, plan.tiles_per_split, inv_t, dance_params,
                             stats, factor, nullptr, nullptr, nullptr, nullptr, grad_queue_acc, true};
    launch_info_nce_tiles<T, Acc, kNceGradQueue>(args, dance, plan, stream);
  }
}

}  // namespace diva_ext::cuda
