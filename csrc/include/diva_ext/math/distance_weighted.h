// Per-element math of distance_weighted_negatives (docs/design.md §2.2), shared by the CPU and CUDA
// kernels: the log-weight of a candidate from its cosine, the Gumbel noise keyed by
// (seed, offset, t, j), and the (score, index) order of the row-wise argmax.
//
// Log-weight. For unit vectors d^2 = 2 (1 - c), c = <x_a, x_j>. With s = max(2 - 2c, lc^2)
// (the squared distance, clamped at the lower cutoff):
//   log w = (2 - n)/2 * log s - (n - 3)/2 * log(max(1 - s/4, 1e-8)),
// two logs of the inner product, no square root. The upper cutoff dist < uc is the threshold
// c > 1 - uc^2 / 2 (-inf when uc = inf).
//
// Sampling. The pick is argmax_j (log w_j + g_j) over the candidates (Gumbel-max), ties to the
// lowest j. g_j = -log(-log u_j), u_j = (2k + 1) 2^-24 with a 23-bit k drawn in two stages from
// Philox4x32-10 keyed by (seed, offset, t, j):
//   stage 1, the top 16 bits: half-word j % 8 of Philox(counter (j / 8, t, offset), key seed);
//   stage 2, the low 7 bits: the top of word j % 4 of Philox(counter (j / 4, t | 2^31, offset)).
// Stage 1 alone bounds g_j from above (g_j <= -log(1 - u_j), and 1 - u_j is known to within
// 2^-16), and a per-call table bounds log w_j from its cosine (log w is a sum of two terms
// monotone in c). Only candidates whose two bounds beat the row's running best need the
// stage-2 draw and the four logs; in a typical row that is well under 1%. And no noise at all
// is drawn for a tile whose largest bound plus the largest possible noise (24 ln 2) cannot win.
//
// Fallback (an anchor with different-label samples but none within the cutoff): a uniform draw
// among the different-label samples, argmax_j of the stage-2 word (ties to the lowest j).
//
// NB: dw_log(float) is musl's logf (< 1 ulp), branch-free so that GCC vectorises the CPU loops
// and the CPU and CUDA kernels evaluate one function; the GPU may contract it into FMAs, which
// moves a pick only between candidates whose scores tie to within ~1e-6.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "diva_ext/device.h"
#include "diva_ext/math/philox.h"

