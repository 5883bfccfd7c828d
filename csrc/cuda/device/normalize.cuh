// Device code of the embedding normalisation ê = e / max(|e|, eps) and its backward (the math:
// common/normalize.h, shared with the CPU kernels), one warp per row of [rows, D]: each lane takes the
// elements k = lane, lane + 32, ... and the row's sums are warp sums. Host side: ../launch.cuh. No ATen
// here: compiled by nvcc and, for the CPU emulation (tests/emulation), by g++ with compat.cuh.
#pragma once
#include <cstdint>

#include "../../common/normalize.h"
#include "common.cuh"
#include "compat.cuh"

namespace hatch::cuda {

// HATCH-EMULATION-KERNEL-BEGIN normalize_rows_kernel
// e_hat[r] = e[r] / max(|e[r]|, eps) and norm[r] = |e[r]| for the rows r of e [rows, D] (T: the
// accumulation dtype). One warp per row.
template <typename T>
__global__ void normalize_rows_kernel(const T* __restrict__ e, int64_t rows, int64_t D, T* __restrict__ e_hat,
                                      T* __restrict__ norm) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= rows) return;  // uniform within the warp, so the shuffles below see full warps
  const T n = row_norm(warp_sum(sum_squares<T>(e + row * D, D, lane, kWarpSize)));
  normalize_row(e + row * D, n, e_hat + row * D, D, lane, kWarpSize);
  if (lane == 0) norm[row] = n;
}
// HATCH-EMULATION-KERNEL-END normalize_rows_kernel

// HATCH-EMULATION-KERNEL-BEGIN normalize_backward_kernel
// In place on g [rows, D], the upstream gradient of e_hat: g[r] <- the gradient of e[r] through the
// normalisation (e_hat and norm from normalize_rows_kernel). Each lane reads and writes only its own
// elements of the row, so in place is race-free. One warp per row.
template <typename T>
__global__ void normalize_backward_kernel(T* g, const T* __restrict__ e_hat, const T* __restrict__ norm,
                                          int64_t rows, int64_t D) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= rows) return;  // warp-uniform
  T* gr = g + row * D;
  const T* er = e_hat + row * D;
  const T dot = warp_sum(dot_part(gr, er, D, lane, kWarpSize));
  normalize_backward_row(gr, er, dot, norm[row], T(1), gr, D, lane, kWarpSize);
}
// HATCH-EMULATION-KERNEL-END normalize_backward_kernel

// Both kernels: one warp per row.
inline LaunchCfg normalize_launch(int64_t rows) {
  return {blocks_exact(rows, kWarpsPerBlock), static_cast<unsigned int>(kThreads), 0};
}

}  // namespace hatch::cuda
