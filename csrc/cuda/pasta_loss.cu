#include "kernels.h"
#include "../common/checks.h"
#include "../common/geometry.h"

namespace hatch::cuda {

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_infonce(const at::Tensor& emb,
                                                            const at::Tensor& overlap, double tau_t,
                                                            double tau_p, double min_overlap) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, "hatch.soft_infonce: cuda kernel not written yet");
}

at::Tensor soft_infonce_backward(const at::Tensor& grad_loss, const at::Tensor& emb,
                                 const at::Tensor& overlap, const at::Tensor& row_lse,
                                 const at::Tensor& num_valid, double tau_t, double tau_p,
                                 double min_overlap) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, "hatch.soft_infonce_backward: cuda kernel not written yet");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> patch_align(
    const at::Tensor& emb, const at::Tensor& depth, const at::Tensor& K, const at::Tensor& cam_to_world,
    int64_t grid_h, int64_t grid_w, double tau_t, double tau_p, double abs_tol, double rel_tol,
    int64_t stride, double min_overlap) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, "hatch.patch_align: cuda kernel not written yet");
}

at::Tensor patch_align_backward(const at::Tensor& grad_loss, const at::Tensor& emb,
                                const at::Tensor& depth, const at::Tensor& K,
                                const at::Tensor& cam_to_world, const at::Tensor& row_lse,
                                const at::Tensor& num_valid, int64_t grid_h, int64_t grid_w,
                                double tau_t, double tau_p, double abs_tol, double rel_tol,
                                int64_t stride, double min_overlap) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, "hatch.patch_align_backward: cuda kernel not written yet");
}

}  // namespace hatch::cuda
