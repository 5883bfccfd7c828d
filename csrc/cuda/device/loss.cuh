// Device code of the fused PaStA loss kernels (soft_infonce, patch_align; forward and backward), run
// over a chunk of view pairs at once: the pairs' info and targets S, the per-row / per-column target
// statistics, the per-tile forward (row and online column log-sum-exp, cross terms), the per-tile
// gradient and the deterministic scatter of the pairs' gradients. Host side (the chunk loop, batched
// cuBLAS GEMMs through ATen) in ../pasta_loss.cu, which documents the math; the plan (chunks, tiles)
// is here, so the emulation runs the same one. No ATen here: compiled by nvcc and, for the CPU
// emulation (tests/emulation), by g++ with compat.cuh. Each kernel sits between
// HATCH-EMULATION-KERNEL-BEGIN/END markers (the emulation's negative controls edit copies by them).
//
// Layouts, for a chunk of n pairs q = 0..n-1 (global pair q0 + q, common.cuh: decode_pair):
//   info [4, n] int64: b V + a, b V + c, and the offsets of the rows (b, a, c, :) and (b, c, a, :)
//        in the [B, V, V, P] outputs
//   S [n, P, P] (accumulation dtype T), S64 [n, P, P] float64; per-pair vectors [n, P]
//   dots, G [n, rows, P] for the row tile [r0, r0 + rows) of every pair of the chunk
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "../../common/loss_tiles.h"
#include "common.cuh"
#include "compat.cuh"
#include "reprojection.cuh"

