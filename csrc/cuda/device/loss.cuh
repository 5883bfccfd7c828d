// Device code of the fused PaStA loss kernels (soft_infonce, patch_align; forward and backward): the
// per-row / per-column target statistics, the per-tile forward (row and online column log-sum-exp,
// cross terms), the per-tile gradient, and S from the reprojection counts. Host side (the pair loop,
// cuBLAS tiles through ATen) in ../pasta_loss.cu, which documents the math. No ATen here: compiled by
// nvcc and, for the CPU emulation (tests/emulation), by g++ with compat.cuh. Each kernel sits between
// HATCH-EMULATION-KERNEL-BEGIN/END markers (the emulation's negative controls edit copies by them).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "common.cuh"
#include "compat.cuh"
#include "reprojection.cuh"

namespace hatch::cuda {

// Similarities per row tile (1 MB in float32). HATCH_LOSS_TILE_ROWS (the CPU kernels' knob too)
// overrides the rows per tile: tests use it to exercise the online column statistics across many tiles
// on small problems.
constexpr int64_t kTileElems = int64_t(1) << 18;

inline int64_t loss_tile_rows(int64_t P) {
  if (const char* env = std::getenv("HATCH_LOSS_TILE_ROWS")) {
    const long long v = std::atoll(env);
    if (v > 0) return std::min<int64_t>(v, P);
  }
  return std::clamp<int64_t>(kTileElems / P, 1, P);
}

__device__ __forceinline__ float exp_t(float x) { return expf(x); }
__device__ __forceinline__ double exp_t(double x) { return ::exp(x); }
__device__ __forceinline__ float log_t(float x) { return logf(x); }
__device__ __forceinline__ double log_t(double x) { return ::log(x); }

// Row validity compares the row sum of S, taken in float64, with min_overlap in float64: the CPU
// kernels' rule (a float32 sum against a float32 threshold could flip rows near it).
template <typename T>
struct LossConsts {
  T inv_tau_t, inv_tau_p;
  double min_overlap;
};

template <typename T>
LossConsts<T> loss_consts(double tau_t, double tau_p, double min_overlap) {
  return {static_cast<T>(1.0 / tau_t), static_cast<T>(1.0 / tau_p), min_overlap};
}

// ------------------------------------------------------------------------------- target statistics
// HATCH-EMULATION-KERNEL-BEGIN target_row_stats_kernel
// Row i of S: t_lse[i] = logsumexp_j S_ij / tau_t, t_sum[i] = sum_j S_ij (in float64, from S64, the
// float64 S). One warp per row.
template <typename T>
__global__ void target_row_stats_kernel(const T* __restrict__ S, const double* __restrict__ S64,
                                        int64_t P, T inv_tau_t, T* __restrict__ t_lse,
                                        double* __restrict__ t_sum) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= P) return;  // uniform within the warp, so the shuffles below see full warps
  const T* x = S + row * P;
  const double* x64 = S64 + row * P;
  T m = T(-INFINITY);
  double s = 0;
  for (int64_t j = lane; j < P; j += kWarpSize) {
    m = max_of(m, x[j] * inv_tau_t);
    s += x64[j];
  }
  m = warp_max(m);
  s = warp_sum(s);
  T z = T(0);
  for (int64_t j = lane; j < P; j += kWarpSize) z += exp_t(x[j] * inv_tau_t - m);
  z = warp_sum(z);
  if (lane == 0) {
    t_lse[row] = m + log_t(z);
    t_sum[row] = s;
  }
}
// HATCH-EMULATION-KERNEL-END target_row_stats_kernel

// HATCH-EMULATION-KERNEL-BEGIN target_col_stats_kernel
// Column j of S: t_lse[j] = logsumexp_i S_ij / tau_t, t_sum[j] = sum_i S_ij (float64, from S64).
// One thread per column (consecutive threads read consecutive columns: coalesced).
template <typename T>
__global__ void target_col_stats_kernel(const T* __restrict__ S, const double* __restrict__ S64,
                                        int64_t P, T inv_tau_t, T* __restrict__ t_lse,
                                        double* __restrict__ t_sum) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= P) return;
  T m = T(-INFINITY);
  double s = 0;
  for (int64_t i = 0; i < P; ++i) {
    const T v = S[i * P + j];
    m = max_of(m, v * inv_tau_t);
    s += S64[i * P + j];
  }
  T z = T(0);
  for (int64_t i = 0; i < P; ++i) z += exp_t(S[i * P + j] * inv_tau_t - m);
  t_lse[j] = m + log_t(z);
  t_sum[j] = s;
}
// HATCH-EMULATION-KERNEL-END target_col_stats_kernel

