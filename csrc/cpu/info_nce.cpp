// CPU kernels of info_nce, _info_nce_forward and _info_nce_backward: validation, dtype dispatch,
// and the tiled passes over the [B, K] inner products, which exist one [rows, tile] block at a
// time; the per-row vectorised math between the GEMMs is in info_nce_epilogue.cpp.
//
// Backward: with p_pos = exp(-loss_i) and the per-row factors pos_i, neg_i of
// math::row_grad_factors,
//   grad_k_i = pos_i / T * q_i
//   grad_q_i = pos_i / T * k_i + neg_i / T * O_i,  O_i = sum_j c_ij p_ij queue_j
//   grad_queue_j = sum_i neg_i / T * c_ij p_ij q_i
// O comes from the forward when it was saved (MoCo: the queue needs no gradient), so that
// backward is O(B * D); otherwise the sweep recomputes the tiles, skipping the products whose
// gradient nobody asked for.
//
// Work split: the [B, K] inner products are cut into blocks of up to kMaxRows q-rows by kTile
// queue rows. A work item owns a range of q-rows and a contiguous chunk of queue tiles; for each
// block it runs one BLAS GEMM into a private [rows, tile] buffer, then the row epilogue
// (info_nce_epilogue.cpp) while the block is in cache, and — for O or the gradients — one or two
// more GEMMs from that buffer. Items run in parallel (at::parallel_for); BLAS inside an item is
// single-threaded. Extra memory: one [rows, tile] buffer per item plus O(chunks * B * D) partials,
// never O(B * K).
//
// When B is small there are too few row blocks for the threads, so K is split into chunks too;
// each chunk keeps its own online (max, sum[, O]) per row, and the chunks are merged afterwards in
// chunk order (deterministic for a given thread count). The gradient of the queue is owned by
// the item that holds its chunk ("owner computes", no atomics): in that sweep an item spans all B
// rows, and the chunks' parts of q's gradient are summed in chunk order.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "diva_ext/info_nce_checks.h"
#include "diva_ext/math/info_nce.h"
#include "info_nce_epilogue.h"

namespace diva_ext::cpu {
namespace {

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

template <typename T>
struct InfoNceProblem {
  at::Tensor q, k, queue;  // detached, contiguous
  T inv_t;                 // 1 / temperature
  bool dance;
  math::DanceParams<T> params;
};

// Row statistics of a forward pass, [B, kStatsColumns] of T: the layout of math/info_nce.h.
constexpr int64_t kStatsColumns = math::kNceStatsColumns;
constexpr int64_t kLse = math::kStatLse, kLoss = math::kStatLoss, kLseLo = math::kStatLseLo;

constexpr int64_t kTile = 512;     // queue rows per block: a [128, 512] float buffer is 256 KiB
constexpr int64_t kMaxRows = 128;  // q rows per block

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
      for (int64_t c = 0; c < split.chunks; ++c) math::merge_dance_stats<StdScalarMath>(st, parts[c * b + i]);
      math::store_dance_row(stats, i, math::dance_row(st, k));
    }
  });
}

// Forward: returns stats; when o is defined ([B, D], T), also writes O_i = sum_j c_ij p_ij queue_j.
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
        math::merge_max_sum<StdScalarMath>(m, l, max_part[c * b + i], sum_part[c * b + i], sa, sb);
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
      math::finish_row<StdScalarMath>(m, l, a, loss, lse, lse_lo, o_scale);
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

// Backward by recomputing the tiles. pos, neg: [B] factors of math::row_grad_factors; stats
// from info_nce_forward. grad_q (if defined, [B, D]) receives the negatives' part of q's gradient
// (added to what it holds); grad_queue (if defined, [K, D]) is overwritten.
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

template <typename T>
InfoNceProblem<T> make_problem(const at::Tensor& q, const at::Tensor& k, const at::Tensor& queue,
                               double temperature, c10::string_view weighting, double lower_cutoff,
                               double upper_cutoff) {
  InfoNceProblem<T> pr;
  // Detached: the sweeps call ATen ops from worker threads, which must not record autograd.
  pr.q = q.contiguous().detach();
  pr.k = k.contiguous().detach();
  pr.queue = queue.contiguous().detach();
  pr.inv_t = static_cast<T>(1.0 / temperature);
  pr.dance = parse_info_nce_weighting(weighting, "info_nce");
  pr.params = math::make_dance_params<T>(q.size(1), lower_cutoff, upper_cutoff);
  return pr;
}

template <typename T>
bool tensor_all_finite(const at::Tensor& t) {
  const T* p = t.const_data_ptr<T>();
  std::atomic<bool> ok{true};
  at::parallel_for(0, t.numel(), int64_t{1} << 16, [&](int64_t begin, int64_t end) {
    if (!all_finite(p + begin, end - begin)) ok = false;
  });
  return ok;
}

// Inputs first (names the argument), then the results (finite inputs whose logits overflowed).
template <typename T>
void check_finite(const char* op, const InfoNceProblem<T>& pr, const at::Tensor& stats) {
  const std::pair<const at::Tensor*, const char*> inputs[] = {
      {&pr.q, "q"}, {&pr.k, "k"}, {&pr.queue, "queue"}};
  for (const auto& [t, name] : inputs) {
    TORCH_CHECK(tensor_all_finite<T>(*t), op, ": ", name, " contains non-finite values (NaN or inf)");
  }
  if (!tensor_all_finite<T>(stats)) raise_info_nce_non_finite(op, pr.q, pr.k, pr.queue);
}

