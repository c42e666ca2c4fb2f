// Per-element and per-row math of info_nce (docs/design.md §2.3), shared by the CPU and CUDA kernels.
//
// Logits: positive a_i = <q_i, k_i> / T; negatives l_ij = c_ij <q_i, queue_j> / T with c = 1
// (weighting "none") or the DaNCE weight w_ij (weighting "dance"). lse_i = log(e^a_i + sum_j
// e^l_ij), loss_i = lse_i - a_i. Kernels never hold a row of logits: they keep an online
// (max, sum) pair per row, rescaled whenever the running maximum grows, and merge pairs from
// K-chunks with merge_max_sum (FlashAttention's rescaling). Logits enter as x = c * t with
// t = s * inv_t rounded and x - m (or x - lse) formed by one FMA (nce_logit_offset).
//
// DaNCE weights: log w is distance_weighted_negatives' log-weight (docs/design.md §2.2, n = D, the same
// function: math/distance_weighted.h), from the inner product s with d = max(sqrt(2 - 2s), lc):
//   log w = (2 - n) log d - (n - 3)/2 log(max(1 - d^2/4, 1e-8))
//   w_ij = max(exp(log w_ij - M_i) * [d_ij <= upper_cutoff], 1e-45) / Z_i
// with M_i = max_j log w_ij over all j and Z_i the row sum. The first pass (DanceStats) yields
// Z_i; kernels then evaluate, with the per-row constants of DanceRow,
//   w_ij = exp(x_ij) if in cutoff and x_ij > F_i, else exp(F_i),
//   x_ij = (log w_ij - S_hi) - S_lo,  S_hi + S_lo = M_i + log Z_i,  F_i = log 1e-45 - log Z_i
// which equals the contract's formula and stays a normal number even when Z_i is tiny.
// The cutoff d <= uc is the threshold s >= 1 - uc^2/2 (valid as lower_cutoff <= upper_cutoff).
//
// NB: precision. The row maximum M_i often lies beyond the cutoff (at D = 128 a negative with
// d = 1.9 has log w ~ 65, one at d = 1 ~ 18), so the weights that matter sit e^-50 below it.
// Differences of magnitude 50 carry float32 rounding of ~2e-6, so the first pass sums the kept
// terms relative to the largest in-cutoff log-weight instead, and DanceRow's constants are
// formed in double (the shift as a float pair): the weights keep the precision of log w itself.
//
// NB: the first pass runs online. A term is kept when it is within the floor of the running
// maximum; one that only falls under the floor after a later, larger maximum keeps its
// (smaller) rescaled value, a difference below K * 1e-45 of Z_i relative to e^M_i. When every
// in-cutoff term ends up under the floor of the final maximum, dance_row counts all K at the
// floor, exactly as the contract does.
//
// NB: the Math policy supplies exp (CPU: a vectorisable polynomial; CUDA: the device function)
// so both back ends evaluate the same expressions in the same order.
#pragma once

#include <cmath>

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

// Per-row constants of the DaNCE weights (see the top of this file).
template <typename Acc>
struct DanceRow {
  Acc shift_hi, shift_lo;  // M + log Z as an unevaluated sum
  Acc log_floor;           // log 1e-45 - log Z
};

// The first pass's online state of a row: max_lw = M over all terms (the floor is relative to
// it); max_in = the largest log-weight within the cutoff, the frame of sum_in, the sum of the
// kept terms; floored counts the terms at the floor. Empty: {-inf, -inf, 0, 0}.
template <typename Acc>
struct DanceStats {
  Acc max_lw, max_in, sum_in;
  long long floored;
};

// A tile's terms are kept when in_cutoff and log w - max_lw > log 1e-45, with max_lw already
// including the tile; kept terms add exp(log w - max_in).
template <typename Acc>
DIVA_HD bool dance_kept(Acc lw, Acc max_lw, bool in_cutoff) {
  return in_cutoff & (lw - max_lw > Acc(kDanceLogFloor));  // (& not &&: branch-free, vectorises)
}

