// CUDA emulation, part 1: the execution model (test-only; see csrc/emulation/README.md).
//
// A launch runs its blocks one after another, in a random order. The threads of a block are
// fibers (ucontext) on the calling OS thread, switched by a scheduler that always picks a random
// ready fiber; a fiber gives control back only at a sync point (__syncthreads, a warp
// collective), at a yield point (a global-memory access: with a probability set by
// the schedule seed), or when it exits. So a block's threads really wait for each other at a
// barrier, and a seed decides one interleaving among many.
//
// Errors (an out-of-bounds access, a divergent barrier, a deadlock) are recorded by the failing
// fiber, which is then abandoned (never resumed: no exception crosses a fiber boundary); the
// launch stops and DIVA_LAUNCH throws diva_ext::emu::KernelError on the host. A deadlock is
// "no fiber can run while some have not exited", so nothing ever hangs.
#pragma once

#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <source_location>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

// ---- CUDA's host-visible types ------------------------------------------------------------

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return {x, y, z}; }
};

using cudaStream_t = struct CUstream_st*;

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };

inline constexpr int warpSize = 32;

namespace diva_ext::emu {

// What DIVA_LAUNCH throws when a kernel fails in the emulation.
class KernelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr std::size_t kStackBytes = std::size_t{256} << 10;  // per emulated thread
constexpr std::size_t kDefaultSmemLimit = 48 << 10;           // dynamic smem without opt-in
// A thread yields at the latest after this many yield points in a row, so a spin-wait on
// another thread of the block progresses under every schedule...
constexpr int kForcedYieldInterval = 1024;
// ...and fails the launch after this many in total (a spin on another block, which never runs
// concurrently here, would otherwise never end).
constexpr std::uint64_t kMaxYieldPointsPerThread = std::uint64_t{1} << 24;

// splitmix64: small, fast, and good enough to pick fibers.
struct Rng {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }
};

inline std::string format_site(const std::source_location& loc) {
  const char* file = loc.file_name();
  // Keep paths short and stable: from csrc/ on when present.
  if (const char* c = std::strstr(file, "csrc/")) file = c;
  return std::string(file) + ":" + std::to_string(loc.line());
}

inline bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && a.column() == b.column() &&
         std::strcmp(a.file_name(), b.file_name()) == 0;
}

inline std::string format_dim(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

inline std::string format_mask(unsigned mask) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", mask);
  return buf;
}

// ---- Emulated threads and blocks ----------------------------------------------------------

enum class Wait {
  kNone,      // ready to run (or running)
  kBarrier,   // in __syncthreads and friends
  kWarp,      // in a warp collective (shuffle, wmma)
  kExited,    // returned from the kernel (or failed)
};

struct Thread {
  ucontext_t context;
  uint3 idx;
  int linear = 0;  // x + y * bx + z * bx * by; warp = linear / 32, lane = linear % 32
  Wait wait = Wait::kNone;
  const char* wait_op = "";
  std::source_location wait_loc;
  unsigned wait_mask = 0;
  // Operands and result of the collective this thread takes part in.
  std::uint64_t operand = 0;
  int arg = 0;
  int width = kWarpSize;
  std::uint64_t result = 0;
  void* frags[4] = {};  // wmma fragments of this lane
  int steps_since_switch = 0;
  std::uint64_t steps = 0;  // yield points passed
};

struct Launch {
  const char* kernel;
  std::source_location site;
  dim3 grid, block;
  std::size_t smem;
  std::uint64_t schedule_seed, launch_index;  // ScheduleScope's seed, launch count in the scope
  std::function<void()> body;  // calls the kernel with this thread's copy of the arguments
};

struct WarpOp {  // a warp collective waiting for lanes
  int warp;
  unsigned mask, arrived;
  const char* op;
  std::size_t operand_size;
  std::source_location loc;
};

struct BlockRun {
  const Launch* launch = nullptr;
  uint3 block_idx{};
  int num_threads = 0;
  std::vector<Thread> threads;
  std::vector<int> ready;  // fibers that can run, the running one excluded
  Thread* running = nullptr;
  ucontext_t scheduler;
  Rng rng{0};
  std::uint64_t yield_threshold = 0;  // yield at a yield point when rng.next() < threshold
  int exited = 0;
  // The block barrier.
  int barrier_arrived = 0;
  const char* barrier_op = "";
  std::source_location barrier_loc;
  std::vector<WarpOp> warp_ops;
  unsigned char* dynamic_smem = nullptr;
  std::string error;  // set by a failing fiber; stops the launch
};

inline thread_local BlockRun* tls_block = nullptr;

