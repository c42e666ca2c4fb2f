// CUDA entry point of distance_weighted_negatives: validation, the host-side table, dtype
// dispatch, stream and device guard. The kernels are in distance_weighted_kernels.cuh.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <type_traits>

#include "diva_ext/distance_weighted_checks.h"
#include "distance_weighted_kernels.cuh"

namespace diva_ext {
namespace {

// c10's half types as the CUDA types the wmma kernel instantiates (same bits).
template <typename scalar_t>
using kernel_t = std::conditional_t<
    std::is_same_v<scalar_t, at::Half>, __half,
    std::conditional_t<std::is_same_v<scalar_t, at::BFloat16>, __nv_bfloat16, scalar_t>>;

at::Tensor distance_weighted_negatives_cuda(const at::Tensor& x_in, const at::Tensor& labels_in,
                                            const at::Tensor& anchors_in, double lower_cutoff,
                                            double upper_cutoff, int64_t dim, int64_t seed,
                                            int64_t offset) {
  check_distance_weighted_args(x_in, labels_in, anchors_in, lower_cutoff, upper_cutoff, dim,
                               /*allow_half=*/true);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const int64_t t_count = anchors_in.size(0);
  at::Tensor out = at::empty({t_count}, anchors_in.options());
  if (t_count == 0) return out;
  // Indices are not differentiable: an x that requires grad is read as data (nested
  // out= GEMMs would refuse it).
  const at::Tensor x = x_in.contiguous().detach();
  const at::Tensor labels = labels_in.contiguous();
  const at::Tensor anchors = anchors_in.contiguous();
  check_distance_weighted_values(x, anchors);
  const int64_t b = x.size(0), d = x.size(1);
  const double n = static_cast<double>(dim > 0 ? dim : d);
  const int sm_count = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const cuda::DwPlan plan = cuda::dw_plan(t_count, b, sm_count);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "distance_weighted_negatives_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto p = math::make_dw_params<acc_t>(lower_cutoff, upper_cutoff, n);
    const auto tt = math::make_dw_table<acc_t>(math::kDwTableBins);
    at::Tensor table = at::empty({tt.bins + 2}, x.options().dtype(at::kFloat).device(at::kCPU));
    math::fill_dw_table(table.mutable_data_ptr<float>(), tt, p);
    table = table.to(x.device());
    const auto acc_options = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    at::Tensor part_score = at::empty({plan.splits * t_count}, acc_options);
    at::Tensor part_index = at::empty({plan.splits * t_count}, x.options().dtype(at::kInt));
    cuda::launch_distance_weighted_negatives<kernel_t<scalar_t>, acc_t>(
        reinterpret_cast<const kernel_t<scalar_t>*>(x.const_data_ptr<scalar_t>()),
        labels.const_data_ptr<int64_t>(), anchors.const_data_ptr<int64_t>(),
        table.const_data_ptr<float>(), p, tt, static_cast<unsigned long long>(seed),
        static_cast<unsigned long long>(offset), b, t_count, d, plan,
        part_score.mutable_data_ptr<acc_t>(), part_index.mutable_data_ptr<int>(),
        out.mutable_data_ptr<int64_t>(), stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(diva_ext, CUDA, m) {
  m.impl("distance_weighted_negatives", &distance_weighted_negatives_cuda);
}

}  // namespace diva_ext
