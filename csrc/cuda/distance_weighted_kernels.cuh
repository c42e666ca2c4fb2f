// CUDA kernels of distance_weighted_negatives (torch-free: compiled by nvcc through
// distance_weighted.cu and on the CPU by the CUDA emulation, csrc/emulation/). The per-element
// math (log-weights, bounds, Philox noise, the (score, index) order) is the CPU kernel's, from
// diva_ext/math/distance_weighted.h, so both pick the same negatives for the same seed/offset.
//
// Tile kernel work split: one 256-thread block per 64 anchor rows (blockIdx.x) x a range of
// 64-column candidate tiles (blockIdx.y: the candidate axis is split when there are too few row
// blocks to fill the GPU). Per tile the block computes the 64 x 64 inner products with
// tile_mma.cuh:
//   float/double: on CUDA cores (tile_mma), thread (ty, tx) accumulating rows ty + 16 i and
//     the blocked columns 4 tx + j (i, j < 4) in registers;
//   float16/bfloat16: on tensor cores (tile_mma_wmma, float accumulators), each warp two
//     16 x 16 fragments, stored through shared memory into the same register layout.
// The epilogue runs on those registers: each thread keeps a running (score, index) argmax for
// each of its 4 rows over its columns, bounding log-weights from the shared-memory table and the
// noise from one stage-1 Philox call per row and 4 columns (its half of an 8-candidate group),
// and computing exact scores only for candidates that can still win. At the end the 16 threads
// of a row combine their argmaxes with shuffles, and thread tx = 0 writes the block's partial
// result for the row. The finish kernel (one block per anchor) merges the splits' partials in
// the deterministic (score, index) order and, for anchors without a candidate, draws the uniform
// fallback with a block-wide argmax over the different-label samples. No atomics: the picks do
// not depend on the schedule.
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>

#include "diva_ext/device.h"
#include "diva_ext/math/distance_weighted.h"
#include "tile_mma.cuh"

// Full unrolling of the epilogue's 4 x 4 loops keeps the register tile out of local memory (nvcc
// leaves a loop with two inlined Philox calls rolled). The emulation ignores it.
#if defined(__CUDACC__)
#define DIVA_DW_UNROLL _Pragma("unroll")
#else
#define DIVA_DW_UNROLL
#endif

