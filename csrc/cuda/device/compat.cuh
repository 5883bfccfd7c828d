// Lets the device code of csrc/cuda/device compile twice: under nvcc (as CUDA) and under a host C++
// compiler for the CPU emulation of the kernels (tests/emulation). Under nvcc this header only defines
// the shared-memory helper macros and the host-side launch check. Under a host compiler it is a small
// CUDA runtime: qualifiers vanish, threadIdx / blockIdx are thread-local, blockDim / gridDim are per
// launch, every CUDA thread of a block is a host thread, __syncthreads is a barrier (flagging blocks in
// which some threads exited before a barrier others reached: divergent, undefined on a GPU), warp
// shuffles and __match_any_sync exchange through per-warp slots (checking a full mask and 32 live
// lanes), __popc / __ffs are the builtins, atomics are
// std::atomic_ref, shared memory is poisoned with 0xAB before each block, and the launch limits of a
// GPU are asserted. Technique: docs/cuda_emulation.md; harness: tests/emulation/harness.cpp.
#pragma once
#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#include <c10/util/Exception.h>

#define HATCH_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#define HATCH_STATIC_SHARED(T, name, n) __shared__ T name[n]
#define HATCH_LAUNCH_CHECK(cond, ...) TORCH_CHECK(cond, "hatch: ", __VA_ARGS__)

#else  // ------------------------------------------------------------------ host emulation (g++)

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// __restrict__ is a GNU keyword: left as is.

#define HATCH_DYNAMIC_SHARED(T, name) T* name = ::hatch_emu::dynamic_shared<T>()
#define HATCH_STATIC_SHARED(T, name, n) T* name = ::hatch_emu::static_shared<T>(n)

namespace hatch_emu {

// Problems found while emulating (divergent barriers, bad shuffles, limit violations): collected and
// printed by the harness, which then fails.
inline std::mutex& report_mutex() {
  static std::mutex m;
  return m;
}
inline std::vector<std::string>& reports() {
  static std::vector<std::string> r;
  return r;
}
inline void report(const std::string& what) {
  std::lock_guard<std::mutex> lk(report_mutex());
  if (reports().size() < 64) reports().push_back(what);
}

template <typename... A>
std::string cat(const A&... a) {
  std::ostringstream s;
  (s << ... << a);
  return s.str();
}

}  // namespace hatch_emu

#define HATCH_LAUNCH_CHECK(cond, ...)                                                \
  do {                                                                               \
    if (!(cond)) throw std::runtime_error(::hatch_emu::cat("hatch: ", __VA_ARGS__)); \
  } while (0)

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  dim3() = default;
  dim3(unsigned int x_, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned int x = 0, y = 0, z = 0;
};

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

