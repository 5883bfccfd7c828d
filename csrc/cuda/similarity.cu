#include "kernels.h"
#include "../common/checks.h"

namespace hatch::cuda {

at::Tensor cell_similarity(const at::Tensor& emb) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, "hatch.cell_similarity: cuda kernel not written yet");
}

at::Tensor cell_similarity_backward(const at::Tensor& grad, const at::Tensor& emb) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, "hatch.cell_similarity_backward: cuda kernel not written yet");
}

}  // namespace hatch::cuda
