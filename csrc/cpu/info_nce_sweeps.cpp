// Tiled passes of info_nce's CPU kernel.
//
// Work split: the [B, K] inner products are cut into blocks of up to kMaxRows q-rows by kTile
// queue rows. A work item owns a range of q-rows and a contiguous chunk of queue tiles; for each
// block it runs one BLAS GEMM into a private [rows, tile] buffer, then the row epilogue
// (info_nce_epilogue.h) while the block is in cache, and — for O or the gradients — one or two
// more GEMMs from that buffer. Items run in parallel (at::parallel_for); BLAS inside an item is
// single-threaded. Extra memory: one [rows, tile] buffer per item plus O(chunks * B * D) partials,
// never O(B * K).
//
// When B is small there are too few row blocks for the threads, so K is split into chunks too;
// each chunk keeps its own online (max, sum[, O]) per row, and the chunks are merged afterwards in
// chunk order (deterministic for a given thread count). The gradient of the queue is owned by
// the item that holds its chunk ("owner computes", no atomics): in that sweep an item spans all B
// rows, and the chunks' parts of q's gradient are summed in chunk order.
#include "info_nce_sweeps.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "info_nce_epilogue.h"

namespace diva_ext::cpu {
namespace {

constexpr int64_t kTile = 512;     // queue rows per block: a [128, 512] float buffer is 256 KiB
constexpr int64_t kMaxRows = 128;  // q rows per block

using StdMath = StdScalarMath;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Items: row_groups ranges of q-rows x chunks of queue tiles.
struct Split {
  int64_t rows;        // q rows per block
  int64_t group_rows;  // q rows per item (a multiple of `rows`, or all of B)
  int64_t row_groups;
  int64_t tiles_per_chunk;
  int64_t chunks;
};

// whole_b: every item spans all B rows (the sweep that owns queue gradients).
Split make_split(int64_t b, int64_t k, bool whole_b) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t tiles = std::max<int64_t>(1, ceil_div(k, kTile));
  Split s;
  if (whole_b) {
    s.rows = std::min(b, kMaxRows);
    s.group_rows = b;
    s.row_groups = 1;
  } else {
    // Enough row blocks for a few items per thread, without going below 16 rows per GEMM.
    const int64_t want = ceil_div(b, 4 * threads);
    s.rows = std::min(b, std::clamp<int64_t>(ceil_div(want, 16) * 16, 16, kMaxRows));
    s.group_rows = s.rows;
    s.row_groups = ceil_div(b, s.rows);
  }
  int64_t chunks = 1;
  if (whole_b) {
    chunks = std::min(tiles, threads);
  } else if (s.row_groups < 2 * threads) {
    chunks = std::min(tiles, ceil_div(2 * threads, s.row_groups));
  }
  s.tiles_per_chunk = ceil_div(tiles, chunks);
  s.chunks = ceil_div(tiles, s.tiles_per_chunk);
  return s;
}

// Calls fn(i0, rows, j0, cols, S) for each block of the item (rows [r0, r1), queue rows [c0, c1)),
// queue tiles outermost, with S = q[i0 : i0 + rows] @ queue[j0 : j0 + cols]^T in buf.
template <typename T, typename Fn>
void for_each_block(const InfoNceProblem<T>& pr, const Split& split, int64_t r0, int64_t r1,
                    int64_t c0, int64_t c1, const at::Tensor& buf, Fn&& fn) {
  for (int64_t j0 = c0; j0 < c1; j0 += kTile) {
    const int64_t cols = std::min(kTile, c1 - j0);
    const at::Tensor queue_t = pr.queue.narrow(0, j0, cols).t();
    for (int64_t i0 = r0; i0 < r1; i0 += split.rows) {
      const int64_t rows = std::min(split.rows, r1 - i0);
      at::Tensor s = buf.narrow(0, 0, rows * cols).view({rows, cols});
      at::mm_out(s, pr.q.narrow(0, i0, rows), queue_t);
      fn(i0, rows, j0, cols, s);
    }
  }
}

// Runs body(r0, r1, c, c0, c1, buf, scratch) for every item in parallel.
template <typename T, typename Body>
void run_items(const InfoNceProblem<T>& pr, const Split& split, Body&& body) {
  const int64_t b = pr.q.size(0), k = pr.queue.size(0);
  const int64_t items = split.row_groups * split.chunks;
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    at::Tensor buf = at::empty({split.rows * kTile}, pr.q.options());
    std::vector<T> scratch(kTile);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / split.chunks, c = item % split.chunks;
      const int64_t r0 = g * split.group_rows, r1 = std::min(b, r0 + split.group_rows);
      const int64_t c0 = c * split.tiles_per_chunk * kTile;
      const int64_t c1 = std::min(k, c0 + split.tiles_per_chunk * kTile);
      body(r0, r1, c, c0, c1, buf, scratch.data());
    }
  });
}

