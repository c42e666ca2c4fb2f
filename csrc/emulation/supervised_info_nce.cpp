// supervised_info_nce's CUDA glue and kernels (csrc/cuda/supervised_info_nce_glue.h) on the
// emulation's backend, as torch.ops.diva_ext_emulated.supervised_info_nce,
// _supervised_info_nce_forward and _supervised_info_nce_backward. Four emulated multiprocessors,
// so that small batches already split K across blocks. Tested against the CPU kernels by
// python_tests/test_cuda_emulation_supervised_info_nce.py.
#include <ATen/ATen.h>  // (the mean positive rows' ATen ops, before the emulation's macros)

#include "emulated.h"
#include "cuda/supervised_info_nce_glue.h"
#include "op_schemas.h"

namespace diva_ext::emulated {
namespace {
using Glue = SupervisedInfoNceGlue<EmulatedBackend<4>>;
}  // namespace

TORCH_LIBRARY_FRAGMENT(diva_ext_emulated, m) {
  def_seeded(m, schemas::kSupervisedInfoNce);
  def_seeded(m, schemas::kSupervisedInfoNceForward);
  def_seeded(m, schemas::kSupervisedInfoNceBackward);
}

TORCH_LIBRARY_IMPL(diva_ext_emulated, CPU, m) {
  m.impl("supervised_info_nce", &Seeded<&Glue::supervised_info_nce>::run);
  m.impl("_supervised_info_nce_forward", &Seeded<&Glue::forward>::run);
  m.impl("_supervised_info_nce_backward", &Seeded<&Glue::backward>::run);
}

}  // namespace diva_ext::emulated
