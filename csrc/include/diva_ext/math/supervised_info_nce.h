// Per-row math of supervised_info_nce (docs/design.md §2.5), shared by the CPU and CUDA kernels.
//
// Logits t_ij = s_ij / T (as s_ij * inv_t) with s_ij = <q_i, m_j> over all K memory rows;
// lse_i = log sum_j e^t_ij, kept online as info_nce's (max, sum) pair (math/info_nce.h: the
// same epilogue, the same merge_max_sum of K-chunks, the same lse pair and softmax weights).
// Positives P(i) = {j : memory_labels[j] == labels[i]}, n_i = |P(i)|; the same pass adds up
// sigma_i = sum_{j in P(i)} s_ij and n_i, and
//   loss_i = lse_i - mean_{j in P(i)} t_ij = (m_i - mu_i) + log l_i,  mu_i = (sigma_i / n_i) inv_t
// (no cancellation of two large terms: m_i - mu_i is a difference of logits, log l_i >= 0).
// A row without positives (n_i = 0) has loss_i = 0 and no gradient through it (its lse still
// has one); K = 0 gives lse = -inf (log of an empty sum, as torch.logsumexp) and loss 0.
//
// Gradient of g_i loss_i + h_i lse_i with respect to s_ij:
//   ((g_i + h_i) p_ij - w_i [j in P(i)]) / T,   p_ij = e^(t_ij - lse_i),  w_i = g_i / n_i
// (g_i drops out of a row without positives: h_i p_ij / T), so grad q_i = ((g_i + h_i) O_i -
// g_i mbar_i) / T with O_i = sum_j p_ij m_j and mbar_i the mean positive row; grad m_j =
// sum_i (...)_ij q_i / T.
#pragma once

#include <cmath>
#include <limits>

#include "diva_ext/device.h"
#include "diva_ext/math/info_nce.h"

namespace diva_ext::math {

// The row statistics a forward pass saves for the backward have info_nce's layout (NceStat,
// [B, kNceStatsColumns] of Acc) with zero DaNCE columns, so the backward tiles read them alike.

// A row's results from its online pair (m, l) and its positives' sum sigma of inner products
// and count n: loss, lse (+ lse_lo, its rounding error) and o_scale = e^(m - lse), which turns
// sum_j e^(t_ij - m) m_j into O_i.
template <typename Math, typename Acc>
DIVA_HD void supervised_finish_row(Acc m, Acc l, Acc sigma, long long n, Acc inv_t, Acc& loss,
                                   Acc& lse, Acc& lse_lo, Acc& o_scale) {
  if (!(l > Acc(0))) {  // K = 0
    lse = -std::numeric_limits<Acc>::infinity();
    lse_lo = Acc(0);
    loss = Acc(0);
    o_scale = Acc(0);
    return;
  }
  const Acc log_l = Math::log(l);
  lse_pair(m, log_l, lse, lse_lo);
  o_scale = Math::exp(-log_l);
  loss = n > 0 ? (m - (sigma / static_cast<Acc>(n)) * inv_t) + log_l : Acc(0);
}

// Per-row factors of the gradient above: softmax = g_i + h_i (the factor of p_ij) and positive =
// w_i = g_i / n_i. A row without positives has a constant loss: softmax = h_i, positive = 0.
template <typename Acc>
DIVA_HD void supervised_grad_factors(Acc g, Acc h, long long n, Acc& softmax, Acc& positive) {
  softmax = n > 0 ? g + h : h;
  positive = n > 0 ? g / static_cast<Acc>(n) : Acc(0);
}

}  // namespace diva_ext::math
