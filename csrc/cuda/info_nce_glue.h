// Torch glue of info_nce's CUDA kernels, shared by csrc/cuda/info_nce.cu (on the GPU) and
// csrc/emulation/info_nce.cpp (the same kernels on the CPU): validation, allocation of outputs
// and split partials, dtype dispatch, the launch sequences of info_nce_kernels.cuh, and the
// non-finite checks. The Backend is described in glue.h.
//
// NB: the non-finite check costs one device-to-host copy of four flags per forward call (a
// synchronisation) and a transient bool copy of each input; it is what turns a NaN or inf input,
// or overflowing logits, into an error naming the argument instead of a silent NaN loss.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/all.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>

#include <tuple>
#include <type_traits>

#include "diva_ext/info_nce_checks.h"
#include "glue.h"
#include "info_nce_kernels.cuh"

namespace diva_ext {

template <typename Backend>
struct InfoNceGlue {
  // The ops info_nce, _info_nce_forward and _info_nce_backward (docs in csrc/op_schemas.h).
  static std::tuple<at::Tensor, at::Tensor> info_nce(const at::Tensor& q, const at::Tensor& k,
                                                     const at::Tensor& queue, double temperature,
                                                     c10::string_view weighting,
                                                     double lower_cutoff, double upper_cutoff) {
    [[maybe_unused]] const auto guard = Backend::guard(q);
    auto [loss, lse, stats, o] = run_forward("info_nce", q, k, queue, temperature, weighting,
                                             lower_cutoff, upper_cutoff, false);
    return {loss, lse};
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(
      const at::Tensor& q, const at::Tensor& k, const at::Tensor& queue, double temperature,
      c10::string_view weighting, double lower_cutoff, double upper_cutoff, bool save_o) {
    [[maybe_unused]] const auto guard = Backend::guard(q);
    return run_forward("_info_nce_forward", q, k, queue, temperature, weighting, lower_cutoff,
                       upper_cutoff, save_o);
  }

 private:
  // (loss, lse, stats, o): o is [B, D] (accumulation dtype) when save_o, else empty.
  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_forward(
      const char* op, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& queue_in,
      double temperature, c10::string_view weighting, double lower_cutoff, double upper_cutoff,
      bool save_o) {
    check_info_nce_args(op, q_in, k_in, queue_in, temperature, weighting, lower_cutoff,
                        upper_cutoff, /*allow_half=*/true);
    const bool dance = parse_info_nce_weighting(weighting, op);
    const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), queue = queue_in.contiguous();
    const int64_t b = q.size(0), kq = queue.size(0), d = q.size(1);
    const auto acc_opts = q.options().dtype(info_nce_acc_dtype(q.scalar_type()));
    at::Tensor stats = at::empty({b, math::kNceStatsColumns}, acc_opts);
    at::Tensor loss = at::empty({b}, q.options()), lse = at::empty({b}, q.options());
    at::Tensor o = save_o ? at::empty({b, d}, acc_opts) : at::empty({0}, acc_opts);
    if (b == 0) return {loss, lse, stats, o};
    const cuda::NcePlan plan =
        kq > 0 ? cuda::plan_info_nce(b, kq, Backend::num_sms(q), false) : cuda::NcePlan{1, 0, 1, 0};
    at::Tensor part_m = at::empty({plan.splits, b}, acc_opts);
    at::Tensor part_l = at::empty({plan.splits, b}, acc_opts);
    at::Tensor part_floored = at::empty({dance ? plan.splits : 0, b}, q.options().dtype(at::kLong));
    at::Tensor part_m_in = at::empty({dance ? plan.splits : 0, b}, acc_opts);
    at::Tensor part_o = at::empty({save_o ? plan.splits : 0, b, d}, acc_opts);
    DIVA_CUDA_DISPATCH(q.scalar_type(), "info_nce_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      using kt = kernel_t<scalar_t>;
      cuda::launch_info_nce_forward<kt, acc_t>(
          Backend::template ptr<const kt>(q, "q"), Backend::template ptr<const kt>(k, "k"),
          Backend::template ptr<const kt>(queue, "queue"), b, kq, d, temperature, dance,
          math::make_dance_params<acc_t>(d, lower_cutoff, upper_cutoff), plan,
          Backend::template ptr<acc_t>(part_m, "part_m"), Backend::template ptr<acc_t>(part_l, "part_l"),
          Backend::template ptr<std::int64_t>(part_floored, "part_floored"),
          Backend::template ptr<acc_t>(part_m_in, "part_m_in"),
          Backend::template ptr<acc_t>(part_o, "part_o"), Backend::template ptr<acc_t>(stats, "stats"),
          Backend::template ptr<kt>(loss, "loss"), Backend::template ptr<kt>(lse, "lse"),
          save_o ? Backend::template ptr<acc_t>(o, "o") : nullptr, Backend::stream());
      Backend::check_launch();
    });
    check_finite(op, q, k, queue, stats);
    return {loss, lse, stats, o};
  }

