// Row epilogues of info_nce's CPU kernel: the per-element work between the GEMMs, vectorised.
//
// Sums run over lanes (lanes.h). Maxima use GCC's vector extensions (max_of). exp is the
// polynomial vexp below.
//
// NB: the ternary selects below only vectorise when GCC may assume comparisons do not trap;
// the extension is built without -fno-trapping-math, so this file turns it on for itself.
#pragma GCC optimize("no-trapping-math")

#include "info_nce_epilogue.h"

#include <bit>
#include <cstdint>
#include <limits>

#include "diva_ext/cpu/simd.h"
#include "lanes.h"

// DIVA_CPU_CLONES plus an x86-64-v3 clone (AVX2 with FMA): the exp and log polynomials are
// chains of multiply-adds, about 1.4x faster fused. GCC >= 12 picks it by CPU features.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && \
    !defined(DIVA_CUDA_EMULATION)
#define DIVA_INFO_NCE_CLONES \
  __attribute__((target_clones("avx512f", "arch=x86-64-v3", "avx2", "default")))
#else
#define DIVA_INFO_NCE_CLONES DIVA_CPU_CLONES
#endif

namespace diva_ext::cpu {
namespace {

// vexp, a vectorisable exp: glibc's expf is a scalar call unless the whole build uses
// -ffast-math, so the loops over a tile would not vectorise. These are branch-free polynomial versions (Cody-Waite reduction, bit
// manipulation for the power of two) that GCC turns into SIMD code in every DIVA_CPU_CLONES clone.
//
// NB: accuracy: within 2 ulp (float: cephes' degree-5 polynomial, double: Taylor to r^13 on
// |r| <= ln2/2). Range: returns exactly 0 below the smallest normal result (x < -87.3 in float,
// x < -708 in double) instead of a denormal, and saturates above (x > 88.3 / 709): callers only
// pass x <= 0 (shifted by a running maximum) or bounded values. NaN stays NaN.
DIVA_ALWAYS_INLINE float vexp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const bool underflow = x < -87.3f;
  float xc = x < -87.3f ? -87.3f : x;
  xc = xc > 88.3f ? 88.3f : xc;
  const float shifted = xc * kLog2e + kMagic;
  const float kf = shifted - kMagic;  // round(x / ln2)
  const std::int32_t ki = std::bit_cast<std::int32_t>(shifted) - std::bit_cast<std::int32_t>(kMagic);
  float r = xc - kf * kLn2Hi;
  r = r - kf * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * (r * r) + r + 1.0f;
  const float scale = std::bit_cast<float>((ki + 127) << 23);
  const float y = er * scale;
  return underflow ? 0.0f : y;
}

DIVA_ALWAYS_INLINE double vexp(double x) {
  constexpr double kLog2e = 1.4426950408889634074;
  constexpr double kLn2Hi = 6.93145751953125e-1;
  constexpr double kLn2Lo = 1.42860682030941723212e-6;
  constexpr double kMagic = 6755399441055744.0;  // 1.5 * 2^52
  const bool underflow = x < -708.0;
  double xc = x < -708.0 ? -708.0 : x;
  xc = xc > 709.0 ? 709.0 : xc;
  const double shifted = xc * kLog2e + kMagic;
  const double kf = shifted - kMagic;
  const std::int64_t ki = std::bit_cast<std::int64_t>(shifted) - std::bit_cast<std::int64_t>(kMagic);
  double r = xc - kf * kLn2Hi;
  r = r - kf * kLn2Lo;
  // Taylor series of exp(r) - 1 - r, Horner form, r^2 / 2 ... r^13 / 13!.
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  const double er = p * (r * r) + r + 1.0;
  const double scale = std::bit_cast<double>((ki + 1023) << 52);
  const double y = er * scale;
  return underflow ? 0.0 : y;
}

using math::DanceParams;
using math::DanceRow;
using math::DanceStats;

struct VecMath {
  template <typename T>
  static DIVA_ALWAYS_INLINE T exp(T x) { return vexp(x); }
};

// max_j x_j (NaNs ignored: they reach the sums instead). GCC does not vectorise a max over
// lane arrays with selects, so this one uses its vector extensions: two 32-byte accumulators.
template <typename T>
DIVA_ALWAYS_INLINE T max_of(const T* __restrict__ x, int64_t n) {
  typedef T vec __attribute__((vector_size(32)));
  constexpr int V = 32 / static_cast<int>(sizeof(T));
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  vec a, b;
  for (int u = 0; u < V; ++u) a[u] = kNegInf;
  b = a;
  int64_t j = 0;
  for (; j + 2 * V <= n; j += 2 * V) {
    vec xa, xb;
    __builtin_memcpy(&xa, x + j, sizeof(vec));
    __builtin_memcpy(&xb, x + j + V, sizeof(vec));
    a = xa > a ? xa : a;
    b = xb > b ? xb : b;
  }
  a = b > a ? b : a;
  T m = kNegInf;
  for (int u = 0; u < V; ++u) m = a[u] > m ? a[u] : m;
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

template <typename T>
DIVA_ALWAYS_INLINE T weight(T s, const DanceParams<T>& p, const DanceRow<T>& row) {
  return math::dance_weight<VecMath>(s, row, p);
}

// max_j c_j t_j (a reference point for the online sum; it need not be the exact maximum).
template <typename T>
DIVA_ALWAYS_INLINE T max_of_products(const T* __restrict__ c, const T* __restrict__ t, int64_t n) {
  typedef T vec __attribute__((vector_size(32)));
  constexpr int V = 32 / static_cast<int>(sizeof(T));
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  vec a;
  for (int u = 0; u < V; ++u) a[u] = kNegInf;
  int64_t j = 0;
  for (; j + V <= n; j += V) {
    vec cv, tv;
    __builtin_memcpy(&cv, c + j, sizeof(vec));
    __builtin_memcpy(&tv, t + j, sizeof(vec));
    const vec x = cv * tv;
    a = x > a ? x : a;
  }
  T m = kNegInf;
  for (int u = 0; u < V; ++u) m = a[u] > m ? a[u] : m;
  for (; j < n; ++j) m = c[j] * t[j] > m ? c[j] * t[j] : m;
  return m;
}

// Sweep 1 of a DaNCE row: t_j = s_j / T (as s_j * inv_t) into s and c_j into scratch; the logit
// is x_j = c_j t_j. (Without weights, x_j = t_j and max_j t_j = (max_j s_j) * inv_t: scaling by
// 1/T > 0 preserves the order exactly, so that row needs no sweep of its own.)
template <typename T>
DIVA_ALWAYS_INLINE void dance_logits_sweep(T* __restrict__ s, T* __restrict__ scratch, int64_t n,
                                           T inv_t, const DanceParams<T>& p, const DanceRow<T>& row) {
  for (int64_t j = 0; j < n; ++j) {
    scratch[j] = weight(s[j], p, row);
    s[j] = s[j] * inv_t;
  }
}

// Sweep 2: sum_j e^(x_j - m) with t_j = s_j * scale, x_j = c_j t_j and x_j - m by
// math::nce_logit_offset (c = 1 without weights); with kWantP, s_j <- c_j e^(x_j - m).
template <typename T, bool kDance, bool kWantP>
DIVA_ALWAYS_INLINE T exp_sweep(T* __restrict__ s, const T* __restrict__ scratch, int64_t n,
                               T scale, T m) {
  constexpr int W = kLanes<T>;
  T acc[W] = {};
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    for (int u = 0; u < W; ++u) {
      const T c = kDance ? scratch[j + u] : T(1);
      const T e = vexp(math::nce_logit_offset(c, s[j + u] * scale, m));
      acc[u] += e;
      if constexpr (kWantP) s[j + u] = kDance ? c * e : e;
    }
  }
  T sum = lane_sum(acc);
  for (; j < n; ++j) {
    const T c = kDance ? scratch[j] : T(1);
    const T e = vexp(math::nce_logit_offset(c, s[j] * scale, m));
    sum += e;
    if constexpr (kWantP) s[j] = kDance ? c * e : e;
  }
  return sum;
}

template <typename T, bool kDance>
DIVA_ALWAYS_INLINE T logits_row_impl(T* s, T* scratch, int64_t n, T inv_t, const DanceParams<T>& p,
                                     const DanceRow<T>& row, T& m, T& l, bool want_p) {
  // t_j = scale * s_j: s holds t after the DaNCE sweep (scale 1), else s_j / T = s_j * inv_t.
  T scale = inv_t;
  T tile_max;
  if constexpr (kDance) {
    dance_logits_sweep(s, scratch, n, inv_t, p, row);
    scale = T(1);
    tile_max = max_of_products(scratch, s, n);
  } else {
    tile_max = max_of(s, n) * inv_t;
  }
  const T m_new = tile_max > m ? tile_max : m;
  // NB: m = -inf before the first tile: e^(-inf) = 0 (vexp flushes), and the old l is 0 anyway.
  const T rescale = m == m_new ? T(1) : vexp(m - m_new);
  const T sum = want_p ? exp_sweep<T, kDance, true>(s, scratch, n, scale, m_new)
                       : exp_sweep<T, kDance, false>(s, scratch, n, scale, m_new);
  l = l * rescale + sum;
  m = m_new;
  return rescale;
}

template <typename T>
DIVA_ALWAYS_INLINE void weight_stats_row_impl(const T* __restrict__ s, T* __restrict__ scratch,
                                              int64_t n, const DanceParams<T>& p,
                                              DanceStats<T>& st) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  T tile_max_in = kNegInf;
  for (int64_t j = 0; j < n; ++j) {
    const T lw = math::dance_log_weight(s[j], p);
    scratch[j] = lw;
    const T in = math::dance_in_cutoff(s[j], p) ? lw : kNegInf;
    tile_max_in = in > tile_max_in ? in : tile_max_in;
  }
  const T tile_max = max_of(scratch, n);
  const T m = tile_max > st.max_lw ? tile_max : st.max_lw;
  const T m_in = tile_max_in > st.max_in ? tile_max_in : st.max_in;
  // NB: e^(-inf) = 0 (vexp flushes): an empty frame rescales its 0 sum to 0.
  const T scale = st.max_in == m_in ? T(1) : vexp(st.max_in - m_in);
  constexpr int W = kLanes<T>;
  T acc[W] = {}, cnt[W] = {};
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    for (int u = 0; u < W; ++u) {
      const bool keep = math::dance_kept(scratch[j + u], m, math::dance_in_cutoff(s[j + u], p));
      // (kept terms lie in the cutoff, so log w - m_in <= 0; the others add e^-inf = 0)
      acc[u] += vexp(keep ? scratch[j + u] - m_in : kNegInf);
      cnt[u] += keep ? T(0) : T(1);
    }
  }
  T tile_sum = lane_sum(acc);
  T tile_cnt = lane_sum(cnt);  // exact: at most n small integers
  for (; j < n; ++j) {
    const bool keep = math::dance_kept(scratch[j], m, math::dance_in_cutoff(s[j], p));
    tile_sum += keep ? vexp(scratch[j] - m_in) : T(0);
    tile_cnt += keep ? T(0) : T(1);
  }
  st.sum_in = st.sum_in * scale + tile_sum;
  st.floored += static_cast<int64_t>(tile_cnt);
  st.max_lw = m;
  st.max_in = m_in;
}

