// The CPU epilogue of distance_weighted_negatives (definitions in distance_weighted_epilogue.cpp,
// compiled with its own floating-point pragma and one clone per instruction set): one anchor row
// of a tile of inner products in, the row's running (score, index) argmax updated; the per-call
// bound table; the uniform fallback. Overloads for float and double inner products.
#pragma once

#include <cstdint>

#include "diva_ext/math/distance_weighted.h"

namespace diva_ext::cpu {

// What keys an anchor's noise (math::dw_noise_stage1/2).
struct DwNoiseKey {
  uint64_t seed, offset;
  uint32_t t;  // the anchor's position
};

// Running argmax of one anchor row.
template <typename Acc>
struct DwBest {
  Acc score;
  int32_t index;
};

// math::fill_dw_table: the per-call table of upper bounds of log w, t.bins + 2 floats.
void fill_bound_table(float* values, const math::DwTable<float>& t, const math::DwParams<float>& p);
void fill_bound_table(float* values, const math::DwTable<double>& t,
                      const math::DwParams<double>& p);

// Updates best with candidates j0 .. j0 + cols - 1 (j0 a multiple of 8): c their inner products
// with the anchor, ids the class ids of all B samples, a_id the anchor's. Scratch: bound and key
// hold cols rounded up to 8 floats, group_max an eighth of that.
void update_row(const float* c, const int32_t* ids, int32_t a_id, int64_t j0, int64_t cols,
                const math::DwParams<float>& p, const float* table, const math::DwTable<float>& t,
                DwNoiseKey nk, float* bound, float* key, float* group_max, DwBest<float>& best);
void update_row(const double* c, const int32_t* ids, int32_t a_id, int64_t j0, int64_t cols,
                const math::DwParams<double>& p, const float* table,
                const math::DwTable<double>& t, DwNoiseKey nk, float* bound, float* key,
                float* group_max, DwBest<double>& best);

// Uniform draw among the b samples whose class id differs from a_id; -1 when there is none.
int64_t fallback_pick(const int32_t* ids, int64_t b, int32_t a_id, DwNoiseKey key);

}  // namespace diva_ext::cpu
