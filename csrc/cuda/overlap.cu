#include "kernels.h"
#include "../common/checks.h"
#include "../common/geometry.h"

namespace hatch::cuda {

at::Tensor patch_overlap(const at::Tensor& depth, const at::Tensor& K, const at::Tensor& cam_to_world,
                         int64_t grid_h, int64_t grid_w, double abs_tol, double rel_tol, int64_t stride) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, "hatch.patch_overlap: cuda kernel not written yet");
}

}  // namespace hatch::cuda