 public:
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
      const at::Tensor& grad_loss_in, const at::Tensor& grad_lse_in, const at::Tensor& q_in,
      const at::Tensor& k_in, const at::Tensor& queue_in, const std::optional<at::Tensor>& stats_opt,
      const std::optional<at::Tensor>& o_opt, double temperature, c10::string_view weighting,
      double lower_cutoff, double upper_cutoff, bool needs_q, bool needs_k, bool needs_queue) {
    [[maybe_unused]] const auto guard = Backend::guard(q_in);
    const at::Tensor stats_in = stats_opt.value_or(at::Tensor());
    const at::Tensor o_in = o_opt.value_or(at::Tensor());
    check_info_nce_backward_args(grad_loss_in, grad_lse_in, q_in, k_in, queue_in, stats_in, o_in,
                                 temperature, weighting, lower_cutoff, upper_cutoff,
                                 /*allow_half=*/true);
    const bool dance = parse_info_nce_weighting(weighting, "_info_nce_backward");
    const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), queue = queue_in.contiguous();
    const int64_t b = q.size(0), kq = queue.size(0), d = q.size(1);
    const auto acc_opts = q.options().dtype(info_nce_acc_dtype(q.scalar_type()));
    at::Tensor grad_q = at::empty(needs_q ? q.sizes() : at::IntArrayRef{0}, q.options());
    at::Tensor grad_k = at::empty(needs_k ? k.sizes() : at::IntArrayRef{0}, q.options());
    at::Tensor grad_queue = at::empty(needs_queue ? queue.sizes() : at::IntArrayRef{0}, q.options());
    if (!needs_q && !needs_k && !needs_queue) return {grad_q, grad_k, grad_queue};
    if (b == 0 || d == 0) {
      grad_q.zero_();
      grad_k.zero_();
      grad_queue.zero_();
      return {grad_q, grad_k, grad_queue};
    }
    const at::Tensor stats =
        stats_in.defined()
            ? stats_in.contiguous()
            : std::get<2>(run_forward("_info_nce_backward", q, k, queue, temperature, weighting,
                                  lower_cutoff, upper_cutoff, false));
    const at::Tensor o = needs_q && o_in.defined() ? o_in.contiguous() : at::Tensor();
    const bool recompute_q = needs_q && !o.defined() && kq > 0;
    const cuda::NcePlan plan_q =
        recompute_q ? cuda::plan_info_nce(b, kq, Backend::num_sms(q), false) : cuda::NcePlan{1, 0, 1, 0};
    at::Tensor part_q = at::empty({recompute_q ? plan_q.splits : 0, b, d}, acc_opts);
    at::Tensor pos = at::empty({b}, acc_opts), factor = at::empty({b}, acc_opts);
    const bool queue_in_acc = grad_queue.scalar_type() == acc_opts.dtype();
    at::Tensor grad_queue_acc = !needs_queue || kq == 0 ? at::Tensor()
                                : queue_in_acc         ? grad_queue
                                                       : at::empty({kq, d}, acc_opts);
    const at::Tensor g = grad_loss_in.contiguous(), h = grad_lse_in.contiguous();
    DIVA_CUDA_DISPATCH(q.scalar_type(), "info_nce_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      using kt = kernel_t<scalar_t>;
      cuda::launch_info_nce_backward<kt, acc_t>(
          Backend::template ptr<const kt>(g, "grad_loss"), Backend::template ptr<const kt>(h, "grad_lse"),
          Backend::template ptr<const kt>(q, "q"), Backend::template ptr<const kt>(k, "k"),
          Backend::template ptr<const kt>(queue, "queue"), b, kq, d, temperature, dance,
          math::make_dance_params<acc_t>(d, lower_cutoff, upper_cutoff),
          Backend::template ptr<const acc_t>(stats, "stats"),
          o.defined() ? Backend::template ptr<const acc_t>(o, "o") : nullptr, plan_q,
          Backend::template ptr<acc_t>(part_q, "part_q"), Backend::template ptr<acc_t>(pos, "pos"),
          Backend::template ptr<acc_t>(factor, "factor"),
          needs_q ? Backend::template ptr<kt>(grad_q, "grad_q") : nullptr,
          needs_k ? Backend::template ptr<kt>(grad_k, "grad_k") : nullptr,
          grad_queue_acc.defined() ? Backend::template ptr<acc_t>(grad_queue_acc, "grad_queue")
                                   : nullptr,
          Backend::stream());
      Backend::check_launch();
    });
    if (grad_queue_acc.defined() && !queue_in_acc) grad_queue.copy_(grad_queue_acc);
    return {grad_q, grad_k, grad_queue};
  }

 private:
  static void check_finite(const char* op, const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& queue, const at::Tensor& stats) {
    const at::Tensor flags = at::stack({at::isfinite(q).all(), at::isfinite(k).all(),
                                        at::isfinite(queue).all(), at::isfinite(stats).all()})
                                 .cpu();
    const bool* f = flags.const_data_ptr<bool>();
    const char* names[] = {"q", "k", "queue"};
    for (int i = 0; i < 3; ++i) {
      TORCH_CHECK(f[i], op, ": ", names[i], " contains non-finite values (NaN or inf)");
    }
    if (!f[3]) raise_info_nce_non_finite(op, q, k, queue);
  }
};

}  // namespace diva_ext
