// CPU kernel of distance_weighted_negatives (docs/design.md §2.2; the math is in
// diva_ext/math/distance_weighted.h, the per-element passes in distance_weighted_epilogue.cpp).
//
// Work split: the anchors' inner products are computed block by block, one multithreaded BLAS
// GEMM per block of up to kRows anchor rows x a few candidate tiles of cols_per_tile() columns
// (about kBufferElems elements: O(T * tile) extra memory, no [T, B] matrix), then a parallel
// epilogue turns the block into updates of each row's running (score, index) argmax, drawing
// noise only for candidates that can still win. With many rows, threads take whole rows (one
// running argmax each, across the block's tiles in order); with few, they take (row, tile)
// pieces that start from the row's argmax so far and are merged in column order. The order
// (score, index) is total, so the picks do not depend on the split or the thread count. Rows
// with no candidate within the upper cutoff then take the uniform fallback.
//
// NB: the GEMMs run outside the parallel regions: MKL called from inside at::parallel_for
// oversubscribes the cores (10-60x slower on small tiles).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "diva_ext/distance_weighted_checks.h"
#include "distance_weighted_epilogue.h"

namespace diva_ext::cpu {
namespace {

using namespace diva_ext::math;

constexpr int64_t kRows = 512;                 // anchor rows per GEMM block
constexpr int64_t kBufferElems = int64_t{1} << 19;  // GEMM block size (2 MiB of float)
// Candidates per task (about 0.3 ms of epilogue): smaller calls stay on one thread, because
// waking a second one costs more than their work (far more on a loaded machine).
constexpr int64_t kGrainElems = int64_t{1} << 17;

// Candidate columns per epilogue tile (a multiple of 8, the epilogue's noise groups): a row of
// a tile plus its scratch stays in L1.
int64_t cols_per_tile(int64_t elem_size) { return elem_size == 4 ? 1024 : 512; }

// Per-thread scratch of the epilogue.
struct Scratch {
  std::vector<float> bound, key, group_max;
  explicit Scratch(int64_t cols)
      : bound(static_cast<size_t>(cols)), key(static_cast<size_t>(cols)),
        group_max(static_cast<size_t>(cols / 8)) {}
};

// check_distance_weighted_values in one serial pass (B * D + T): no thread wake-ups, which cost
// more than the pass itself for the small batches of training.
template <typename scalar_t>
void check_values_cpu(const at::Tensor& x, const at::Tensor& anchors) {
  TORCH_CHECK(x.size(0) > 0, kDwOp, ": anchors must index rows of x, but x has no rows");
  TORCH_CHECK(x.size(1) > 0, kDwOp, ": x has D = 0 columns, so its rows cannot be L2-normalised");
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const int64_t d = x.size(1);
  double norm_error = 0;
  for (int64_t i = 0; i < x.size(0); ++i) {
    double norm = 0;
    for (int64_t k = 0; k < d; ++k) norm += static_cast<double>(xp[i * d + k]) * xp[i * d + k];
    const double e = std::fabs(norm - 1);
    norm_error = (e > norm_error || std::isnan(e)) ? e : norm_error;
    if (std::isnan(norm_error)) break;
  }
  const int64_t* a = anchors.const_data_ptr<int64_t>();
  int64_t lo = a[0], hi = a[0];
  for (int64_t t = 1; t < anchors.size(0); ++t) {
    lo = std::min(lo, a[t]);
    hi = std::max(hi, a[t]);
  }
  check_distance_weighted_stats(x, norm_error, static_cast<double>(lo), static_cast<double>(hi));
}

// Labels as dense int32 class ids (only equality matters; 32-bit compares vectorise with floats).
at::Tensor class_ids(const at::Tensor& labels) {
  const auto inverse = std::get<1>(at::_unique2(labels, /*sorted=*/false, /*return_inverse=*/true,
                                                /*return_counts=*/false));
  return inverse.to(at::kInt).contiguous();
}

template <typename scalar_t>
void sample_cpu(const at::Tensor& x, const at::Tensor& ids_t, const at::Tensor& anchors,
                const DwParams<scalar_t>& p, uint64_t seed, uint64_t offset, at::Tensor& out) {
  const int64_t b = x.size(0), t_count = anchors.size(0);
  const int64_t tile_cols = cols_per_tile(x.element_size());
  const int64_t threads = at::get_num_threads();
  const int64_t block_rows = std::min(t_count, kRows);
  // Columns per GEMM block: whole tiles, more of them when there are few rows.
  const int64_t block_cols =
      tile_cols * std::max<int64_t>(1, kBufferElems / (block_rows * tile_cols));
  const bool by_rows = block_rows >= 4 * threads;

  const DwTable<scalar_t> table = make_dw_table<scalar_t>(kDwTableBins);
  std::vector<float> table_values(static_cast<size_t>(table.bins) + 2);
  fill_bound_table(table_values.data(), table, p);

  const at::Tensor xa = x.index_select(0, anchors);  // [T, D]: the anchor rows, contiguous
  const int32_t* ids = ids_t.const_data_ptr<int32_t>();
  const int64_t* anchor_ptr = anchors.const_data_ptr<int64_t>();
  std::vector<DwBest<scalar_t>> best(static_cast<size_t>(t_count),
                                     DwBest<scalar_t>{-std::numeric_limits<scalar_t>::infinity(),
                                                      kDwNoIndex});
  std::vector<DwBest<scalar_t>> pieces;  // (tile, row) partial argmaxes when splitting columns
  at::Tensor buffer = at::empty({block_rows * std::min(block_cols, b)}, x.options());

  for (int64_t r0 = 0; r0 < t_count; r0 += block_rows) {
    const int64_t rows = std::min(block_rows, t_count - r0);
    for (int64_t c0 = 0; c0 < b; c0 += block_cols) {
      const int64_t cols = std::min(block_cols, b - c0);
      const int64_t tiles = (cols + tile_cols - 1) / tile_cols;
      at::Tensor block = buffer.narrow(0, 0, rows * cols).view({rows, cols});
      at::mm_out(block, xa.narrow(0, r0, rows), x.narrow(0, c0, cols).t());
      const scalar_t* block_ptr = block.const_data_ptr<scalar_t>();
      // Epilogue of row i (of the block), tile k, into `into`.
      const auto piece = [&](Scratch& s, int64_t i, int64_t k, DwBest<scalar_t>& into) {
        const int64_t t = r0 + i, j0 = k * tile_cols;
        const DwNoiseKey nk{seed, offset, static_cast<uint32_t>(t)};
        update_row(block_ptr + i * cols + j0, ids, ids[anchor_ptr[t]], c0 + j0,
                   std::min(tile_cols, cols - j0), p, table_values.data(), table, nk,
                   s.bound.data(), s.key.data(), s.group_max.data(), into);
      };
      if (by_rows || tiles == 1) {
        const int64_t grain = std::max<int64_t>(1, kGrainElems / cols);
        at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
          Scratch s(tile_cols);
          for (int64_t i = begin; i < end; ++i)
            for (int64_t k = 0; k < tiles; ++k) piece(s, i, k, best[r0 + i]);
        });
      } else {
        pieces.resize(static_cast<size_t>(tiles * rows));
        const int64_t grain = std::max<int64_t>(1, kGrainElems / tile_cols);
        at::parallel_for(0, tiles * rows, grain, [&](int64_t begin, int64_t end) {
          Scratch s(tile_cols);
          for (int64_t item = begin; item < end; ++item) {
            const int64_t k = item / rows, i = item % rows;
            pieces[item] = best[r0 + i];  // start from the argmax of the earlier columns
            piece(s, i, k, pieces[item]);
          }
        });
        for (int64_t i = 0; i < rows; ++i) {
          for (int64_t k = 0; k < tiles; ++k) {
            const DwBest<scalar_t>& o = pieces[k * rows + i];
            DwBest<scalar_t>& row_best = best[r0 + i];
            if (dw_better(o.score, o.index, row_best.score, row_best.index)) row_best = o;
          }
        }
      }
    }
  }

