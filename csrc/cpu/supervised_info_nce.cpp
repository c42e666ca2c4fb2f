// CPU kernels of supervised_info_nce, _supervised_info_nce_forward and
// _supervised_info_nce_backward (docs/design.md §2.5; the math: math/supervised_info_nce.h).
//
// One online pass over the [B, K] inner products q @ memory^T (row_tiles.h: BLAS tiles, never
// more than a [rows, tile] block at a time): per tile row, positive_sum_row adds up the
// positives' inner products and count, then info_nce's logits_row updates the row's online
// (max, sum) — and, for a saved O, leaves e^(t_ij - m_i) in the tile for O's GEMM. K-chunks keep
// their own state, merged in chunk order; the positive sums and counts add up in chunk order.
//
// Backward: grad q_i = ((g_i + h_i) O_i - g_i mbar_i) / T, O(B * D) from the forward's saved O
// and mean positive rows when the memory needs no gradient; otherwise the tiles are recomputed
// (tiles::gradient_sweep), each turned into ((g_i + h_i) p_ij - w_i [j in P(i)]) / T by
// info_nce's grad_row and positive_grad_row, then one GEMM per wanted gradient.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "diva_ext/math/supervised_info_nce.h"
#include "diva_ext/supervised_info_nce_checks.h"
#include "info_nce_epilogue.h"
#include "row_tiles.h"
#include "supervised_info_nce_epilogue.h"

namespace diva_ext::cpu {
namespace {

using tiles::StdScalarMath;

// Row statistics: info_nce's layout (math/info_nce.h), the DaNCE columns left 0.
constexpr int64_t kCols = math::kNceStatsColumns;
constexpr int64_t kLse = math::kStatLse, kLoss = math::kStatLoss, kLseLo = math::kStatLseLo;

template <typename T>
struct SupProblem {
  at::Tensor q, labels, memory, memory_labels;  // detached, contiguous
  T inv_t;
};

template <typename T>
SupProblem<T> make_problem(const at::Tensor& q, const at::Tensor& labels, const at::Tensor& memory,
                           const at::Tensor& memory_labels, double temperature) {
  // Detached: the sweeps call ATen ops from worker threads, which must not record autograd.
  return SupProblem<T>{q.contiguous().detach(), labels.contiguous(), memory.contiguous().detach(),
                       memory_labels.contiguous(), static_cast<T>(1.0 / temperature)};
}

// Forward: stats [B, kCols] and positives (int64 [B], n_i); when o is defined ([2, B, D]), also
// O_i = sum_j p_ij m_j into o[0] and the mean positive rows into o[1].
template <typename T>
void supervised_forward(const SupProblem<T>& pr, at::Tensor& stats, at::Tensor& positives,
                        const at::Tensor& o) {
  const int64_t b = pr.q.size(0), k = pr.memory.size(0), d = pr.q.size(1);
  stats = at::zeros({b, kCols}, pr.q.options());
  positives = at::zeros({b}, pr.labels.options());
  if (b == 0) return;
  const bool want_o = o.defined();
  const at::Tensor o_main = want_o ? o.select(0, 0) : at::Tensor();
  const tiles::Split split = tiles::make_split(b, k, /*whole_b=*/false);
  const int64_t parts = split.chunks * b;
  std::vector<T> max_part(parts, -std::numeric_limits<T>::infinity()), sum_part(parts, T(0));
  std::vector<T> sigma_part(parts, T(0));
  std::vector<int64_t> count_part(parts, 0);
  const at::Tensor o_part = tiles::chunk_o_parts(o_main, split);
  const int64_t* lab = pr.labels.template const_data_ptr<int64_t>();
  const int64_t* mlab = pr.memory_labels.template const_data_ptr<int64_t>();
  if (k > 0) {
    const math::DanceParams<T> unused{};
    tiles::online_pass<T>(pr.q, pr.memory, split, o_part,
                          [&](int64_t c, int64_t i, int64_t j0, T* s_row, int64_t cols, T* scratch) {
      const int64_t at = c * b + i;
      positive_sum_row(s_row, mlab + j0, cols, lab[i], sigma_part[at], count_part[at]);
      return logits_row(s_row, scratch, cols, pr.inv_t, /*dance=*/false, unused,
                        math::DanceRow<T>{}, max_part[at], sum_part[at], want_o);
    });
  }
  T* st = stats.data_ptr<T>();
  int64_t* np = positives.data_ptr<int64_t>();
  T* op = want_o ? o_main.data_ptr<T>() : nullptr;
  const T* opart = want_o ? o_part.data_ptr<T>() : nullptr;
  at::parallel_for(0, b, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T m, l;
      tiles::merge_chunks<StdScalarMath>(i, b, split.chunks, max_part.data(), sum_part.data(), m, l,
                                         want_o ? op + i * d : nullptr, opart, d);
      T sigma = T(0);
      int64_t n = 0;
      for (int64_t c = 0; c < split.chunks; ++c) {
        sigma += sigma_part[c * b + i];
        n += count_part[c * b + i];
      }
      T loss, lse, lse_lo, o_scale;
      math::supervised_finish_row<StdScalarMath>(m, l, sigma, n, pr.inv_t, loss, lse, lse_lo,
                                                 o_scale);
      T* row = st + i * kCols;
      row[kLse] = lse;
      row[kLoss] = loss;
      row[kLseLo] = lse_lo;
      np[i] = n;
      if (want_o) {
        T* acc = op + i * d;
        for (int64_t e = 0; e < d; ++e) acc[e] *= o_scale;
      }
    }
  });
  if (want_o) {
    o.select(0, 1).copy_(supervised_positive_means(pr.labels, pr.memory, pr.memory_labels,
                                                   pr.q.scalar_type()));
  }
}

