// A libtorch C++ consumer: calls diva_ext::pairwise_distance through the dispatcher and checks
// it against a float64 direct-difference computation. Exit status 0 on success.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <iostream>
#include <optional>

int main() {
  const c10::OperatorHandle handle =
      c10::Dispatcher::singleton().findSchemaOrThrow("diva_ext::pairwise_distance", "");
  auto op = handle.typed<at::Tensor(const at::Tensor&, const std::optional<at::Tensor>&, bool, double)>();
  at::manual_seed(0);
  int failures = 0;
  for (auto [n, m, d] : {std::tuple{1, 1, 1}, {7, 129, 33}, {300, 2, 128}}) {
    const at::Tensor x = at::randn({n, d});
    const at::Tensor y = at::randn({m, d});
    const at::Tensor got = op.call(x, y, /*squared=*/false, /*eps=*/1e-12);
    const at::Tensor want =
        (x.to(at::kDouble).unsqueeze(1) - y.to(at::kDouble).unsqueeze(0)).square().sum(-1).sqrt();
    const double err = (got.to(at::kDouble) - want).abs().max().item<double>();
    const bool ok = got.sizes() == want.sizes() && err < 1e-4;
    std::cout << "pairwise_distance n=" << n << " m=" << m << " d=" << d << " max error " << err
              << (ok ? " ok" : " FAILED") << "\n";
    failures += ok ? 0 : 1;
  }
  try {
    op.call(at::randn({3, 4}), at::randn({3, 5}), false, 1e-12);
    std::cout << "mismatched D was accepted: FAILED\n";
    ++failures;
  } catch (const c10::Error& e) {
    std::cout << "mismatched D rejected: ok\n";
  }
  const bool has_cuda = handle.hasKernelForDispatchKey(c10::DispatchKey::CUDA);
  std::cout << "CUDA kernel registered: " << (has_cuda ? "yes" : "no") << "\n";
  return failures == 0 ? 0 : 1;
}