namespace hatch::cuda {

// Rows per slab of the two-stage column statistics: each (pair, slab, column) is one thread of the
// partial kernel; the merge kernel combines a column's slabs in slab order (deterministic).
constexpr int64_t kColSlabRows = 32;
inline int64_t col_slabs(int64_t rows) { return (rows + kColSlabRows - 1) / kColSlabRows; }

// Device memory one chunk may hold for its pairs (besides the embeddings, their gradient and the
// outputs, which are O(B V P D) and O(B V^2 P) whatever the chunking).
constexpr int64_t kLossChunkBytes = int64_t(32) << 20;

// The plan of one loss call. Pairs per chunk = clamp(kLossChunkBytes / bytes_per_pair, 1, pairs)
// (HATCH_LOSS_CHUNK_PAIRS overrides it, for tests), so the number of kernel launches is
// chunks x (launches per chunk, fixed by P and the tiling) + a constant: independent of B and V as
// long as the pairs fit one chunk (all typical sizes: P = 16, D = 2048 takes ~60 pairs in 32 MiB;
// P = 1024 takes one pair per chunk, as before, but with the launches shared by nothing).
struct LossPlan {
  int64_t pairs, per_chunk, chunks;
  int64_t tile_rows, tiles;
  int64_t bytes_per_pair;
};

inline LossPlan loss_plan(int64_t B, int64_t V, int64_t P, int64_t D, int64_t acc_bytes, bool from_depth) {
  LossPlan p{};
  p.pairs = B * pairs_per_sample(V);
  p.tile_rows = loss_tile_rows(P, LossBackend::kCuda);  // common/loss_tiles.h
  p.tiles = (P + p.tile_rows - 1) / p.tile_rows;
  p.bytes_per_pair = P * P * (acc_bytes + 8)                       // S, S64
                     + (from_depth ? 2 * P * P * 4 : 0)            // counts, both directions
                     + 4 * P * D * acc_bytes                       // gathered e_hat, their gradients
                     + 2 * p.tile_rows * P * acc_bytes             // dots, G
                     + col_slabs(P) * P * (2 * acc_bytes + 8)      // target column partials
                     + col_slabs(p.tile_rows) * P * 3 * acc_bytes  // tile column partials
                     + 16 * P * 8 + 32;                            // per-pair vectors, info
  p.per_chunk = std::clamp<int64_t>(kLossChunkBytes / p.bytes_per_pair, 1, std::max<int64_t>(p.pairs, 1));
  if (const char* env = std::getenv("HATCH_LOSS_CHUNK_PAIRS")) {
    const long long v = std::atoll(env);
    if (v > 0) p.per_chunk = std::min<int64_t>(v, std::max<int64_t>(p.pairs, 1));
  }
  p.chunks = (p.pairs + p.per_chunk - 1) / p.per_chunk;
  return p;
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

// A pair's entries of info [4, n].
struct PairInfo {
  int64_t ba, bc, off_ac, off_ca;
};
__device__ __forceinline__ PairInfo pair_info(const int64_t* info, int64_t n, int64_t q) {
  return {info[q], info[n + q], info[2 * n + q], info[3 * n + q]};
}

// HATCH-EMULATION-KERNEL-BEGIN lse_merge
// (M, Z) <- the log-sum-exp state of the union of two sets given as (max, sum of exp(x - max));
// M = -inf is the empty set.
template <typename T>
__device__ __forceinline__ void lse_merge(T& M, T& Z, T m, T z) {
  const T nm = max_of(M, m);
  if (nm == T(-INFINITY)) return;
  Z = (M == T(-INFINITY) ? T(0) : Z * exp_t(M - nm)) + (m == T(-INFINITY) ? T(0) : z * exp_t(m - nm));
  M = nm;
}
// HATCH-EMULATION-KERNEL-END lse_merge

// HATCH-EMULATION-KERNEL-BEGIN pair_info_kernel
// info for the pairs q0 .. q0 + n - 1 of a batch of V views (one thread per pair). static, as
// reprojection.cuh: pair_projections_kernel (a non-template kernel in a header).
static __global__ void pair_info_kernel(int64_t q0, int64_t n, int64_t V, int64_t P,
                                        int64_t* __restrict__ info) {
  const int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (q >= n) return;
  int64_t b, a, c;
  decode_pair(q0 + q, V, b, a, c);
  info[q] = b * V + a;
  info[n + q] = b * V + c;
  info[2 * n + q] = ((b * V + a) * V + c) * P;
  info[3 * n + q] = ((b * V + c) * V + a) * P;
}
// HATCH-EMULATION-KERNEL-END pair_info_kernel

// ------------------------------------------------------------------------------- targets S
// HATCH-EMULATION-KERNEL-BEGIN targets_from_overlap_kernel
// soft_infonce: S[q, i, j] = (M_ac[i, j] + M_ca[j, i]) / 2 from overlap [B, V, V, P, P] (dtype D),
// in D (as the reference forms it), then cast to T; S64 = the two halves in float64, added (the CPU's
// S, for the validity rule).
template <typename D, typename T>
__global__ void targets_from_overlap_kernel(const D* __restrict__ overlap, int64_t V, int64_t P, int64_t n,
                                            const int64_t* __restrict__ info, T* __restrict__ S,
                                            double* __restrict__ S64) {
  const int64_t PP = P * P, total = n * PP;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t q = idx / PP, ij = idx - q * PP, i = ij / P, j = ij - i * P;
    const PairInfo pi = pair_info(info, n, q);
    const int64_t a = pi.ba % V, c = pi.bc % V;
    const D m1 = overlap[(pi.ba * V + c) * PP + ij];
    const D m2 = overlap[(pi.bc * V + a) * PP + j * P + i];
    S[idx] = static_cast<T>(static_cast<D>(m1 + m2) * D(0.5));
    S64[idx] = static_cast<double>(m1) * 0.5 + static_cast<double>(m2) * 0.5;
  }
}
// HATCH-EMULATION-KERNEL-END targets_from_overlap_kernel

// HATCH-EMULATION-KERNEL-BEGIN targets_from_counts_kernel
// patch_align: S[q, i, j] = (M_ac[i, j] + M_ca[j, i]) / 2 from the chunk's counts [n, 2, P, P] and the
// per-cell denominators den [B, V, P]; each M is formed exactly as patch_overlap forms it (in the depth
// dtype D), then S is cast to T, so the fused loss sees the same S as soft_infonce(emb,
// patch_overlap(...)). S64 = the same S in float64 from the float64 ratios (the CPU's S).
template <typename D, typename T>
__global__ void targets_from_counts_kernel(const int32_t* __restrict__ counts,
                                           const int32_t* __restrict__ den, int64_t P, int64_t n,
                                           const int64_t* __restrict__ info, T* __restrict__ S,
                                           double* __restrict__ S64) {
  const int64_t PP = P * P, total = n * PP;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t q = idx / PP, ij = idx - q * PP, i = ij / P, j = ij - i * P;
    const PairInfo pi = pair_info(info, n, q);
    const int32_t c1 = counts[(2 * q) * PP + ij], c2 = counts[(2 * q + 1) * PP + j * P + i];
    const int32_t d1 = den[pi.ba * P + i], d2 = den[pi.bc * P + j];
    const D m1 = overlap_ratio<D>(c1, d1);
    const D m2 = overlap_ratio<D>(c2, d2);
    S[idx] = static_cast<T>((m1 + m2) * D(0.5));
    S64[idx] = 0.5 * overlap_ratio<double>(c1, d1) + 0.5 * overlap_ratio<double>(c2, d2);
  }
}
// HATCH-EMULATION-KERNEL-END targets_from_counts_kernel