namespace diva_ext::cuda {

constexpr int kDwMaxBins = math::kDwTableBins;  // the log-weight bound table's bins
constexpr int kDwFinishThreads = 128;

// The arguments of the tile kernel (copied per thread, as kernel parameters are).
template <typename T, typename Acc>
struct DwTileArgs {
  gmem<const T> x;                  // [b, d] unit rows
  gmem<const std::int64_t> labels;  // [b]
  gmem<const std::int64_t> anchors; // [t_count]
  gmem<const float> table;          // [tt.bins + 2] log-weight bounds
  math::DwParams<Acc> p;
  math::DwTable<Acc> tt;
  unsigned long long seed, offset;
  long long b, t_count, d;
  long long tiles_per_split;
  gmem<Acc> part_score;             // [splits, t_count]
  gmem<int> part_index;             // [splits, t_count]
};

// Running argmax of one row.
template <typename Acc>
struct DwBest {
  Acc score;
  int index;
};

// Epilogue of one thread's 4 x 4 block of inner products c[i][k] (rows ty + 16 i of the tile,
// columns col0 + 4 tx + k), updating best[i].
template <typename T, typename Acc>
__device__ __forceinline__ void dw_epilogue(const Acc (&c)[4][4], const DwTileArgs<T, Acc>& a,
                                            const float* table, const std::int64_t* row_label,
                                            long long row0, long long col0, int tx, int ty,
                                            DwBest<Acc> (&best)[4]) {
  const long long j0 = col0 + 4 * tx;  // a multiple of 4: half of one 8-candidate noise group
  std::int64_t col_label[4];
  DIVA_DW_UNROLL
  for (int k = 0; k < 4; ++k) col_label[k] = j0 + k < a.b ? a.labels[j0 + k] : 0;
  DIVA_DW_UNROLL
  for (int i = 0; i < 4; ++i) {
    const long long r = row0 + ty + 16 * i;
    if (r >= a.t_count) continue;
    float bound[4];
    float largest = -std::numeric_limits<float>::infinity();
    DIVA_DW_UNROLL
    for (int k = 0; k < 4; ++k) {
      const bool candidate =
          j0 + k < a.b && col_label[k] != row_label[ty + 16 * i] && c[i][k] > a.p.c_upper;
      bound[k] = candidate ? table[math::dw_table_index(c[i][k], a.tt)]
                           : -std::numeric_limits<float>::infinity();
      largest = bound[k] > largest ? bound[k] : largest;
    }
    if (!(static_cast<Acc>(largest) + static_cast<Acc>(math::kDwGumbelMax) > best[i].score)) continue;
    const auto t = static_cast<std::uint32_t>(r);
    const math::Philox4x32 noise =
        math::dw_noise_stage1(a.seed, a.offset, t, static_cast<std::uint32_t>(j0 >> 3));
    const int half = static_cast<int>((j0 >> 2) & 1);
    DIVA_DW_UNROLL
    for (int k = 0; k < 4; ++k) {
      const std::uint32_t h = math::dw_stage1_bits(noise, 4 * half + k);
      const float key = bound[k] + math::gumbel_upper_bound(h);
      if (!(static_cast<Acc>(key) > best[i].score)) continue;
      const auto j = static_cast<int>(j0 + k);
      const math::Philox4x32 r2 =
          math::dw_noise_stage2(a.seed, a.offset, t, static_cast<std::uint32_t>(j >> 2));
      const Acc score =
          math::dw_log_weight(c[i][k], a.p) + static_cast<Acc>(math::gumbel(h, math::dw_word(r2, j & 3)));
      if (math::dw_better(score, j, best[i].score, best[i].index)) best[i] = DwBest<Acc>{score, j};
    }
  }
}

// Combines the argmaxes of the 16 threads of a row (lanes tx = 0..15 of a half warp) and writes
// the block's partial result (thread tx = 0). Called by every thread of the block.
template <typename T, typename Acc>
__device__ __forceinline__ void dw_write_partials(DwBest<Acc> (&best)[4],
                                                  const DwTileArgs<T, Acc>& a, long long row0,
                                                  int tx, int ty) {
  for (int i = 0; i < 4; ++i) {
    for (int offset = 1; offset < 16; offset *= 2) {
      const Acc s = __shfl_xor_sync(0xffffffffu, best[i].score, offset);
      const int j = __shfl_xor_sync(0xffffffffu, best[i].index, offset);
      if (math::dw_better(s, j, best[i].score, best[i].index)) best[i] = DwBest<Acc>{s, j};
    }
  }
  if (tx != 0) return;
  for (int i = 0; i < 4; ++i) {
    const long long r = row0 + ty + 16 * i;
    if (r >= a.t_count) continue;
    const long long at = static_cast<long long>(blockIdx.y) * a.t_count + r;
    a.part_score[at] = best[i].score;
    a.part_index[at] = best[i].index;
  }
}

// Stages the table and the tile's anchor rows and labels; returns the block's column tile range.
template <typename T, typename Acc>
__device__ __forceinline__ void dw_stage_block(const DwTileArgs<T, Acc>& a, float* table,
                                               long long* row_index, std::int64_t* row_label,
                                               long long row0, int tid) {
  for (int e = tid; e < a.tt.bins + 2; e += kTileThreads) table[e] = a.table[e];
  if (tid < kTile) {
    const long long r = row0 + tid;
    const long long anchor = r < a.t_count ? a.anchors[r] : -1;
    row_index[tid] = anchor;
    row_label[tid] = anchor >= 0 ? a.labels[anchor] : 0;
  }
}

// The tile's first row and its range of column tiles [tile_begin, tile_end) (blockIdx.y's split).
template <typename T, typename Acc>
__device__ __forceinline__ void dw_block_tiles(const DwTileArgs<T, Acc>& a, long long& row0,
                                               long long& tile_begin, long long& tile_end) {
  row0 = static_cast<long long>(blockIdx.x) * kTile;
  const long long col_tiles = (a.b + kTile - 1) / kTile;
  tile_begin = static_cast<long long>(blockIdx.y) * a.tiles_per_split;
  tile_end = tile_begin + a.tiles_per_split < col_tiles ? tile_begin + a.tiles_per_split : col_tiles;
}

// The staged slices of the tile product: k-major Acc slices on CUDA cores (float/double); on
// tensor cores (float16/bfloat16) [row][k] T slices (anchors row-major, candidates read
// col-major) and the float tile the fragments are stored through.
template <typename T, typename Acc, bool kWmma = sizeof(T) == 2>
struct DwSlices {
  __align__(16) Acc xs[kTileStep][kTileLd];
  __align__(16) Acc ys[kTileStep][kTileLd];
};

template <typename T, typename Acc>
struct DwSlices<T, Acc, true> {
  __align__(32) T as[kTile][kWmmaStepLd];
  __align__(32) T bs[kTile][kWmmaStepLd];
  __align__(32) float cs[kTile][kTileLd];
};

template <typename T, typename Acc>
__global__ void __launch_bounds__(kTileThreads) dw_tile_kernel(DwTileArgs<T, Acc> a) {
  __shared__ DwSlices<T, Acc> sl;
  __shared__ float table[kDwMaxBins + 2];
  __shared__ long long row_index[kTile];
  __shared__ std::int64_t row_label[kTile];

  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  long long row0, tile_begin, tile_end;
  dw_block_tiles(a, row0, tile_begin, tile_end);
  dw_stage_block(a, table, row_index, row_label, row0, tid);
  __syncthreads();

  // The tile product's loader thread stages row tid / 4: an anchor's row and a candidate's.
  const int load_row = tid / 4;
  const long long anchor_row = row_index[load_row];
  DwBest<Acc> best[4];
  for (int i = 0; i < 4; ++i) best[i] = DwBest<Acc>{-std::numeric_limits<Acc>::infinity(), math::kDwNoIndex};

  for (long long tile = tile_begin; tile < tile_end; ++tile) {
    const long long col0 = tile * kTile;
    const long long cand_row = col0 + load_row;
    const long long b_row = cand_row < a.b ? cand_row : -1;
    Acc c[4][4];
    if constexpr (sizeof(T) == 2) {
      WmmaAcc acc[2];
      tile_mma_wmma(acc, a.x, anchor_row, a.x, b_row, a.d, sl.as, sl.bs);
      store_wmma_pair(&sl.cs[0][0], acc, kTileLd);
      __syncthreads();
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) c[i][j] = sl.cs[ty + 16 * i][col_of<TileCols::kBlocked>(tx, j)];
      // No barrier needed before the next tile overwrites cs: its k loop (d >= 1) passes two.
    } else {
      zero_block(c);
      tile_mma<TileCols::kBlocked>(c, a.x, anchor_row, a.x, b_row, a.d, sl.xs, sl.ys,
                                   [](Acc, Acc) {});
    }
    dw_epilogue(c, a, table, row_label, row0, col0, tx, ty, best);
  }
  dw_write_partials(best, a, row0, tx, ty);
}

