// soft_infonce and patch_align (forward and backward) on CUDA: the host side (pair loop, cuBLAS tiles
// through ATen, launches). The kernels themselves are in device/loss.cuh (also run on the CPU by the
// emulation in tests/emulation).
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
// The row sums of the validity rule are taken in float64 from S in float64 (as the CPU forms S), and
// compared with min_overlap in float64, so both backends mark the same rows valid.
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
#include "device/loss.cuh"
#include "reprojection.cuh"

namespace hatch::cuda {
namespace {

// ------------------------------------------------------------------------------- per-pair drivers
// One pair's S [P, P]: in the accumulation dtype T (the loss math) and in float64 (the row sums of
// the validity rule, as the CPU forms them). Both contiguous, on the device.
struct PairS {
  at::Tensor S, S64;
};

struct TargetStats {
  at::Tensor row_lse, row_sum, col_lse, col_sum;  // [P] each; the sums in float64
};

template <typename T>
TargetStats target_stats(const PairS& ps, T inv_tau_t) {
  const at::Tensor& S = ps.S;
  const int64_t P = S.size(0);
  const auto f64 = S.options().dtype(at::kDouble);
  TargetStats st{at::empty({P}, S.options()), at::empty({P}, f64), at::empty({P}, S.options()),
                 at::empty({P}, f64)};
  const cudaStream_t stream = current_stream();
  const LaunchCfg rows = per_row_launch(P), cols = per_column_launch(P);
  target_row_stats_kernel<T><<<rows.grid, rows.block, rows.shmem, stream>>>(
      S.data_ptr<T>(), ps.S64.data_ptr<double>(), P, inv_tau_t, st.row_lse.data_ptr<T>(),
      st.row_sum.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  target_col_stats_kernel<T><<<cols.grid, cols.block, cols.shmem, stream>>>(
      S.data_ptr<T>(), ps.S64.data_ptr<double>(), P, inv_tau_t, st.col_lse.data_ptr<T>(),
      st.col_sum.data_ptr<double>());
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
void forward_pair(const PairS& ps, const at::Tensor& ea, const at::Tensor& ec,
                  const LossConsts<T>& k, int64_t tile_rows, PairRows<T> ac, PairRows<T> ca) {
  const at::Tensor& S = ps.S;
  const int64_t P = S.size(0);
  const cudaStream_t stream = current_stream();
  const TargetStats st = target_stats<T>(ps, k.inv_tau_t);
  const LaunchCfg cols = per_column_launch(P);
  at::Tensor run_max = at::full({P}, -std::numeric_limits<double>::infinity(), S.options());
  at::Tensor run_sum = at::zeros({P}, S.options());
  at::Tensor run_cross = at::zeros({P}, S.options());
  const at::Tensor ec_t = ec.t();
  for (int64_t r0 = 0; r0 < P; r0 += tile_rows) {
    const int64_t rows = std::min(tile_rows, P - r0);
    const at::Tensor dots = at::mm(ea.narrow(0, r0, rows), ec_t).contiguous();  // [rows, P]
    const LaunchCfg tile = per_row_launch(rows);
    tile_rows_forward_kernel<T><<<tile.grid, tile.block, tile.shmem, stream>>>(
        dots.data_ptr<T>(), rows, r0, P, S.data_ptr<T>(), st.row_lse.data_ptr<T>(),
        st.row_sum.data_ptr<double>(), k, ac.lse, ac.H, ac.valid);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    tile_cols_forward_kernel<T><<<cols.grid, cols.block, cols.shmem, stream>>>(
        dots.data_ptr<T>(), rows, r0, P, S.data_ptr<T>(), st.col_lse.data_ptr<T>(), k,
        run_max.data_ptr<T>(), run_sum.data_ptr<T>(), run_cross.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  cols_finalize_kernel<T><<<cols.grid, cols.block, cols.shmem, stream>>>(
      P, run_max.data_ptr<T>(), run_sum.data_ptr<T>(), run_cross.data_ptr<T>(),
      st.col_sum.data_ptr<double>(), k.min_overlap, ca.lse, ca.H, ca.valid);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Adds the pair's (unscaled) gradient w.r.t. e_hat_a and e_hat_c into ga and gc ([P, D] views).
template <typename T>
void backward_pair(const PairS& ps, const at::Tensor& ea, const at::Tensor& ec,
                   const LossConsts<T>& k, int64_t tile_rows, const T* L_ac, const T* L_ca,
                   at::Tensor ga, at::Tensor gc) {
  const at::Tensor& S = ps.S;
  const int64_t P = S.size(0);
  const cudaStream_t stream = current_stream();
  const TargetStats st = target_stats<T>(ps, k.inv_tau_t);
  const at::Tensor ec_t = ec.t();
  for (int64_t r0 = 0; r0 < P; r0 += tile_rows) {
    const int64_t rows = std::min(tile_rows, P - r0);
    const at::Tensor ea_tile = ea.narrow(0, r0, rows);
    const at::Tensor dots = at::mm(ea_tile, ec_t).contiguous();  // [rows, P]
    at::Tensor G = at::empty_like(dots);
    const LaunchCfg L = elementwise_launch(rows * P);
    tile_grad_kernel<T><<<L.grid, L.block, L.shmem, stream>>>(
        dots.data_ptr<T>(), rows, r0, P, S.data_ptr<T>(), st.row_lse.data_ptr<T>(),
        st.row_sum.data_ptr<double>(), st.col_lse.data_ptr<T>(), st.col_sum.data_ptr<double>(),
        L_ac, L_ca, k, G.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    ga.narrow(0, r0, rows).addmm_(G, ec);
    gc.addmm_(G.t(), ea_tile);
  }
}

// --------------------------------------------------------------------------------- whole-op drivers
// make_S(b, a, c) returns the pair's PairS.
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
        const PairS S = make_S(b, a, c);
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
at::Tensor loss_backward(const at::Tensor& grad_loss, const at::Tensor& emb,
                         MakeS&& make_S, const at::Tensor& row_lse, const at::Tensor& num_valid,
                         double tau_t, double tau_p, double min_overlap) {
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
        const PairS S = make_S(b, a, c);
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
  PairS operator()(int64_t b, int64_t a, int64_t c) const {
    const at::Tensor M_ac = overlap[b][a][c];
    const at::Tensor M_ca = overlap[b][c][a];
    at::Tensor S = (at::add(M_ac, M_ca.t()) * 0.5).to(acc).contiguous();
    // As the CPU: each half taken in float64, then added.
    at::Tensor S64 = (M_ac.to(at::kDouble) * 0.5).add_(M_ca.t().to(at::kDouble) * 0.5).contiguous();
    return {S, S64};
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

  PairS operator()(int64_t b, int64_t a, int64_t c) {
    const int64_t P = g.cells();
    counts.zero_();
    launch_pair_counts(depth, proj, Triples::pair(V, b, a, c), g, abs_tol, rel_tol, counts);
    at::Tensor S = at::empty({P, P}, depth.options().dtype(acc));
    at::Tensor S64 = at::empty({P, P}, depth.options().dtype(at::kDouble));
    const LaunchCfg L = elementwise_launch(P * P);
    const int32_t* cnt = counts.data_ptr<int32_t>();
    const int32_t* den_p = den.data_ptr<int32_t>();
    AT_DISPATCH_FLOATING_TYPES(depth.scalar_type(), "hatch_targets_from_counts", [&] {
      using D = scalar_t;
      if (acc == at::kDouble) {
        targets_from_counts_kernel<D, double><<<L.grid, L.block, L.shmem, current_stream()>>>(
            cnt, cnt + P * P, den_p + (b * V + a) * P, den_p + (b * V + c) * P, P,
            S.data_ptr<double>(), S64.data_ptr<double>());
      } else {
        targets_from_counts_kernel<D, float><<<L.grid, L.block, L.shmem, current_stream()>>>(
            cnt, cnt + P * P, den_p + (b * V + a) * P, den_p + (b * V + c) * P, P,
            S.data_ptr<float>(), S64.data_ptr<double>());
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return {S, S64};
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
  check_grad_loss(op, grad_loss, emb);
  check_saved(op, row_lse, num_valid, emb);
  check_cuda(op, "emb", emb);
  const c10::cuda::CUDAGuard guard(emb.device());
  const OverlapTargets targets{overlap, acc_type_for(emb.scalar_type())};
  return dispatch_acc(emb, [&](auto tag) {
    using T = decltype(tag);
    return loss_backward<T>(grad_loss, emb, targets, row_lse, num_valid, tau_t, tau_p,
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
  check_grad_loss(op, grad_loss, emb);
  check_saved(op, row_lse, num_valid, emb);
  check_cuda(op, "depth", depth);
  const c10::cuda::CUDAGuard guard(emb.device());
  DepthTargets targets(op, depth, K, cam_to_world, dims, stride, abs_tol, rel_tol,
                       acc_type_for(emb.scalar_type()));
  return dispatch_acc(emb, [&](auto tag) {
    using T = decltype(tag);
    return loss_backward<T>(grad_loss, emb, targets, row_lse, num_valid, tau_t, tau_p,
                            min_overlap);
  });
}

}  // namespace hatch::cuda