// ------------------------------------------------------------------------------- target statistics
// HATCH-EMULATION-KERNEL-BEGIN target_row_stats_kernel
// Row r = q P + i of S: t_lse[r] = logsumexp_j S_ij / tau_t, t_sum[r] = sum_j S_ij (in float64, from
// S64). One warp per row.
template <typename T>
__global__ void target_row_stats_kernel(const T* __restrict__ S, const double* __restrict__ S64, int64_t rows,
                                        int64_t P, T inv_tau_t, T* __restrict__ t_lse,
                                        double* __restrict__ t_sum) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= rows) return;  // uniform within the warp, so the shuffles below see full warps
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

// HATCH-EMULATION-KERNEL-BEGIN target_col_partial_kernel
// Column statistics, stage 1: thread (q, slab, j) (j fastest: coalesced) takes the rows [slab L,
// min(P, (slab + 1) L)) of column j of S[q] (L = kColSlabRows): max and sum of exp(S_ij / tau_t - max)
// and the float64 sum of S64. Partials [n, slabs, P].
template <typename T>
__global__ void target_col_partial_kernel(const T* __restrict__ S, const double* __restrict__ S64, int64_t n,
                                          int64_t P, int64_t slabs, T inv_tau_t, T* __restrict__ part_m,
                                          T* __restrict__ part_z, double* __restrict__ part_s) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * slabs * P) return;
  const int64_t j = idx % P, slab = (idx / P) % slabs, q = idx / (P * slabs);
  const int64_t i0 = slab * kColSlabRows, i1 = min(P, i0 + kColSlabRows);
  const T* x = S + q * P * P + j;
  const double* x64 = S64 + q * P * P + j;
  T m = T(-INFINITY);
  double s = 0;
  for (int64_t i = i0; i < i1; ++i) {
    m = max_of(m, x[i * P] * inv_tau_t);
    s += x64[i * P];
  }
  T z = T(0);
  for (int64_t i = i0; i < i1; ++i) z += exp_t(x[i * P] * inv_tau_t - m);
  part_m[idx] = m;
  part_z[idx] = z;
  part_s[idx] = s;
}
// HATCH-EMULATION-KERNEL-END target_col_partial_kernel

// HATCH-EMULATION-KERNEL-BEGIN target_col_merge_kernel
// Stage 2, thread (q, j): the slabs of column j merged in slab order: t_lse = logsumexp_i S_ij /
// tau_t, t_sum = sum_i S64_ij ([n, P]).
template <typename T>
__global__ void target_col_merge_kernel(const T* __restrict__ part_m, const T* __restrict__ part_z,
                                        const double* __restrict__ part_s, int64_t n, int64_t P,
                                        int64_t slabs, T* __restrict__ t_lse, double* __restrict__ t_sum) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * P) return;
  const int64_t j = idx % P, q = idx / P;
  T M = T(-INFINITY), Z = T(0);
  double s = 0;
  for (int64_t k = 0; k < slabs; ++k) {
    const int64_t p = (q * slabs + k) * P + j;
    lse_merge(M, Z, part_m[p], part_z[p]);
    s += part_s[p];
  }
  t_lse[idx] = M + log_t(Z);
  t_sum[idx] = s;
}
// HATCH-EMULATION-KERNEL-END target_col_merge_kernel

