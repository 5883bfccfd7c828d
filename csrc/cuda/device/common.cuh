// Launch geometry and warp reductions shared by every CUDA kernel of hatch. Device code only (no
// ATen): compiled by nvcc for csrc/cuda/*.cu and by g++ for the CPU emulation (compat.cuh).
#pragma once
#include <algorithm>
#include <cstdint>

#include "../../common/geometry.h"
#include "compat.cuh"

namespace hatch::cuda {

constexpr int kThreads = 256;  // threads per block for every kernel
constexpr int kWarpSize = 32;
constexpr int kWarpsPerBlock = kThreads / kWarpSize;

// Blocks for a grid-stride loop over n items (capped; the kernels loop over the rest).
inline unsigned int blocks_for(int64_t n, int64_t per_block = kThreads) {
  const int64_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(b, int64_t(1) << 20)));
}

// Blocks covering n items exactly (for kernels that are not grid-stride loops).
inline unsigned int blocks_exact(int64_t n, int64_t per_block) {
  const int64_t b = (n + per_block - 1) / per_block;
  HATCH_LAUNCH_CHECK(b >= 1 && b <= INT32_MAX, "CUDA launch of ", b, " blocks is out of range");
  return static_cast<unsigned int>(b);
}

// One launch configuration: <<<grid, block, shmem>>>. The host code of the .cu files and the
// emulation harness take it from the same functions, so both run a kernel the same way.
struct LaunchCfg {
  unsigned int grid;
  unsigned int block;
  size_t shmem;
};

// ---------------------------------------------------------------------------- view-pair indexing
// The unordered view pairs (sample b, views a < c) of a [B, V] batch, enumerated q = b * NP + k with
// NP = V (V - 1) / 2 and k running over a = 0..V-2, c = a+1..V-1 in lexicographic order. The loss
// kernels and the pair-count kernel run over a range of q (a chunk of pairs); these two functions are
// the whole of that indexing, used by the kernels and by the host (so the emulation covers both).
HATCH_HD int64_t pairs_per_sample(int64_t V) { return V * (V - 1) / 2; }

HATCH_HD void decode_pair(int64_t q, int64_t V, int64_t& b, int64_t& a, int64_t& c) {
  const int64_t np = pairs_per_sample(V);
  b = q / np;
  int64_t k = q - b * np;
  a = 0;
  while (k >= V - 1 - a) {  // O(V): called once per pair (pair_info_kernel), not per element
    k -= V - 1 - a;
    ++a;
  }
  c = a + 1 + k;
}

// Inverse of decode_pair, for a < c.
HATCH_HD int64_t pair_index(int64_t b, int64_t a, int64_t c, int64_t V) {
  return b * pairs_per_sample(V) + a * (V - 1) - a * (a - 1) / 2 + (c - a - 1);
}

// HATCH-EMULATION-KERNEL-BEGIN warp_sum
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = kWarpSize / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// HATCH-EMULATION-KERNEL-END warp_sum

template <typename T>
__device__ __forceinline__ T max_of(T a, T b) {
  return a > b ? a : b;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = kWarpSize / 2; o > 0; o >>= 1) v = max_of(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// HATCH-EMULATION-KERNEL-BEGIN warp_aggregated_add
// hist[bin] += 1 for every lane of the warp with bin >= 0, as one shared-memory atomic per distinct
// bin: the lanes holding the same bin elect their lowest lane, which adds their number. Neighbouring
// pixels mostly land in the same cell, so this turns up to 32 colliding atomics into one. Every lane
// of the warp must call it (the loops that do are warp-uniform: blockDim and their trip counts are
// multiples of 32); lanes with nothing to add pass bin = -1.
__device__ __forceinline__ void warp_aggregated_add(int32_t* hist, int32_t bin) {
  const unsigned int peers = __match_any_sync(0xffffffffu, bin);
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  if (bin >= 0 && lane == __ffs(static_cast<int>(peers)) - 1) atomicAdd(&hist[bin], __popc(peers));
}
// HATCH-EMULATION-KERNEL-END warp_aggregated_add

}  // namespace hatch::cuda
