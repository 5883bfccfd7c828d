// soft_infonce and patch_align (forward and backward) on CUDA: the host side (the chunk loop, batched
// cuBLAS GEMMs through ATen, launches). The kernels and the plan (chunks, tiles) are in device/loss.cuh
// (also run on the CPU by the emulation in tests/emulation).
//
// For every sample b and unordered view pair a < c (the same-view blocks and the blocks across samples
// are never formed), with e_hat the normalised embeddings in the accumulation dtype T (float32;
// float64 for float64 embeddings):
//   S = (M_ac + M_ca^T) / 2                                    [P, P]
//   row (a, c, i) valid iff sum_j S_ij > min_overlap,  row (c, a, j) valid iff sum_i S_ij > min_overlap
//   p_ij = softmax_j(S_ij / tau_t),  p'_ji = softmax_i(S_ij / tau_t)
//   s_ij = e_hat_a,i . e_hat_c,j / tau_p, formed in row tiles (batched GEMMs)
//   L_i  = logsumexp_j s_ij  (complete inside a tile: one warp per row)
//   L'_j = logsumexp_i s_ij  (online over the row tiles: running max and sum; inside a tile, partial
//                             (max, sum) per slab of kColSlabRows rows, merged in slab order)
//   H_i = L_i - sum_j p_ij s_ij,  H'_j = L'_j - sum_i p'_ji s_ij
//   loss = sum of H over valid rows / max(num_valid, 1)   (exactly 0 with zero gradient when none)
// The row sums of the validity rule are taken in float64 from S in float64 (as the CPU forms S), and
// compared with min_overlap in float64, so both backends mark the same rows valid.
// Backward recomputes S, the targets and the tiles, with L and L' read from the saved row_lse:
//   G_ij = valid_i (exp(s_ij - L_i) - p_ij) + valid'_j (exp(s_ij - L'_j) - p'_ji)
//   g_a += G e_hat_c,  g_c += G^T e_hat_a                      (per pair, batched: at::baddbmm_)
// scaled by grad_loss / (tau_p num_valid), then the normalisation backward.
//
// Launches: the pairs q = 0 .. B V (V - 1) / 2 - 1 (device/common.cuh: decode_pair) run in chunks of
// LossPlan::per_chunk pairs; every kernel and GEMM covers all pairs of a chunk at once (one grid over
// (pair, row) / (pair, slab, column) / elements; at::bmm over the chunk's pairs for a row tile). So a
// call makes chunks x (a fixed number per chunk, times the row tiles of P) launches plus a constant
// number: independent of B and V while the pairs fit one chunk (loss.cuh: loss_plan, a 32 MiB budget
// per chunk; one chunk for all typical sizes).
//
// Memory: besides the inputs and outputs, O(B V P D) for e_hat (and its gradient) plus at most
// kLossChunkBytes for the chunk in flight (its S, S64, counts, gathered embeddings and their
// gradients, one row tile of similarities, the column partials; loss_plan counts them), or one pair's
// worth when a single pair exceeds it: the overlap and the similarity of all pairs are never held at
// once. patch_align recomputes S from the depth maps per chunk (the reprojection kernels of
// reprojection.cuh) in both passes.
// Everything stays on the device, with no host synchronisation and no host reads of device data (K
// and the poses become projections in a kernel: reprojection.cuh), so the ops can be captured in a
// CUDA graph; the division by num_valid is a device op. No floating-point atomics anywhere (the
// pairs' gradients reach g_hat through scatter_grad_kernel, partners in a fixed order), so results
// are run-to-run identical.
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
#include "device/loss.cuh"
#include "kernels.h"
#include "launch.cuh"
#include "reprojection.cuh"

