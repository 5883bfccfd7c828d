// soft_infonce and patch_align (forward and backward) on CUDA.
//
// Per sample b and unordered view pair a < c (the same-view blocks and the blocks across samples are
// never formed), with e_hat the normalised embeddings in the accumulation dtype T (float32; float64
// for float64 embeddings):
//   S = (M_ac + M_ca^T) / 2                                    [P, P], one pair at a time
//   row (a, c, i) valid iff sum_j S_ij > min_overlap,  row (c, a, j) valid iff sum_i S_ij > min_overlap
//   p_ij = softmax_j(S_ij / tau_t),  p'_ji = softmax_i(S_ij / tau_t)
//   s_ij = e_hat_a,i . e_hat_c,j / tau_p, formed in row tiles (one cuBLAS GEMM per tile)
//   L_i  = logsumexp_j s_ij  (complete inside a tile: one warp per row)
//   L'_j = logsumexp_i s_ij  (online over the row tiles: running max and sum, one thread per column)
//   H_i = L_i - sum_j p_ij s_ij,  H'_j = L'_j - sum_i p'_ji s_ij
//   loss = sum of H over valid rows / max(num_valid, 1)   (exactly 0 with zero gradient when none)
// Backward recomputes S, the targets and the tiles, with L and L' read from the saved row_lse:
//   G_ij = valid_i (exp(s_ij - L_i) - p_ij) + valid'_j (exp(s_ij - L'_j) - p'_ji)
//   g_a += G e_hat_c,  g_c += G^T e_hat_a                      (cuBLAS through at::addmm_)
// scaled by grad_loss / (tau_p num_valid), then the normalisation backward.
//
// Memory: besides the inputs and outputs, O(B V P D) for e_hat (and its gradient) plus O(P^2) per
// pair in flight (S, one tile of at most kTileElems similarities, and for patch_align the pair's
// counts): the overlap and the similarity of all pairs are never held at once. patch_align recomputes
// S from the depth maps per pair (the reprojection kernels of reprojection.cuh) in both passes.
// Everything stays on the device: no host synchronisation inside the pair loop; the division by
// num_valid is a device op. No floating-point atomics anywhere, so results are run-to-run identical.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdlib>
#include <limits>

#include "../common/checks.h"
#include "../common/geometry.h"
#include "kernels.h"
#include "launch.cuh"
#include "reprojection.cuh"

namespace hatch::cuda {
namespace {

// Similarities per row tile (1 MB in float32). HATCH_LOSS_TILE_ROWS (the CPU kernels' knob too)
// overrides the rows per tile: tests use it to exercise the online column statistics across many tiles
// on small problems.
constexpr int64_t kTileElems = int64_t(1) << 18;

int64_t loss_tile_rows(int64_t P) {
  if (const char* env = std::getenv("HATCH_LOSS_TILE_ROWS")) {
    const long long v = std::atoll(env);
    if (v > 0) return std::min<int64_t>(v, P);
  }
  return std::clamp<int64_t>(kTileElems / P, 1, P);
}

// Blocks covering n items exactly (for kernels that are not grid-stride loops).
unsigned int blocks_exact(int64_t n, int64_t per_block) {
  const int64_t b = (n + per_block - 1) / per_block;
  TORCH_CHECK(b >= 1 && b <= std::numeric_limits<int32_t>::max(), "hatch: CUDA launch of ", b,
              " blocks is out of range");
  return static_cast<unsigned int>(b);
}

__device__ __forceinline__ float exp_t(float x) { return expf(x); }
__device__ __forceinline__ double exp_t(double x) { return ::exp(x); }
__device__ __forceinline__ float log_t(float x) { return logf(x); }
__device__ __forceinline__ double log_t(double x) { return ::log(x); }

template <typename T>
struct LossConsts {
  T inv_tau_t, inv_tau_p, min_overlap;
};

template <typename T>
LossConsts<T> loss_consts(double tau_t, double tau_p, double min_overlap) {
  return {static_cast<T>(1.0 / tau_t), static_cast<T>(1.0 / tau_p), static_cast<T>(min_overlap)};
}

// ------------------------------------------------------------------------------- target statistics
// Row i of S: t_lse[i] = logsumexp_j S_ij / tau_t, t_sum[i] = sum_j S_ij. One warp per row.
template <typename T>
__global__ void target_row_stats_kernel(const T* __restrict__ S, int64_t P, T inv_tau_t,
                                        T* __restrict__ t_lse, T* __restrict__ t_sum) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= P) return;  // uniform within the warp, so the shuffles below see full warps
  const T* x = S + row * P;
  T m = T(-INFINITY), s = T(0);
  for (int64_t j = lane; j < P; j += kWarpSize) {
    m = max_of(m, x[j] * inv_tau_t);
    s += x[j];
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

// Column j of S: t_lse[j] = logsumexp_i S_ij / tau_t, t_sum[j] = sum_i S_ij. One thread per column
// (consecutive threads read consecutive columns: coalesced).
template <typename T>
__global__ void target_col_stats_kernel(const T* __restrict__ S, int64_t P, T inv_tau_t,
                                        T* __restrict__ t_lse, T* __restrict__ t_sum) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= P) return;
  T m = T(-INFINITY), s = T(0);
  for (int64_t i = 0; i < P; ++i) {
    const T v = S[i * P + j];
    m = max_of(m, v * inv_tau_t);
    s += v;
  }
  T z = T(0);
  for (int64_t i = 0; i < P; ++i) z += exp_t(S[i * P + j] * inv_tau_t - m);
  t_lse[j] = m + log_t(z);
  t_sum[j] = s;
}

