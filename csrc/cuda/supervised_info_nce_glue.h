// Torch glue of supervised_info_nce's CUDA kernels, shared by csrc/cuda/supervised_info_nce.cu
// (on the GPU) and csrc/emulation/supervised_info_nce.cpp (the same kernels on the CPU):
// validation, allocation of outputs and split partials, dtype dispatch, the launch sequences of
// supervised_info_nce_kernels.cuh, the mean positive rows of a saved O
// (supervised_positive_means, by ATen ops) and the non-finite checks. The Backend: glue.h.
//
// NB: as info_nce's glue, the non-finite check costs one device-to-host copy of three flags per
// forward call (a synchronisation).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/all.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/stack.h>

#include <tuple>

#include "diva_ext/supervised_info_nce_checks.h"
#include "glue.h"
#include "supervised_info_nce_kernels.cuh"

namespace diva_ext {

template <typename Backend>
struct SupervisedInfoNceGlue {
  // The ops supervised_info_nce, _supervised_info_nce_forward and _supervised_info_nce_backward
  // (docs in csrc/op_schemas.h).
  static std::tuple<at::Tensor, at::Tensor> supervised_info_nce(
      const at::Tensor& q, const at::Tensor& labels, const at::Tensor& memory,
      const at::Tensor& memory_labels, double temperature) {
    [[maybe_unused]] const auto guard = Backend::guard(q);
    auto out = run_forward("supervised_info_nce", q, labels, memory, memory_labels, temperature, false);
    return {std::get<0>(out), std::get<1>(out)};
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(
      const at::Tensor& q, const at::Tensor& labels, const at::Tensor& memory,
      const at::Tensor& memory_labels, double temperature, bool save_o) {
    [[maybe_unused]] const auto guard = Backend::guard(q);
    return run_forward("_supervised_info_nce_forward", q, labels, memory, memory_labels,
                       temperature, save_o);
  }

  static std::tuple<at::Tensor, at::Tensor> backward(
      const at::Tensor& grad_loss_in, const at::Tensor& grad_lse_in, const at::Tensor& q_in,
      const at::Tensor& labels_in, const at::Tensor& memory_in, const at::Tensor& memory_labels_in,
      const std::optional<at::Tensor>& stats_opt, const std::optional<at::Tensor>& positives_opt,
      const std::optional<at::Tensor>& o_opt, double temperature, bool needs_q, bool needs_memory) {
    [[maybe_unused]] const auto guard = Backend::guard(q_in);
    const at::Tensor stats_in = stats_opt.value_or(at::Tensor());
    const at::Tensor positives_in = positives_opt.value_or(at::Tensor());
    const at::Tensor o_in = o_opt.value_or(at::Tensor());
    check_supervised_info_nce_backward_args(grad_loss_in, grad_lse_in, q_in, labels_in, memory_in,
                                            memory_labels_in, stats_in, positives_in, o_in,
                                            temperature, /*allow_half=*/true);
    const at::Tensor q = q_in.contiguous(), memory = memory_in.contiguous();
    const at::Tensor labels = labels_in.contiguous(), memory_labels = memory_labels_in.contiguous();
    const int64_t b = q.size(0), k = memory.size(0), d = q.size(1);
    const auto acc_opts = q.options().dtype(supervised_info_nce_acc_dtype(q.scalar_type()));
    at::Tensor grad_q = at::empty(needs_q ? q.sizes() : at::IntArrayRef{0}, q.options());
    at::Tensor grad_memory = at::empty(needs_memory ? memory.sizes() : at::IntArrayRef{0}, q.options());
    if (!needs_q && !needs_memory) return {grad_q, grad_memory};
    if (b == 0 || d == 0) {
      grad_q.zero_();
      grad_memory.zero_();
      return {grad_q, grad_memory};
    }
    at::Tensor stats = stats_in, positives = positives_in;
    if (stats.defined()) {
      stats = stats.contiguous();
      positives = positives.contiguous();
    } else {
      auto out = run_forward("_supervised_info_nce_backward", q, labels, memory, memory_labels,
                             temperature, false);
      positives = std::get<2>(out);
      stats = std::get<3>(out);
    }
    const at::Tensor o = needs_q && o_in.defined() ? o_in.contiguous() : at::Tensor();
    const bool recompute_q = needs_q && !o.defined() && k > 0;
    const cuda::NcePlan plan_q =
        recompute_q ? cuda::plan_info_nce(b, k, Backend::num_sms(q), false) : cuda::NcePlan{1, 0, 1, 0};
    at::Tensor part_q = at::empty({recompute_q ? plan_q.splits : 0, b, d}, acc_opts);
    at::Tensor factor = at::empty({b}, acc_opts), positive = at::empty({b}, acc_opts);
    const bool memory_in_acc = grad_memory.scalar_type() == acc_opts.dtype();
    at::Tensor grad_memory_acc = !needs_memory || k == 0 ? at::Tensor()
                                 : memory_in_acc         ? grad_memory
                                                         : at::empty({k, d}, acc_opts);
    const at::Tensor g = grad_loss_in.contiguous(), h = grad_lse_in.contiguous();
    if (needs_q && k == 0) grad_q.zero_();  // (no tiles, no O: nothing else writes it)
    DIVA_CUDA_DISPATCH(q.scalar_type(), "supervised_info_nce_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      using kt = kernel_t<scalar_t>;
      cuda::launch_supervised_info_nce_backward<kt, acc_t>(
          Backend::template ptr<const kt>(g, "grad_loss"), Backend::template ptr<const kt>(h, "grad_lse"),
          Backend::template ptr<const kt>(q, "q"), Backend::template ptr<const std::int64_t>(labels, "labels"),
          Backend::template ptr<const kt>(memory, "memory"),
          Backend::template ptr<const std::int64_t>(memory_labels, "memory_labels"), b, k, d, temperature,
          Backend::template ptr<const acc_t>(stats, "stats"),
          Backend::template ptr<const std::int64_t>(positives, "positives"),
          o.defined() ? Backend::template ptr<const acc_t>(o, "o") : nullptr, plan_q,
          Backend::template ptr<acc_t>(part_q, "part_q"), Backend::template ptr<acc_t>(factor, "factor"),
          Backend::template ptr<acc_t>(positive, "positive"),
          needs_q && (k > 0) ? Backend::template ptr<kt>(grad_q, "grad_q") : nullptr,
          grad_memory_acc.defined() ? Backend::template ptr<acc_t>(grad_memory_acc, "grad_memory") : nullptr,
          Backend::stream());
      Backend::check_launch();
    });
    if (grad_memory_acc.defined() && !memory_in_acc) grad_memory.copy_(grad_memory_acc);
    if (needs_memory && k == 0) grad_memory.zero_();
    return {grad_q, grad_memory};
  }