template <typename T, bool kDance>
DIVA_ALWAYS_INLINE void grad_row_impl(T* __restrict__ s, int64_t n, T inv_t, T lse, T lse_lo,
                                      T factor, const DanceParams<T>& p, const DanceRow<T>& row) {
  for (int64_t j = 0; j < n; ++j) {
    if constexpr (kDance) {
      const T c = weight(s[j], p, row);
      s[j] = factor * c * math::softmax_weight<VecMath>(c, s[j] * inv_t, lse, lse_lo);
    } else {
      s[j] = factor * math::softmax_weight<VecMath>(T(1), s[j] * inv_t, lse, lse_lo);
    }
  }
}

template <typename T>
DIVA_ALWAYS_INLINE T dot_impl(const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
  constexpr int W = kLanes<T>;
  T acc[W] = {};
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    for (int u = 0; u < W; ++u) acc[u] += a[j + u] * b[j + u];
  }
  T sum = lane_sum(acc);
  for (; j < n; ++j) sum += a[j] * b[j];
  return sum;
}

// x - x is 0 for finite x and NaN for inf and NaN, so the lanes stay 0 only if all are finite.
template <typename T>
DIVA_ALWAYS_INLINE bool all_finite_impl(const T* __restrict__ x, int64_t n) {
  constexpr int W = kLanes<T>;
  T acc[W] = {};
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    for (int u = 0; u < W; ++u) acc[u] += x[j + u] - x[j + u];
  }
  T sum = lane_sum(acc);
  for (; j < n; ++j) sum += x[j] - x[j];
  return sum == T(0);
}

}  // namespace

