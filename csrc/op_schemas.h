// The schemas of diva_ext's operators, declared by csrc/ops.cpp (TORCH_LIBRARY(diva_ext)) and,
// each with a trailing schedule seed, by the CUDA emulation (csrc/emulation/,
// torch.ops.diva_ext_emulated), so that both declare one signature.
#pragma once

namespace diva_ext::schemas {

inline constexpr const char* kPairwiseDistance =
    "pairwise_distance(Tensor x, Tensor? y, bool squared, float eps) -> Tensor";
// Returns (grad_x, grad_y); a gradient that was not asked for comes back as an empty tensor.
// With y = None both sides of the gradient belong to x and are summed into grad_x.
inline constexpr const char* kPairwiseDistanceBackward =
    "_pairwise_distance_backward(Tensor grad, Tensor x, Tensor? y, Tensor out, bool squared, "
    "float eps, bool needs_grad_x, bool needs_grad_y) -> (Tensor, Tensor)";
inline constexpr const char* kInfoNce =
    "info_nce(Tensor q, Tensor k, Tensor queue, float temperature, str weighting, "
    "float lower_cutoff, float upper_cutoff) -> (Tensor, Tensor)";
// info_nce plus what its backward needs: (loss, lse, stats, o). stats: [B, 6] = lse, loss,
// DaNCE's row constants and lse's rounding error (math/info_nce.h), in float32 (float64 for
// float64 inputs); o: [B, D] of that dtype, O_i = sum_j c_ij p_ij queue_j, when save_o (else
// empty). diva_ext.ops.info_nce calls this one when gradients are needed.
inline constexpr const char* kInfoNceForward =
    "_info_nce_forward(Tensor q, Tensor k, Tensor queue, float temperature, str weighting, "
    "float lower_cutoff, float upper_cutoff, bool save_o) -> (Tensor, Tensor, Tensor, Tensor)";
// Returns (grad_q, grad_k, grad_queue), empty tensors where not asked for. stats = None:
// recomputed (a forward pass); o = None: q's gradient recomputes the tiles.
inline constexpr const char* kInfoNceBackward =
    "_info_nce_backward(Tensor grad_loss, Tensor grad_lse, Tensor q, Tensor k, Tensor queue, "
    "Tensor? stats, Tensor? o, float temperature, str weighting, float lower_cutoff, "
    "float upper_cutoff, bool needs_grad_q, bool needs_grad_k, bool needs_grad_queue) "
    "-> (Tensor, Tensor, Tensor)";
inline constexpr const char* kSupervisedInfoNce =
    "supervised_info_nce(Tensor q, Tensor labels, Tensor memory, Tensor memory_labels, "
    "float temperature) -> (Tensor, Tensor)";
// supervised_info_nce plus what its backward needs and the report of rows without positives:
// (loss, lse, positives, stats, o). positives: int64 [B], n_i = |P(i)|; stats: [B, 6] in
// info_nce's layout (lse, loss, lse's rounding error; DaNCE columns 0), in float32 (float64 for
// float64 inputs); o: [2, B, D] of that dtype when save_o (else empty): O_i = sum_j p_ij memory_j and the
// mean positive row. diva_ext.ops.supervised_info_nce calls this one when gradients are needed.
inline constexpr const char* kSupervisedInfoNceForward =
    "_supervised_info_nce_forward(Tensor q, Tensor labels, Tensor memory, Tensor memory_labels, "
    "float temperature, bool save_o) -> (Tensor, Tensor, Tensor, Tensor, Tensor)";
// Returns (grad_q, grad_memory), empty tensors where not asked for. stats, positives = None:
// recomputed (a forward pass); o = None: q's gradient recomputes the tiles.
inline constexpr const char* kSupervisedInfoNceBackward =
    "_supervised_info_nce_backward(Tensor grad_loss, Tensor grad_lse, Tensor q, Tensor labels, "
    "Tensor memory, Tensor memory_labels, Tensor? stats, Tensor? positives, Tensor? o, "
    "float temperature, bool needs_grad_q, bool needs_grad_memory) -> (Tensor, Tensor)";
inline constexpr const char* kDistanceWeightedNegatives =
    "distance_weighted_negatives(Tensor x, Tensor labels, Tensor anchors, float lower_cutoff, "
    "float upper_cutoff, int dim, int seed, int offset) -> Tensor";

}  // namespace diva_ext::schemas
