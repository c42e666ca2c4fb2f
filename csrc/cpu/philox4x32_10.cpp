// CPU kernel of _philox4x32_10, the test hook of the shared Philox header
// (diva_ext/math/philox.h, the noise of distance_weighted_negatives): counters [N, 4] and key [2]
// (int64 holding uint32 words) -> [N, 4] output words.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>

#include "diva_ext/math/philox.h"

namespace diva_ext::cpu {
namespace {

using math::Philox4x32;
using math::philox4x32_10;

at::Tensor philox4x32_10_cpu(const at::Tensor& counters_in, const at::Tensor& key_in) {
  constexpr const char* op = "_philox4x32_10";
  TORCH_CHECK(counters_in.dim() == 2 && counters_in.size(1) == 4 &&
                  counters_in.scalar_type() == at::kLong,
              op, ": counters must be an int64 tensor [N, 4], got ", counters_in.scalar_type(),
              " ", counters_in.sizes());
  TORCH_CHECK(key_in.dim() == 1 && key_in.size(0) == 2 && key_in.scalar_type() == at::kLong, op,
              ": key must be an int64 tensor [2], got ", key_in.scalar_type(), " ", key_in.sizes());
  const at::Tensor counters = counters_in.contiguous(), key = key_in.contiguous();
  at::Tensor out = at::empty_like(counters);
  const int64_t* c = counters.const_data_ptr<int64_t>();
  const int64_t* k = key.const_data_ptr<int64_t>();
  int64_t* o = out.mutable_data_ptr<int64_t>();
  const auto w = [](int64_t v) { return static_cast<uint32_t>(v); };
  for (int64_t i = 0; i < counters.size(0); ++i) {
    const Philox4x32 r = philox4x32_10(w(c[4 * i]), w(c[4 * i + 1]), w(c[4 * i + 2]),
                                       w(c[4 * i + 3]), w(k[0]), w(k[1]));
    for (int e = 0; e < 4; ++e) o[4 * i + e] = r.v[e];
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(diva_ext, CPU, m) { m.impl("_philox4x32_10", &philox4x32_10_cpu); }

}  // namespace diva_ext::cpu