// ----------------------------------------------------------------------------- forward, per tile
// HATCH-EMULATION-KERNEL-BEGIN tile_rows_forward_kernel
// Rows [r0, r0 + rows) of every pair q of the chunk: dots[q, i, j] = e_hat_a,(r0+i) . e_hat_c,j.
// Writes, for each global row gi of (b, a, c): lse_out = L, valid_out, H_out = valid ? L - sum_j p_ij
// s_ij : 0. One warp per (q, i).
template <typename T>
__global__ void tile_rows_forward_kernel(const T* __restrict__ dots, int64_t n, int64_t rows, int64_t r0,
                                         int64_t P, const T* __restrict__ S, const T* __restrict__ t_lse,
                                         const double* __restrict__ t_sum, const int64_t* __restrict__ info,
                                         LossConsts<T> k, T* __restrict__ lse_out, T* __restrict__ H_out,
                                         bool* __restrict__ valid_out) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= n * rows) return;  // warp-uniform
  const int64_t q = row / rows, i = row - q * rows, gi = r0 + i;
  const T* d = dots + row * P;
  const T* x = S + (q * P + gi) * P;
  T m = T(-INFINITY);
  for (int64_t j = lane; j < P; j += kWarpSize) m = max_of(m, d[j] * k.inv_tau_p);
  m = warp_max(m);
  const T tl = t_lse[q * P + gi];
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
    const bool valid = t_sum[q * P + gi] > k.min_overlap;
    const int64_t o = pair_info(info, n, q).off_ac + gi;
    lse_out[o] = L;
    valid_out[o] = valid;
    H_out[o] = valid ? L - cross : T(0);
  }
}
// HATCH-EMULATION-KERNEL-END tile_rows_forward_kernel

// HATCH-EMULATION-KERNEL-BEGIN tile_cols_partial_kernel
// The column side of the same tile, stage 1: thread (q, slab, j) takes the tile rows [slab L, min(rows,
// (slab + 1) L)): max and sum of exp(s_ij - max), and sum_i p'_ji s_ij. Partials [n, slabs, P].
template <typename T>
__global__ void tile_cols_partial_kernel(const T* __restrict__ dots, int64_t n, int64_t rows, int64_t r0,
                                         int64_t P, int64_t slabs, const T* __restrict__ S,
                                         const T* __restrict__ t_lse_col, LossConsts<T> k,
                                         T* __restrict__ part_m, T* __restrict__ part_z,
                                         T* __restrict__ part_x) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * slabs * P) return;
  const int64_t j = idx % P, slab = (idx / P) % slabs, q = idx / (P * slabs);
  const int64_t i0 = slab * kColSlabRows, i1 = min(rows, i0 + kColSlabRows);
  const T* d = dots + q * rows * P + j;
  const T* x = S + (q * P + r0) * P + j;
  T m = T(-INFINITY);
  for (int64_t i = i0; i < i1; ++i) m = max_of(m, d[i * P] * k.inv_tau_p);
  const T tl = t_lse_col[q * P + j];
  T z = T(0), cross = T(0);
  for (int64_t i = i0; i < i1; ++i) {
    const T s = d[i * P] * k.inv_tau_p;
    z += exp_t(s - m);
    cross += exp_t(x[i * P] * k.inv_tau_t - tl) * s;
  }
  part_m[idx] = m;
  part_z[idx] = z;
  part_x[idx] = cross;
}
// HATCH-EMULATION-KERNEL-END tile_cols_partial_kernel

// HATCH-EMULATION-KERNEL-BEGIN tile_cols_merge_kernel
// Stage 2, thread (q, j): merges the tile's slabs, in order, into the running (run_m, run_z, run_x)
// of the column (ignored on the first tile). After the last tile it writes the rows (c, a, j) of the
// pair instead: lse_out = L, valid_out, H_out = valid ? L - sum_i p'_ji s_ij : 0.
template <typename T>
__global__ void tile_cols_merge_kernel(const T* __restrict__ part_m, const T* __restrict__ part_z,
                                       const T* __restrict__ part_x, int64_t n, int64_t P, int64_t slabs,
                                       bool first, bool last, T* __restrict__ run_m, T* __restrict__ run_z,
                                       T* __restrict__ run_x, const double* __restrict__ t_sum_col,
                                       const int64_t* __restrict__ info, double min_overlap,
                                       T* __restrict__ lse_out, T* __restrict__ H_out,
                                       bool* __restrict__ valid_out) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * P) return;
  const int64_t j = idx % P, q = idx / P;
  T M = first ? T(-INFINITY) : run_m[idx];
  T Z = first ? T(0) : run_z[idx];
  T X = first ? T(0) : run_x[idx];
  for (int64_t s = 0; s < slabs; ++s) {
    const int64_t p = (q * slabs + s) * P + j;
    lse_merge(M, Z, part_m[p], part_z[p]);
    X += part_x[p];
  }
  if (!last) {
    run_m[idx] = M;
    run_z[idx] = Z;
    run_x[idx] = X;
    return;
  }
  const T L = M + log_t(Z);
  const bool valid = t_sum_col[idx] > min_overlap;
  const int64_t o = pair_info(info, n, q).off_ca + j;
  lse_out[o] = L;
  valid_out[o] = valid;
  H_out[o] = valid ? L - X : T(0);
}
// HATCH-EMULATION-KERNEL-END tile_cols_merge_kernel