template <typename T>
inline T min(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
inline T max(T a, T b) {
  return a < b ? b : a;
}

namespace hatch_emu {

// The negative controls' switch (tests/emulation): a mutated copy of the device code guards each
// planted bug by `mutant() == k`, k from HATCH_EMU_MUTANT, so one build holds all of them. The
// unmutated sources never call it.
inline int mutant() {
  static const int m = [] {
    const char* s = std::getenv("HATCH_EMU_MUTANT");
    return s ? std::atoi(s) : 0;
  }();
  return m;
}

constexpr int kWarp = 32;
constexpr size_t kMaxDynamicShared = 48 * 1024;  // without cudaFuncSetAttribute opt-in
constexpr size_t kStaticSharedArena = 16 * 1024;
constexpr unsigned char kPoison = 0xAB;

// Scheduling of the threads of a block.
//  serial (default): one thread runs at a time, from the highest thread index down, switching only at
//    barriers, shuffles and exits: deterministic, and a missing barrier shows up as a wrong result
//    (the last thread of a block runs its whole phase before thread 0 starts).
//  free (HATCH_EMU_SCHEDULE=free): all threads run concurrently and synchronise only at barriers, so
//    that ThreadSanitizer sees exactly the happens-before of the CUDA program.
enum class Schedule { serial, free };

inline Schedule schedule_from_env() {
  const char* s = std::getenv("HATCH_EMU_SCHEDULE");
  return (s && std::string(s) == "free") ? Schedule::free : Schedule::serial;
}

// State of the block being run: barrier phases of the block and of each warp, and the run token.
class Block {
 public:
  enum State : char { kRunnable, kRunning, kWaiting, kDone };

  void reset(int n, Schedule sched) {
    n_ = n;
    sched_ = sched;
    live_ = n;
    done_ = 0;
    state_.assign(n, kRunnable);
    part_.assign(n, 0);
    cvs_ = std::vector<std::condition_variable>(n);
    waiting_block_.clear();
    const int warps = (n + kWarp - 1) / kWarp;
    warp_live_.assign(warps, 0);
    for (int i = 0; i < n; ++i) ++warp_live_[i / kWarp];
    waiting_warp_.assign(warps, {});
    cur_ = n - 1;
  }

  // Called by thread i before it runs the kernel: in serial mode, waits for the token. In free mode
  // it does nothing (no lock: a lock here would order a late-starting thread after others' accesses
  // and hide races from ThreadSanitizer that no barrier prevents).
  void enter(int i) {
    if (sched_ == Schedule::free) return;
    std::unique_lock<std::mutex> lk(m_);
    cvs_[i].wait(lk, [&] { return cur_ == i; });
    state_[i] = kRunning;
  }

  // A barrier of the block (warp < 0) or of warp `warp`. Returns how many threads took part in the
  // phase that released the caller.
  int sync(int i, int warp) {
    std::unique_lock<std::mutex> lk(m_);
    state_[i] = kWaiting;
    if (warp < 0) {
      waiting_block_.push_back(i);
      if (static_cast<int>(waiting_block_.size()) == live_) release(waiting_block_);
    } else {
      waiting_warp_[warp].push_back(i);
      if (static_cast<int>(waiting_warp_[warp].size()) == warp_live_[warp]) release(waiting_warp_[warp]);
    }
    if (sched_ == Schedule::serial) {
      pass_token();
      cvs_[i].wait(lk, [&] { return cur_ == i; });
    } else {
      cvs_[i].wait(lk, [&] { return state_[i] == kRunnable; });
    }
    state_[i] = kRunning;
    return part_[i];
  }

  // Thread i returned from the kernel: it counts as arrived at every later barrier.
  void exit(int i) {
    std::unique_lock<std::mutex> lk(m_);
    state_[i] = kDone;
    --live_;
    const int w = i / kWarp;
    --warp_live_[w];
    if (!waiting_block_.empty() && static_cast<int>(waiting_block_.size()) == live_) release(waiting_block_);
    if (!waiting_warp_[w].empty() && static_cast<int>(waiting_warp_[w].size()) == warp_live_[w])
      release(waiting_warp_[w]);
    ++done_;
    if (sched_ == Schedule::serial) pass_token();
    if (done_ == n_) all_done_.notify_all();
  }

  void wait_all_done() {
    std::unique_lock<std::mutex> lk(m_);
    all_done_.wait(lk, [&] { return done_ == n_; });
  }

 private:
  void release(std::vector<int>& waiting) {
    const int k = static_cast<int>(waiting.size());
    for (int j : waiting) {
      state_[j] = kRunnable;
      part_[j] = k;
      if (sched_ == Schedule::free) cvs_[j].notify_one();
    }
    waiting.clear();
  }

  // Serial mode: the token goes to the highest-index runnable thread.
  void pass_token() {
    for (int j = n_ - 1; j >= 0; --j) {
      if (state_[j] == kRunnable) {
        cur_ = j;
        cvs_[j].notify_one();
        return;
      }
    }
    cur_ = -1;
    if (done_ != n_) {
      std::fprintf(stderr,
                   "hatch_emu: deadlock in block %u: %d threads wait at barriers that can never "
                   "complete (threads of one block / warp at different barriers)\n",
                   blockIdx.x, n_ - done_);
      std::abort();
    }
  }

  std::mutex m_;
  std::condition_variable all_done_;
  std::vector<std::condition_variable> cvs_;
  std::vector<State> state_;
  std::vector<int> part_;
  std::vector<int> waiting_block_;
  std::vector<std::vector<int> > waiting_warp_;
  std::vector<int> warp_live_;
  int n_ = 0, live_ = 0, done_ = 0, cur_ = -1;
  Schedule sched_ = Schedule::serial;
};

// Per-launch globals (launches run one at a time).
inline Block g_block;
inline std::vector<unsigned char> g_dynamic_shared;
inline std::vector<unsigned char> g_static_shared;
inline std::vector<uint64_t> g_warp_slots;  // kWarp slots per warp
inline thread_local size_t t_static_offset = 0;
inline const char* g_kernel_name = "";

template <typename T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(g_dynamic_shared.data());
}

// Static __shared__ arrays: each thread declares them in the same order, so the same offsets.
template <typename T>
T* static_shared(size_t n) {
  const size_t align = alignof(T) < 16 ? 16 : alignof(T);
  const size_t off = (t_static_offset + align - 1) / align * align;
  t_static_offset = off + n * sizeof(T);
  if (t_static_offset > g_static_shared.size()) {
    std::fprintf(stderr, "hatch_emu: static shared memory arena exhausted\n");
    std::abort();
  }
  return reinterpret_cast<T*>(g_static_shared.data() + off);
}

}  // namespace hatch_emu

