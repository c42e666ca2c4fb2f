// Operator schemas: the one place where diva_ext's operators are declared. Kernels are
// registered per dispatch key in csrc/cpu/ and csrc/cuda/; fake kernels and autograd in Python.
#include <torch/library.h>

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
  m.def("pairwise_distance(Tensor x, Tensor? y, bool squared, float eps) -> Tensor");
  // Returns (grad_x, grad_y); a gradient that was not asked for comes back as an empty tensor.
  // With y = None both sides of the gradient belong to x and are summed into grad_x.
  m.def(
      "_pairwise_distance_backward(Tensor grad, Tensor x, Tensor? y, Tensor out, bool squared, "
      "float eps, bool needs_grad_x, bool needs_grad_y) -> (Tensor, Tensor)");
  m.def(
      "info_nce(Tensor q, Tensor k, Tensor queue, float temperature, str weighting, "
      "float lower_cutoff, float upper_cutoff) -> (Tensor, Tensor)");
  // info_nce plus what its backward needs: (loss, lse, stats, o). stats: [B, 6] = lse, loss,
  // DaNCE's row constants and lse's rounding error (math/info_nce.h), in float32 (float64 for float64 inputs); o: [B, D]
  // of that dtype, O_i = sum_j c_ij p_ij queue_j, when save_o (else empty). diva_ext.ops.info_nce calls
  // this one when gradients are needed.
  m.def(
      "_info_nce_forward(Tensor q, Tensor k, Tensor queue, float temperature, str weighting, "
      "float lower_cutoff, float upper_cutoff, bool save_o) -> (Tensor, Tensor, Tensor, Tensor)");
  // Returns (grad_q, grad_k, grad_queue), empty tensors where not asked for. stats = None:
  // recomputed (a forward pass); o = None: q's gradient recomputes the tiles.
  m.def(
      "_info_nce_backward(Tensor grad_loss, Tensor grad_lse, Tensor q, Tensor k, Tensor queue, "
      "Tensor? stats, Tensor? o, float temperature, str weighting, float lower_cutoff, "
      "float upper_cutoff, bool needs_grad_q, bool needs_grad_k, bool needs_grad_queue) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "distance_weighted_negatives(Tensor x, Tensor labels, Tensor anchors, float lower_cutoff, "
      "float upper_cutoff, int dim, int seed, int offset) -> Tensor");
  // Test hook of the Philox4x32-10 header shared by the CPU and CUDA kernels: counters [N, 4]
  // and key [2] hold uint32 words in int64; returns the [N, 4] output words.
  m.def("_philox4x32_10(Tensor counters, Tensor key) -> Tensor");
}
