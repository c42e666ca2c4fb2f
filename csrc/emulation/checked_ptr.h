// CUDA emulation, part 2: bounds-checked memory (test-only; see csrc/emulation/README.md).
//
// checked_ptr<T> is diva_ext::gmem<T> in emulation builds: a pointer into one buffer (a tensor's
// elements, the block's dynamic shared memory) that knows the buffer's extent and name. Pointer
// arithmetic is free (like C, a pointer may point anywhere); every access checks that it lands
// inside the buffer and is a yield point of the schedule. Static __shared__ arrays and local
// arrays are checked by the compiler instead (-fsanitize=bounds, reported by the handler below).
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "runtime.h"

namespace diva_ext::emu {

template <typename T>
class checked_ptr {
 public:
  using element_type = T;

  checked_ptr() = default;
  checked_ptr(std::nullptr_t) {}
  // A pointer to the first of `count` elements at `base`, called `name` in error messages.
  checked_ptr(T* base, std::size_t count, const char* name) : base_(base), count_(count), name_(name) {}
  // gmem<T> converts to gmem<const T>, like T* to const T*.
  template <typename U>
    requires(!std::is_same_v<U, T> && std::is_same_v<const U, T>)
  checked_ptr(const checked_ptr<U>& other)
      : base_(other.base_), count_(other.count_), offset_(other.offset_), name_(other.name_) {}

  T& operator[](long long i) const { return *check(i); }
  T& operator*() const { return *check(0); }
  T* operator->() const { return check(0); }

  checked_ptr operator+(long long i) const { return moved(i); }
  checked_ptr operator-(long long i) const { return moved(-i); }
  friend checked_ptr operator+(long long i, const checked_ptr& p) { return p.moved(i); }
  checked_ptr& operator+=(long long i) { offset_ += i; return *this; }
  checked_ptr& operator-=(long long i) { offset_ -= i; return *this; }
  checked_ptr& operator++() { ++offset_; return *this; }
  checked_ptr& operator--() { --offset_; return *this; }
  checked_ptr operator++(int) { checked_ptr old = *this; ++offset_; return old; }
  checked_ptr operator--(int) { checked_ptr old = *this; --offset_; return old; }
  friend long long operator-(const checked_ptr& a, const checked_ptr& b) {
    if (a.base_ != b.base_) fail("subtracting pointers into different buffers (" + a.label() + ", " + b.label() + ")");
    return a.offset_ - b.offset_;
  }

  friend bool operator==(const checked_ptr& a, const checked_ptr& b) { return a.address() == b.address(); }
  friend auto operator<=>(const checked_ptr& a, const checked_ptr& b) { return a.address() <=> b.address(); }
  friend bool operator==(const checked_ptr& a, std::nullptr_t) { return a.base_ == nullptr; }
  explicit operator bool() const { return base_ != nullptr; }

  // The raw address, unchecked (alignment checks, diagnostics).
  T* get() const { return reinterpret_cast<T*>(address()); }

 private:
  template <typename U>
  friend class checked_ptr;

  std::uintptr_t address() const {
    return reinterpret_cast<std::uintptr_t>(base_) + static_cast<std::uintptr_t>(offset_ * static_cast<long long>(sizeof(T)));
  }
  checked_ptr moved(long long i) const {
    checked_ptr p = *this;
    p.offset_ += i;
    return p;
  }
  std::string label() const { return name_ ? std::string("'") + name_ + "'" : std::string("a buffer"); }

  T* check(long long i) const {
    maybe_yield();
    if (base_ == nullptr) fail("access through a null pointer");
    const long long at = offset_ + i;
    if (at < 0 || at >= static_cast<long long>(count_)) {
      fail("out-of-bounds access to " + label() + ": element " + std::to_string(at) + " of " +
           std::to_string(count_) + " (pointer at element " + std::to_string(offset_) + ", index " +
           std::to_string(i) + ")");
    }
    return base_ + at;
  }

  T* base_ = nullptr;
  std::size_t count_ = 0;
  long long offset_ = 0;  // in elements from base_
  const char* name_ = nullptr;
};

// The block's dynamic shared memory (DIVA_DYNAMIC_SHARED) as a checked T array.
template <typename T>
checked_ptr<T> dynamic_shared() {
  const BlockRun& b = current_block();
  return checked_ptr<T>(reinterpret_cast<T*>(b.dynamic_smem), b.launch->smem / sizeof(T),
                        "dynamic shared memory");
}

}  // namespace diva_ext::emu

// ---- -fsanitize=bounds: out-of-bounds indexing of fixed-size arrays ------------------------
// The compiler instruments a[i] on arrays of known size (static __shared__ tiles, local arrays)
// and calls this handler when i is out of range. Ours fails the launch with the source position
// (outside a kernel it prints a warning and continues). Hidden and weak: one copy per library,
// and no libubsan needed.
namespace diva_ext::emu::ubsan {
struct SourceLocation {
  const char* file;
  std::uint32_t line, column;
};
struct TypeDescriptor {
  std::uint16_t kind, info;  // kind 0: integer; info: log2(bit width) << 1 | signed
  char name[1];
};
struct OutOfBoundsData {
  SourceLocation loc;
  const TypeDescriptor* array_type;
  const TypeDescriptor* index_type;
};

inline std::string describe(void* raw_data, void* index) {
  const auto* data = static_cast<const OutOfBoundsData*>(raw_data);
  std::string idx = "?";
  const TypeDescriptor* it = data->index_type;
  if (it->kind == 0 && (it->info >> 1) <= 6) {  // integers of up to 64 bits are passed inline
    const unsigned bits = 1u << (it->info >> 1);
    std::uint64_t v = reinterpret_cast<std::uintptr_t>(index);
    if (bits < 64) v &= (std::uint64_t{1} << bits) - 1;
    if ((it->info & 1) && bits < 64 && (v >> (bits - 1))) v |= ~std::uint64_t{0} << bits;
    idx = (it->info & 1) ? std::to_string(static_cast<long long>(v)) : std::to_string(v);
  }
  std::string file = data->loc.file;
  if (auto p = file.find("csrc/"); p != std::string::npos) file = file.substr(p);
  return "out-of-bounds index " + idx + " into an array of type " + data->array_type->name +
         " (a __shared__ or local array) at " + file + ":" + std::to_string(data->loc.line);
}

inline void report(void* data, void* index) {
  const std::string message = describe(data, index);
  if (in_kernel()) fail(message);
  std::fprintf(stderr, "diva_ext CUDA emulation: %s (host code)\n", message.c_str());
}
}  // namespace diva_ext::emu::ubsan

extern "C" __attribute__((weak, visibility("hidden"))) void __ubsan_handle_out_of_bounds(void* data, void* index) {
  diva_ext::emu::ubsan::report(data, index);
}
extern "C" __attribute__((weak, visibility("hidden"), noreturn)) void __ubsan_handle_out_of_bounds_abort(void* data, void* index) {
  diva_ext::emu::ubsan::report(data, index);
  std::abort();
}