// Settings of the launches made by this OS thread (ScheduleScope).
struct ScheduleSettings {
  std::uint64_t seed = 0;
  std::uint64_t launches = 0;
};
inline thread_local ScheduleSettings tls_schedule;

// Launches inside the scope use interleavings derived from `seed` (each launch a different one).
class ScheduleScope {
 public:
  explicit ScheduleScope(std::uint64_t seed) : saved_(tls_schedule) { tls_schedule = {seed, 0}; }
  ~ScheduleScope() { tls_schedule = saved_; }
  ScheduleScope(const ScheduleScope&) = delete;
  ScheduleScope& operator=(const ScheduleScope&) = delete;

 private:
  ScheduleSettings saved_;
};

inline bool in_kernel() { return tls_block != nullptr && tls_block->running != nullptr; }

inline BlockRun& current_block() {
  if (!in_kernel()) throw std::logic_error("CUDA emulation: a device built-in was used outside a kernel");
  return *tls_block;
}

inline Thread& current_thread() { return *current_block().running; }

// Compiler barrier around a fiber switch: values of shared (static) memory are reloaded.
inline void memory_clobber() { asm volatile("" ::: "memory"); }

// Gives control back to the scheduler; returns when the scheduler resumes this fiber.
inline void switch_to_scheduler() {
  BlockRun& b = *tls_block;
  memory_clobber();
  swapcontext(&b.running->context, &b.scheduler);
  memory_clobber();
}

// A voluntary switch. With no other fiber ready the scheduler would resume this one: skip it.
inline void yield() {
  if (!tls_block->ready.empty()) switch_to_scheduler();
}

[[noreturn]] inline void fail(const std::string& message);

// A yield point: a global-memory access. Yields with the launch's
// probability, and always after kForcedYieldInterval yield points without a switch.
inline void maybe_yield() {
  if (!in_kernel()) return;
  BlockRun& b = *tls_block;
  Thread& t = *b.running;
  if (++t.steps > kMaxYieldPointsPerThread) {
    fail("more than " + std::to_string(kMaxYieldPointsPerThread) + " memory accesses by one thread: "
         "a spin-wait that never ends? (the emulation runs blocks one after another, so a block "
         "cannot wait for another)");
  }
  if (++t.steps_since_switch >= kForcedYieldInterval || b.rng.next() < b.yield_threshold) yield();
}

inline std::string thread_name(const BlockRun& b, const Thread& t) {
  return "block " + format_dim(b.block_idx) + " thread " + format_dim(t.idx) + " (warp " +
         std::to_string(t.linear / kWarpSize) + " lane " + std::to_string(t.linear % kWarpSize) +
         ")";
}

// Fails the launch. In a kernel the fiber records the message and is abandoned (the launch then
// throws KernelError on the host); on the host it throws directly.
[[noreturn]] inline void fail(const std::string& message) {
  if (!in_kernel()) throw KernelError("CUDA emulation: " + message);
  BlockRun& b = *tls_block;
  Thread& t = *b.running;
  if (b.error.empty()) b.error = thread_name(b, t) + ": " + message;
  if (t.wait != Wait::kExited) ++b.exited;
  t.wait = Wait::kExited;
  switch_to_scheduler();
  std::abort();  // never resumed
}

// Lists thread ids compactly: "0-15, 17".
inline std::string format_ids(const std::vector<int>& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size();) {
    std::size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!s.empty()) s += ", ";
    s += std::to_string(ids[i]);
    if (j > i) s += "-" + std::to_string(ids[j]);
    i = j + 1;
  }
  return s;
}

// ---- Block barrier ------------------------------------------------------------------------

// Mutation testing: the plain __syncthreads() at (file ending in `file`, `line`) is skipped, to
// show that the tests catch its absence. Set between launches (set_barrier_mutation op).
struct BarrierMutation {
  std::string file;
  unsigned line = 0;
};
inline BarrierMutation& barrier_mutation() {
  static BarrierMutation m;
  return m;
}
inline bool mutated_away(const std::source_location& loc) {
  const BarrierMutation& m = barrier_mutation();
  if (m.line == 0 || m.line != loc.line()) return false;
  const std::string_view file = loc.file_name();
  return file.size() >= m.file.size() && file.substr(file.size() - m.file.size()) == m.file;
}

