// info_nce's CUDA glue and kernels (csrc/cuda/info_nce_glue.h) on the emulation's backend, as
// torch.ops.diva_ext_emulated.info_nce, _info_nce_forward and _info_nce_backward. Four emulated
// multiprocessors, so that small batches already split K across blocks. Tested against the CPU
// kernels by python_tests/test_cuda_emulation_info_nce.py.
#include "emulated.h"
#include "cuda/info_nce_glue.h"
#include "op_schemas.h"

namespace diva_ext::emulated {
namespace {
using Glue = InfoNceGlue<EmulatedBackend<4>>;
}  // namespace

TORCH_LIBRARY_FRAGMENT(diva_ext_emulated, m) {
  def_seeded(m, schemas::kInfoNce);
  def_seeded(m, schemas::kInfoNceForward);
  def_seeded(m, schemas::kInfoNceBackward);
}

TORCH_LIBRARY_IMPL(diva_ext_emulated, CPU, m) {
  m.impl("info_nce", &Seeded<&Glue::info_nce>::run);
  m.impl("_info_nce_forward", &Seeded<&Glue::forward>::run);
  m.impl("_info_nce_backward", &Seeded<&Glue::backward>::run);
}

}  // namespace diva_ext::emulated
