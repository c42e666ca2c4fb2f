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
// Work split: row_tiles.h. Each item runs the row epilogue (info_nce_epilogue.cpp) on its
// blocks and — for O or the gradients — one or two more GEMMs from the block's buffer; with
// several chunks of K each keeps its own online (max, sum[, O]) per row, merged in chunk order,
// and the chunks' parts of q's gradient are summed in chunk order. Extra memory: one
// [rows, tile] buffer per item plus O(chunks * B * D) partials, never O(B * K).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "diva_ext/info_nce_checks.h"
#include "diva_ext/math/info_nce.h"
#include "info_nce_epilogue.h"
#include "row_tiles.h"

namespace diva_ext::cpu {
namespace {

using tiles::Split;
using tiles::StdScalarMath;
using tiles::make_split;
using tiles::tensor_all_finite;

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

// DaNCE's first pass: the weights' row constants (math::DanceRow) into stats.
template <typename T>
void weight_stats_pass(const InfoNceProblem<T>& pr, T* stats) {
  const int64_t b = pr.q.size(0), k = pr.queue.size(0);
  const Split split = make_split(b, k, /*whole_b=*/false);
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const math::DanceStats<T> empty{kNegInf, kNegInf, T(0), 0};
  std::vector<math::DanceStats<T>> parts(split.chunks * b, empty);
  tiles::run_items<T>(pr.q, pr.queue, split, [&](int64_t r0, int64_t r1, int64_t c, int64_t c0, int64_t c1,
                           const at::Tensor& buf, T* scratch) {
    math::DanceStats<T>* chunk = parts.data() + c * b;
    tiles::for_each_block(pr.q, pr.queue, split, r0, r1, c0, c1, buf,
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
  const at::Tensor o_part = tiles::chunk_o_parts(o, split);
  if (k > 0) {
    tiles::online_pass<T>(pr.q, pr.queue, split, o_part,
                          [&](int64_t c, int64_t i, int64_t, T* s_row, int64_t cols, T* scratch) {
      return logits_row(s_row, scratch, cols, pr.inv_t, pr.dance, pr.params,
                        math::load_dance_row<T>(st, i), max_part[c * b + i], sum_part[c * b + i],
                        want_o);
    });
  }

  const at::Tensor &q = pr.q, &k_t = pr.k;  // (non-dependent names for data_ptr<T>)
  const T* qp = q.data_ptr<T>();
  const T* kp = k_t.data_ptr<T>();
  T* op = want_o ? o.data_ptr<T>() : nullptr;
  const T* opart = want_o ? o_part.data_ptr<T>() : nullptr;
  at::parallel_for(0, b, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T m, l;
      tiles::merge_chunks<StdScalarMath>(i, b, split.chunks, max_part.data(), sum_part.data(), m, l,
                                         want_o ? op + i * d : nullptr, opart, d);
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

// Backward by recomputing the tiles (tiles::gradient_sweep). neg: [B] factors of
// math::row_grad_factors; stats from info_nce_forward. grad_q (if defined, [B, D]) receives the
// negatives' part of q's gradient (added to what it holds); grad_queue (if defined) is overwritten.
template <typename T>
void info_nce_backward_sweep(const InfoNceProblem<T>& pr, const at::Tensor& stats,
                             const at::Tensor& neg, at::Tensor grad_q, at::Tensor grad_queue) {
  const T* st = stats.data_ptr<T>();
  const T* negp = neg.data_ptr<T>();
  tiles::gradient_sweep<T>(pr.q, pr.queue, grad_q, grad_queue,
                           [&](int64_t i, int64_t, T* s_row, int64_t cols) {
    const T* st_i = st + i * kStatsColumns;
    grad_row(s_row, cols, pr.inv_t, st_i[kLse], st_i[kLseLo], negp[i] * pr.inv_t, pr.dance,
             pr.params, math::load_dance_row<T>(st, i));
  });
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
