// CUDA entry points of pairwise_distance: its glue (pairwise_distance_glue.h, shared with the
// CUDA emulation) on the GPU backend.
#include <torch/library.h>

#include "cuda_backend.h"
#include "pairwise_distance_glue.h"

namespace diva_ext {

TORCH_LIBRARY_IMPL(diva_ext, CUDA, m) {
  using Glue = PairwiseDistanceGlue<CudaBackend>;
  m.impl("pairwise_distance", &Glue::forward);
  m.impl("_pairwise_distance_backward", &Glue::backward);
}

}  // namespace diva_ext
