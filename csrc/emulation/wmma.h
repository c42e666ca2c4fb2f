// CUDA emulation, part 4: the nvcuda::wmma tensor-core tiles the kernels use (test-only; see
// csrc/emulation/README.md): m16n16k16 fragments of __half / __nv_bfloat16 with float
// accumulators, matrix_b row- or col-major, accumulators stored row-major.
//
// A fragment is a plain array: each of the 32 lanes holds num_elements = tile / 32 elements of
// the tile (lane l's element e is tile element e * 32 + l in row-major order), so code must not
// assume which elements a lane holds, as on a GPU. Every wmma operation is a full-warp
// collective (all 32 lanes must call it); mma_sync gathers the lanes' fragments, multiplies in
// float in k order and scatters the result. load/store check the GPU's requirements: a 256-bit
// aligned pointer and ldm a multiple of 16 bytes.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "intrinsics.h"
#include "runtime.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major };

namespace detail {
template <typename Use, int M, int N, int K>
struct Shape;
template <int M, int N, int K>
struct Shape<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K>
struct Shape<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K>
struct Shape<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulation has the m16n16k16 shape only");
  static_assert(std::is_same_v<Use, accumulator> ? std::is_same_v<T, float>
                                                  : std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>,
                "the emulation has __half / __nv_bfloat16 inputs with float accumulators only");

 public:
  using element_type = T;
  using use = Use;
  using layout = Layout;
  static constexpr int rows = detail::Shape<Use, M, N, K>::rows;
  static constexpr int cols = detail::Shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols / 32;
  element_type x[num_elements];
};

namespace detail {
using diva_ext::emu::fail;
using diva_ext::emu::format_site;

inline void warp_sync(const char* op, std::source_location loc) {
  diva_ext::emu::warp_collective(op, diva_ext::emu::kFullMask, 0, loc, [](diva_ext::emu::Thread* const*) {});
}
inline int lane() { return diva_ext::emu::current_thread().linear % diva_ext::emu::kWarpSize; }

template <typename P>
std::uintptr_t address(P p) {
  if constexpr (std::is_pointer_v<P>) return reinterpret_cast<std::uintptr_t>(p);
  else return reinterpret_cast<std::uintptr_t>(p.get());
}

template <typename Elem, typename P>
void check_tile_pointer(const char* op, P p, unsigned ldm, std::source_location loc) {
  if (address(p) % 32 != 0) fail(std::string(op) + " at " + format_site(loc) + ": the pointer is not 256-bit aligned");
  if ((ldm * sizeof(Elem)) % 16 != 0) {
    fail(std::string(op) + " at " + format_site(loc) + ": ldm " + std::to_string(ldm) + " is not a multiple of 16 bytes");
  }
}

// Memory offset of tile element (r, c).
inline long long offset(int r, int c, unsigned ldm, bool row_major_memory) {
  return row_major_memory ? static_cast<long long>(r) * ldm + c : static_cast<long long>(c) * ldm + r;
}

template <typename T>
float mma_input(T v) {
  return static_cast<float>(v);
}
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename L>
void fill_fragment(fragment<Use, M, N, K, T, L>& f, typename fragment<Use, M, N, K, T, L>::element_type v,
                   std::source_location loc = std::source_location::current()) {
  detail::warp_sync("wmma::fill_fragment", loc);
  for (auto& e : f.x) e = v;
}

template <typename Frag, typename P>
void load_tile(const char* op, Frag& f, P p, unsigned ldm, bool row_major_memory, std::source_location loc) {
  detail::warp_sync(op, loc);
  detail::check_tile_pointer<typename Frag::element_type>(op, p, ldm, loc);
  const int lane = detail::lane();
  for (int e = 0; e < Frag::num_elements; ++e) {
    const int i = e * 32 + lane;
    f.x[e] = static_cast<typename Frag::element_type>(p[detail::offset(i / Frag::cols, i % Frag::cols, ldm, row_major_memory)]);
  }
}

// matrix_a / matrix_b: the layout is the fragment's.
template <typename Use, int M, int N, int K, typename T, typename L, typename P>
  requires(!std::is_same_v<Use, accumulator>)
void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, P p, unsigned ldm,
                      std::source_location loc = std::source_location::current()) {
  load_tile("wmma::load_matrix_sync", f, p, ldm, std::is_same_v<L, row_major>, loc);
}

template <int M, int N, int K, typename T, typename P>
void store_matrix_sync(P p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout,
                       std::source_location loc = std::source_location::current()) {
  using Frag = fragment<accumulator, M, N, K, T>;
  detail::warp_sync("wmma::store_matrix_sync", loc);
  detail::check_tile_pointer<typename Frag::element_type>("wmma::store_matrix_sync", p, ldm, loc);
  const int lane = detail::lane();
  for (int e = 0; e < Frag::num_elements; ++e) {
    const int i = e * 32 + lane;
    p[detail::offset(i / Frag::cols, i % Frag::cols, ldm, layout == mem_row_major)] = f.x[e];
  }
}

// d = a * b + c, accumulated in float in k order.
template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB, typename TC, typename TD>
void mma_sync(fragment<accumulator, M, N, K, TD>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, TC>& c,
              std::source_location loc = std::source_location::current()) {
  using FragA = fragment<matrix_a, M, N, K, TA, LA>;
  using FragB = fragment<matrix_b, M, N, K, TB, LB>;
  using FragC = fragment<accumulator, M, N, K, TC>;
  using FragD = fragment<accumulator, M, N, K, TD>;
  static_assert(std::is_same_v<TA, TB>, "wmma::mma_sync: matrix_a and matrix_b element types differ");
  diva_ext::emu::Thread& self = diva_ext::emu::current_thread();
  self.frags[0] = const_cast<FragA*>(&a);
  self.frags[1] = const_cast<FragB*>(&b);
  self.frags[2] = const_cast<FragC*>(&c);
  self.frags[3] = &d;
  diva_ext::emu::warp_collective("wmma::mma_sync", diva_ext::emu::kFullMask, 0, loc, [](diva_ext::emu::Thread* const* lanes) {
    // Gather the tiles (lane l's element e is tile element e * 32 + l).
    float ta[M * K], tb[K * N], tc[M * N];
    for (int l = 0; l < 32; ++l) {
      const auto& fa = *static_cast<const FragA*>(lanes[l]->frags[0]);
      const auto& fb = *static_cast<const FragB*>(lanes[l]->frags[1]);
      const auto& fc = *static_cast<const FragC*>(lanes[l]->frags[2]);
      for (int e = 0; e < FragA::num_elements; ++e) ta[e * 32 + l] = detail::mma_input(fa.x[e]);
      for (int e = 0; e < FragB::num_elements; ++e) tb[e * 32 + l] = detail::mma_input(fb.x[e]);
      for (int e = 0; e < FragC::num_elements; ++e) tc[e * 32 + l] = static_cast<float>(fc.x[e]);
    }
    float td[M * N];
    for (int i = 0; i < M; ++i) {
      for (int j = 0; j < N; ++j) {
        float acc = tc[i * N + j];
        for (int k = 0; k < K; ++k) acc += ta[i * K + k] * tb[k * N + j];
        td[i * N + j] = acc;
      }
    }
    // Scatter after gathering everything: d may alias c.
    for (int l = 0; l < 32; ++l) {
      auto& fd = *static_cast<FragD*>(lanes[l]->frags[3]);
      for (int e = 0; e < FragD::num_elements; ++e) fd.x[e] = static_cast<typename FragD::element_type>(td[e * 32 + l]);
    }
  });
}

}  // namespace nvcuda::wmma
