// CPU entry points of info_nce, _info_nce_forward and _info_nce_backward: validation,
// allocation and dtype dispatch. The tiled passes are in info_nce_sweeps.cpp.
//
// Backward: with p_pos = exp(-loss_i) and the per-row factors pos_i, neg_i of
// math::row_grad_factors,
//   grad_k_i = pos_i / T * q_i
//   grad_q_i = pos_i / T * k_i + neg_i / T * O_i,  O_i = sum_j c_ij p_ij queue_j
//   grad_queue_j = sum_i neg_i / T * c_ij p_ij q_i
// O comes from the forward when it was saved (MoCo: the queue needs no gradient), so that
// backward is O(B * D); otherwise the sweep recomputes the tiles, skipping the products whose
// gradient nobody asked for.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>

#include "diva_ext/info_nce_checks.h"
#include "info_nce_epilogue.h"
#include "info_nce_sweeps.h"

namespace diva_ext {
namespace {

using cpu::InfoNceProblem;

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
    if (!cpu::all_finite(p + begin, end - begin)) ok = false;
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
  at::Tensor stats = cpu::info_nce_forward<T>(pr, o);
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
  return {stats.select(1, cpu::kLoss).contiguous(), stats.select(1, cpu::kLse).contiguous()};
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
  return {stats.select(1, cpu::kLoss).contiguous(), stats.select(1, cpu::kLse).contiguous(),
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
                                                : cpu::info_nce_forward<T>(pr, at::Tensor());
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
        math::row_grad_factors<cpu::StdScalarMath>(st[i * cpu::kStatsColumns + cpu::kLoss], gp[i],
                                                   hp[i], posp[i], negp[i]);
        const T a = posp[i] * pr.inv_t, c = negp[i] * pr.inv_t;
        for (int64_t e = 0; e < d; ++e) {
          if (gk) gk[i * d + e] = a * qp[i * d + e];
          if (gq) gq[i * d + e] = a * kp[i * d + e] + (op ? c * op[i * d + e] : T(0));
        }
      }
    });
    cpu::info_nce_backward_sweep<T>(pr, stats, neg, needs_q && !use_o ? grad_q : at::Tensor(),
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

}  // namespace diva_ext
