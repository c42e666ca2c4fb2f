// The test-only extension diva_ext._cuda_emulated: the project's CUDA kernels compiled for the
// CPU through the CUDA emulation (csrc/emulation/) and registered as
// torch.ops.diva_ext_emulated.*. Each op's file adds its schemas with
// TORCH_LIBRARY_FRAGMENT(diva_ext_emulated, m); see README.md in this folder.
#include <torch/library.h>

#ifdef DIVA_PYTHON_MODULE
#include <Python.h>

// `import diva_ext._cuda_emulated` loads this library, whose static initialisers register the ops.
extern "C" PyObject* PyInit__cuda_emulated(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_cuda_emulated", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
#endif

#include "diva_ext/device.h"

namespace {
// Mutation testing (diva_ext.testing.emulation.without_barrier): skip the __syncthreads() at
// `line` of the file whose path ends in `file` in every later launch; line 0 restores it.
void set_barrier_mutation(const std::string& file, int64_t line) {
  diva_ext::emu::barrier_mutation() = {file, static_cast<unsigned>(line)};
}
}  // namespace

TORCH_LIBRARY(diva_ext_emulated, m) {
  // The ops' schemas live next to their implementations (TORCH_LIBRARY_FRAGMENT in each file).
  m.def("set_barrier_mutation(str file, int line) -> ()", &set_barrier_mutation);
}
