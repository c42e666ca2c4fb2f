// The CPU epilogue of distance_weighted_negatives: the per-element work between the GEMMs.
//
// Three passes over an anchor's row of a tile (the math and the argument for the bounds are in
// diva_ext/math/distance_weighted.h):
//   1. bound[j] = the table's bound of log w_j, -inf for non-candidates; and the row's largest
//      (vectorised: a gather from the small table, no logs);
//   2. if that plus the largest possible noise can beat the running best, key[j] = bound[j] +
//      the stage-1 bound of the noise, and each group of 8 keys' maximum (vectorised Philox, 8
//      candidates per call, no logs);
//   3. candidates with key[j] > best (found group by group) get the exact score (two logs of
//      the cosine, a stage-2 Philox call, two logs of the uniform): well under 1% of them.
// NB: this file is compiled with -fno-trapping-math (pragma below, before every include, so that
// the math it inlines gets it too): without it GCC will not if-convert the float selects around
// the logs, and the loops stay scalar (4-8x slower).
#pragma GCC optimize("no-trapping-math")

#include "distance_weighted_epilogue.h"

#include <cstdint>
#include <limits>

#include "diva_ext/cpu/simd.h"
#include "diva_ext/math/distance_weighted.h"

namespace diva_ext::cpu {
namespace {

using namespace diva_ext::math;

constexpr int64_t kLanes = 8;  // independent accumulators of a row maximum (one AVX2 vector)

// Pass 1.
template <typename Acc>
DIVA_ALWAYS_INLINE float bound_pass_impl(const Acc* __restrict__ c, const int32_t* __restrict__ ids,
                                         int32_t a_id, int64_t cols, Acc c_upper,
                                         const float* __restrict__ table, DwTable<Acc> t,
                                         float* __restrict__ bound) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < cols; ++j) {
    const bool candidate = (ids[j] != a_id) & (c[j] > c_upper);
    // The load is unconditional (the index is always in range) so that the loop vectorises.
    bound[j] = table[dw_table_index(c[j], t)] + (candidate ? 0.0f : kNegInf);
  }
  // The maximum in kLanes independent lanes: GCC vectorises this form without -ffast-math.
  float lanes[kLanes];
  for (int64_t k = 0; k < kLanes; ++k) lanes[k] = kNegInf;
  int64_t j = 0;
  for (; j + kLanes <= cols; j += kLanes) {
    for (int64_t k = 0; k < kLanes; ++k) {
      lanes[k] = bound[j + k] > lanes[k] ? bound[j + k] : lanes[k];
    }
  }
  float best = kNegInf;
  for (; j < cols; ++j) best = bound[j] > best ? bound[j] : best;
  for (int64_t k = 0; k < kLanes; ++k) best = lanes[k] > best ? lanes[k] : best;
  return best;
}

DIVA_CPU_CLONES float bound_pass(const float* c, const int32_t* ids, int32_t a_id, int64_t cols,
                                 float c_upper, const float* table, DwTable<float> t,
                                 float* bound) {
  return bound_pass_impl(c, ids, a_id, cols, c_upper, table, t, bound);
}
DIVA_CPU_CLONES float bound_pass(const double* c, const int32_t* ids, int32_t a_id, int64_t cols,
                                 double c_upper, const float* table, DwTable<double> t,
                                 float* bound) {
  return bound_pass_impl(c, ids, a_id, cols, c_upper, table, t, bound);
}

// Pass 2: key[8 g + k] = bound[8 g + k] + the stage-1 bound of candidate 8 (group0 + g) + k's
// noise, and group_max[g] = max_k key[8 g + k], for g < groups. (Vectorised across groups: the
// eight keys of a group are eight vectors, so their maximum is seven vertical maxima.)
DIVA_CPU_CLONES void key_pass(const float* __restrict__ bound, float* __restrict__ key,
                              float* __restrict__ group_max, int64_t groups, uint32_t group0,
                              DwNoiseKey nk) {
  for (int64_t g = 0; g < groups; ++g) {
    const Philox4x32 r =
        dw_noise_stage1(nk.seed, nk.offset, nk.t, group0 + static_cast<uint32_t>(g));
    float m = -std::numeric_limits<float>::infinity();
    for (int k = 0; k < 8; ++k) {
      const float v = bound[8 * g + k] + gumbel_upper_bound(dw_stage1_bits(r, k));
      key[8 * g + k] = v;
      m = v > m ? v : m;
    }
    group_max[g] = m;
  }
}