// __syncthreads(). Every thread of the block must reach the same call site; an exited thread or
// another site is an error.
inline void block_barrier(const char* op, std::source_location loc) {
  BlockRun& b = current_block();
  Thread& t = *b.running;
  if (mutated_away(loc)) return;
  if (b.exited > 0) {
    fail(std::string(op) + " at " + format_site(loc) + " is reached after " +
         std::to_string(b.exited) + " thread(s) of the block exited: a divergent barrier "
         "(every thread of the block must reach it)");
  }
  if (b.barrier_arrived == 0) {
    b.barrier_op = op;
    b.barrier_loc = loc;
  } else if (!same_site(loc, b.barrier_loc) || std::strcmp(op, b.barrier_op) != 0) {
    fail("divergent barrier: " + std::string(op) + " at " + format_site(loc) + " while " +
         std::to_string(b.barrier_arrived) + " thread(s) wait in " + b.barrier_op + " at " +
         format_site(b.barrier_loc));
  }
  ++b.barrier_arrived;
  t.wait = Wait::kBarrier;
  t.wait_op = op;
  t.wait_loc = loc;
  if (b.barrier_arrived == b.num_threads) {
    for (Thread& other : b.threads) {
      if (other.wait != Wait::kBarrier) continue;
      other.wait = Wait::kNone;
      if (&other != &t) b.ready.push_back(other.linear);
    }
    b.barrier_arrived = 0;
  }
  switch_to_scheduler();
}

// ---- Warp collectives ---------------------------------------------------------------------

// Lanes of `warp` that exist (the last warp of a block may be partial).
inline unsigned existing_lanes(const BlockRun& b, int warp) {
  const int n = std::min(kWarpSize, b.num_threads - warp * kWarpSize);
  return n >= kWarpSize ? kFullMask : (1u << n) - 1u;
}

// Blocks until every lane named in `mask` has called the same collective `op` with the same
// mask; then the last lane to arrive runs combine(lanes) (lanes[l]: lane l's Thread, or null
// when l is not in the mask), which writes each lane's `result`. The caller sets its operand
// fields before and reads `result` after.
template <typename Combine>
void warp_collective(const char* op, unsigned mask, std::size_t operand_size,
                     std::source_location loc, Combine&& combine) {
  BlockRun& b = current_block();
  Thread& t = *b.running;
  const int warp = t.linear / kWarpSize, lane = t.linear % kWarpSize;
  const std::string where = std::string(op) + "(mask " + format_mask(mask) + ") at " + format_site(loc);
  if (!((mask >> lane) & 1u)) fail(where + ": the mask does not name the calling lane " + std::to_string(lane));
  const unsigned exist = existing_lanes(b, warp);
  if (mask & ~exist) {
    fail(where + ": the mask names lanes that do not exist (warp " + std::to_string(warp) +
         " of a " + std::to_string(b.num_threads) + "-thread block has lanes " + format_mask(exist) + ")");
  }
  unsigned exited = 0;
  for (int l = 0; l < kWarpSize; ++l) {
    if (((exist >> l) & 1u) && b.threads[warp * kWarpSize + l].wait == Wait::kExited) exited |= 1u << l;
  }
  if (mask & exited) fail(where + ": the mask names lanes that have exited (" + format_mask(mask & exited) + ")");

  // Join the pending collective of the same kind and mask that this lane has not joined yet.
  // Collectives with overlapping masks may be in flight together (lanes 0-15 in a half-warp
  // ballot while 16-31 already wait in __syncwarp); lanes that wait in different collectives
  // forever are reported as a deadlock.
  auto it = std::find_if(b.warp_ops.begin(), b.warp_ops.end(), [&](const WarpOp& o) {
    return o.warp == warp && o.mask == mask && std::strcmp(o.op, op) == 0 &&
           o.operand_size == operand_size && !((o.arrived >> lane) & 1u);
  });
  if (it == b.warp_ops.end()) {
    b.warp_ops.push_back({warp, mask, 0u, op, operand_size, loc});
    it = b.warp_ops.end() - 1;
  }
  it->arrived |= 1u << lane;
  t.wait = Wait::kWarp;
  t.wait_op = op;
  t.wait_loc = loc;
  t.wait_mask = mask;
  if (it->arrived == mask) {
    b.warp_ops.erase(it);
    Thread* lanes[kWarpSize] = {};
    for (int l = 0; l < kWarpSize; ++l) {
      if ((mask >> l) & 1u) lanes[l] = &b.threads[warp * kWarpSize + l];
    }
    combine(lanes);
    for (Thread* other : lanes) {
      if (other == nullptr) continue;
      other->wait = Wait::kNone;
      if (other != &t) b.ready.push_back(other->linear);
    }
  }
  switch_to_scheduler();
}

// ---- Fiber lifecycle and the scheduler ----------------------------------------------------

