// CUDA entry points of info_nce, _info_nce_forward and _info_nce_backward: their glue
// (info_nce_glue.h, shared with the CUDA emulation) on the GPU backend.
#include <torch/library.h>

#include "cuda_backend.h"
#include "info_nce_glue.h"

namespace diva_ext {

TORCH_LIBRARY_IMPL(diva_ext, CUDA, m) {
  using Glue = InfoNceGlue<CudaBackend>;
  m.impl("info_nce", &Glue::info_nce);
  m.impl("_info_nce_forward", &Glue::forward);
  m.impl("_info_nce_backward", &Glue::backward);
}

}  // namespace diva_ext
