// Row epilogues of supervised_info_nce's CPU kernel (definitions in
// supervised_info_nce_epilogue.cpp, one clone per instruction set): the label-dependent part of
// a row of an inner-product tile s_j = <q_i, m_j> (n entries, j over one memory tile). The
// log-sum-exp part is info_nce's logits_row / grad_row (info_nce_epilogue.h), run on the same
// tile row in the same pass. Overloads for float and double.
#pragma once

#include <cstdint>

namespace diva_ext::cpu {

// sigma += sum of s_j over the positives (memory_labels[j] == label), count += their number.
// Read s before logits_row overwrites it.
void positive_sum_row(const float* s, const int64_t* memory_labels, int64_t n, int64_t label,
                      float& sigma, int64_t& count);
void positive_sum_row(const double* s, const int64_t* memory_labels, int64_t n, int64_t label,
                      double& sigma, int64_t& count);

// Backward: s_j -= w at the positives (after grad_row put the softmax part there), w = w_i / T
// of math::supervised_grad_factors.
void positive_grad_row(float* s, const int64_t* memory_labels, int64_t n, int64_t label, float w);
void positive_grad_row(double* s, const int64_t* memory_labels, int64_t n, int64_t label,
                       double w);

}  // namespace diva_ext::cpu
