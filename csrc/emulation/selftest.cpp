// Runs the emulation's self-test kernels (selftest_kernels.cuh): intrinsic probes and planted
// faults, as torch.ops.diva_ext_emulated.selftest(name, inputs, schedule_seed) -> Tensor[].
// Used by python_tests/test_cuda_emulation_harness.py, which holds the expected results.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <functional>
#include <map>
#include <string>

#include "emulated.h"
#include "selftest_kernels.cuh"

namespace diva_ext::emulated {
namespace {

namespace k = diva_ext::emulation_selftest;
using Tensors = std::vector<at::Tensor>;
using Case = std::function<Tensors(const Tensors&)>;

unsigned blocks_of(int64_t n, int block) { return static_cast<unsigned>((n + block - 1) / block); }

template <typename T>
gmem<const T> in(const at::Tensor& t, const char* name) {
  return buffer<const T>(t, name);
}
template <typename T>
gmem<T> inout(const at::Tensor& t, const char* name) {
  return buffer<T>(t, name);
}

// A case per planted fault and its twin: name -> (inputs -> outputs).
template <bool kGood>
void add_fault_pair(std::map<std::string, Case>& cases, const std::string& name) {
  const std::string key = kGood ? name : name + "_fault";
  if (name == "reverse") {  // x: [64 * blocks]
    cases[key] = [](const Tensors& t) {
      at::Tensor out = at::empty_like(t[0]);
      DIVA_LAUNCH(k::reverse_kernel<kGood>, blocks_of(t[0].numel(), k::kBlock), k::kBlock, 0, stream())
      (in<float>(t[0], "x"), inout<float>(out, "out"));
      return Tensors{out};
    };
  } else if (name == "tile_sum") {  // x: [n]
    cases[key] = [](const Tensors& t) {
      at::Tensor out = at::empty({k::kBlock}, t[0].options());
      DIVA_LAUNCH(k::tile_sum_kernel<kGood>, 1, k::kBlock, 0, stream())
      (in<float>(t[0], "x"), inout<float>(out, "out"), static_cast<int>(t[0].numel()));
      return Tensors{out};
    };
  } else if (name == "scale") {  // x: [n]
    cases[key] = [](const Tensors& t) {
      at::Tensor out = at::empty_like(t[0]);
      const int n = static_cast<int>(t[0].numel());
      DIVA_LAUNCH(k::scale_kernel<!kGood>, blocks_of(n + 1, 64), 64, 0, stream())
      (in<float>(t[0], "x"), inout<float>(out, "out"), n);
      return Tensors{out};
    };
  } else if (name == "shared_rotate") {
    cases[key] = [](const Tensors& t) {
      at::Tensor out = at::empty_like(t[0]);
      DIVA_LAUNCH(k::shared_rotate_kernel<!kGood>, blocks_of(t[0].numel(), k::kBlock), k::kBlock, 0, stream())
      (in<float>(t[0], "x"), inout<float>(out, "out"));
      return Tensors{out};
    };
  } else if (name == "dynamic_rotate") {
    cases[key] = [](const Tensors& t) {
      at::Tensor out = at::empty_like(t[0]);
      DIVA_LAUNCH(k::dynamic_rotate_kernel<!kGood>, blocks_of(t[0].numel(), k::kBlock), k::kBlock,
                  k::kBlock * sizeof(float), stream())
      (in<float>(t[0], "x"), inout<float>(out, "out"));
      return Tensors{out};
    };
  }
}

template <int kFault>
Case warp_sum_case() {
  return [](const Tensors& t) {
    at::Tensor out = at::empty({t[0].numel() / 32}, t[0].options());
    DIVA_LAUNCH(k::warp_sum_kernel<kFault>, blocks_of(t[0].numel(), 64), 64, 0, stream())
    (in<float>(t[0], "x"), inout<float>(out, "out"));
    return Tensors{out};
  };
}

template <typename T, typename LayoutB>
Tensors run_wmma(const Tensors& t, at::ScalarType type) {
  // t: a [16, 16], b [16, 16] float; b is passed in LayoutB's memory order.
  const at::Tensor a = t[0].to(type).contiguous();
  at::Tensor b = t[1].to(type);
  if (std::is_same_v<LayoutB, nvcuda::wmma::col_major>) b = b.t();
  b = b.contiguous();
  at::Tensor d = at::empty({16, 16}, t[0].options());
  DIVA_LAUNCH((k::wmma_kernel<T, LayoutB>), 1, 32, 16 * 16 * sizeof(T), stream())
  (in<T>(a, "a"), in<T>(b, "b"), inout<float>(d, "d"));
  return Tensors{d};
}

const std::map<std::string, Case>& cases() {
  static const std::map<std::string, Case> all = [] {
    std::map<std::string, Case> m;
    m["shuffles"] = [](const Tensors& t) {  // x: [n] float or double, n a multiple of 32
      const int n = static_cast<int>(t[0].numel());
      at::Tensor out = at::empty({4, n}, t[0].options());
      AT_DISPATCH_FLOATING_TYPES(t[0].scalar_type(), "shuffles", [&] {
        DIVA_LAUNCH(k::shuffles_kernel<scalar_t>, 1, n, 0, stream())
        (in<scalar_t>(t[0], "x"), inout<scalar_t>(out, "out"), n);
      });
      return Tensors{out};
    };
    m["conversions"] = [](const Tensors& t) {
      const int n = static_cast<int>(t[0].numel());
      at::Tensor out = at::empty({5, n}, t[0].options());
      DIVA_LAUNCH(k::conversions_kernel, blocks_of(n, 64), 64, 0, stream())(in<float>(t[0], "x"), inout<float>(out, "out"), n);
      return Tensors{out};
    };
    namespace wmma = nvcuda::wmma;
    m["wmma_half"] = [](const Tensors& t) { return run_wmma<__half, wmma::row_major>(t, at::kHalf); };
    m["wmma_half_col_major"] = [](const Tensors& t) { return run_wmma<__half, wmma::col_major>(t, at::kHalf); };
    m["wmma_bf16"] = [](const Tensors& t) { return run_wmma<__nv_bfloat16, wmma::row_major>(t, at::kBFloat16); };
    for (const char* name : {"reverse", "tile_sum", "scale", "shared_rotate", "dynamic_rotate"}) {
      add_fault_pair<true>(m, name);
      add_fault_pair<false>(m, name);
    }
    m["warp_sum"] = warp_sum_case<0>();
    m["warp_sum_fault_offset"] = warp_sum_case<1>();
    m["warp_sum_fault_mask"] = warp_sum_case<2>();
    m["warp_sum_fault_butterfly"] = warp_sum_case<3>();
    m["inter_block_spin_fault"] = [](const Tensors& t) {
      at::Tensor flags = at::zeros({2}, t[0].options().dtype(at::kInt));
      DIVA_LAUNCH(k::inter_block_spin_kernel, 2, 32, 0, stream())(inout<int>(flags, "flags"));
      return Tensors{flags};
    };
    m["divergent_barrier_fault"] = [](const Tensors& t) {
      at::Tensor out = at::zeros({32}, t[0].options());
      DIVA_LAUNCH(k::divergent_barrier_kernel, 1, 64, 0, stream())(in<float>(t[0], "x"), inout<float>(out, "out"));
      return Tensors{out};
    };
    m["warp_deadlock_fault"] = [](const Tensors& t) {
      at::Tensor out = at::zeros({64}, t[0].options());
      DIVA_LAUNCH(k::warp_deadlock_kernel, 1, 64, 0, stream())(in<float>(t[0], "x"), inout<float>(out, "out"));
      return Tensors{out};
    };
    return m;
  }();
  return all;
}

Tensors selftest(const std::string& name, const Tensors& inputs, int64_t schedule_seed) {
  auto it = cases().find(name);
  TORCH_CHECK(it != cases().end(), "diva_ext_emulated::selftest: unknown case '", name, "'");
  for (const at::Tensor& t : inputs) TORCH_CHECK(t.is_contiguous(), "selftest inputs must be contiguous");
  ScheduleScope schedule(static_cast<std::uint64_t>(schedule_seed));
  return it->second(inputs);
}

std::vector<std::string> selftest_cases() {
  std::vector<std::string> names;
  for (const auto& [name, fn] : cases()) names.push_back(name);
  return names;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(diva_ext_emulated, m) {
  m.def("selftest(str name, Tensor[] inputs, int schedule_seed) -> Tensor[]");
  m.def("selftest_cases() -> str[]", &selftest_cases);
}

TORCH_LIBRARY_IMPL(diva_ext_emulated, CPU, m) { m.impl("selftest", &selftest); }

}  // namespace diva_ext::emulated