// Stacks of this OS thread's fibers, reused across blocks and launches.
class StackPool {
 public:
  ~StackPool() {
    for (void* s : stacks_) munmap(s, kStackBytes);
  }
  void* get(std::size_t i) {
    while (stacks_.size() <= i) {
      void* s = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (s == MAP_FAILED) throw std::runtime_error("CUDA emulation: cannot allocate fiber stacks");
      mprotect(s, 4096, PROT_NONE);  // guard page: an overflow faults instead of corrupting
      stacks_.push_back(s);
    }
    return stacks_[i];
  }

 private:
  std::vector<void*> stacks_;
};

inline void thread_exit() {
  BlockRun& b = *tls_block;
  Thread& t = *b.running;
  const int warp = t.linear / kWarpSize, lane = t.linear % kWarpSize;
  if (b.barrier_arrived > 0) {
    fail("exits while " + std::to_string(b.barrier_arrived) + " thread(s) wait in " + b.barrier_op +
         " at " + format_site(b.barrier_loc) + ": a divergent barrier (every thread of the block "
         "must reach it)");
  }
  for (const WarpOp& o : b.warp_ops) {
    if (o.warp == warp && ((o.mask >> lane) & 1u)) {
      fail("exits while lanes " + format_mask(o.arrived) + " wait for it in " + o.op + "(mask " +
           format_mask(o.mask) + ") at " + format_site(o.loc));
    }
  }
  t.wait = Wait::kExited;
  ++b.exited;
  switch_to_scheduler();
  std::abort();  // never resumed
}

inline void thread_entry() {
  std::string error;
  try {
    tls_block->launch->body();
  } catch (const std::exception& e) {
    error = e.what();
  } catch (...) {
    error = "unknown exception";
  }
  // Fail outside the catch block: an exception being handled belongs to the OS thread.
  if (!error.empty()) fail("exception thrown in device code: " + error);
  thread_exit();
}

inline std::string describe_deadlock(const BlockRun& b) {
  // Group the blocked threads by where they wait.
  std::map<std::string, std::vector<int>> groups;
  for (const Thread& t : b.threads) {
    if (t.wait == Wait::kExited || t.wait == Wait::kNone) continue;
    std::string key = t.wait_op;
    if (t.wait == Wait::kWarp) key += "(mask " + format_mask(t.wait_mask) + ")";
    key += " at " + format_site(t.wait_loc);
    groups[key].push_back(t.linear);
  }
  std::string s = "deadlock in block " + format_dim(b.block_idx) + ": no thread can proceed;";
  for (const auto& [where, ids] : groups) s += " threads " + format_ids(ids) + " wait in " + where + ";";
  std::vector<int> gone;
  for (const Thread& t : b.threads) {
    if (t.wait == Wait::kExited) gone.push_back(t.linear);
  }
  if (!gone.empty()) s += " threads " + format_ids(gone) + " have exited;";
  s += " (a barrier or warp collective that not every named thread reaches)";
  return s;
}

// Runs one block to completion (or to its first error) with randomly interleaved fibers.
inline void run_block(BlockRun& b, StackPool& stacks) {
  const Launch& l = *b.launch;
  b.num_threads = static_cast<int>(l.block.x * l.block.y * l.block.z);
  b.threads.assign(b.num_threads, Thread{});
  b.ready.clear();
  for (int i = 0; i < b.num_threads; ++i) {
    Thread& t = b.threads[i];
    t.linear = i;
    t.idx = {static_cast<unsigned>(i % l.block.x), static_cast<unsigned>(i / l.block.x % l.block.y),
             static_cast<unsigned>(i / (l.block.x * l.block.y))};
    getcontext(&t.context);
    t.context.uc_stack.ss_sp = stacks.get(i);
    t.context.uc_stack.ss_size = kStackBytes;
    t.context.uc_link = nullptr;
    makecontext(&t.context, thread_entry, 0);
    b.ready.push_back(i);
  }
  while (b.error.empty()) {
    if (b.ready.empty()) {
      if (b.exited == b.num_threads) break;
      b.error = describe_deadlock(b);
      break;
    }
    const std::size_t k = b.rng.below(b.ready.size());
    const int next = b.ready[k];
    b.ready[k] = b.ready.back();
    b.ready.pop_back();
    b.running = &b.threads[next];
    b.running->steps_since_switch = 0;
    swapcontext(&b.scheduler, &b.running->context);
    Thread* t = b.running;
    b.running = nullptr;
    if (t->wait == Wait::kNone) b.ready.push_back(t->linear);
  }
}