 private:
  // (loss, lse, positives, stats, o): o is [2, B, D] (accumulation dtype) when save_o, else empty.
  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_forward(
      const char* op, const at::Tensor& q_in, const at::Tensor& labels_in,
      const at::Tensor& memory_in, const at::Tensor& memory_labels_in, double temperature,
      bool save_o) {
    check_supervised_info_nce_args(op, q_in, labels_in, memory_in, memory_labels_in, temperature,
                                   /*allow_half=*/true);
    const at::Tensor q = q_in.contiguous(), memory = memory_in.contiguous();
    const at::Tensor labels = labels_in.contiguous(), memory_labels = memory_labels_in.contiguous();
    const int64_t b = q.size(0), k = memory.size(0), d = q.size(1);
    const auto acc_opts = q.options().dtype(supervised_info_nce_acc_dtype(q.scalar_type()));
    at::Tensor stats = at::empty({b, math::kNceStatsColumns}, acc_opts);
    at::Tensor loss = at::empty({b}, q.options()), lse = at::empty({b}, q.options());
    at::Tensor positives = at::empty({b}, labels.options());
    at::Tensor o = save_o ? at::empty({2, b, d}, acc_opts) : at::empty({0}, acc_opts);
    if (b == 0) return {loss, lse, positives, stats, o};
    const cuda::NcePlan plan =
        k > 0 ? cuda::plan_info_nce(b, k, Backend::num_sms(q), false) : cuda::NcePlan{1, 0, 1, 0};
    const int64_t splits = k > 0 ? plan.splits : 0;
    at::Tensor part_m = at::empty({splits, b}, acc_opts), part_l = at::empty({splits, b}, acc_opts);
    at::Tensor part_sigma = at::empty({splits, b}, acc_opts);
    at::Tensor part_count = at::empty({splits, b}, labels.options());
    at::Tensor part_o = at::empty({save_o ? splits : 0, b, d}, acc_opts);
    DIVA_CUDA_DISPATCH(q.scalar_type(), "supervised_info_nce_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      using kt = kernel_t<scalar_t>;
      cuda::launch_supervised_info_nce_forward<kt, acc_t>(
          Backend::template ptr<const kt>(q, "q"), Backend::template ptr<const std::int64_t>(labels, "labels"),
          Backend::template ptr<const kt>(memory, "memory"),
          Backend::template ptr<const std::int64_t>(memory_labels, "memory_labels"), b, k, d, temperature,
          plan, Backend::template ptr<acc_t>(part_m, "part_m"), Backend::template ptr<acc_t>(part_l, "part_l"),
          Backend::template ptr<acc_t>(part_sigma, "part_sigma"),
          Backend::template ptr<std::int64_t>(part_count, "part_count"),
          Backend::template ptr<acc_t>(part_o, "part_o"), Backend::template ptr<acc_t>(stats, "stats"),
          Backend::template ptr<kt>(loss, "loss"), Backend::template ptr<kt>(lse, "lse"),
          Backend::template ptr<std::int64_t>(positives, "positives"),
          save_o ? Backend::template ptr<acc_t>(o, "o") : nullptr, Backend::stream());
      Backend::check_launch();
    });
    if (save_o) o.select(0, 1).copy_(supervised_positive_means(labels, memory, memory_labels, acc_opts.dtype().toScalarType()));
    check_finite(op, q, memory, stats);
    return {loss, lse, positives, stats, o};
  }

  static void check_finite(const char* op, const at::Tensor& q, const at::Tensor& memory,
                           const at::Tensor& stats) {
    // K = 0 leaves lse at -inf by contract: the stats are checked only with a memory.
    const at::Tensor stats_ok = memory.size(0) > 0 ? at::isfinite(stats).all() : at::isfinite(q.new_zeros({})).all();
    const at::Tensor flags = at::stack({at::isfinite(q).all(), at::isfinite(memory).all(), stats_ok}).cpu();
    const bool* f = flags.const_data_ptr<bool>();
    const char* names[] = {"q", "memory"};
    for (int i = 0; i < 2; ++i) {
      TORCH_CHECK(f[i], op, ": ", names[i], " contains non-finite values (NaN or inf)");
    }
    if (!f[2]) raise_supervised_info_nce_non_finite(op, q, memory);
  }
};

}  // namespace diva_ext