// DaNCE's first pass: the weights' row constants (math::DanceRow) into stats.
template <typename T>
void weight_stats_pass(const InfoNceProblem<T>& pr, T* stats) {
  const int64_t b = pr.q.size(0), k = pr.queue.size(0);
  const Split split = make_split(b, k, /*whole_b=*/false);
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const math::DanceStats<T> empty{kNegInf, kNegInf, T(0), 0};
  std::vector<math::DanceStats<T>> parts(split.chunks * b, empty);
  run_items(pr, split, [&](int64_t r0, int64_t r1, int64_t c, int64_t c0, int64_t c1,
                           const at::Tensor& buf, T* scratch) {
    math::DanceStats<T>* chunk = parts.data() + c * b;
    for_each_block(pr, split, r0, r1, c0, c1, buf,
                   [&](int64_t i0, int64_t rows, int64_t, int64_t cols, const at::Tensor& s) {
                     T* sp = s.data_ptr<T>();
                     for (int64_t r = 0; r < rows; ++r) {
                       weight_stats_row(sp + r * cols, scratch, cols, pr.params, chunk[i0 + r]);
                     }
                   });
  });
  at::parallel_for(0, b, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      math::DanceStats<T> st = empty;
      for (int64_t c = 0; c < split.chunks; ++c) math::merge_dance_stats<StdMath>(st, parts[c * b + i]);
      math::store_dance_row(stats, i, math::dance_row(st, k));
    }
  });
}

}  // namespace

template <typename T>
at::Tensor info_nce_forward(const InfoNceProblem<T>& pr, at::Tensor o) {
  const int64_t b = pr.q.size(0), k = pr.queue.size(0), d = pr.q.size(1);
  at::Tensor stats = at::zeros({b, kStatsColumns}, pr.q.options());
  if (b == 0) return stats;
  T* st = stats.data_ptr<T>();
  const bool want_o = o.defined();
  if (pr.dance && k > 0) weight_stats_pass(pr, st);

  const Split split = make_split(b, k, /*whole_b=*/false);
  const int64_t parts = split.chunks * b;
  std::vector<T> max_part(parts, -std::numeric_limits<T>::infinity()), sum_part(parts, T(0));
  // One O per chunk; with a single chunk the output itself.
  at::Tensor o_part;
  if (want_o) o_part = split.chunks == 1 ? o.view({1, b, d}) : at::empty({split.chunks, b, d}, o.options());
  if (want_o) o_part.zero_();
  if (k > 0) {
    run_items(pr, split, [&](int64_t r0, int64_t r1, int64_t c, int64_t c0, int64_t c1,
                             const at::Tensor& buf, T* scratch) {
      T* mx = max_part.data() + c * b;
      T* sum = sum_part.data() + c * b;
      at::Tensor o_c = want_o ? o_part.select(0, c) : at::Tensor();
      for_each_block(pr, split, r0, r1, c0, c1, buf,
                     [&](int64_t i0, int64_t rows, int64_t j0, int64_t cols, const at::Tensor& s) {
        T* sp = s.data_ptr<T>();
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + r;
          const T scale = logits_row(sp + r * cols, scratch, cols, pr.inv_t, pr.dance, pr.params,
                                     math::load_dance_row<T>(st, i), mx[i], sum[i],
                                     want_o);
          if (want_o && scale != T(1)) {
            T* o_row = o_c.data_ptr<T>() + i * d;
            for (int64_t e = 0; e < d; ++e) o_row[e] *= scale;
          }
        }
        if (want_o) o_c.narrow(0, i0, rows).addmm_(s, pr.queue.narrow(0, j0, cols));
      });
    });
  }

  const at::Tensor &q = pr.q, &k_t = pr.k;  // (non-dependent names for data_ptr<T>)
  const T* qp = q.data_ptr<T>();
  const T* kp = k_t.data_ptr<T>();
  T* op = want_o ? o.data_ptr<T>() : nullptr;
  const T* opart = want_o ? o_part.data_ptr<T>() : nullptr;
  at::parallel_for(0, b, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T m = max_part[i], l = sum_part[i];
      for (int64_t c = 1; c < split.chunks; ++c) {
        T sa, sb;
        math::merge_max_sum<StdMath>(m, l, max_part[c * b + i], sum_part[c * b + i], sa, sb);
        if (want_o) {
          // Several chunks: O accumulates into the output row, starting from chunk 0's part.
          T* acc = op + i * d;
          const T* part = opart + (c * b + i) * d;
          if (c == 1) {
            const T* first = opart + i * d;
            for (int64_t e = 0; e < d; ++e) acc[e] = first[e] * sa + part[e] * sb;
          } else {
            for (int64_t e = 0; e < d; ++e) acc[e] = acc[e] * sa + part[e] * sb;
          }
        }
      }
      const T a = math::nce_mul_rn(dot(qp + i * d, kp + i * d, d), pr.inv_t);
      T loss, lse, lse_lo, o_scale;
      math::finish_row<StdMath>(m, l, a, loss, lse, lse_lo, o_scale);
      T* row = st + i * kStatsColumns;
      row[kLse] = lse;
      row[kLoss] = loss;
      row[kLseLo] = lse_lo;
      if (want_o) {
        T* acc = op + i * d;
        for (int64_t e = 0; e < d; ++e) acc[e] *= o_scale;
      }
    }
  });
  return stats;
}