// Block-wide argmax of (key, index) under `better` (which must be a total order), broadcast to
// every thread. Called by every thread of the block, once per keys/indices arrays (no barrier
// protects them from a second reduction).
template <typename Key, typename Better>
__device__ __forceinline__ void dw_block_argmax(Key& key, int& index, Key* keys, int* indices,
                                                Better better) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const Key k = __shfl_xor_sync(0xffffffffu, key, offset);
    const int j = __shfl_xor_sync(0xffffffffu, index, offset);
    if (better(k, j, key, index)) {
      key = k;
      index = j;
    }
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    keys[warp] = key;
    indices[warp] = index;
  }
  __syncthreads();
  key = keys[0];
  index = indices[0];
  for (int w = 1; w < kDwFinishThreads / 32; ++w) {
    if (better(keys[w], indices[w], key, index)) {
      key = keys[w];
      index = indices[w];
    }
  }
}

// One block per anchor position t: merge the splits' partials, else the uniform fallback.
template <typename Acc>
__global__ void __launch_bounds__(kDwFinishThreads)
    dw_finish_kernel(gmem<const Acc> part_score, gmem<const int> part_index, long long splits,
                     gmem<const std::int64_t> labels, gmem<const std::int64_t> anchors,
                     unsigned long long seed, unsigned long long offset, long long b,
                     long long t_count, gmem<std::int64_t> out) {
  __shared__ Acc score_keys[kDwFinishThreads / 32];
  __shared__ int score_indices[kDwFinishThreads / 32];
  __shared__ std::uint32_t word_keys[kDwFinishThreads / 32];
  __shared__ int word_indices[kDwFinishThreads / 32];
  const long long t = blockIdx.x;
  const int tid = threadIdx.x;

  Acc score = -std::numeric_limits<Acc>::infinity();
  int index = math::kDwNoIndex;
  for (long long s = tid; s < splits; s += kDwFinishThreads) {
    const Acc sc = part_score[s * t_count + t];
    const int j = part_index[s * t_count + t];
    if (math::dw_better(sc, j, score, index)) {
      score = sc;
      index = j;
    }
  }
  dw_block_argmax(score, index, score_keys, score_indices,
                  [](Acc s, int j, Acc bs, int bj) { return math::dw_better(s, j, bs, bj); });
  if (index != math::kDwNoIndex) {  // uniform across the block after the broadcast
    if (tid == 0) out[t] = index;
    return;
  }
  // Fallback: argmax of the stage-2 words over the different-label samples.
  const std::int64_t anchor_label = labels[anchors[t]];
  std::uint32_t word = 0;
  int j_best = math::kDwNoIndex;
  for (long long g = tid; 4 * g < b; g += kDwFinishThreads) {
    const math::Philox4x32 r = math::dw_noise_stage2(seed, offset, static_cast<std::uint32_t>(t),
                                                     static_cast<std::uint32_t>(g));
    for (int k = 0; k < 4; ++k) {
      const long long j = 4 * g + k;
      if (j < b && labels[j] != anchor_label &&
          math::dw_fallback_better(r.v[k], static_cast<int>(j), word, j_best)) {
        word = r.v[k];
        j_best = static_cast<int>(j);
      }
    }
  }
  dw_block_argmax(word, j_best, word_keys, word_indices,
                  [](std::uint32_t r, int j, std::uint32_t br, int bj) {
                    return math::dw_fallback_better(r, j, br, bj);
                  });
  if (tid == 0) out[t] = j_best == math::kDwNoIndex ? -1 : j_best;
}

