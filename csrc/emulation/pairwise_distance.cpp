// pairwise_distance's CUDA glue and kernels (csrc/cuda/pairwise_distance_glue.h) on the
// emulation's backend, as torch.ops.diva_ext_emulated.pairwise_distance and
// _pairwise_distance_backward. Tested against the CPU kernels by
// python_tests/test_cuda_emulation_pairwise_distance.py.
#include "emulated.h"
#include "cuda/pairwise_distance_glue.h"
#include "op_schemas.h"

namespace diva_ext::emulated {
namespace {
using Glue = PairwiseDistanceGlue<EmulatedBackend<4>>;
}  // namespace

TORCH_LIBRARY_FRAGMENT(diva_ext_emulated, m) {
  def_seeded(m, schemas::kPairwiseDistance);
  def_seeded(m, schemas::kPairwiseDistanceBackward);
}

TORCH_LIBRARY_IMPL(diva_ext_emulated, CPU, m) {
  m.impl("pairwise_distance", &Seeded<&Glue::forward>::run);
  m.impl("_pairwise_distance_backward", &Seeded<&Glue::backward>::run);
}

}  // namespace diva_ext::emulated