  int64_t* out_ptr = out.mutable_data_ptr<int64_t>();
  std::vector<int64_t> fallback_rows;  // rows with no candidate within the upper cutoff
  for (int64_t t = 0; t < t_count; ++t) {
    out_ptr[t] = best[t].index;
    if (best[t].index == kDwNoIndex) fallback_rows.push_back(t);
  }
  const auto rows = static_cast<int64_t>(fallback_rows.size());
  const int64_t grain = std::max<int64_t>(1, kGrainElems / b);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = fallback_rows[r];
      const DwNoiseKey nk{seed, offset, static_cast<uint32_t>(t)};
      out_ptr[t] = fallback_pick(ids, b, ids[anchor_ptr[t]], nk);
    }
  });
}

at::Tensor distance_weighted_negatives_cpu(const at::Tensor& x_in, const at::Tensor& labels_in,
                                           const at::Tensor& anchors_in, double lower_cutoff,
                                           double upper_cutoff, int64_t dim, int64_t seed,
                                           int64_t offset) {
  check_distance_weighted_args(x_in, labels_in, anchors_in, lower_cutoff, upper_cutoff, dim,
                               /*allow_half=*/false);
  at::Tensor out = at::empty({anchors_in.size(0)}, anchors_in.options());
  if (anchors_in.size(0) == 0) return out;
  // Indices are not differentiable: an x that requires grad is read as data (nested
  // out= GEMMs would refuse it).
  const at::Tensor x = x_in.contiguous().detach();
  const at::Tensor anchors = anchors_in.contiguous();
  const at::Tensor ids = class_ids(labels_in);
  const double n = static_cast<double>(dim > 0 ? dim : x.size(1));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "distance_weighted_negatives_cpu", [&] {
    check_values_cpu<scalar_t>(x, anchors);
    const auto p = make_dw_params<scalar_t>(lower_cutoff, upper_cutoff, n);
    sample_cpu<scalar_t>(x, ids, anchors, p, static_cast<uint64_t>(seed),
                         static_cast<uint64_t>(offset), out);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(diva_ext, CPU, m) {
  m.impl("distance_weighted_negatives", &distance_weighted_negatives_cpu);
}

}  // namespace diva_ext::cpu