// The row's constants from its first-pass state and K. K = 0 gives zeros.
template <typename Acc>
DIVA_HD DanceRow<Acc> dance_row(const DanceStats<Acc>& st, long long k) {
  if (k == 0) return DanceRow<Acc>{Acc(0), Acc(0), Acc(0)};
  const double m = st.max_lw, m_in = st.max_in, floor = kDanceLogFloor;
  double shift, log_floor;  // M + log Z and floor - log Z
  if (!(st.sum_in > Acc(0)) || m_in - m <= floor) {
    // Every term at the floor: Z = K e^floor relative to e^M.
    const double log_k = ::log(static_cast<double>(k));
    shift = m + floor + log_k;
    log_floor = -log_k;
  } else {
    // In the frame of max_in: Z e^M = e^max_in (sum_in + floored e^(floor + M - max_in)).
    const double log_z_in = ::log(static_cast<double>(st.sum_in) +
                                  static_cast<double>(st.floored) * ::exp(floor + m - m_in));
    shift = m_in + log_z_in;
    log_floor = floor + (m - m_in) - log_z_in;
  }
  const Acc hi = static_cast<Acc>(shift);
  return DanceRow<Acc>{hi, static_cast<Acc>(shift - static_cast<double>(hi)),
                       static_cast<Acc>(log_floor)};
}

// The normalised weight w_ij of an inner product s.
template <typename Math, typename Acc>
DIVA_HD Acc dance_weight(Acc s, const DanceRow<Acc>& row, const DanceParams<Acc>& p) {
  const Acc x = (dance_log_weight(s, p) - row.shift_hi) - row.shift_lo;
  const bool keep = dance_in_cutoff(s, p) & (x > row.log_floor);
  return Math::exp(keep ? x : row.log_floor);
}

// Row statistics a forward pass saves for the backward: [B, kNceStatsColumns] of Acc.
// The DaNCE columns are 0 for weighting "none". lse_lo is lse's rounding error (the exact
// lse is lse + lse_lo; see finish_row).
enum NceStat : int {
  kStatLse = 0,
  kStatLoss = 1,
  kStatShiftHi = 2,
  kStatShiftLo = 3,
  kStatLogFloor = 4,
  kStatLseLo = 5
};
constexpr int kNceStatsColumns = 6;

// Row r's constants in stats (a pointer, or the emulation's checked pointer).
template <typename Acc, typename Stats>
DIVA_HD DanceRow<Acc> load_dance_row(const Stats& stats, long long r) {
  const long long base = r * kNceStatsColumns;
  return DanceRow<Acc>{stats[base + kStatShiftHi], stats[base + kStatShiftLo],
                       stats[base + kStatLogFloor]};
}

