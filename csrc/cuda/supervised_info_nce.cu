// CUDA entry points of supervised_info_nce, _supervised_info_nce_forward and
// _supervised_info_nce_backward: their glue (supervised_info_nce_glue.h, shared with the CUDA
// emulation) on the GPU backend.
#include <torch/library.h>

#include "cuda_backend.h"
#include "supervised_info_nce_glue.h"

namespace diva_ext {

TORCH_LIBRARY_IMPL(diva_ext, CUDA, m) {
  using Glue = SupervisedInfoNceGlue<CudaBackend>;
  m.impl("supervised_info_nce", &Glue::supervised_info_nce);
  m.impl("_supervised_info_nce_forward", &Glue::forward);
  m.impl("_supervised_info_nce_backward", &Glue::backward);
}

}  // namespace diva_ext