// ---------------------------------------------------------------------------- backward, per tile
// HATCH-EMULATION-KERNEL-BEGIN tile_grad_kernel
// G[q, i, j] = dLoss/ds for the tile's rows (unscaled): both the row (a, c, gi) and the row (c, a, j)
// of the same similarity contribute. L: the forward's row_lse [B, V, V, P].
template <typename T>
__global__ void tile_grad_kernel(const T* __restrict__ dots, int64_t n, int64_t rows, int64_t r0, int64_t P,
                                 const T* __restrict__ S, const T* __restrict__ t_lse_row,
                                 const double* __restrict__ t_sum_row, const T* __restrict__ t_lse_col,
                                 const double* __restrict__ t_sum_col, const T* __restrict__ L,
                                 const int64_t* __restrict__ info, LossConsts<T> k, T* __restrict__ G) {
  const int64_t total = n * rows * P;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = idx % P, qi = idx / P, q = qi / rows, gi = r0 + (qi - q * rows);
    const int64_t rq = q * P + gi, cq = q * P + j;
    const PairInfo pi = pair_info(info, n, q);
    const T s = dots[idx] * k.inv_tau_p;
    const T st = S[rq * P + j] * k.inv_tau_t;
    T g = T(0);
    if (t_sum_row[rq] > k.min_overlap) g += exp_t(s - L[pi.off_ac + gi]) - exp_t(st - t_lse_row[rq]);
    if (t_sum_col[cq] > k.min_overlap) g += exp_t(s - L[pi.off_ca + j]) - exp_t(st - t_lse_col[cq]);
    G[idx] = g;
  }
}
// HATCH-EMULATION-KERNEL-END tile_grad_kernel

// HATCH-EMULATION-KERNEL-BEGIN scatter_grad_kernel
// g_hat[b, v] += the chunk's gradients of the pairs that hold view v of sample b: ga[q] where v is the
// pair's first view, gc[q] where it is the second (ga, gc [n, P, D]; g_hat [B, V, P, D]). One thread
// per element of the samples b_lo .. b_lo + nb - 1 (those the chunk touches), adding its partners u
// in increasing order: deterministic, no atomics.
template <typename T>
__global__ void scatter_grad_kernel(const T* __restrict__ ga, const T* __restrict__ gc, int64_t q0, int64_t n,
                                    int64_t V, int64_t PD, int64_t b_lo, int64_t nb, T* __restrict__ g_hat) {
  const int64_t total = nb * V * PD;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t e = idx % PD, bv = idx / PD, v = bv % V, b = b_lo + bv / V;
    T acc = g_hat[b * V * PD + v * PD + e];
    for (int64_t u = 0; u < V; ++u) {
      if (u == v) continue;
      const int64_t q = pair_index(b, min(u, v), max(u, v), V) - q0;
      if (q < 0 || q >= n) continue;
      acc += (v < u ? ga : gc)[q * PD + e];
    }
    g_hat[b * V * PD + v * PD + e] = acc;
  }
}
// HATCH-EMULATION-KERNEL-END scatter_grad_kernel

// ------------------------------------------------------------------- launch configurations (host)
// target_row_stats_kernel, tile_rows_forward_kernel: one warp per row.
inline LaunchCfg per_row_launch(int64_t rows) {
  return {blocks_exact(rows, kWarpsPerBlock), static_cast<unsigned int>(kThreads), 0};
}
// One thread per item (pair info, column partials and merges).
inline LaunchCfg per_item_launch(int64_t items) {
  return {blocks_exact(items, kThreads), static_cast<unsigned int>(kThreads), 0};
}
// tile_grad_kernel, the targets kernels, scatter_grad_kernel: grid-stride loops.
inline LaunchCfg elementwise_launch(int64_t n) {
  return {blocks_for(n), static_cast<unsigned int>(kThreads), 0};
}

}  // namespace hatch::cuda