DIVA_INFO_NCE_CLONES float logits_row(float* s, float* scratch, int64_t n, float inv_t, bool dance,
                                 const DanceParams<float>& p, const DanceRow<float>& row, float& m,
                                 float& l, bool want_p) {
  return dance ? logits_row_impl<float, true>(s, scratch, n, inv_t, p, row, m, l, want_p)
               : logits_row_impl<float, false>(s, scratch, n, inv_t, p, row, m, l, want_p);
}
DIVA_INFO_NCE_CLONES double logits_row(double* s, double* scratch, int64_t n, double inv_t, bool dance,
                                  const DanceParams<double>& p, const DanceRow<double>& row,
                                  double& m, double& l, bool want_p) {
  return dance
             ? logits_row_impl<double, true>(s, scratch, n, inv_t, p, row, m, l, want_p)
             : logits_row_impl<double, false>(s, scratch, n, inv_t, p, row, m, l, want_p);
}

DIVA_INFO_NCE_CLONES void weight_stats_row(const float* s, float* scratch, int64_t n,
                                           const DanceParams<float>& p, DanceStats<float>& st) {
  weight_stats_row_impl(s, scratch, n, p, st);
}
DIVA_INFO_NCE_CLONES void weight_stats_row(const double* s, double* scratch, int64_t n,
                                           const DanceParams<double>& p, DanceStats<double>& st) {
  weight_stats_row_impl(s, scratch, n, p, st);
}