namespace diva_ext::math {

// Index sentinel of "no pick yet": larger than any index, so it loses every tie.
constexpr std::int32_t kDwNoIndex = std::numeric_limits<std::int32_t>::max();

// Clamp of 1 - d^2/4 inside the second log (docs/design.md §2.2).
constexpr double kDwMinOneMinusQuarterD2 = 1e-8;

// Bit casts by memcpy: valid in host and device code alike (one path for every compiler, as the
// CUDA emulation wants), and compiled to a register move.
DIVA_HD std::uint32_t dw_float_bits(float v) {
  std::uint32_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}

DIVA_HD float dw_bits_float(std::uint32_t u) {
  float v;
  memcpy(&v, &u, sizeof v);
  return v;
}

// Natural log of a positive, finite, normal float (musl's logf without the special cases).
DIVA_HD float dw_log(float x) {
  constexpr float ln2_hi = 6.9313812256e-01f, ln2_lo = 9.0580006145e-06f;
  constexpr float lg1 = 0.66666662693f, lg2 = 0.40000972152f, lg3 = 0.28498786688f,
                  lg4 = 0.24279078841f;
  // Reduce x to m * 2^k with m in [sqrt(2)/2, sqrt(2)).
  std::uint32_t ix = dw_float_bits(x) + (0x3f800000u - 0x3f3504f3u);
  const int k = static_cast<int>(ix >> 23) - 0x7f;
  ix = (ix & 0x007fffffu) + 0x3f3504f3u;
  const float f = dw_bits_float(ix) - 1.0f;
  const float s = f / (2.0f + f);
  const float z = s * s, w = z * z;
  const float r = z * (lg1 + w * lg3) + w * (lg2 + w * lg4);
  const float hfsq = 0.5f * f * f;
  const float dk = static_cast<float>(k);
  return s * (hfsq + r) + dk * ln2_lo - hfsq + f + dk * ln2_hi;
}

DIVA_HD double dw_log(double x) { return log(x); }

// Constants of one call, from the op's arguments (computed in double on the host).
template <typename Acc>
struct DwParams {
  Acc c_upper;  // candidate iff c > c_upper (dist < upper_cutoff)
  Acc lc2;      // lower_cutoff^2: floor of the squared distance
  Acc coef_s;   // (2 - n) / 2
  Acc coef_q;   // -(n - 3) / 2
};

template <typename Acc>
DwParams<Acc> make_dw_params(double lower_cutoff, double upper_cutoff, double n) {
  const double c_upper = std::isinf(upper_cutoff) ? -std::numeric_limits<double>::infinity()
                                                  : 1.0 - 0.5 * upper_cutoff * upper_cutoff;
  return DwParams<Acc>{static_cast<Acc>(c_upper), static_cast<Acc>(lower_cutoff * lower_cutoff),
                       static_cast<Acc>((2.0 - n) / 2.0), static_cast<Acc>(-(n - 3.0) / 2.0)};
}

// The two logs of log w at cosine c: log s with s = max(2 - 2c, lc^2), non-increasing in c, and
// log q with q = max(1 - s/4, 1e-8), non-decreasing in c (finite for every finite c).
template <typename Acc>
struct DwLogs {
  Acc log_s, log_q;
};

template <typename Acc>
DIVA_HD DwLogs<Acc> dw_logs(Acc c, Acc lc2) {
  Acc s = Acc(2) - Acc(2) * c;
  s = s > lc2 ? s : lc2;
  Acc q = Acc(1) - Acc(0.25) * s;
  q = q > Acc(kDwMinOneMinusQuarterD2) ? q : Acc(kDwMinOneMinusQuarterD2);
  return DwLogs<Acc>{dw_log(s), dw_log(q)};
}

// log w of a candidate with cosine c.
template <typename Acc>
DIVA_HD Acc dw_log_weight(Acc c, const DwParams<Acc>& p) {
  const DwLogs<Acc> l = dw_logs(c, p.lc2);
  return p.coef_s * l.log_s + p.coef_q * l.log_q;
}

// Upper bounds of log w over bins of the cosine: the cheap half of the filter. Bin i
// (1 <= i <= bins) covers [lo + (i - 1) w, lo + i w] on [-kDwTableEdge, kDwTableEdge], which
// cosines of unit vectors (norms checked to 1e-3) never leave; bins 0 and bins + 1 hold +inf and
// send anything outside to the exact path. The table has bins + 2 entries.
constexpr double kDwTableEdge = 1.0025;

template <typename Acc>
struct DwTable {
  Acc lo, inv_width;
  int bins;
};

template <typename Acc>
DwTable<Acc> make_dw_table(int bins) {
  return DwTable<Acc>{static_cast<Acc>(-kDwTableEdge),
                      static_cast<Acc>(bins / (2.0 * kDwTableEdge)), bins};
}

// Bins of the table: fine enough that the bound is within a few hundredths of a nat of log w
// for n ~ 128 (its slope in c is ~n/4 there), cheap to fill (2049 evaluations of two logs).
constexpr int kDwTableBins = 2048;

// Index of c's bin in the table (0 and bins + 1: outside).
template <typename Acc>
DIVA_HD int dw_table_index(Acc c, const DwTable<Acc>& t) {
  Acc f = (c - t.lo) * t.inv_width;
  f = f > Acc(-1) ? f : Acc(-1);
  f = f < Acc(t.bins) ? f : Acc(t.bins);
  return static_cast<int>(f + Acc(1));  // f + 1 >= 0: truncation is floor
}

// Fills values[0 .. bins + 1]. Each of log w's two terms is monotone in c, so over an interval
// it is largest at one end: the bound of a bin is the sum of the terms' larger ends, evaluated
// with the kernels' own arithmetic (rounding is monotone too), over the bin widened by one
// neighbour on each side (a float bin index may be off by one at an edge), plus a slack for
// dw_log's last-ulp wobble and the final rounding to float.
template <typename Acc>
void fill_dw_table(float* values, const DwTable<Acc>& t, const DwParams<Acc>& p) {
  const double width = 2.0 * kDwTableEdge / t.bins;
  std::vector<double> term_s(static_cast<size_t>(t.bins) + 1), term_q(term_s.size());
  for (int i = 0; i <= t.bins; ++i) {  // the two terms at every bin edge, once
    const DwLogs<Acc> l = dw_logs(static_cast<Acc>(-kDwTableEdge + i * width), p.lc2);
    term_s[i] = static_cast<double>(p.coef_s * l.log_s);
    term_q[i] = static_cast<double>(p.coef_q * l.log_q);
  }
  values[0] = values[t.bins + 1] = std::numeric_limits<float>::infinity();
  for (int i = 1; i <= t.bins; ++i) {
    const int lo = i - 2 < 0 ? 0 : i - 2, hi = i + 1 > t.bins ? t.bins : i + 1;
    const double s = std::fmax(term_s[lo], term_s[hi]), q = std::fmax(term_q[lo], term_q[hi]);
    const double slack = 1e-3 + 1e-5 * (std::fabs(s) + std::fabs(q));
    values[i] = static_cast<float>(s + q + slack);  // the slack >> a float ulp of the sum
  }
}

// Stage-1 words of candidates 8 * group .. 8 * group + 7 of anchor position t (< 2^31).
DIVA_HD Philox4x32 dw_noise_stage1(std::uint64_t seed, std::uint64_t offset, std::uint32_t t,
                                   std::uint32_t group) {
  return philox4x32_10(group, t, static_cast<std::uint32_t>(offset),
                       static_cast<std::uint32_t>(offset >> 32), static_cast<std::uint32_t>(seed),
                       static_cast<std::uint32_t>(seed >> 32));
}

// Word i of a Philox output by selects, not indexing: a runtime index would put the words in
// GPU local memory.
DIVA_HD std::uint32_t dw_word(const Philox4x32& r, int i) {
  const std::uint32_t lo = (i & 1) ? r.v[1] : r.v[0];
  const std::uint32_t hi = (i & 1) ? r.v[3] : r.v[2];
  return (i & 2) ? hi : lo;
}

// The 16-bit stage-1 draw of candidate 8 * group + k from its group's words.
DIVA_HD std::uint32_t dw_stage1_bits(const Philox4x32& r, int k) {
  return (dw_word(r, k >> 1) >> (16 * (k & 1))) & 0xffffu;
}

// Stage-2 words of candidates 4 * group .. 4 * group + 3 (counters disjoint from stage 1's).
DIVA_HD Philox4x32 dw_noise_stage2(std::uint64_t seed, std::uint64_t offset, std::uint32_t t,
                                   std::uint32_t group) {
  return philox4x32_10(group, t | 0x80000000u, static_cast<std::uint32_t>(offset),
                       static_cast<std::uint32_t>(offset >> 32), static_cast<std::uint32_t>(seed),
                       static_cast<std::uint32_t>(seed >> 32));
}

// Slack of the bounds over float rounding (~1e-6 in g, ~1e-5 relative in log w): skipping
// stays exact, it never drops a candidate that could win.
constexpr float kDwGumbelSlack = 1e-3f;
// Upper bound of every gumbel(): -log(1 - u) <= -log(2^-24) = 24 ln 2, plus the slack.
constexpr float kDwGumbelMax = 24.0f * 0.69314718056f + kDwGumbelSlack;

// Upper bound of the noise from its stage-1 bits h: 1 - u >= m 2^-16 with m = 65535 - h, so
// g <= -log(1 - u) <= ln 2 (16 - log2 m). log2 m >= bits(float(m)) 2^-23 - 127 (the float's
// bit pattern is 2^23 (e + 127 + frac), and log2(1 + frac) >= frac): one int-to-float
// conversion, no log. m = 0 gives ln 2 * 143, above any g, so such candidates always go on.
DIVA_HD float gumbel_upper_bound(std::uint32_t h) {
  const float m = static_cast<float>(65535u - h);
  const float bits = static_cast<float>(static_cast<std::int32_t>(dw_float_bits(m)));
  return 0.69314718056f * (143.0f - bits * (1.0f / 8388608.0f)) + kDwGumbelSlack;
}

// The Gumbel sample of a candidate from its stage-1 bits h and stage-2 word r2:
// -log(-log u), u = (2k + 1) 2^-24, k = h 2^7 + (r2 >> 25); u in [2^-24, 1 - 2^-24], exact in
// float, so g in [-2.81, 16.64].
DIVA_HD float gumbel(std::uint32_t h, std::uint32_t r2) {
  const std::uint32_t k = (h << 7) | (r2 >> 25);
  const float u = static_cast<float>(2u * k + 1u) * (1.0f / 16777216.0f);
  return -dw_log(-dw_log(u));
}

// (score, index) order of the row-wise argmax: higher score, then lower index. Deterministic
// under any reduction order, so the CPU's scan and the GPU's tree reduction agree.
template <typename Acc>
DIVA_HD bool dw_better(Acc score, std::int32_t j, Acc best_score, std::int32_t best_j) {
  return score > best_score || (score == best_score && j < best_j);
}

// Same for the fallback: larger noise word, then lower index.
DIVA_HD bool dw_fallback_better(std::uint32_t r, std::int32_t j, std::uint32_t best_r,
                                std::int32_t best_j) {
  return r > best_r || (r == best_r && j < best_j);
}

}  // namespace diva_ext::math