// How the candidate axis is split: enough blocks for 2 per SM when the anchors alone do not give
// that, whole 64-column tiles per split, no empty split.
struct DwPlan {
  long long row_blocks, splits, tiles_per_split;
};

inline DwPlan dw_plan(long long t_count, long long b, int sm_count) {
  const long long row_blocks = (t_count + kTile - 1) / kTile;
  const long long col_tiles = (b + kTile - 1) / kTile;
  const long long want = 2LL * (sm_count > 0 ? sm_count : 1);
  long long splits = (want + row_blocks - 1) / row_blocks;
  splits = splits < 1 ? 1 : (splits > col_tiles ? col_tiles : splits);
  const long long tiles_per_split = (col_tiles + splits - 1) / splits;
  return DwPlan{row_blocks, (col_tiles + tiles_per_split - 1) / tiles_per_split, tiles_per_split};
}

// out [t_count] = the picks (docs/design.md §2.2). x [b, d] (unit rows), labels [b], anchors [t_count]
// (in [0, b)), table [tt.bins + 2] from math::fill_dw_table, part_score / part_index
// [plan.splits * t_count] workspace. Requires t_count, b, d >= 1 and tt.bins <= kDwMaxBins.
template <typename T, typename Acc>
void launch_distance_weighted_negatives(gmem<const T> x, gmem<const std::int64_t> labels,
                                        gmem<const std::int64_t> anchors, gmem<const float> table,
                                        const math::DwParams<Acc>& p, const math::DwTable<Acc>& tt,
                                        unsigned long long seed, unsigned long long offset,
                                        long long b, long long t_count, long long d,
                                        const DwPlan& plan, gmem<Acc> part_score,
                                        gmem<int> part_index, gmem<std::int64_t> out,
                                        cudaStream_t stream) {
  const DwTileArgs<T, Acc> args{x, labels, anchors, table, p, tt, seed, offset, b, t_count, d,
                                plan.tiles_per_split, part_score, part_index};
  const dim3 grid(static_cast<unsigned>(plan.row_blocks), static_cast<unsigned>(plan.splits));
  static_assert(sizeof(T) != 2 || sizeof(Acc) == 4, "half-precision inputs accumulate in float");
  DIVA_LAUNCH((dw_tile_kernel<T, Acc>), grid, dim3(kTileThreads), 0, stream)(args);
  DIVA_LAUNCH((dw_finish_kernel<Acc>), dim3(static_cast<unsigned>(t_count)),
              dim3(kDwFinishThreads), 0, stream)(gmem<const Acc>(part_score),
                                                 gmem<const int>(part_index), plan.splits, labels,
                                                 anchors, seed, offset, b, t_count, out);
}

}  // namespace diva_ext::cuda
