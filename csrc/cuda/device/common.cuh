// Launch geometry and warp reductions shared by every CUDA kernel of hatch. Device code only (no
// ATen): compiled by nvcc for csrc/cuda/*.cu and by g++ for the CPU emulation (compat.cuh).
#pragma once
#include <algorithm>
#include <cstdint>

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

}  // namespace hatch::cuda