template <typename T>
std::tuple<at::Tensor, at::Tensor> run_forward(const char* op, const at::Tensor& q,
                                               const at::Tensor& k, const at::Tensor& queue,
                                               double temperature, c10::string_view weighting,
                                               double lower_cutoff, double upper_cutoff,
                                               bool save_o) {
  const InfoNceProblem<T> pr =
      make_problem<T>(q, k, queue, temperature, weighting, lower_cutoff, upper_cutoff);
  at::Tensor o = save_o ? at::empty(q.sizes(), q.options()) : at::Tensor();
  at::Tensor stats = info_nce_forward<T>(pr, o);
  check_finite(op, pr, stats);
  return {stats, save_o ? o : at::empty({0}, q.options())};
}

std::tuple<at::Tensor, at::Tensor> info_nce_cpu(const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& queue, double temperature,
                                                c10::string_view weighting, double lower_cutoff,
                                                double upper_cutoff) {
  constexpr const char* op = "info_nce";
  check_info_nce_args(op, q, k, queue, temperature, weighting, lower_cutoff, upper_cutoff,
                      /*allow_half=*/false);
  at::Tensor stats;
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "info_nce_cpu", [&] {
    stats = std::get<0>(run_forward<scalar_t>(op, q, k, queue, temperature, weighting,
                                              lower_cutoff, upper_cutoff, false));
  });
  return {stats.select(1, kLoss).contiguous(), stats.select(1, kLse).contiguous()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> info_nce_forward_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& queue, double temperature,
    c10::string_view weighting, double lower_cutoff, double upper_cutoff, bool save_o) {
  constexpr const char* op = "_info_nce_forward";
  check_info_nce_args(op, q, k, queue, temperature, weighting, lower_cutoff, upper_cutoff,
                      /*allow_half=*/false);
  at::Tensor stats, o;
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "info_nce_forward_cpu", [&] {
    std::tie(stats, o) = run_forward<scalar_t>(op, q, k, queue, temperature, weighting,
                                               lower_cutoff, upper_cutoff, save_o);
  });
  return {stats.select(1, kLoss).contiguous(), stats.select(1, kLse).contiguous(),
          stats, o};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> info_nce_backward_cpu(
    const at::Tensor& grad_loss, const at::Tensor& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& queue, const std::optional<at::Tensor>& stats_opt,
    const std::optional<at::Tensor>& o_opt, double temperature, c10::string_view weighting,
    double lower_cutoff, double upper_cutoff, bool needs_q, bool needs_k, bool needs_queue) {
  const at::Tensor stats_in = stats_opt.value_or(at::Tensor());
  const at::Tensor o_in = o_opt.value_or(at::Tensor());
  check_info_nce_backward_args(grad_loss, grad_lse, q, k, queue, stats_in, o_in, temperature,
                               weighting, lower_cutoff, upper_cutoff, /*allow_half=*/false);
  const int64_t b = q.size(0), d = q.size(1);
  at::Tensor grad_q = needs_q ? at::empty_like(q, at::MemoryFormat::Contiguous) : at::empty({0}, q.options());
  at::Tensor grad_k = needs_k ? at::empty_like(k, at::MemoryFormat::Contiguous) : at::empty({0}, q.options());
  at::Tensor grad_queue = needs_queue ? at::empty_like(queue, at::MemoryFormat::Contiguous)
                                      : at::empty({0}, q.options());
  if (!needs_q && !needs_k && !needs_queue) return {grad_q, grad_k, grad_queue};

  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "info_nce_backward_cpu", [&] {
    using T = scalar_t;
    const InfoNceProblem<T> pr =
        make_problem<T>(q, k, queue, temperature, weighting, lower_cutoff, upper_cutoff);
    const at::Tensor stats = stats_in.defined() ? stats_in.contiguous()
                                                : info_nce_forward<T>(pr, at::Tensor());
    const bool use_o = o_in.defined() && needs_q;
    const at::Tensor o = use_o ? o_in.contiguous() : at::Tensor();
    const at::Tensor g = grad_loss.contiguous(), h = grad_lse.contiguous();
    at::Tensor pos = at::empty({b}, q.options()), neg = at::empty({b}, q.options());
    const T *gp = g.const_data_ptr<T>(), *hp = h.const_data_ptr<T>(), *st = stats.const_data_ptr<T>();
    const T *qp = pr.q.const_data_ptr<T>(), *kp = pr.k.const_data_ptr<T>();
    const T* op = use_o ? o.const_data_ptr<T>() : nullptr;
    T *posp = pos.mutable_data_ptr<T>(), *negp = neg.mutable_data_ptr<T>();
    T* gq = needs_q ? grad_q.mutable_data_ptr<T>() : nullptr;
    T* gk = needs_k ? grad_k.mutable_data_ptr<T>() : nullptr;
    at::parallel_for(0, b, 64, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        math::row_grad_factors<StdScalarMath>(st[i * kStatsColumns + kLoss], gp[i],
                                                   hp[i], posp[i], negp[i]);
        const T a = posp[i] * pr.inv_t, c = negp[i] * pr.inv_t;
        for (int64_t e = 0; e < d; ++e) {
          if (gk) gk[i * d + e] = a * qp[i * d + e];
          if (gq) gq[i * d + e] = a * kp[i * d + e] + (op ? c * op[i * d + e] : T(0));
        }
      }
    });
    info_nce_backward_sweep<T>(pr, stats, neg, needs_q && !use_o ? grad_q : at::Tensor(),
                                    needs_queue ? grad_queue : at::Tensor());
  });
  return {grad_q, grad_k, grad_queue};
}

}  // namespace

TORCH_LIBRARY_IMPL(diva_ext, CPU, m) {
  m.impl("info_nce", &info_nce_cpu);
  m.impl("_info_nce_forward", &info_nce_forward_cpu);
  m.impl("_info_nce_backward", &info_nce_backward_cpu);
}

}  // namespace diva_ext::cpu