DIVA_INFO_NCE_CLONES void grad_row(float* s, int64_t n, float inv_t, float lse, float lse_lo,
                                   float factor, bool dance, const DanceParams<float>& p,
                                   const DanceRow<float>& row) {
  if (dance) {
    grad_row_impl<float, true>(s, n, inv_t, lse, lse_lo, factor, p, row);
  } else {
    grad_row_impl<float, false>(s, n, inv_t, lse, lse_lo, factor, p, row);
  }
}
DIVA_INFO_NCE_CLONES void grad_row(double* s, int64_t n, double inv_t, double lse, double lse_lo,
                                   double factor, bool dance, const DanceParams<double>& p,
                                   const DanceRow<double>& row) {
  if (dance) {
    grad_row_impl<double, true>(s, n, inv_t, lse, lse_lo, factor, p, row);
  } else {
    grad_row_impl<double, false>(s, n, inv_t, lse, lse_lo, factor, p, row);
  }
}

DIVA_INFO_NCE_CLONES float dot(const float* a, const float* b, int64_t n) { return dot_impl(a, b, n); }
DIVA_INFO_NCE_CLONES double dot(const double* a, const double* b, int64_t n) {
  return dot_impl(a, b, n);
}

DIVA_INFO_NCE_CLONES bool all_finite(const float* x, int64_t n) { return all_finite_impl(x, n); }
DIVA_INFO_NCE_CLONES bool all_finite(const double* x, int64_t n) { return all_finite_impl(x, n); }

}  // namespace diva_ext::cpu
