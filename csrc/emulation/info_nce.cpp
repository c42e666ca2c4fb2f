// info_nce's CUDA kernels (csrc/cuda/info_nce_kernels.cuh) run through the CUDA emulation, as
// torch.ops.diva_ext_emulated.info_nce / _info_nce_forward / _info_nce_backward (the diva_ext
// schemas plus a schedule seed). The glue is the CUDA op's own (csrc/cuda/info_nce_glue.h) with
// bounds-checked buffers and a small "GPU" of kEmulatedSms multiprocessors, so that small batches
// already split K across blocks. Tested against the CPU kernels by
// python_tests/test_cuda_emulation_info_nce.py.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "emulated.h"
#include "cuda/info_nce_kernels.cuh"
#include "cuda/info_nce_glue.h"

namespace diva_ext::emulated {
namespace {

constexpr int kEmulatedSms = 4;

struct EmulatedBackend {
  template <typename T>
  static gmem<T> ptr(const at::Tensor& t, const char* name) {
    return buffer<T>(t, name);
  }
  static cudaStream_t stream() { return emulated::stream(); }
  static int num_sms(const at::Tensor&) { return kEmulatedSms; }
  static void check_launch() {}
};

using Glue = InfoNceGlue<EmulatedBackend>;

std::tuple<at::Tensor, at::Tensor> info_nce(const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& queue, double temperature,
                                            c10::string_view weighting, double lower_cutoff,
                                            double upper_cutoff, int64_t schedule_seed) {
  ScheduleScope schedule(static_cast<std::uint64_t>(schedule_seed));
  auto [loss, lse, stats, o] = Glue::forward("info_nce", q, k, queue, temperature, weighting,
                                             lower_cutoff, upper_cutoff, false);
  return {loss, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> info_nce_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& queue, double temperature,
    c10::string_view weighting, double lower_cutoff, double upper_cutoff, bool save_o,
    int64_t schedule_seed) {
  ScheduleScope schedule(static_cast<std::uint64_t>(schedule_seed));
  return Glue::forward("_info_nce_forward", q, k, queue, temperature, weighting, lower_cutoff,
                       upper_cutoff, save_o);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> info_nce_backward(
    const at::Tensor& grad_loss, const at::Tensor& grad_lse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& queue, const std::optional<at::Tensor>& stats,
    const std::optional<at::Tensor>& o, double temperature, c10::string_view weighting,
    double lower_cutoff, double upper_cutoff, bool needs_q, bool needs_k, bool needs_queue,
    int64_t schedule_seed) {
  ScheduleScope schedule(static_cast<std::uint64_t>(schedule_seed));
  return Glue::backward(grad_loss, grad_lse, q, k, queue, stats, o, temperature, weighting,
                        lower_cutoff, upper_cutoff, needs_q, needs_k, needs_queue);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(diva_ext_emulated, m) {
  m.def(
      "info_nce(Tensor q, Tensor k, Tensor queue, float temperature, str weighting, "
      "float lower_cutoff, float upper_cutoff, int schedule_seed) -> (Tensor, Tensor)");
  m.def(
      "_info_nce_forward(Tensor q, Tensor k, Tensor queue, float temperature, str weighting, "
      "float lower_cutoff, float upper_cutoff, bool save_o, int schedule_seed) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "_info_nce_backward(Tensor grad_loss, Tensor grad_lse, Tensor q, Tensor k, Tensor queue, "
      "Tensor? stats, Tensor? o, float temperature, str weighting, float lower_cutoff, "
      "float upper_cutoff, bool needs_grad_q, bool needs_grad_k, bool needs_grad_queue, "
      "int schedule_seed) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(diva_ext_emulated, CPU, m) {
  m.impl("info_nce", &info_nce);
  m.impl("_info_nce_forward", &info_nce_forward);
  m.impl("_info_nce_backward", &info_nce_backward);
}

}  // namespace diva_ext::emulated