inline void __syncthreads() {
  const int i = static_cast<int>(threadIdx.x);
  const int k = hatch_emu::g_block.sync(i, -1);
  if (k != static_cast<int>(blockDim.x))
    hatch_emu::report(hatch_emu::cat("divergent __syncthreads in ", hatch_emu::g_kernel_name, ", block ",
                                     blockIdx.x, ": reached by ", k, " of ", blockDim.x,
                                     " threads (the others had exited)"));
}

template <typename T>
T __shfl_xor_sync(unsigned int mask, T v, int lane_mask) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a type wider than 8 bytes");
  const int i = static_cast<int>(threadIdx.x);
  const int w = i / hatch_emu::kWarp, lane = i % hatch_emu::kWarp;
  if (mask != 0xffffffffu)
    hatch_emu::report(hatch_emu::cat("__shfl_xor_sync in ", hatch_emu::g_kernel_name,
                                     " with a partial mask 0x", std::hex, mask));
  uint64_t* slots = hatch_emu::g_warp_slots.data() + w * hatch_emu::kWarp;
  std::memcpy(&slots[lane], &v, sizeof(T));
  const int k = hatch_emu::g_block.sync(i, w);
  if (k != hatch_emu::kWarp)
    hatch_emu::report(hatch_emu::cat("__shfl_xor_sync in ", hatch_emu::g_kernel_name, ", block ", blockIdx.x,
                                     ", warp ", w, ": only ", k,
                                     " of 32 lanes are live (partial or divergent warp)"));
  T r;
  std::memcpy(&r, &slots[lane ^ (lane_mask & (hatch_emu::kWarp - 1))], sizeof(T));
  hatch_emu::g_block.sync(i, w);
  return r;
}

// __match_any_sync(mask, v): the lanes of the warp whose v equals the caller's, as a bit mask. The
// same exchange as the shuffles (a slot per lane, two warp barriers) and the same checks (full mask,
// 32 live lanes): on a GPU a lane outside the mask or an exited lane is undefined behaviour.
template <typename T>
unsigned int __match_any_sync(unsigned int mask, T v) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "match of a type wider than 8 bytes");
  const int i = static_cast<int>(threadIdx.x);
  const int w = i / hatch_emu::kWarp, lane = i % hatch_emu::kWarp;
  if (mask != 0xffffffffu)
    hatch_emu::report(hatch_emu::cat("__match_any_sync in ", hatch_emu::g_kernel_name,
                                     " with a partial mask 0x", std::hex, mask));
  uint64_t* slots = hatch_emu::g_warp_slots.data() + w * hatch_emu::kWarp;
  uint64_t mine = 0;
  std::memcpy(&mine, &v, sizeof(T));
  slots[lane] = mine;
  const int k = hatch_emu::g_block.sync(i, w);
  if (k != hatch_emu::kWarp)
    hatch_emu::report(hatch_emu::cat("__match_any_sync in ", hatch_emu::g_kernel_name, ", block ", blockIdx.x,
                                     ", warp ", w, ": only ", k,
                                     " of 32 lanes are live (partial or divergent warp)"));
  unsigned int peers = 0;
  for (int l = 0; l < hatch_emu::kWarp; ++l)
    if (slots[l] == mine) peers |= 1u << l;
  hatch_emu::g_block.sync(i, w);
  return peers;
}

inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }

// Relaxed, as CUDA's atomicAdd: no ordering with other memory, so ThreadSanitizer does not take an
// atomic for a barrier.
template <typename T>
T atomicAdd(T* address, T val) {
  return std::atomic_ref<T>(*address).fetch_add(val, std::memory_order_relaxed);
}

namespace hatch_emu {

// kernel<<<grid, block, shmem>>>(args...): the blocks one after another, each as block.x host threads
// (created once per launch and reused for every block).
template <typename... KArgs, typename... Args>
void launch(const char* name, dim3 grid, dim3 block, size_t shmem, void (*kernel)(KArgs...), Args&&... args) {
  if (block.y != 1 || block.z != 1) throw std::runtime_error("emulation: only 1-D blocks");
  if (block.x < 1 || block.x > 1024)
    throw std::runtime_error(cat(name, ": blockDim.x = ", block.x, " (must be 1..1024)"));
  if (grid.x < 1 || grid.x > 2147483647u || grid.y < 1 || grid.y > 65535 || grid.z < 1 || grid.z > 65535)
    throw std::runtime_error(cat(name, ": gridDim (", grid.x, ", ", grid.y, ", ", grid.z, ") out of range"));
  if (shmem > kMaxDynamicShared)
    throw std::runtime_error(cat(name, ": ", shmem, " bytes of dynamic shared memory (> 48 KiB)"));
  g_kernel_name = name;
  blockDim = block;
  gridDim = grid;
  const int n = static_cast<int>(block.x);
  const Schedule sched = schedule_from_env();
  g_dynamic_shared.assign(shmem, kPoison);
  g_static_shared.assign(kStaticSharedArena, kPoison);
  g_warp_slots.assign(static_cast<size_t>((n + kWarp - 1) / kWarp) * kWarp, 0);

  // One tuple of arguments, copied as a kernel launch copies them (by value).
  std::function<void()> body = [&, kernel]() { kernel(args...); };

  std::mutex m;
  std::condition_variable cv;
  long generation = 0;
  bool stop = false;
  unsigned int bx = 0, by = 0, bz = 0;
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      long seen = 0;
      for (;;) {
        {
          std::unique_lock<std::mutex> lk(m);
          cv.wait(lk, [&] { return stop || generation != seen; });
          if (stop) return;
          seen = generation;
          blockIdx.x = bx;
          blockIdx.y = by;
          blockIdx.z = bz;
        }
        threadIdx.x = static_cast<unsigned int>(i);
        threadIdx.y = threadIdx.z = 0;
        t_static_offset = 0;
        g_block.enter(i);
        body();
        g_block.exit(i);
      }
    });
  }
  for (unsigned int z = 0; z < grid.z; ++z) {
    for (unsigned int y = 0; y < grid.y; ++y) {
      for (unsigned int x = 0; x < grid.x; ++x) {
        std::fill(g_dynamic_shared.begin(), g_dynamic_shared.end(), kPoison);
        std::fill(g_static_shared.begin(), g_static_shared.end(), kPoison);
        g_block.reset(n, sched);
        {
          std::lock_guard<std::mutex> lk(m);
          bx = x;
          by = y;
          bz = z;
          ++generation;
        }
        cv.notify_all();
        g_block.wait_all_done();
      }
    }
  }
  {
    std::lock_guard<std::mutex> lk(m);
    stop = true;
  }
  cv.notify_all();
  for (auto& t : threads) t.join();
}

}  // namespace hatch_emu

#endif  // host emulation
