// Input validation shared by every backend's host code. Each failure names the op, the argument, what
// was expected and what came (ValueError / TypeError in Python), so bad input never reaches a kernel.
#pragma once
#include <ATen/ATen.h>

namespace hatch {

struct GeometryDims {
  int64_t B, V, H, W, grid_h, grid_w, P;
};

// depth [B, V, H, W] float32/float64, K [B, V, 3, 3], cam_to_world [B, V, 4, 4] (floating, same
// device), 1 <= grid <= image size, tolerances >= 0, stride >= 1.
GeometryDims check_geometry(const char* op, const at::Tensor& depth, const at::Tensor& K,
                            const at::Tensor& cam_to_world, int64_t grid_h, int64_t grid_w, double abs_tol,
                            double rel_tol, int64_t stride);

// emb [B, V, P, D] with B, V, P as given; float32/float64/float16/bfloat16; on `device`.
void check_embeddings(const char* op, const at::Tensor& emb, int64_t B, int64_t V, int64_t P,
                      const at::Device& device);
// emb alone (no geometry): [B, V, P, D], B, V, P, D >= 1, floating.
void check_embeddings(const char* op, const at::Tensor& emb);
// grad of cell_similarity_backward: the output's shape [B, V, V, P, P] (from emb), floating, on emb's
// device.
void check_similarity_grad(const char* op, const at::Tensor& grad, const at::Tensor& emb);
// overlap [B, V, V, P, P] floating, on emb's device.
void check_overlap(const char* op, const at::Tensor& overlap, const at::Tensor& emb);
// tau_t, tau_p > 0 and finite; min_overlap finite and >= 0.
void check_loss_params(const char* op, double tau_t, double tau_p, double min_overlap);
// Everything patch_align / patch_align_backward take besides the saved tensors: the geometry, emb on
// depth's device with its B, V, P, and the loss parameters. Returns the geometry's dims.
GeometryDims check_patch_align(const char* op, const at::Tensor& emb, const at::Tensor& depth,
                               const at::Tensor& K, const at::Tensor& cam_to_world, int64_t grid_h,
                               int64_t grid_w, double tau_t, double tau_p, double abs_tol, double rel_tol,
                               int64_t stride, double min_overlap);
// grad_loss of a backward op: a 0-dim floating-point tensor on emb's device (every backend).
void check_grad_loss(const char* op, const at::Tensor& grad_loss, const at::Tensor& emb);
// row_lse [B, V, V, P] and num_valid [] as produced by the forward op.
void check_saved(const char* op, const at::Tensor& row_lse, const at::Tensor& num_valid,
                 const at::Tensor& emb);

// Every CUDA op's inputs must live on a CUDA device (the dispatcher picks the CUDA kernel as soon as
// one argument is a CUDA tensor; the checks above then verify that all of them are on that device).
void check_cuda(const char* op, const char* name, const at::Tensor& t);
// The CUDA reprojection kernels index pixels and (cell, cell) bins in int32: H * W (plus `pixel_margin`,
// the pixels one block may run past the end), P², H * grid_h and W * grid_w must fit.
void check_cuda_index_limits(const char* op, const GeometryDims& g, int64_t pixel_margin);

// The per-(sample, view a, view c) projection of geometry.h (kPairProjSize numbers each), computed in
// float64 on the CPU: [B, V, V, 16]. Raises on singular K, non-finite or non-invertible poses.
at::Tensor pair_projections(const char* op, const at::Tensor& K, const at::Tensor& cam_to_world);

// Accumulation dtype for an embedding dtype: float64 for float64, float32 otherwise.
inline at::ScalarType acc_type_for(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

}  // namespace hatch
