// Per-element and per-row math of info_nce (DESIGN §2.3), shared by the CPU and CUDA kernels.
//
// Logits: positive a_i = <q_i, k_i> / T; negatives l_ij = c_ij <q_i, queue_j> / T with c = 1
// (weighting "none") or the DaNCE weight w_ij (weighting "dance"). lse_i = log(e^a_i + sum_j
// e^l_ij), loss_i = lse_i - a_i. Kernels never hold a row of logits: they keep an online
// (max, sum) pair per row, rescaled whenever the running maximum grows, and merge pairs from
// K-chunks with merge_max_sum (FlashAttention's rescaling).
//
// DaNCE weights: log w is distance_weighted_negatives' log-weight (DESIGN §2.2, n = D, the same
// function: math/distance_weighted.h), from the inner product s with d = max(sqrt(2 - 2s), lc):
//   log w = (2 - n) log d - (n - 3)/2 log(max(1 - d^2/4, 1e-8))
//   w_ij = max(exp(log w_ij - M_i) * [d_ij <= upper_cutoff], 1e-45) / Z_i
// with M_i = max_j log w_ij over all j and Z_i the row sum. Kernels keep log Z_i and evaluate
//   w_ij = exp(max(log w_ij - M_i, log 1e-45) - log Z_i)    (0 -> log 1e-45 outside the cutoff)
// which equals the contract's formula and stays a normal number even when Z_i is tiny. The
// cutoff d <= uc is the threshold s >= 1 - uc^2/2 (valid as lower_cutoff <= upper_cutoff).
//
// NB: the first pass computes (M_i, Z_i) online. A term is counted as clamped (1e-45) when it
// is under the floor relative to the running maximum; a term that only falls under the floor
// after a later, larger maximum keeps its (smaller) rescaled value. The difference in Z_i is
// below K * 1e-45 absolute: it only shows when every weight of a row underflows relative to a
// maximum that lies beyond the upper cutoff.
//
// NB: the Math policy supplies exp (CPU: a vectorisable polynomial; CUDA: the device function)
// so both back ends evaluate the same expressions in the same order.
#pragma once

#include "diva_ext/device.h"
#include "diva_ext/math/distance_weighted.h"

namespace diva_ext::math {

// log(1e-45): the floor of a DaNCE weight before normalisation.
constexpr double kDanceLogFloor = -103.61632918473205;

template <typename Acc>
using DanceParams = DwParams<Acc>;

// Host side: the constants of a call (n = D).
template <typename Acc>
DanceParams<Acc> make_dance_params(long long dim, double lower_cutoff, double upper_cutoff) {
  return make_dw_params<Acc>(lower_cutoff, upper_cutoff, static_cast<double>(dim));
}

template <typename Acc>
DIVA_HD Acc dance_log_weight(Acc s, const DanceParams<Acc>& p) {
  return dw_log_weight(s, p);
}

// d <= upper_cutoff (the contract zeroes weights where d > upper_cutoff).
template <typename Acc>
DIVA_HD bool dance_in_cutoff(Acc s, const DanceParams<Acc>& p) {
  return s >= p.c_upper;
}

// log of the unnormalised, floored weight relative to the row maximum max_lw.
template <typename Acc>
DIVA_HD Acc dance_log_floored(Acc lw, Acc max_lw, bool in_cutoff) {
  const Acc floor = Acc(kDanceLogFloor);
  const Acc rel = lw - max_lw;
  return in_cutoff & (rel > floor) ? rel : floor;  // (& not &&: branch-free, vectorises)
}

// The normalised weight w_ij of an inner product s, given the row's (M_i, log Z_i).
template <typename Math, typename Acc>
DIVA_HD Acc dance_weight(Acc s, Acc max_lw, Acc log_z, const DanceParams<Acc>& p) {
  return Math::exp(dance_log_floored(dance_log_weight(s, p), max_lw, dance_in_cutoff(s, p)) - log_z);
}

// Merges the online pair (m_b, l_b) into (m_a, l_a): l is a sum of exp(x - m) over its terms.
// m = -inf marks an empty pair. scale_a and scale_b rescale quantities accumulated along with
// a and b (e.g. their parts of O) to the merged maximum.
template <typename Math, typename Acc>
DIVA_HD void merge_max_sum(Acc& m_a, Acc& l_a, Acc m_b, Acc l_b, Acc& scale_a, Acc& scale_b) {
  const Acc m = m_a > m_b ? m_a : m_b;
  // NB: exp(-inf - m) = 0 with the policies' exp; both empty: m = -inf, keep the pair empty.
  scale_a = m_a == m ? Acc(1) : Math::exp(m_a - m);
  scale_b = m_b == m ? Acc(1) : Math::exp(m_b - m);
  l_a = l_a * scale_a + l_b * scale_b;
  m_a = m;
}

// A row's results from its negatives' online pair (m, l) and the positive logit a:
// loss = lse - a and lse, plus o_scale = exp(m - lse), which turns sum_j c_ij e^(l_ij - m) queue_j
// into O_i = sum_j c_ij p_ij queue_j.
// NB: loss is computed without the cancellation of lse - a: when the positive dominates,
// loss = log1p(l e^(m - a)) keeps full relative precision (F.cross_entropy's float32 loss does
// not), and the backward reads p_pos - 1 = expm1(-loss) from it. K = 0 (m = -inf, l = 0) gives
// loss 0, lse = a, o_scale 0.
template <typename Math, typename Acc>
DIVA_HD void finish_row(Acc m, Acc l, Acc a, Acc& loss, Acc& lse, Acc& o_scale) {
  if (m <= a) {
    loss = Math::log1p(l * Math::exp(m - a));
    lse = a + loss;
  } else {
    const Acc log_t = Math::log(l + Math::exp(a - m));
    lse = m + log_t;
    loss = (m - a) + log_t;
  }
  o_scale = Math::exp(m - lse);
}

// Per-row factors of the gradient, from the incoming gradients g (of loss) and h (of lse):
// d/da_i = g_i (p_pos - 1) + h_i p_pos (returned as `pos`), d/dl_ij = (g_i + h_i) p_ij (the
// common factor g_i + h_i returned as `neg`), with p_pos = exp(-loss_i).
template <typename Math, typename Acc>
DIVA_HD void row_grad_factors(Acc loss, Acc g, Acc h, Acc& pos, Acc& neg) {
  pos = g * Math::expm1(-loss) + h * Math::exp(-loss);
  neg = g + h;
}

}  // namespace diva_ext::math
