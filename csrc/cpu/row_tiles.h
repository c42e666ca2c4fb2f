// The tiled sweep over the [B, K] inner products S = q @ keys^T shared by the CPU kernels of
// info_nce (keys = the queue) and supervised_info_nce (keys = the memory): S exists one
// [rows, tile] block at a time.
//
// Work split: S is cut into blocks of up to kMaxRows q-rows by kTile key rows. A work item owns a
// range of q-rows and a contiguous chunk of key tiles; for each block it runs one BLAS GEMM into
// a private [rows, tile] buffer, then the caller's row epilogue while the block is in cache, and
// any further GEMMs from that buffer. Items run in parallel (at::parallel_for); BLAS inside an
// item is single-threaded. Extra memory: one [rows, tile] buffer per item, never O(B * K).
//
// When B is small there are too few row blocks for the threads, so K is split into chunks too;
// the caller keeps per-chunk row state and merges it afterwards in chunk order (deterministic for
// a given thread count). With whole_b every item spans all B rows, so the item that holds a chunk
// owns the gradients of its keys ("owner computes", no atomics).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <vector>

#include "diva_ext/math/info_nce.h"
#include "info_nce_epilogue.h"

namespace diva_ext::cpu::tiles {

// The math policy of the per-row (not vectorised) steps: the C library's functions.
struct StdScalarMath {
  template <typename T>
  static T exp(T x) { return std::exp(x); }
  template <typename T>
  static T log(T x) { return std::log(x); }
  template <typename T>
  static T log1p(T x) { return std::log1p(x); }
  template <typename T>
  static T expm1(T x) { return std::expm1(x); }
};

constexpr int64_t kTile = 512;     // key rows per block: a [128, 512] float buffer is 256 KiB
constexpr int64_t kMaxRows = 128;  // q rows per block

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Items: row_groups ranges of q-rows x chunks of key tiles.
struct Split {
  int64_t rows;        // q rows per block
  int64_t group_rows;  // q rows per item (a multiple of `rows`, or all of B)
  int64_t row_groups;
  int64_t tiles_per_chunk;
  int64_t chunks;
};

// whole_b: every item spans all B rows (the sweep that owns key gradients).
inline Split make_split(int64_t b, int64_t k, bool whole_b) {
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

// Calls fn(i0, rows, j0, cols, S) for each block of the item (rows [r0, r1), key rows [c0, c1)),
// key tiles outermost, with S = q[i0 : i0 + rows] @ keys[j0 : j0 + cols]^T in buf.
template <typename Fn>
void for_each_block(const at::Tensor& q, const at::Tensor& keys, const Split& split, int64_t r0,
                    int64_t r1, int64_t c0, int64_t c1, const at::Tensor& buf, Fn&& fn) {
  for (int64_t j0 = c0; j0 < c1; j0 += kTile) {
    const int64_t cols = std::min(kTile, c1 - j0);
    const at::Tensor keys_t = keys.narrow(0, j0, cols).t();
    for (int64_t i0 = r0; i0 < r1; i0 += split.rows) {
      const int64_t rows = std::min(split.rows, r1 - i0);
      at::Tensor s = buf.narrow(0, 0, rows * cols).view({rows, cols});
      at::mm_out(s, q.narrow(0, i0, rows), keys_t);
      fn(i0, rows, j0, cols, s);
    }
  }
}

// Runs body(r0, r1, c, c0, c1, buf, scratch) for every item in parallel; scratch holds kTile T.
template <typename T, typename Body>
void run_items(const at::Tensor& q, const at::Tensor& keys, const Split& split, Body&& body) {
  const int64_t b = q.size(0), k = keys.size(0);
  const int64_t items = split.row_groups * split.chunks;
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    at::Tensor buf = at::empty({split.rows * kTile}, q.options());
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

// True when every entry of the contiguous tensor t is finite (vectorised, in parallel).
template <typename T>
bool tensor_all_finite(const at::Tensor& t) {
  const T* p = t.const_data_ptr<T>();
  std::atomic<bool> ok{true};
  at::parallel_for(0, t.numel(), int64_t{1} << 16, [&](int64_t begin, int64_t end) {
    if (!all_finite(p + begin, end - begin)) ok = false;
  });
  return ok;
}

// The online pass: per-chunk row state lives with the caller; row_fn(c, i, j0, s_row, cols,
// scratch) folds row i's tile row (key rows [j0, j0 + cols)) into chunk c's state and returns
// the factor that rescales the row's O so far (1 when its maximum did not grow). With o_part
// defined ([chunks, B, D], zeroed), row_fn leaves the tile's weights in s_row and the pass adds
// them times the key tile to chunk c's O.
template <typename T, typename RowFn>
void online_pass(const at::Tensor& q, const at::Tensor& keys, const Split& split,
                 const at::Tensor& o_part, RowFn&& row_fn) {
  const int64_t d = q.size(1);
  const bool want_o = o_part.defined();
  run_items<T>(q, keys, split, [&](int64_t r0, int64_t r1, int64_t c, int64_t c0, int64_t c1,
                                   const at::Tensor& buf, T* scratch) {
    at::Tensor o_c = want_o ? o_part.select(0, c) : at::Tensor();
    for_each_block(q, keys, split, r0, r1, c0, c1, buf,
                   [&](int64_t i0, int64_t rows, int64_t j0, int64_t cols, const at::Tensor& s) {
      T* sp = s.data_ptr<T>();
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = i0 + r;
        const T scale = row_fn(c, i, j0, sp + r * cols, cols, scratch);
        if (want_o && scale != T(1)) {
          T* o_row = o_c.data_ptr<T>() + i * d;
          for (int64_t e = 0; e < d; ++e) o_row[e] *= scale;
        }
      }
      if (want_o) o_c.narrow(0, i0, rows).addmm_(s, keys.narrow(0, j0, cols));
    });
  });
}

// The per-chunk O buffers of online_pass for the output o ([B, D], or undefined for none):
// with a single chunk, o itself.
inline at::Tensor chunk_o_parts(const at::Tensor& o, const Split& split) {
  if (!o.defined()) return at::Tensor();
  const int64_t b = o.size(0), d = o.size(1);
  at::Tensor parts = split.chunks == 1 ? o.view({1, b, d}) : at::empty({split.chunks, b, d}, o.options());
  return parts.zero_();
}

// Merges row i's online pairs of chunks 1.. (max_part/sum_part[c * b + i]) into (m, l), chunk 0's,
// in chunk order; with o (row i of the output, [D]) defined, the chunks' O parts (o_part, as
// chunk_o_parts made them) into it, rescaled alike.
template <typename MathPolicy, typename T>
void merge_chunks(int64_t i, int64_t b, int64_t chunks, const T* max_part, const T* sum_part,
                  T& m, T& l, T* o, const T* o_part, int64_t d) {
  m = max_part[i];
  l = sum_part[i];
  for (int64_t c = 1; c < chunks; ++c) {
    T sa, sb;
    math::merge_max_sum<MathPolicy>(m, l, max_part[c * b + i], sum_part[c * b + i], sa, sb);
    if (o != nullptr) {
      // Several chunks: O accumulates into the output row, starting from chunk 0's part.
      const T* part = o_part + (c * b + i) * d;
      const T* prev = c == 1 ? o_part + i * d : o;
      for (int64_t e = 0; e < d; ++e) o[e] = prev[e] * sa + part[e] * sb;
    }
  }
}

// Backward by recomputing the tiles: row_fn(i, j0, s_row, cols) turns row i's tile row of inner
// products into the gradient of the objective with respect to them; then grad_q (if defined,
// [B, D]) receives sum_j G_ij keys_j (added to what it holds) and grad_keys (if defined, [K, D])
// is overwritten with G^T q.
template <typename T, typename RowFn>
void gradient_sweep(const at::Tensor& q, const at::Tensor& keys, at::Tensor grad_q,
                    at::Tensor grad_keys, RowFn&& row_fn) {
  const int64_t b = q.size(0), k = keys.size(0), d = q.size(1);
  const bool want_q = grad_q.defined(), want_keys = grad_keys.defined();
  if (!want_q && !want_keys) return;
  if (want_keys && (b == 0 || d == 0)) grad_keys.zero_();
  if (b == 0 || k == 0 || d == 0) return;
  const Split split = make_split(b, k, /*whole_b=*/want_keys);
  // The chunks' parts of grad_q, summed in chunk order at the end; with one chunk, grad_q itself.
  at::Tensor q_part;
  if (want_q) q_part = split.chunks == 1 ? grad_q.view({1, b, d}) : at::zeros({split.chunks, b, d}, grad_q.options());
  run_items<T>(q, keys, split, [&](int64_t r0, int64_t r1, int64_t c, int64_t c0, int64_t c1,
                                   const at::Tensor& buf, T*) {
    at::Tensor q_c = want_q ? q_part.select(0, c) : at::Tensor();
    for_each_block(q, keys, split, r0, r1, c0, c1, buf,
                   [&](int64_t i0, int64_t rows, int64_t j0, int64_t cols, const at::Tensor& s) {
      T* sp = s.data_ptr<T>();
      for (int64_t r = 0; r < rows; ++r) row_fn(i0 + r, j0, sp + r * cols, cols);
      const at::Tensor key_tile = keys.narrow(0, j0, cols);
      if (want_q) q_c.narrow(0, i0, rows).addmm_(s, key_tile);
      if (want_keys) {
        at::Tensor gk = grad_keys.narrow(0, j0, cols);
        if (i0 == r0) {
          at::mm_out(gk, s.t(), q.narrow(0, i0, rows));
        } else {
          gk.addmm_(s.t(), q.narrow(0, i0, rows));
        }
      }
    });
  });
  if (want_q && split.chunks > 1) grad_q.add_(q_part.sum(0));
}

}  // namespace diva_ext::cpu::tiles