template <typename Acc, typename Stats>
DIVA_HD void store_dance_row(const Stats& stats, long long r, const DanceRow<Acc>& row) {
  const long long base = r * kNceStatsColumns;
  stats[base + kStatShiftHi] = row.shift_hi;
  stats[base + kStatShiftLo] = row.shift_lo;
  stats[base + kStatLogFloor] = row.log_floor;
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

// Merges the first-pass state b into a.
template <typename Math, typename Acc>
DIVA_HD void merge_dance_stats(DanceStats<Acc>& a, const DanceStats<Acc>& b) {
  Acc sa, sb;
  merge_max_sum<Math>(a.max_in, a.sum_in, b.max_in, b.sum_in, sa, sb);
  a.max_lw = a.max_lw > b.max_lw ? a.max_lw : b.max_lw;
  a.floored += b.floored;
}

// Roundings as written. NB: nvcc (by default) and GCC (where FMA instructions exist, also under
// -std=c++20) fuse a product feeding an addition into an FMA, and may do so at one call site and
// not another. The row statistics below need exact control: TwoSum needs its sum rounded once
// and its operands as given, and a logit compared with the row's maximum or lse must be the same
// number in the forward pass and in the backward pass (see nce_logit_offset).
DIVA_HD float nce_add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
DIVA_HD double nce_add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
// a * b rounded (fma(a, b, 0) on the host: never fused into a later addition). Not for loops.
DIVA_HD float nce_mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return std::fma(a, b, 0.0f);
#endif
}
DIVA_HD double nce_mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return std::fma(a, b, 0.0);
#endif
}
DIVA_HD float nce_fma(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
DIVA_HD double nce_fma(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return __fma_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// x - ref for the logit x = c * t, t = s * inv_t (as every pass rounds it; c = 1 for weighting
// "none"), with a single rounding. NB: every comparison of a logit with the row's maximum (the
// forward's online pass) or with its lse (the backward) goes through here, so both see the same
// x whatever the compilers fuse: a rounded x in one pass against an unrounded one in the other
// differs by eps |x| ~ eps |s| / T, which at low temperature (T = 1e-4: 5e-4 in float32) would
// miscount every softmax weight of the backward against the forward's lse.
template <typename Acc>
DIVA_HD Acc nce_logit_offset(Acc c, Acc t, Acc ref) {
  return nce_fma(c, t, -ref);
}

// The rounding error of s = a + b (Knuth's TwoSum): a + b = s + two_sum_error(a, b, s) exactly,
// for s = nce_add_rn(a, b).
template <typename Acc>
DIVA_HD Acc two_sum_error(Acc a, Acc b, Acc s) {
  const Acc bb = nce_add_rn(s, -a);
  return nce_add_rn(nce_add_rn(a, -nce_add_rn(s, -bb)), nce_add_rn(b, -bb));
}

// A row's results from its negatives' online pair (m, l) and the positive logit a:
// loss = lse - a and lse (as lse + lse_lo, lse_lo its rounding error), plus o_scale =
// exp(m - lse), which turns sum_j c_ij e^(l_ij - m) queue_j into O_i = sum_j c_ij p_ij queue_j.
// NB: loss is computed without the cancellation of lse - a: when the positive dominates,
// loss = log1p(l e^(m - a)) keeps full relative precision (F.cross_entropy's float32 loss does
// not), and the backward reads p_pos - 1 = expm1(-loss) from it. K = 0 (m = -inf, l = 0) gives
// loss 0, lse = a, o_scale 0.
// NB: precision at low temperature. The logits are of size |s| / T, so lse rounded to Acc is off
// by up to eps |s| / T: at T = 1e-4 in float32, ~5e-4, which exp(l_ij - lse) would carry into
// every softmax weight (the reference's log_softmax does not: its max logit minus the max is 0).
// So o_scale comes from the small terms (exp(-log t), exp((m - a) - loss)), never from lse, and
// the backward forms p_ij = exp((l_ij - lse) - lse_lo): l_ij - lse is exact for the weights that
// matter (Sterbenz), and lse_lo restores what lse's rounding dropped.
// lse = ref + log_t rounded once, with its rounding error lse_lo (the pair finish_row and
// supervised_finish_row return; softmax_weight reads it).
template <typename Acc>
DIVA_HD void lse_pair(Acc ref, Acc log_t, Acc& lse, Acc& lse_lo) {
  lse = nce_add_rn(ref, log_t);
  lse_lo = two_sum_error(ref, log_t, lse);
}

template <typename Math, typename Acc>
DIVA_HD void finish_row(Acc m, Acc l, Acc a, Acc& loss, Acc& lse, Acc& lse_lo, Acc& o_scale) {
  if (m <= a) {
    loss = Math::log1p(l * Math::exp(m - a));
    lse_pair(a, loss, lse, lse_lo);
    o_scale = Math::exp((m - a) - loss);
  } else {
    const Acc log_t = Math::log(l + Math::exp(a - m));
    lse_pair(m, log_t, lse, lse_lo);
    loss = (m - a) + log_t;
    o_scale = Math::exp(-log_t);
  }
}

// The softmax weight e^(x - lse) of the logit x = c * t from the row's (lse, lse_lo) (see
// finish_row and nce_logit_offset).
template <typename Math, typename Acc>
DIVA_HD Acc softmax_weight(Acc c, Acc t, Acc lse, Acc lse_lo) {
  return Math::exp(nce_logit_offset(c, t, lse) - lse_lo);
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