// ----------------------------------------------------------------------------- forward, per tile
// HATCH-EMULATION-KERNEL-BEGIN tile_rows_forward_kernel
// Rows [r0, r0 + rows) of the pair (a, c): dots[i, j] = e_hat_a,(r0+i) . e_hat_c,j. Writes, for each
// global row gi: lse_out[gi] = L, valid_out[gi], H_out[gi] = valid ? L - sum_j p_ij s_ij : 0.
// One warp per row.
template <typename T>
__global__ void tile_rows_forward_kernel(const T* __restrict__ dots, int64_t rows, int64_t r0,
                                         int64_t P, const T* __restrict__ S,
                                         const T* __restrict__ t_lse,
                                         const double* __restrict__ t_sum, LossConsts<T> k, T* __restrict__ lse_out,
                                         T* __restrict__ H_out, bool* __restrict__ valid_out) {
  const int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (i >= rows) return;  // warp-uniform
  const int64_t gi = r0 + i;
  const T* d = dots + i * P;
  const T* x = S + gi * P;
  T m = T(-INFINITY);
  for (int64_t j = lane; j < P; j += kWarpSize) m = max_of(m, d[j] * k.inv_tau_p);
  m = warp_max(m);
  const T tl = t_lse[gi];
  T z = T(0), cross = T(0);
  for (int64_t j = lane; j < P; j += kWarpSize) {
    const T s = d[j] * k.inv_tau_p;
    z += exp_t(s - m);
    cross += exp_t(x[j] * k.inv_tau_t - tl) * s;
  }
  z = warp_sum(z);
  cross = warp_sum(cross);
  if (lane == 0) {
    const T L = m + log_t(z);
    const bool valid = t_sum[gi] > k.min_overlap;
    lse_out[gi] = L;
    valid_out[gi] = valid;
    H_out[gi] = valid ? L - cross : T(0);
  }
}
// HATCH-EMULATION-KERNEL-END tile_rows_forward_kernel

// HATCH-EMULATION-KERNEL-BEGIN tile_cols_forward_kernel
// The column side of the same tile, one thread per column j: merges the tile's max and sum of
// exp(s_ij) over its rows into the running (run_max, run_sum), and adds sum_i p'_ji s_ij to run_cross.
template <typename T>
__global__ void tile_cols_forward_kernel(const T* __restrict__ dots, int64_t rows, int64_t r0,
                                         int64_t P, const T* __restrict__ S,
                                         const T* __restrict__ t_lse_col, LossConsts<T> k,
                                         T* __restrict__ run_max, T* __restrict__ run_sum,
                                         T* __restrict__ run_cross) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= P) return;
  T m = T(-INFINITY);
  for (int64_t i = 0; i < rows; ++i) m = max_of(m, dots[i * P + j] * k.inv_tau_p);
  const T tl = t_lse_col[j];
  T z = T(0), cross = T(0);
  for (int64_t i = 0; i < rows; ++i) {
    const T s = dots[i * P + j] * k.inv_tau_p;
    z += exp_t(s - m);
    cross += exp_t(S[(r0 + i) * P + j] * k.inv_tau_t - tl) * s;
  }
  const T old_m = run_max[j];
  const T new_m = max_of(old_m, m);
  // Before the first tile old_m is -inf and the running sum is empty.
  const T old_part = old_m == T(-INFINITY) ? T(0) : run_sum[j] * exp_t(old_m - new_m);
  run_sum[j] = old_part + z * exp_t(m - new_m);
  run_max[j] = new_m;
  run_cross[j] += cross;
}
// HATCH-EMULATION-KERNEL-END tile_cols_forward_kernel

