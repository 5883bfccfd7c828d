// The row-tile rule of the fused PaStA loss (soft_infonce, patch_align), one for both backends: the
// similarities s = ê_a ê_cᵀ / τ_p of a view pair are formed a tile of rows of ê_a at a time (the CPU
// kernels: cpu/pair_loss.cpp; the CUDA plan: cuda/device/loss.cuh: loss_plan, also run by the CPU
// emulation). Header-only, no ATen.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>

namespace hatch {

enum class LossBackend { kCpu, kCuda };

// Rows of ê_a per similarity tile for P cells per view, in [1, P]:
//   CPU:  min(P, max(64, min(256, 2^20 / P))). 256 rows (at most 2^20 similarities, 4 MiB in float32):
//         measured at P = 1024, D = 1024 on 2 cores, 128 / 256 / 1024 rows ran within 4% of each other;
//         256 keeps the tile in cache and the GEMM efficient.
//   CUDA: clamp(2^18 / P, 1, P): 2^18 similarities per tile and pair (1 MiB in float32), for every pair
//         of a chunk at once.
// The environment variable HATCH_LOSS_TILE_ROWS = n >= 1 overrides both with min(n, P): a tuning and
// testing knob (tests use it to run the online column statistics across many tiles on small problems).
inline int64_t loss_tile_rows(int64_t P, LossBackend backend) {
  P = std::max<int64_t>(P, 1);
  if (const char* env = std::getenv("HATCH_LOSS_TILE_ROWS")) {
    const long long v = std::atoll(env);
    if (v >= 1) return std::min<int64_t>(v, P);
  }
  if (backend == LossBackend::kCpu)
    return std::min<int64_t>(P, std::max<int64_t>(64, std::min<int64_t>(256, (int64_t{1} << 20) / P)));
  return std::clamp<int64_t>((int64_t{1} << 18) / P, 1, P);
}

}  // namespace hatch