// Inputs first (names the argument), then the results (finite inputs whose logits overflowed).
// K = 0 leaves lse at -inf by contract: nothing to check then.
template <typename T>
void check_finite(const char* op, const SupProblem<T>& pr, const at::Tensor& stats) {
  const std::pair<const at::Tensor*, const char*> inputs[] = {{&pr.q, "q"}, {&pr.memory, "memory"}};
  for (const auto& [t, name] : inputs) {
    TORCH_CHECK(tiles::tensor_all_finite<T>(*t), op, ": ", name,
                " contains non-finite values (NaN or inf)");
  }
  if (pr.memory.size(0) > 0 && !tiles::tensor_all_finite<T>(stats)) {
    raise_supervised_info_nce_non_finite(op, pr.q, pr.memory);
  }
}

// (loss, lse, positives, stats, o); o empty unless save_o.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_forward(
    const char* op, const at::Tensor& q, const at::Tensor& labels, const at::Tensor& memory,
    const at::Tensor& memory_labels, double temperature, bool save_o) {
  check_supervised_info_nce_args(op, q, labels, memory, memory_labels, temperature,
                                 /*allow_half=*/false);
  at::Tensor stats, positives;
  at::Tensor o = save_o ? at::empty({2, q.size(0), q.size(1)}, q.options()) : at::empty({0}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "supervised_info_nce_cpu", [&] {
    const SupProblem<scalar_t> pr = make_problem<scalar_t>(q, labels, memory, memory_labels, temperature);
    supervised_forward<scalar_t>(pr, stats, positives, save_o ? o : at::Tensor());
    check_finite(op, pr, stats);
  });
  return {stats.select(1, kLoss).contiguous(), stats.select(1, kLse).contiguous(), positives,
          stats, o};
}

