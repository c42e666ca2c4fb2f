// distance_weighted_negatives' CUDA kernels (csrc/cuda/distance_weighted_kernels.cuh) run through
// the CUDA emulation, as torch.ops.diva_ext_emulated.distance_weighted_negatives. The launch
// sequence is the kernels' own (launch_distance_weighted_negatives); this file mirrors the torch
// glue of csrc/cuda/distance_weighted.cu (validation, the table, the workspace) on an emulated
// GPU of kEmulatedSms SMs, few enough that small tests exercise the split candidate axis.
// Tested against the CPU kernel by python_tests/test_cuda_emulation_distance_weighted.py.
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include "emulated.h"
#include "cuda/distance_weighted_kernels.cuh"
#include "diva_ext/distance_weighted_checks.h"

namespace diva_ext::emulated {
namespace {

constexpr int kEmulatedSms = 2;

at::Tensor distance_weighted_negatives(const at::Tensor& x_in, const at::Tensor& labels_in,
                                       const at::Tensor& anchors_in, double lower_cutoff,
                                       double upper_cutoff, int64_t dim, int64_t seed,
                                       int64_t offset, int64_t schedule_seed) {
  check_distance_weighted_args(x_in, labels_in, anchors_in, lower_cutoff, upper_cutoff, dim,
                               /*allow_half=*/true);
  const int64_t t_count = anchors_in.size(0);
  // Poisoned: a pick the kernels fail to write shows.
  at::Tensor out = at::full({t_count}, -7, anchors_in.options());
  if (t_count == 0) return out;
  // Indices are not differentiable: an x that requires grad is read as data (nested
  // out= GEMMs would refuse it).
  const at::Tensor x = x_in.contiguous().detach();
  const at::Tensor labels = labels_in.contiguous();
  const at::Tensor anchors = anchors_in.contiguous();
  check_distance_weighted_values(x, anchors);
  const int64_t b = x.size(0), d = x.size(1);
  const double n = static_cast<double>(dim > 0 ? dim : d);
  const cuda::DwPlan plan = cuda::dw_plan(t_count, b, kEmulatedSms);
  ScheduleScope schedule(static_cast<std::uint64_t>(schedule_seed));
  DIVA_EMULATED_DISPATCH(x.scalar_type(), "distance_weighted_negatives_emulated", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto p = math::make_dw_params<acc_t>(lower_cutoff, upper_cutoff, n);
    const auto tt = math::make_dw_table<acc_t>(math::kDwTableBins);
    at::Tensor table = at::empty({tt.bins + 2}, x.options().dtype(at::kFloat));
    math::fill_dw_table(table.mutable_data_ptr<float>(), tt, p);
    const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
    at::Tensor part_score = at::full({plan.splits * t_count}, NAN, x.options().dtype(acc_type));
    at::Tensor part_index = at::full({plan.splits * t_count}, -7, x.options().dtype(at::kInt));
    cuda::launch_distance_weighted_negatives<scalar_t, acc_t>(
        buffer<const scalar_t>(x, "x"), buffer<const int64_t>(labels, "labels"),
        buffer<const int64_t>(anchors, "anchors"), buffer<const float>(table, "table"), p, tt,
        static_cast<unsigned long long>(seed), static_cast<unsigned long long>(offset), b, t_count,
        d, plan, buffer<acc_t>(part_score, "part_score"), buffer<int>(part_index, "part_index"),
        buffer<int64_t>(out, "out"), stream());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(diva_ext_emulated, m) {
  m.def(
      "distance_weighted_negatives(Tensor x, Tensor labels, Tensor anchors, float lower_cutoff, "
      "float upper_cutoff, int dim, int seed, int offset, int schedule_seed) -> Tensor");
}

TORCH_LIBRARY_IMPL(diva_ext_emulated, CPU, m) {
  m.impl("distance_weighted_negatives", &distance_weighted_negatives);
}

}  // namespace diva_ext::emulated