inline void check_config(const Launch& l, const void* kernel) {
  const dim3 g = l.grid, b = l.block;
  const auto bad = [&](const std::string& why) {
    throw KernelError("CUDA emulation: invalid configuration launching " + std::string(l.kernel) +
                      " at " + format_site(l.site) + ": grid " + format_dim(g) + " block " +
                      format_dim(b) + " smem " + std::to_string(l.smem) + ": " + why);
  };
  if (g.x == 0 || g.y == 0 || g.z == 0 || b.x == 0 || b.y == 0 || b.z == 0) bad("a zero dimension");
  if (g.y > 65535 || g.z > 65535 || g.x > 2147483647u) bad("grid too large");
  if (b.x > 1024 || b.y > 1024 || b.z > 64 || std::uint64_t{b.x} * b.y * b.z > 1024) bad("more than 1024 threads per block");
  // (The kernels stay within the 48 KiB a launch gets without cudaFuncSetAttribute's opt-in.)
  if (l.smem > kDefaultSmemLimit) {
    bad("dynamic shared memory above " + std::to_string(kDefaultSmemLimit) + " bytes");
  }
}

// Runs every block of a launch; throws KernelError with the first error.
inline void run_launch(Launch& l, const void* kernel) {
  if (in_kernel()) fail("kernel launch from device code is not supported by the emulation");
  check_config(l, kernel);
  static thread_local StackPool stacks;
  std::vector<uint3> blocks;
  for (unsigned z = 0; z < l.grid.z; ++z)
    for (unsigned y = 0; y < l.grid.y; ++y)
      for (unsigned x = 0; x < l.grid.x; ++x) blocks.push_back({x, y, z});
  Rng rng{l.schedule_seed * 0x100000001b3ull + l.launch_index};
  rng.next();
  for (std::size_t i = blocks.size(); i > 1; --i) std::swap(blocks[i - 1], blocks[rng.below(i)]);
  // Yield probability at yield points: 0 (fibers run until they block: the harshest order for a
  // missing barrier), 1/16, 1/4 or 1/2, by seed.
  static constexpr std::uint64_t kThresholds[4] = {0, ~0ull / 16, ~0ull / 4, ~0ull / 2};
  const std::uint64_t threshold = kThresholds[rng.next() % 4];
  // Dynamic shared memory: poisoned with 0xff bytes (NaN for floating types) for every block.
  std::vector<unsigned char> smem_storage(l.smem + 128);
  auto* smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<std::uintptr_t>(smem_storage.data()) + 127) & ~std::uintptr_t{127});

  BlockRun block;
  block.launch = &l;
  block.dynamic_smem = smem;
  BlockRun* const saved = tls_block;
  tls_block = &block;
  for (const uint3& idx : blocks) {
    block.block_idx = idx;
    block.rng = Rng{rng.next()};
    block.yield_threshold = threshold;
    block.exited = 0;
    block.barrier_arrived = 0;
    block.warp_ops.clear();
    std::memset(smem, 0xff, l.smem);
    run_block(block, stacks);
    if (!block.error.empty()) break;
  }
  tls_block = saved;
  if (!block.error.empty()) {
    throw KernelError("CUDA emulation: kernel " + std::string(l.kernel) + " (launched at " +
                      format_site(l.site) + ", grid " + format_dim(l.grid) + ", block " +
                      format_dim(l.block) + ", schedule seed " + std::to_string(l.schedule_seed) + ", launch " +
                      std::to_string(l.launch_index) + " of the seed's scope): " +
                      block.error);
  }
}

// DIVA_LAUNCH(kernel, grid, block, smem, stream)(args...): converts the arguments to the
// kernel's parameter types once, like a launch; every thread calls the kernel with its own copy.
template <typename... Params>
class Launcher {
 public:
  Launcher(void (*kernel)(Params...), const char* name, dim3 grid, dim3 block, std::size_t smem,
           cudaStream_t, std::source_location site = std::source_location::current())
      : kernel_(kernel), name_(name), grid_(grid), block_(block), smem_(smem), site_(site) {}

  template <typename... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(Params), "kernel launched with the wrong number of arguments");
    const std::tuple<Params...> params(std::forward<Args>(args)...);
    Launch launch{name_, site_, grid_, block_, smem_, tls_schedule.seed, tls_schedule.launches++,
                  [&] { std::apply(kernel_, params); }};
    run_launch(launch, reinterpret_cast<const void*>(kernel_));
  }

 private:
  void (*kernel_)(Params...);
  const char* name_;
  dim3 grid_, block_;
  std::size_t smem_;
  std::source_location site_;
};

}  // namespace diva_ext::emu

// Host API the kernels' launch functions may call.
inline cudaError_t cudaGetLastError() { return cudaSuccess; }  // launch errors throw instead
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "invalid value"; }