namespace hatch::cuda {
namespace {

// ------------------------------------------------------------------------------- one chunk
// A chunk's pairs, targets and target statistics (all [n, ...], on the device).
struct Chunk {
  int64_t q0, n;
  at::Tensor info;                                        // [4, n] int64 (loss.cuh: PairInfo)
  at::Tensor S, S64;                                      // [n, P, P]
  at::Tensor ea, ec;                                      // [n, P, D] e_hat of the pairs' views a and c
  at::Tensor t_lse_row, t_sum_row, t_lse_col, t_sum_col;  // [n, P]; the sums float64
};

// make_S(chunk) fills chunk.S and chunk.S64 from chunk.info.
template <typename T, typename MakeS>
Chunk prepare_chunk(MakeS& make_S, const at::Tensor& e_flat, int64_t V, int64_t q0, int64_t n,
                    const LossConsts<T>& k) {
  const int64_t P = e_flat.size(1);
  const cudaStream_t stream = current_stream();
  const auto opts = e_flat.options();
  const auto f64 = opts.dtype(at::kDouble);
  Chunk ch{q0, n};
  ch.info = at::empty({4, n}, opts.dtype(at::kLong));
  const LaunchCfg Li = per_item_launch(n);
  pair_info_kernel<<<Li.grid, Li.block, Li.shmem, stream>>>(q0, n, V, P, ch.info.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  ch.S = at::empty({n, P, P}, opts);
  ch.S64 = at::empty({n, P, P}, f64);
  make_S(ch);
  ch.ea = at::index_select(e_flat, 0, ch.info[0]);
  ch.ec = at::index_select(e_flat, 0, ch.info[1]);
  ch.t_lse_row = at::empty({n, P}, opts);
  ch.t_lse_col = at::empty({n, P}, opts);
  ch.t_sum_row = at::empty({n, P}, f64);
  ch.t_sum_col = at::empty({n, P}, f64);
  const LaunchCfg rows = per_row_launch(n * P);
  target_row_stats_kernel<T><<<rows.grid, rows.block, rows.shmem, stream>>>(
      ch.S.data_ptr<T>(), ch.S64.data_ptr<double>(), n * P, P, k.inv_tau_t, ch.t_lse_row.data_ptr<T>(),
      ch.t_sum_row.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t slabs = col_slabs(P);
  at::Tensor pm = at::empty({n, slabs, P}, opts), pz = at::empty({n, slabs, P}, opts);
  at::Tensor ps = at::empty({n, slabs, P}, f64);
  const LaunchCfg part = per_item_launch(n * slabs * P), merge = per_item_launch(n * P);
  target_col_partial_kernel<T><<<part.grid, part.block, part.shmem, stream>>>(
      ch.S.data_ptr<T>(), ch.S64.data_ptr<double>(), n, P, slabs, k.inv_tau_t, pm.data_ptr<T>(),
      pz.data_ptr<T>(), ps.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  target_col_merge_kernel<T><<<merge.grid, merge.block, merge.shmem, stream>>>(
      pm.data_ptr<T>(), pz.data_ptr<T>(), ps.data_ptr<double>(), n, P, slabs, ch.t_lse_col.data_ptr<T>(),
      ch.t_sum_col.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return ch;
}

// --------------------------------------------------------------------------------- whole-op drivers
template <typename T, typename MakeS>
std::tuple<at::Tensor, at::Tensor, at::Tensor> loss_forward(const at::Tensor& emb, MakeS& make_S,
                                                            const LossPlan& plan, double tau_t, double tau_p,
                                                            double min_overlap) {
  const int64_t B = emb.size(0), V = emb.size(1), P = emb.size(2), D = emb.size(3);
  const Normalized nz = normalize_rows(emb);
  const auto opts = nz.e_hat.options();
  at::Tensor row_lse = at::zeros({B, V, V, P}, opts);  // the a == c blocks stay 0
  at::Tensor H = at::zeros({B, V, V, P}, opts);
  at::Tensor valid = at::zeros({B, V, V, P}, opts.dtype(at::kBool));
  const LossConsts<T> k = loss_consts<T>(tau_t, tau_p, min_overlap);
  const at::Tensor e_flat = nz.e_hat.view({B * V, P, D});
  const cudaStream_t stream = current_stream();
  T* lse_p = row_lse.data_ptr<T>();
  T* H_p = H.data_ptr<T>();
  bool* valid_p = valid.data_ptr<bool>();
  for (int64_t q0 = 0; q0 < plan.pairs; q0 += plan.per_chunk) {
    const int64_t n = std::min(plan.per_chunk, plan.pairs - q0);
    const Chunk ch = prepare_chunk<T>(make_S, e_flat, V, q0, n, k);
    const int64_t* info = ch.info.data_ptr<int64_t>();
    at::Tensor run_m = at::empty({n, P}, opts), run_z = at::empty({n, P}, opts);
    at::Tensor run_x = at::empty({n, P}, opts);
    const int64_t max_slabs = col_slabs(plan.tile_rows);
    at::Tensor pm = at::empty({n, max_slabs, P}, opts), pz = at::empty({n, max_slabs, P}, opts);
    at::Tensor px = at::empty({n, max_slabs, P}, opts);
    const at::Tensor ec_t = ch.ec.transpose(1, 2);
    const LaunchCfg merge = per_item_launch(n * P);
    for (int64_t r0 = 0; r0 < P; r0 += plan.tile_rows) {
      const int64_t rows = std::min(plan.tile_rows, P - r0), slabs = col_slabs(rows);
      const at::Tensor dots = at::bmm(ch.ea.narrow(1, r0, rows), ec_t).contiguous();  // [n, rows, P]
      const LaunchCfg tr = per_row_launch(n * rows), part = per_item_launch(n * slabs * P);
      tile_rows_forward_kernel<T><<<tr.grid, tr.block, tr.shmem, stream>>>(
          dots.data_ptr<T>(), n, rows, r0, P, ch.S.data_ptr<T>(), ch.t_lse_row.data_ptr<T>(),
          ch.t_sum_row.data_ptr<double>(), info, k, lse_p, H_p, valid_p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      tile_cols_partial_kernel<T><<<part.grid, part.block, part.shmem, stream>>>(
          dots.data_ptr<T>(), n, rows, r0, P, slabs, ch.S.data_ptr<T>(), ch.t_lse_col.data_ptr<T>(), k,
          pm.data_ptr<T>(), pz.data_ptr<T>(), px.data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      tile_cols_merge_kernel<T><<<merge.grid, merge.block, merge.shmem, stream>>>(
          pm.data_ptr<T>(), pz.data_ptr<T>(), px.data_ptr<T>(), n, P, slabs, r0 == 0, r0 + rows == P,
          run_m.data_ptr<T>(), run_z.data_ptr<T>(), run_x.data_ptr<T>(), ch.t_sum_col.data_ptr<double>(),
          info, k.min_overlap, lse_p, H_p, valid_p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
  at::Tensor num_valid = valid.sum();  // int64, stays on the device
  at::Tensor loss = (H.sum() / num_valid.clamp_min(1).to(H.scalar_type())).to(emb.scalar_type());
  return {loss, row_lse, num_valid};
}

template <typename T, typename MakeS>
at::Tensor loss_backward(const at::Tensor& grad_loss, const at::Tensor& emb, MakeS& make_S,
                         const LossPlan& plan, const at::Tensor& row_lse, const at::Tensor& num_valid,
                         double tau_t, double tau_p, double min_overlap) {
  const int64_t B = emb.size(0), V = emb.size(1), P = emb.size(2), D = emb.size(3);
  const Normalized nz = normalize_rows(emb);
  const auto acc = nz.e_hat.scalar_type();
  const at::Tensor lse = row_lse.to(acc).contiguous();
  at::Tensor g_hat = at::zeros_like(nz.e_hat);
  const LossConsts<T> k = loss_consts<T>(tau_t, tau_p, min_overlap);
  const at::Tensor e_flat = nz.e_hat.view({B * V, P, D});
  const cudaStream_t stream = current_stream();
  const int64_t np = pairs_per_sample(V);
  for (int64_t q0 = 0; q0 < plan.pairs; q0 += plan.per_chunk) {
    const int64_t n = std::min(plan.per_chunk, plan.pairs - q0);
    const Chunk ch = prepare_chunk<T>(make_S, e_flat, V, q0, n, k);
    at::Tensor ga = at::zeros_like(ch.ea), gc = at::zeros_like(ch.ec);
    const at::Tensor ec_t = ch.ec.transpose(1, 2);
    for (int64_t r0 = 0; r0 < P; r0 += plan.tile_rows) {
      const int64_t rows = std::min(plan.tile_rows, P - r0);
      const at::Tensor ea_tile = ch.ea.narrow(1, r0, rows);
      const at::Tensor dots = at::bmm(ea_tile, ec_t).contiguous();  // [n, rows, P]
      at::Tensor G = at::empty_like(dots);
      const LaunchCfg L = elementwise_launch(n * rows * P);
      tile_grad_kernel<T><<<L.grid, L.block, L.shmem, stream>>>(
          dots.data_ptr<T>(), n, rows, r0, P, ch.S.data_ptr<T>(), ch.t_lse_row.data_ptr<T>(),
          ch.t_sum_row.data_ptr<double>(), ch.t_lse_col.data_ptr<T>(), ch.t_sum_col.data_ptr<double>(),
          lse.data_ptr<T>(), ch.info.data_ptr<int64_t>(), k, G.data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      ga.narrow(1, r0, rows).baddbmm_(G, ch.ec);
      gc.baddbmm_(G.transpose(1, 2), ea_tile);
    }
    const int64_t b_lo = q0 / np, nb = (q0 + n - 1) / np - b_lo + 1;
    const LaunchCfg Ls = elementwise_launch(nb * V * P * D);
    scatter_grad_kernel<T><<<Ls.grid, Ls.block, Ls.shmem, stream>>>(ga.data_ptr<T>(), gc.data_ptr<T>(), q0, n,
                                                                    V, P * D, b_lo, nb, g_hat.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  // grad_loss / (tau_p * max(num_valid, 1)), as device tensors (no host sync).
  const at::Tensor count = num_valid.to(emb.device(), acc).clamp_min(1);
  const at::Tensor scale = grad_loss.to(emb.device(), acc).reshape({}) / (count * tau_p);
  g_hat.mul_(scale);
  return normalize_backward(g_hat, nz).to(emb.scalar_type()).contiguous();
}

// Calls f.template operator()<T>() with T = float or double for the accumulation dtype of emb.
template <typename F>
auto dispatch_acc(const at::Tensor& emb, F&& f) {
  if (acc_type_for(emb.scalar_type()) == at::kDouble) return f(double{});
  return f(float{});
}

// --------------------------------------------------------------------------- S from the inputs
// soft_infonce: S from the overlap input [B, V, V, P, P], in its dtype (float16 / bfloat16 overlaps
// are read as float32: one rounding finer than the reference's half-precision sum).
struct OverlapTargets {
  at::Tensor overlap;  // contiguous, float32 or float64
  at::ScalarType acc;
  int64_t V, P;

  OverlapTargets(const at::Tensor& ov, at::ScalarType acc_in)
      : overlap((ov.scalar_type() == at::kDouble || ov.scalar_type() == at::kFloat ? ov : ov.to(at::kFloat))
                    .contiguous()),
        acc(acc_in),
        V(ov.size(1)),
        P(ov.size(3)) {}

  void operator()(Chunk& ch) {
    const LaunchCfg L = elementwise_launch(ch.n * P * P);
    const int64_t* info = ch.info.data_ptr<int64_t>();
    AT_DISPATCH_FLOATING_TYPES(overlap.scalar_type(), "hatch_targets_from_overlap", [&] {
      using D = scalar_t;
      if (acc == at::kDouble) {
        targets_from_overlap_kernel<D, double><<<L.grid, L.block, L.shmem, current_stream()>>>(
            overlap.data_ptr<D>(), V, P, ch.n, info, ch.S.data_ptr<double>(), ch.S64.data_ptr<double>());
      } else {
        targets_from_overlap_kernel<D, float><<<L.grid, L.block, L.shmem, current_stream()>>>(
            overlap.data_ptr<D>(), V, P, ch.n, info, ch.S.data_ptr<float>(), ch.S64.data_ptr<double>());
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

// patch_align: S recomputed from the depth maps for the chunk's pairs (both directions) by the
// reprojection kernels, divided by the per-cell denominators computed once for all views.
struct DepthTargets {
  at::Tensor depth;   // [B, V, H, W] contiguous
  at::Tensor proj;    // [B, V, V, kPairProjSize] float64 on the device
  at::Tensor den;     // [B, V, P] int32
  at::Tensor counts;  // [per_chunk, 2, P, P] int32 scratch, reused chunk after chunk (stream-ordered)
  PixelGrid g;
  int64_t V;
  double abs_tol, rel_tol;
  at::ScalarType acc;

  DepthTargets(const char* op, const at::Tensor& depth_in, const at::Tensor& K,
               const at::Tensor& cam_to_world, const GeometryDims& dims, int64_t stride, double abs_tol_in,
               double rel_tol_in, at::ScalarType acc_in, int64_t per_chunk)
      : depth(depth_in.contiguous()),
        g(PixelGrid::make(dims.H, dims.W, dims.grid_h, dims.grid_w, stride)),
        V(dims.V),
        abs_tol(abs_tol_in),
        rel_tol(rel_tol_in),
        acc(acc_in) {
    check_cuda_index_limits(op, dims, kPixelsPerBlock);
    proj = device_pair_projections(op, K, cam_to_world);
    const auto int_opts = depth.options().dtype(at::kInt);
    den = at::zeros({dims.B, dims.V, dims.P}, int_opts);
    launch_cell_valid_counts(depth, g, dims.B * dims.V, den);
    counts = at::empty({per_chunk, 2, dims.P, dims.P}, int_opts);
  }

  void operator()(Chunk& ch) {
    const int64_t P = g.cells();
    at::Tensor cnt = counts.narrow(0, 0, ch.n);
    cnt.zero_();
    launch_pair_counts(depth, proj, Triples::chunk(V, ch.q0, ch.n), g, abs_tol, rel_tol, cnt);
    const LaunchCfg L = elementwise_launch(ch.n * P * P);
    const int32_t* c = cnt.data_ptr<int32_t>();
    const int32_t* den_p = den.data_ptr<int32_t>();
    const int64_t* info = ch.info.data_ptr<int64_t>();
    AT_DISPATCH_FLOATING_TYPES(depth.scalar_type(), "hatch_targets_from_counts", [&] {
      using D = scalar_t;
      if (acc == at::kDouble) {
        targets_from_counts_kernel<D, double><<<L.grid, L.block, L.shmem, current_stream()>>>(
            c, den_p, P, ch.n, info, ch.S.data_ptr<double>(), ch.S64.data_ptr<double>());
      } else {
        targets_from_counts_kernel<D, float><<<L.grid, L.block, L.shmem, current_stream()>>>(
            c, den_p, P, ch.n, info, ch.S.data_ptr<float>(), ch.S64.data_ptr<double>());
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

LossPlan plan_for(const at::Tensor& emb, bool from_depth) {
  return loss_plan(emb.size(0), emb.size(1), emb.size(2), emb.size(3),
                   acc_type_for(emb.scalar_type()) == at::kDouble ? 8 : 4, from_depth);
}

}  // namespace

// ------------------------------------------------------------------------------------------- ops
std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_infonce(const at::Tensor& emb, const at::Tensor& overlap,
                                                            double tau_t, double tau_p, double min_overlap) {
  const char* op = "soft_infonce";
  check_embeddings(op, emb);
  check_overlap(op, overlap, emb);
  check_loss_params(op, tau_t, tau_p, min_overlap);
  check_cuda(op, "emb", emb);
  const c10::cuda::CUDAGuard guard(emb.device());
  OverlapTargets targets(overlap, acc_type_for(emb.scalar_type()));
  const LossPlan plan = plan_for(emb, false);
  return dispatch_acc(emb, [&](auto tag) {
    using T = decltype(tag);
    return loss_forward<T>(emb, targets, plan, tau_t, tau_p, min_overlap);
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
  OverlapTargets targets(overlap, acc_type_for(emb.scalar_type()));
  const LossPlan plan = plan_for(emb, false);
  return dispatch_acc(emb, [&](auto tag) {
    using T = decltype(tag);
    return loss_backward<T>(grad_loss, emb, targets, plan, row_lse, num_valid, tau_t, tau_p, min_overlap);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> patch_align(const at::Tensor& emb, const at::Tensor& depth,
                                                           const at::Tensor& K,
                                                           const at::Tensor& cam_to_world, int64_t grid_h,
                                                           int64_t grid_w, double tau_t, double tau_p,
                                                           double abs_tol, double rel_tol, int64_t stride,
                                                           double min_overlap) {
  const char* op = "patch_align";
  const GeometryDims dims = check_patch_align(op, emb, depth, K, cam_to_world, grid_h, grid_w, tau_t, tau_p,
                                              abs_tol, rel_tol, stride, min_overlap);
  check_cuda(op, "depth", depth);
  const c10::cuda::CUDAGuard guard(emb.device());
  const LossPlan plan = plan_for(emb, true);
  DepthTargets targets(op, depth, K, cam_to_world, dims, stride, abs_tol, rel_tol,
                       acc_type_for(emb.scalar_type()), plan.per_chunk);
  return dispatch_acc(emb, [&](auto tag) {
    using T = decltype(tag);
    return loss_forward<T>(emb, targets, plan, tau_t, tau_p, min_overlap);
  });
}

at::Tensor patch_align_backward(const at::Tensor& grad_loss, const at::Tensor& emb, const at::Tensor& depth,
                                const at::Tensor& K, const at::Tensor& cam_to_world,
                                const at::Tensor& row_lse, const at::Tensor& num_valid, int64_t grid_h,
                                int64_t grid_w, double tau_t, double tau_p, double abs_tol, double rel_tol,
                                int64_t stride, double min_overlap) {
  const char* op = "patch_align_backward";
  const GeometryDims dims = check_patch_align(op, emb, depth, K, cam_to_world, grid_h, grid_w, tau_t, tau_p,
                                              abs_tol, rel_tol, stride, min_overlap);
  check_grad_loss(op, grad_loss, emb);
  check_saved(op, row_lse, num_valid, emb);
  check_cuda(op, "depth", depth);
  const c10::cuda::CUDAGuard guard(emb.device());
  const LossPlan plan = plan_for(emb, true);
  DepthTargets targets(op, depth, K, cam_to_world, dims, stride, abs_tol, rel_tol,
                       acc_type_for(emb.scalar_type()), plan.per_chunk);
  return dispatch_acc(emb, [&](auto tag) {
    using T = decltype(tag);
    return loss_backward<T>(grad_loss, emb, targets, plan, row_lse, num_valid, tau_t, tau_p, min_overlap);
  });
}

}  // namespace hatch::cuda