// ----------------------------------------------------------------------------- forward, per tile
// Rows [r0, r0 + rows) of the pair (a, c): dots[i, j] = e_hat_a,(r0+i) . e_hat_c,j. Writes, for each
// global row gi: lse_out[gi] = L, valid_out[gi], H_out[gi] = valid ? L - sum_j p_ij s_ij : 0.
// One warp per row.
template <typename T>
__global__ void tile_rows_forward_kernel(const T* __restrict__ dots, int64_t rows, int64_t r0,
                                         int64_t P, const T* __restrict__ S,
                                         const T* __restrict__ t_lse, const T* __restrict__ t_sum,
                                         LossConsts<T> k, T* __restrict__ lse_out,
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

// After the last tile: the rows (c, a, j) of the pair. One thread per column j.
template <typename T>
__global__ void cols_finalize_kernel(int64_t P, const T* __restrict__ run_max,
                                     const T* __restrict__ run_sum, const T* __restrict__ run_cross,
                                     const T* __restrict__ t_sum_col, T min_overlap,
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

// ---------------------------------------------------------------------------- backward, per tile
// G[i, j] = dLoss/ds for the tile's rows (unscaled): both the row (a, c, gi) and the row (c, a, j)
// of the same similarity contribute.
template <typename T>
__global__ void tile_grad_kernel(const T* __restrict__ dots, int64_t rows, int64_t r0, int64_t P,
                                 const T* __restrict__ S, const T* __restrict__ t_lse_row,
                                 const T* __restrict__ t_sum_row, const T* __restrict__ t_lse_col,
                                 const T* __restrict__ t_sum_col, const T* __restrict__ L_row,
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

// ---------------------------------------------------------------------------- patch_align targets
// S[i, j] = (M_ac[i, j] + M_ca[j, i]) / 2 from the pair's counts; each M is formed exactly as
// patch_overlap forms it (in the depth dtype D), then S is cast to the accumulation dtype T, so the
// fused loss sees the same S as soft_infonce(emb, patch_overlap(...)).
template <typename D, typename T>
__global__ void targets_from_counts_kernel(const int32_t* __restrict__ cnt_ac,
                                           const int32_t* __restrict__ cnt_ca,
                                           const int32_t* __restrict__ den_a,
                                           const int32_t* __restrict__ den_c, int64_t P,
                                           T* __restrict__ S) {
  const int64_t total = P * P;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / P, j = idx % P;
    const D m1 = overlap_ratio<D>(cnt_ac[idx], den_a[i]);
    const D m2 = overlap_ratio<D>(cnt_ca[j * P + i], den_c[j]);
    S[idx] = static_cast<T>((m1 + m2) * D(0.5));
  }
}

// ------------------------------------------------------------------------------- per-pair drivers
struct TargetStats {
  at::Tensor row_lse, row_sum, col_lse, col_sum;  // [P] each
};

template <typename T>
TargetStats target_stats(const at::Tensor& S, T inv_tau_t) {
  const int64_t P = S.size(0);
  TargetStats st{at::empty({P}, S.options()), at::empty({P}, S.options()),
                 at::empty({P}, S.options()), at::empty({P}, S.options())};
  const cudaStream_t stream = current_stream();
  target_row_stats_kernel<T><<<blocks_exact(P, kWarpsPerBlock), kThreads, 0, stream>>>(
      S.data_ptr<T>(), P, inv_tau_t, st.row_lse.data_ptr<T>(), st.row_sum.data_ptr<T>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  target_col_stats_kernel<T><<<blocks_exact(P, kThreads), kThreads, 0, stream>>>(
      S.data_ptr<T>(), P, inv_tau_t, st.col_lse.data_ptr<T>(), st.col_sum.data_ptr<T>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return st;
}

// Where one pair's outputs go: the rows (a, c, :) and (c, a, :) of the [B, V, V, P] buffers.
template <typename T>
struct PairRows {
  T* lse;
  T* H;
  bool* valid;
};

template <typename T>
void forward_pair(const at::Tensor& S, const at::Tensor& ea, const at::Tensor& ec,
                  const LossConsts<T>& k, int64_t tile_rows, PairRows<T> ac, PairRows<T> ca) {
  const int64_t P = S.size(0);
  const cudaStream_t stream = current_stream();
  const TargetStats st = target_stats<T>(S, k.inv_tau_t);
  at::Tensor run_max = at::full({P}, -std::numeric_limits<double>::infinity(), S.options());
  at::Tensor run_sum = at::zeros({P}, S.options());
  at::Tensor run_cross = at::zeros({P}, S.options());
  const at::Tensor ec_t = ec.t();
  for (int64_t r0 = 0; r0 < P; r0 += tile_rows) {
    const int64_t rows = std::min(tile_rows, P - r0);
    const at::Tensor dots = at::mm(ea.narrow(0, r0, rows), ec_t).contiguous();  // [rows, P]
    tile_rows_forward_kernel<T><<<blocks_exact(rows, kWarpsPerBlock), kThreads, 0, stream>>>(
        dots.data_ptr<T>(), rows, r0, P, S.data_ptr<T>(), st.row_lse.data_ptr<T>(),
        st.row_sum.data_ptr<T>(), k, ac.lse, ac.H, ac.valid);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    tile_cols_forward_kernel<T><<<blocks_exact(P, kThreads), kThreads, 0, stream>>>(
        dots.data_ptr<T>(), rows, r0, P, S.data_ptr<T>(), st.col_lse.data_ptr<T>(), k,
        run_max.data_ptr<T>(), run_sum.data_ptr<T>(), run_cross.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  cols_finalize_kernel<T><<<blocks_exact(P, kThreads), kThreads, 0, stream>>>(
      P, run_max.data_ptr<T>(), run_sum.data_ptr<T>(), run_cross.data_ptr<T>(),
      st.col_sum.data_ptr<T>(), k.min_overlap, ca.lse, ca.H, ca.valid);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Adds the pair's (unscaled) gradient w.r.t. e_hat_a and e_hat_c into ga and gc ([P, D] views).
template <typename T>
void backward_pair(const at::Tensor& S, const at::Tensor& ea, const at::Tensor& ec,
                   const LossConsts<T>& k, int64_t tile_rows, const T* L_ac, const T* L_ca,
                   at::Tensor ga, at::Tensor gc) {
  const int64_t P = S.size(0);
  const cudaStream_t stream = current_stream();
  const TargetStats st = target_stats<T>(S, k.inv_tau_t);
  const at::Tensor ec_t = ec.t();
  for (int64_t r0 = 0; r0 < P; r0 += tile_rows) {
    const int64_t rows = std::min(tile_rows, P - r0);
    const at::Tensor ea_tile = ea.narrow(0, r0, rows);
    const at::Tensor dots = at::mm(ea_tile, ec_t).contiguous();  // [rows, P]
    at::Tensor G = at::empty_like(dots);
    tile_grad_kernel<T><<<blocks_for(rows * P), kThreads, 0, stream>>>(
        dots.data_ptr<T>(), rows, r0, P, S.data_ptr<T>(), st.row_lse.data_ptr<T>(),
        st.row_sum.data_ptr<T>(), st.col_lse.data_ptr<T>(), st.col_sum.data_ptr<T>(), L_ac, L_ca, k,
        G.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    ga.narrow(0, r0, rows).addmm_(G, ec);
    gc.addmm_(G.t(), ea_tile);
  }
}

// --------------------------------------------------------------------------------- whole-op drivers
// make_S(b, a, c) returns the pair's S [P, P] (T, contiguous, on the device).
template <typename T, typename MakeS>
std::tuple<at::Tensor, at::Tensor, at::Tensor> loss_forward(const at::Tensor& emb, MakeS&& make_S,
                                                            double tau_t, double tau_p,
                                                            double min_overlap) {
  const int64_t B = emb.size(0), V = emb.size(1), P = emb.size(2);
  const Normalized n = normalize_rows(emb);
  const auto opts = n.e_hat.options();
  at::Tensor row_lse = at::zeros({B, V, V, P}, opts);  // the a == c blocks stay 0
  at::Tensor H = at::zeros({B, V, V, P}, opts);
  at::Tensor valid = at::zeros({B, V, V, P}, opts.dtype(at::kBool));
  const LossConsts<T> k = loss_consts<T>(tau_t, tau_p, min_overlap);
  const int64_t tile_rows = loss_tile_rows(P);
  T* lse_p = row_lse.data_ptr<T>();
  T* H_p = H.data_ptr<T>();
  bool* valid_p = valid.data_ptr<bool>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t a = 0; a < V; ++a) {
      for (int64_t c = a + 1; c < V; ++c) {
        const at::Tensor S = make_S(b, a, c);
        const int64_t ac = ((b * V + a) * V + c) * P, ca = ((b * V + c) * V + a) * P;
        forward_pair<T>(S, n.e_hat[b][a], n.e_hat[b][c], k, tile_rows,
                        {lse_p + ac, H_p + ac, valid_p + ac}, {lse_p + ca, H_p + ca, valid_p + ca});
      }
    }
  }
  at::Tensor num_valid = valid.sum();  // int64, stays on the device
  at::Tensor loss = (H.sum() / num_valid.clamp_min(1).to(H.scalar_type())).to(emb.scalar_type());
  return {loss, row_lse, num_valid};
}

template <typename T, typename MakeS>
at::Tensor loss_backward(const char* op, const at::Tensor& grad_loss, const at::Tensor& emb,
                         MakeS&& make_S, const at::Tensor& row_lse, const at::Tensor& num_valid,
                         double tau_t, double tau_p, double min_overlap) {
  TORCH_CHECK_VALUE(grad_loss.numel() == 1, "hatch.", op,
                    ": argument 'grad_loss' must hold one value (the loss is a scalar), got shape ",
                    grad_loss.sizes());
  const int64_t B = emb.size(0), V = emb.size(1), P = emb.size(2);
  const Normalized n = normalize_rows(emb);
  const auto acc = n.e_hat.scalar_type();
  const at::Tensor lse = row_lse.to(acc).contiguous();
  const T* lse_p = lse.data_ptr<T>();
  at::Tensor g_hat = at::zeros_like(n.e_hat);
  const LossConsts<T> k = loss_consts<T>(tau_t, tau_p, min_overlap);
  const int64_t tile_rows = loss_tile_rows(P);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t a = 0; a < V; ++a) {
      for (int64_t c = a + 1; c < V; ++c) {
        const at::Tensor S = make_S(b, a, c);
        const int64_t ac = ((b * V + a) * V + c) * P, ca = ((b * V + c) * V + a) * P;
        backward_pair<T>(S, n.e_hat[b][a], n.e_hat[b][c], k, tile_rows, lse_p + ac, lse_p + ca,
                         g_hat[b][a], g_hat[b][c]);
      }
    }
  }
  // grad_loss / (tau_p * max(num_valid, 1)), as device tensors (no host sync).
  const at::Tensor count = num_valid.to(emb.device(), acc).clamp_min(1);
  const at::Tensor scale = grad_loss.to(emb.device(), acc).reshape({}) / (count * tau_p);
  g_hat.mul_(scale);
  return normalize_backward(g_hat, n).to(emb.scalar_type()).contiguous();
}

// Calls f.template operator()<T>() with T = float or double for the accumulation dtype of emb.
template <typename F>
auto dispatch_acc(const at::Tensor& emb, F&& f) {
  if (acc_type_for(emb.scalar_type()) == at::kDouble) return f(double{});
  return f(float{});
}

// --------------------------------------------------------------------------- S from the inputs
// soft_infonce: S from the overlap input, computed in its dtype (as the reference does), then cast.
struct OverlapTargets {
  at::Tensor overlap;
  at::ScalarType acc;
  at::Tensor operator()(int64_t b, int64_t a, int64_t c) const {
    const at::Tensor M_ac = overlap[b][a][c];
    const at::Tensor M_ca = overlap[b][c][a];
    return (at::add(M_ac, M_ca.t()) * 0.5).to(acc).contiguous();
  }
};

// patch_align: S recomputed from the depth maps for one pair (both directions) by the reprojection
// kernels, divided by the per-cell denominators computed once for all views.
struct DepthTargets {
  at::Tensor depth;   // [B, V, H, W] contiguous
  at::Tensor proj;    // [B, V, V, kPairProjSize] float64 on the device
  at::Tensor den;     // [B, V, P] int32
  at::Tensor counts;  // [2, P, P] int32 scratch, reused pair after pair (stream-ordered)
  PixelGrid g;
  int64_t V;
  double abs_tol, rel_tol;
  at::ScalarType acc;

  DepthTargets(const char* op, const at::Tensor& depth_in, const at::Tensor& K,
               const at::Tensor& cam_to_world, const GeometryDims& dims, int64_t stride,
               double abs_tol_in, double rel_tol_in, at::ScalarType acc_in)
      : depth(depth_in.contiguous()),
        g(PixelGrid::make(dims.H, dims.W, dims.grid_h, dims.grid_w, stride)),
        V(dims.V),
        abs_tol(abs_tol_in),
        rel_tol(rel_tol_in),
        acc(acc_in) {
    check_count_limits(op, g);
    proj = pair_projections(op, K, cam_to_world).to(depth.device()).contiguous();
    const auto int_opts = depth.options().dtype(at::kInt);
    den = at::zeros({dims.B, dims.V, dims.P}, int_opts);
    launch_cell_valid_counts(depth, g, dims.B * dims.V, den);
    counts = at::empty({2, dims.P, dims.P}, int_opts);
  }

  at::Tensor operator()(int64_t b, int64_t a, int64_t c) {
    const int64_t P = g.cells();
    counts.zero_();
    launch_pair_counts(depth, proj, Triples::pair(V, b, a, c), g, abs_tol, rel_tol, counts);
    at::Tensor S = at::empty({P, P}, depth.options().dtype(acc));
    const int32_t* cnt = counts.data_ptr<int32_t>();
    const int32_t* den_p = den.data_ptr<int32_t>();
    AT_DISPATCH_FLOATING_TYPES(depth.scalar_type(), "hatch_targets_from_counts", [&] {
      using D = scalar_t;
      if (acc == at::kDouble) {
        targets_from_counts_kernel<D, double><<<blocks_for(P * P), kThreads, 0, current_stream()>>>(
            cnt, cnt + P * P, den_p + (b * V + a) * P, den_p + (b * V + c) * P, P,
            S.data_ptr<double>());
      } else {
        targets_from_counts_kernel<D, float><<<blocks_for(P * P), kThreads, 0, current_stream()>>>(
            cnt, cnt + P * P, den_p + (b * V + a) * P, den_p + (b * V + c) * P, P,
            S.data_ptr<float>());
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return S;
  }
};

}  // namespace

// ------------------------------------------------------------------------------------------- ops
std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_infonce(const at::Tensor& emb,
                                                            const at::Tensor& overlap, double tau_t,
                                                            double tau_p, double min_overlap) {
  const char* op = "soft_infonce";
  check_embeddings(op, emb);
  check_overlap(op, overlap, emb);
  check_loss_params(op, tau_t, tau_p, min_overlap);
  check_cuda(op, "emb", emb);
  const c10::cuda::CUDAGuard guard(emb.device());
  const OverlapTargets targets{overlap, acc_type_for(emb.scalar_type())};
  return dispatch_acc(emb, [&](auto tag) {
    using T = decltype(tag);
    return loss_forward<T>(emb, targets, tau_t, tau_p, min_overlap);
  });
}

at::Tensor soft_infonce_backward(const at::Tensor& grad_loss, const at::Tensor& emb,
                                 const at::Tensor& overlap, const at::Tensor& row_lse,
                                 const at::Tensor& num_valid, double tau_t, double tau_p,
                                 double min_overlap) {
  const char* op = "soft_infonce_backward";
  check_embeddings(op, emb);
  check_overlap(op, overlap, emb);
  check_loss_params(op, tau_t, tau_p, min_overlap);
  check_saved(op, row_lse, num_valid, emb);
  check_cuda(op, "emb", emb);
  const c10::cuda::CUDAGuard guard(emb.device());
  const OverlapTargets targets{overlap, acc_type_for(emb.scalar_type())};
  return dispatch_acc(emb, [&](auto tag) {
    using T = decltype(tag);
    return loss_backward<T>(op, grad_loss, emb, targets, row_lse, num_valid, tau_t, tau_p,
                            min_overlap);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> patch_align(
    const at::Tensor& emb, const at::Tensor& depth, const at::Tensor& K, const at::Tensor& cam_to_world,
    int64_t grid_h, int64_t grid_w, double tau_t, double tau_p, double abs_tol, double rel_tol,
    int64_t stride, double min_overlap) {
  const char* op = "patch_align";
  const GeometryDims dims = check_patch_align(op, emb, depth, K, cam_to_world, grid_h, grid_w, tau_t,
                                              tau_p, abs_tol, rel_tol, stride, min_overlap);
  check_cuda(op, "depth", depth);
  const c10::cuda::CUDAGuard guard(emb.device());
  DepthTargets targets(op, depth, K, cam_to_world, dims, stride, abs_tol, rel_tol,
                       acc_type_for(emb.scalar_type()));
  return dispatch_acc(emb, [&](auto tag) {
    using T = decltype(tag);
    return loss_forward<T>(emb, targets, tau_t, tau_p, min_overlap);
  });
}

at::Tensor patch_align_backward(const at::Tensor& grad_loss, const at::Tensor& emb,
                                const at::Tensor& depth, const at::Tensor& K,
                                const at::Tensor& cam_to_world, const at::Tensor& row_lse,
                                const at::Tensor& num_valid, int64_t grid_h, int64_t grid_w,
                                double tau_t, double tau_p, double abs_tol, double rel_tol,
                                int64_t stride, double min_overlap) {
  const char* op = "patch_align_backward";
  const GeometryDims dims = check_patch_align(op, emb, depth, K, cam_to_world, grid_h, grid_w, tau_t,
                                              tau_p, abs_tol, rel_tol, stride, min_overlap);
  check_saved(op, row_lse, num_valid, emb);
  check_cuda(op, "depth", depth);
  const c10::cuda::CUDAGuard guard(emb.device());
  DepthTargets targets(op, depth, K, cam_to_world, dims, stride, abs_tol, rel_tol,
                       acc_type_for(emb.scalar_type()));
  return dispatch_acc(emb, [&](auto tag) {
    using T = decltype(tag);
    return loss_backward<T>(op, grad_loss, emb, targets, row_lse, num_valid, tau_t, tau_p,
                            min_overlap);
  });
}

}  // namespace hatch::cuda
