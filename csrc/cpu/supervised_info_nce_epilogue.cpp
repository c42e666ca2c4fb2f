// Row epilogues of supervised_info_nce's CPU kernel: the positives of a tile row, vectorised.
//
// NB: the selects only vectorise when GCC may assume comparisons do not trap (as in
// info_nce_epilogue.cpp, this file turns no-trapping-math on for itself).
#pragma GCC optimize("no-trapping-math")

#include "supervised_info_nce_epilogue.h"

#include "diva_ext/cpu/simd.h"
#include "lanes.h"

namespace diva_ext::cpu {
namespace {

template <typename T>
DIVA_ALWAYS_INLINE void positive_sum_row_impl(const T* __restrict__ s,
                                              const int64_t* __restrict__ lab, int64_t n,
                                              int64_t label, T& sigma, int64_t& count) {
  constexpr int W = kLanes<T>;
  T acc[W] = {}, cnt[W] = {};
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    for (int u = 0; u < W; ++u) {
      const bool pos = lab[j + u] == label;
      acc[u] += pos ? s[j + u] : T(0);
      cnt[u] += pos ? T(1) : T(0);
    }
  }
  T sum = lane_sum(acc);
  T c = lane_sum(cnt);  // exact: at most n small integers
  for (; j < n; ++j) {
    const bool pos = lab[j] == label;
    sum += pos ? s[j] : T(0);
    c += pos ? T(1) : T(0);
  }
  sigma += sum;
  count += static_cast<int64_t>(c);
}

template <typename T>
DIVA_ALWAYS_INLINE void positive_grad_row_impl(T* __restrict__ s, const int64_t* __restrict__ lab,
                                               int64_t n, int64_t label, T w) {
  for (int64_t j = 0; j < n; ++j) s[j] -= lab[j] == label ? w : T(0);
}

}  // namespace

DIVA_CPU_CLONES void positive_sum_row(const float* s, const int64_t* memory_labels, int64_t n,
                                      int64_t label, float& sigma, int64_t& count) {
  positive_sum_row_impl(s, memory_labels, n, label, sigma, count);
}
DIVA_CPU_CLONES void positive_sum_row(const double* s, const int64_t* memory_labels, int64_t n,
                                      int64_t label, double& sigma, int64_t& count) {
  positive_sum_row_impl(s, memory_labels, n, label, sigma, count);
}

DIVA_CPU_CLONES void positive_grad_row(float* s, const int64_t* memory_labels, int64_t n,
                                       int64_t label, float w) {
  positive_grad_row_impl(s, memory_labels, n, label, w);
}
DIVA_CPU_CLONES void positive_grad_row(double* s, const int64_t* memory_labels, int64_t n,
                                       int64_t label, double w) {
  positive_grad_row_impl(s, memory_labels, n, label, w);
}

}  // namespace diva_ext::cpu