// The exact score of candidate j with cosine c.
template <typename Acc>
Acc exact_score(Acc c, int32_t j, const DwParams<Acc>& p, DwNoiseKey key) {
  const Philox4x32 r1 = dw_noise_stage1(key.seed, key.offset, key.t, static_cast<uint32_t>(j >> 3));
  const Philox4x32 r2 = dw_noise_stage2(key.seed, key.offset, key.t, static_cast<uint32_t>(j >> 2));
  const float g = gumbel(dw_stage1_bits(r1, j & 7), r2.v[j & 3]);
  return dw_log_weight(c, p) + static_cast<Acc>(g);
}

// Passes 1-3.
template <typename Acc>
void update_row_impl(const Acc* c, const int32_t* ids, int32_t a_id, int64_t j0, int64_t cols,
                     const DwParams<Acc>& p, const float* table, const DwTable<Acc>& t,
                     DwNoiseKey nk, float* bound, float* key, float* group_max, DwBest<Acc>& best) {
  const float tile_max = bound_pass(c, ids + j0, a_id, cols, p.c_upper, table, t, bound);
  if (!(static_cast<Acc>(tile_max) + static_cast<Acc>(kDwGumbelMax) > best.score)) return;
  const int64_t groups = (cols + 7) / 8;
  for (int64_t j = cols; j < 8 * groups; ++j) bound[j] = -std::numeric_limits<float>::infinity();
  key_pass(bound, key, group_max, groups, static_cast<uint32_t>(j0 / 8), nk);
  for (int64_t g = 0; g < groups; ++g) {
    if (!(static_cast<Acc>(group_max[g]) > best.score)) continue;
    for (int64_t j = 8 * g; j < 8 * g + 8 && j < cols; ++j) {
      if (!(static_cast<Acc>(key[j]) > best.score)) continue;
      const auto jj = static_cast<int32_t>(j0 + j);
      const Acc score = exact_score(c[j], jj, p, nk);
      if (dw_better(score, jj, best.score, best.index)) best = DwBest<Acc>{score, jj};
    }
  }
}

}  // namespace

void fill_bound_table(float* values, const DwTable<float>& t, const DwParams<float>& p) {
  fill_dw_table(values, t, p);
}
void fill_bound_table(float* values, const DwTable<double>& t, const DwParams<double>& p) {
  fill_dw_table(values, t, p);
}

void update_row(const float* c, const int32_t* ids, int32_t a_id, int64_t j0, int64_t cols,
                const DwParams<float>& p, const float* table, const DwTable<float>& t,
                DwNoiseKey nk, float* bound, float* key, float* group_max, DwBest<float>& best) {
  update_row_impl(c, ids, a_id, j0, cols, p, table, t, nk, bound, key, group_max, best);
}
void update_row(const double* c, const int32_t* ids, int32_t a_id, int64_t j0, int64_t cols,
                const DwParams<double>& p, const float* table, const DwTable<double>& t,
                DwNoiseKey nk, float* bound, float* key, float* group_max, DwBest<double>& best) {
  update_row_impl(c, ids, a_id, j0, cols, p, table, t, nk, bound, key, group_max, best);
}

int64_t fallback_pick(const int32_t* ids, int64_t b, int32_t a_id, DwNoiseKey key) {
  uint32_t best_r = 0;
  int32_t best_j = kDwNoIndex;
  for (int64_t g = 0; 4 * g < b; ++g) {
    const Philox4x32 r = dw_noise_stage2(key.seed, key.offset, key.t, static_cast<uint32_t>(g));
    for (int k = 0; k < 4 && 4 * g + k < b; ++k) {
      const auto j = static_cast<int32_t>(4 * g + k);
      if (ids[j] != a_id && dw_fallback_better(r.v[k], j, best_r, best_j)) {
        best_r = r.v[k];
        best_j = j;
      }
    }
  }
  return best_j == kDwNoIndex ? -1 : best_j;
}

}  // namespace diva_ext::cpu