// HATCH-EMULATION-KERNEL-BEGIN cols_finalize_kernel
// After the last tile: the rows (c, a, j) of the pair. One thread per column j.
template <typename T>
__global__ void cols_finalize_kernel(int64_t P, const T* __restrict__ run_max,
                                     const T* __restrict__ run_sum, const T* __restrict__ run_cross,
                                     const double* __restrict__ t_sum_col, double min_overlap,
                                     T* __restrict__ lse_out, T* __restrict__ H_out,
                                     bool* __restrict__ valid_out) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= P) return;
  const T L = run_max[j] + log_t(run_sum[j]);
  const bool valid = t_sum_col[j] > min_overlap;
  lse_out[j] = L;
  valid_out[j] = valid;
  H_out[j] = valid ? L - run_cross[j] : T(0);
}
// HATCH-EMULATION-KERNEL-END cols_finalize_kernel

// ---------------------------------------------------------------------------- backward, per tile
// HATCH-EMULATION-KERNEL-BEGIN tile_grad_kernel
// G[i, j] = dLoss/ds for the tile's rows (unscaled): both the row (a, c, gi) and the row (c, a, j)
// of the same similarity contribute.
template <typename T>
__global__ void tile_grad_kernel(const T* __restrict__ dots, int64_t rows, int64_t r0, int64_t P,
                                 const T* __restrict__ S, const T* __restrict__ t_lse_row,
                                 const double* __restrict__ t_sum_row,
                                 const T* __restrict__ t_lse_col,
                                 const double* __restrict__ t_sum_col, const T* __restrict__ L_row,
                                 const T* __restrict__ L_col, LossConsts<T> k, T* __restrict__ G) {
  const int64_t total = rows * P;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / P, j = idx % P, gi = r0 + i;
    const T s = dots[idx] * k.inv_tau_p;
    const T st = S[gi * P + j] * k.inv_tau_t;
    T g = T(0);
    if (t_sum_row[gi] > k.min_overlap) g += exp_t(s - L_row[gi]) - exp_t(st - t_lse_row[gi]);
    if (t_sum_col[j] > k.min_overlap) g += exp_t(s - L_col[j]) - exp_t(st - t_lse_col[j]);
    G[idx] = g;
  }
}
// HATCH-EMULATION-KERNEL-END tile_grad_kernel

// ---------------------------------------------------------------------------- patch_align targets
// HATCH-EMULATION-KERNEL-BEGIN targets_from_counts_kernel
// S[i, j] = (M_ac[i, j] + M_ca[j, i]) / 2 from the pair's counts; each M is formed exactly as
// patch_overlap forms it (in the depth dtype D), then S is cast to the accumulation dtype T, so the
// fused loss sees the same S as soft_infonce(emb, patch_overlap(...)). S64 = the same S in float64
// from the float64 ratios (the CPU's S), for the row sums of the validity rule.
template <typename D, typename T>
__global__ void targets_from_counts_kernel(const int32_t* __restrict__ cnt_ac,
                                           const int32_t* __restrict__ cnt_ca,
                                           const int32_t* __restrict__ den_a,
                                           const int32_t* __restrict__ den_c, int64_t P,
                                           T* __restrict__ S, double* __restrict__ S64) {
  const int64_t total = P * P;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / P, j = idx % P;
    const D m1 = overlap_ratio<D>(cnt_ac[idx], den_a[i]);
    const D m2 = overlap_ratio<D>(cnt_ca[j * P + i], den_c[j]);
    S[idx] = static_cast<T>((m1 + m2) * D(0.5));
    S64[idx] = 0.5 * overlap_ratio<double>(cnt_ac[idx], den_a[i]) +
               0.5 * overlap_ratio<double>(cnt_ca[j * P + i], den_c[j]);
  }
}
// HATCH-EMULATION-KERNEL-END targets_from_counts_kernel

// ------------------------------------------------------------------- launch configurations (host)
// target_row_stats_kernel, tile_rows_forward_kernel: one warp per row.
inline LaunchCfg per_row_launch(int64_t rows) {
  return {blocks_exact(rows, kWarpsPerBlock), static_cast<unsigned int>(kThreads), 0};
}
// target_col_stats_kernel, tile_cols_forward_kernel, cols_finalize_kernel: one thread per column.
inline LaunchCfg per_column_launch(int64_t P) {
  return {blocks_exact(P, kThreads), static_cast<unsigned int>(kThreads), 0};
}
// tile_grad_kernel (rows x P elements), targets_from_counts_kernel (P x P): grid-stride loops.
inline LaunchCfg elementwise_launch(int64_t n) {
  return {blocks_for(n), static_cast<unsigned int>(kThreads), 0};
}

}  // namespace hatch::cuda