template <typename T>
void info_nce_backward_sweep(const InfoNceProblem<T>& pr, const at::Tensor& stats,
                             const at::Tensor& neg, at::Tensor grad_q, at::Tensor grad_queue) {
  const int64_t b = pr.q.size(0), k = pr.queue.size(0), d = pr.q.size(1);
  const bool want_q = grad_q.defined(), want_queue = grad_queue.defined();
  if (!want_q && !want_queue) return;
  if (want_queue && (b == 0 || d == 0)) grad_queue.zero_();
  if (b == 0 || k == 0 || d == 0) return;
  const Split split = make_split(b, k, /*whole_b=*/want_queue);
  // The chunks' parts of grad_q, summed in chunk order at the end; with one chunk, grad_q itself.
  at::Tensor q_part;
  if (want_q) q_part = split.chunks == 1 ? grad_q.view({1, b, d}) : at::zeros({split.chunks, b, d}, grad_q.options());
  const T* st = stats.data_ptr<T>();
  const T* negp = neg.data_ptr<T>();
  run_items(pr, split, [&](int64_t r0, int64_t r1, int64_t c, int64_t c0, int64_t c1,
                           const at::Tensor& buf, T*) {
    at::Tensor q_c = want_q ? q_part.select(0, c) : at::Tensor();
    for_each_block(pr, split, r0, r1, c0, c1, buf,
                   [&](int64_t i0, int64_t rows, int64_t j0, int64_t cols, const at::Tensor& s) {
      T* sp = s.data_ptr<T>();
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = i0 + r;
        const T* st_i = st + i * kStatsColumns;
        grad_row(sp + r * cols, cols, pr.inv_t, st_i[kLse], st_i[kLseLo], negp[i] * pr.inv_t,
                 pr.dance, pr.params, math::load_dance_row<T>(st, i));
      }
      const at::Tensor queue_tile = pr.queue.narrow(0, j0, cols);
      if (want_q) q_c.narrow(0, i0, rows).addmm_(s, queue_tile);
      if (want_queue) {
        at::Tensor gq = grad_queue.narrow(0, j0, cols);
        if (i0 == r0) {
          at::mm_out(gq, s.t(), pr.q.narrow(0, i0, rows));
        } else {
          gq.addmm_(s.t(), pr.q.narrow(0, i0, rows));
        }
      }
    });
  });
  if (want_q && split.chunks > 1) grad_q.add_(q_part.sum(0));
}

template at::Tensor info_nce_forward<float>(const InfoNceProblem<float>&, at::Tensor);
template at::Tensor info_nce_forward<double>(const InfoNceProblem<double>&, at::Tensor);
template void info_nce_backward_sweep<float>(const InfoNceProblem<float>&, const at::Tensor&,
                                             const at::Tensor&, at::Tensor, at::Tensor);
template void info_nce_backward_sweep<double>(const InfoNceProblem<double>&, const at::Tensor&,
                                              const at::Tensor&, at::Tensor, at::Tensor);

}  // namespace diva_ext::cpu