std::tuple<at::Tensor, at::Tensor> supervised_info_nce_cpu(const at::Tensor& q,
                                                           const at::Tensor& labels,
                                                           const at::Tensor& memory,
                                                           const at::Tensor& memory_labels,
                                                           double temperature) {
  auto out = run_forward("supervised_info_nce", q, labels, memory, memory_labels, temperature, false);
  return {std::get<0>(out), std::get<1>(out)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
supervised_info_nce_forward_cpu(const at::Tensor& q, const at::Tensor& labels,
                                const at::Tensor& memory, const at::Tensor& memory_labels,
                                double temperature, bool save_o) {
  return run_forward("_supervised_info_nce_forward", q, labels, memory, memory_labels,
                     temperature, save_o);
}

std::tuple<at::Tensor, at::Tensor> supervised_info_nce_backward_cpu(
    const at::Tensor& grad_loss, const at::Tensor& grad_lse, const at::Tensor& q,
    const at::Tensor& labels, const at::Tensor& memory, const at::Tensor& memory_labels,
    const std::optional<at::Tensor>& stats_opt, const std::optional<at::Tensor>& positives_opt,
    const std::optional<at::Tensor>& o_opt, double temperature, bool needs_q, bool needs_memory) {
  const at::Tensor stats_in = stats_opt.value_or(at::Tensor());
  const at::Tensor positives_in = positives_opt.value_or(at::Tensor());
  const at::Tensor o_in = o_opt.value_or(at::Tensor());
  check_supervised_info_nce_backward_args(grad_loss, grad_lse, q, labels, memory, memory_labels,
                                          stats_in, positives_in, o_in, temperature,
                                          /*allow_half=*/false);
  const int64_t b = q.size(0), d = q.size(1);
  at::Tensor grad_q = needs_q ? at::zeros_like(q, at::MemoryFormat::Contiguous) : at::empty({0}, q.options());
  at::Tensor grad_memory = needs_memory ? at::empty_like(memory, at::MemoryFormat::Contiguous)
                                        : at::empty({0}, q.options());
  if (!needs_q && !needs_memory) return {grad_q, grad_memory};

  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "supervised_info_nce_backward_cpu", [&] {
    using T = scalar_t;
    const SupProblem<T> pr = make_problem<T>(q, labels, memory, memory_labels, temperature);
    at::Tensor stats = stats_in, positives = positives_in;
    if (stats.defined()) {
      stats = stats.contiguous();
      positives = positives.contiguous();
    } else {
      supervised_forward<T>(pr, stats, positives, at::Tensor());
    }
    const bool use_o = o_in.defined() && needs_q;
    const at::Tensor g = grad_loss.contiguous(), h = grad_lse.contiguous();
    const T *gp = g.const_data_ptr<T>(), *hp = h.const_data_ptr<T>(), *st = stats.const_data_ptr<T>();
    const int64_t* np = positives.const_data_ptr<int64_t>();
    if (use_o) {
      const at::Tensor o = o_in.contiguous();
      const T* oo = o.const_data_ptr<T>();
      const T* mbar = oo + b * d;
      T* gq = grad_q.mutable_data_ptr<T>();
      at::parallel_for(0, b, 64, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          T a, w;
          math::supervised_grad_factors(gp[i], hp[i], np[i], a, w);
          a *= pr.inv_t;
          const T c = np[i] > 0 ? gp[i] * pr.inv_t : T(0);
          for (int64_t e = 0; e < d; ++e) gq[i * d + e] = a * oo[i * d + e] - c * mbar[i * d + e];
        }
      });
    }
    const int64_t* lab = pr.labels.template const_data_ptr<int64_t>();
    const int64_t* mlab = pr.memory_labels.template const_data_ptr<int64_t>();
    const math::DanceParams<T> unused{};
    tiles::gradient_sweep<T>(pr.q, pr.memory, needs_q && !use_o ? grad_q : at::Tensor(),
                             needs_memory ? grad_memory : at::Tensor(),
                             [&](int64_t i, int64_t j0, T* s_row, int64_t cols) {
      const T* st_i = st + i * kCols;
      T a, w;
      math::supervised_grad_factors(gp[i], hp[i], np[i], a, w);
      grad_row(s_row, cols, pr.inv_t, st_i[kLse], st_i[kLseLo], a * pr.inv_t, /*dance=*/false,
               unused, math::DanceRow<T>{});
      positive_grad_row(s_row, mlab + j0, cols, lab[i], w * pr.inv_t);
    });
  });
  return {grad_q, grad_memory};
}

}  // namespace

TORCH_LIBRARY_IMPL(diva_ext, CPU, m) {
  m.impl("supervised_info_nce", &supervised_info_nce_cpu);
  m.impl("_supervised_info_nce_forward", &supervised_info_nce_forward_cpu);
  m.impl("_supervised_info_nce_backward", &supervised_info_nce_backward_cpu);
}

}  // namespace diva_ext::cpu
