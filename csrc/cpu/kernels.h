// CPU kernels of the hatch ops (schemas in csrc/ops.cpp, registered in cpu/register.cpp).
#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace hatch::cpu {

// overlap.cpp
at::Tensor patch_overlap(const at::Tensor& depth, const at::Tensor& K, const at::Tensor& cam_to_world,
                         int64_t grid_h, int64_t grid_w, double abs_tol, double rel_tol, int64_t stride);

// similarity.cpp
at::Tensor cell_similarity(const at::Tensor& emb);
at::Tensor cell_similarity_backward(const at::Tensor& grad, const at::Tensor& emb);

// soft_infonce.cpp (the per-pair core of both losses: pair_loss.h)
std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_infonce(const at::Tensor& emb, const at::Tensor& overlap,
                                                            double tau_t, double tau_p, double min_overlap);
at::Tensor soft_infonce_backward(const at::Tensor& grad_loss, const at::Tensor& emb,
                                 const at::Tensor& overlap, const at::Tensor& row_lse,
                                 const at::Tensor& num_valid, double tau_t, double tau_p, double min_overlap);

// patch_align.cpp
std::tuple<at::Tensor, at::Tensor, at::Tensor> patch_align(const at::Tensor& emb, const at::Tensor& depth,
                                                           const at::Tensor& K,
                                                           const at::Tensor& cam_to_world, int64_t grid_h,
                                                           int64_t grid_w, double tau_t, double tau_p,
                                                           double abs_tol, double rel_tol, int64_t stride,
                                                           double min_overlap);
at::Tensor patch_align_backward(const at::Tensor& grad_loss, const at::Tensor& emb, const at::Tensor& depth,
                                const at::Tensor& K, const at::Tensor& cam_to_world,
                                const at::Tensor& row_lse, const at::Tensor& num_valid, int64_t grid_h,
                                int64_t grid_w, double tau_t, double tau_p, double abs_tol, double rel_tol,
                                int64_t stride, double min_overlap);

}  // namespace hatch::cpu
