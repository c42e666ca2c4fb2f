// CUDA entry point of distance_weighted_negatives: its glue (distance_weighted_glue.h, shared
// with the CUDA emulation) on the GPU backend.
#include <torch/library.h>

#include "cuda_backend.h"
#include "distance_weighted_glue.h"

namespace diva_ext {

TORCH_LIBRARY_IMPL(diva_ext, CUDA, m) {
  m.impl("distance_weighted_negatives", &DistanceWeightedGlue<CudaBackend>::negatives);
}

}  // namespace diva_ext
