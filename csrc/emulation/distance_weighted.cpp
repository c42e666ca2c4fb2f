// distance_weighted_negatives' CUDA glue and kernels (csrc/cuda/distance_weighted_glue.h) on
// the emulation's backend, as torch.ops.diva_ext_emulated.distance_weighted_negatives. Two
// emulated multiprocessors, few enough that small tests exercise the split candidate axis.
// Tested against the CPU kernel by python_tests/test_cuda_emulation_distance_weighted.py.
#include "emulated.h"
#include "cuda/distance_weighted_glue.h"
#include "op_schemas.h"

namespace diva_ext::emulated {
namespace {
using Glue = DistanceWeightedGlue<EmulatedBackend<2>>;
}  // namespace

TORCH_LIBRARY_FRAGMENT(diva_ext_emulated, m) {
  def_seeded(m, schemas::kDistanceWeightedNegatives);
}

TORCH_LIBRARY_IMPL(diva_ext_emulated, CPU, m) {
  m.impl("distance_weighted_negatives", &Seeded<&Glue::negatives>::run);
}

}  // namespace diva_ext::emulated
