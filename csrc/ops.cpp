// Declares diva_ext's operators (their schemas: op_schemas.h). Kernels are registered per
// dispatch key in csrc/cpu/ and csrc/cuda/; fake kernels and autograd in Python.
#include <torch/library.h>

#include "op_schemas.h"

#ifdef DIVA_PYTHON_MODULE
#include <Python.h>

// `import diva_ext._C` loads this library, whose static initialisers register the operators.
// The module itself is empty: the operators are reached through torch.ops.diva_ext.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
#endif

TORCH_LIBRARY(diva_ext, m) {
  m.def(diva_ext::schemas::kPairwiseDistance);
  m.def(diva_ext::schemas::kPairwiseDistanceBackward);
  m.def(diva_ext::schemas::kInfoNce);
  m.def(diva_ext::schemas::kInfoNceForward);
  m.def(diva_ext::schemas::kInfoNceBackward);
  m.def(diva_ext::schemas::kSupervisedInfoNce);
  m.def(diva_ext::schemas::kSupervisedInfoNceForward);
  m.def(diva_ext::schemas::kSupervisedInfoNceBackward);
  m.def(diva_ext::schemas::kDistanceWeightedNegatives);
  // Test hook of the Philox4x32-10 header shared by the CPU and CUDA kernels: counters [N, 4]
  // and key [2] hold uint32 words in int64; returns the [N, 4] output words.
  m.def("_philox4x32_10(Tensor counters, Tensor key) -> Tensor");
}
