// Torch glue of distance_weighted_negatives' CUDA kernels, shared by csrc/cuda/distance_weighted.cu
// (on the GPU) and csrc/emulation/distance_weighted.cpp (the same kernels on the CPU):
// validation, the log-weight bound table, the plan, the workspace, dtype dispatch and the launch
// sequence of distance_weighted_kernels.cuh. The Backend is described in glue.h.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>

#include "diva_ext/distance_weighted_checks.h"
#include "distance_weighted_kernels.cuh"
#include "glue.h"

namespace diva_ext {

template <typename Backend>
struct DistanceWeightedGlue {
  static at::Tensor negatives(const at::Tensor& x_in, const at::Tensor& labels_in,
                              const at::Tensor& anchors_in, double lower_cutoff,
                              double upper_cutoff, int64_t dim, int64_t seed, int64_t offset) {
    check_distance_weighted_args(x_in, labels_in, anchors_in, lower_cutoff, upper_cutoff, dim,
                                 /*allow_half=*/true);
    [[maybe_unused]] const auto guard = Backend::guard(x_in);
    const int64_t t_count = anchors_in.size(0);
    at::Tensor out = Backend::unwritten({t_count}, anchors_in.options());
    if (t_count == 0) return out;
    // Indices are not differentiable: an x that requires grad is read as data (nested
    // out= GEMMs would refuse it).
    const at::Tensor x = x_in.contiguous().detach();
    const at::Tensor labels = labels_in.contiguous();
    const at::Tensor anchors = anchors_in.contiguous();
    check_distance_weighted_values(x, anchors);
    const int64_t b = x.size(0), d = x.size(1);
    const double n = static_cast<double>(dim > 0 ? dim : d);
    const cuda::DwPlan plan = cuda::dw_plan(t_count, b, Backend::num_sms(x));
    DIVA_CUDA_DISPATCH(x.scalar_type(), "distance_weighted_negatives_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      using kt = kernel_t<scalar_t>;
      const auto p = math::make_dw_params<acc_t>(lower_cutoff, upper_cutoff, n);
      const auto tt = math::make_dw_table<acc_t>(math::kDwTableBins);
      at::Tensor table = at::empty({tt.bins + 2}, x.options().dtype(at::kFloat).device(at::kCPU));
      math::fill_dw_table(table.mutable_data_ptr<float>(), tt, p);
      table = table.to(x.device());
      const auto acc_options = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
      at::Tensor part_score = Backend::unwritten({plan.splits * t_count}, acc_options);
      at::Tensor part_index = Backend::unwritten({plan.splits * t_count}, x.options().dtype(at::kInt));
      cuda::launch_distance_weighted_negatives<kt, acc_t>(
          Backend::template ptr<const kt>(x, "x"),
          Backend::template ptr<const std::int64_t>(labels, "labels"),
          Backend::template ptr<const std::int64_t>(anchors, "anchors"),
          Backend::template ptr<const float>(table, "table"), p, tt,
          static_cast<unsigned long long>(seed), static_cast<unsigned long long>(offset), b,
          t_count, d, plan, Backend::template ptr<acc_t>(part_score, "part_score"),
          Backend::template ptr<int>(part_index, "part_index"),
          Backend::template ptr<std::int64_t>(out, "out"), Backend::stream());
      Backend::check_launch();
    });
    return out;
  }
};

}  // namespace diva_ext
