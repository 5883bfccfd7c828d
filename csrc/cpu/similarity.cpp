#include "kernels.h"
#include "../common/checks.h"

namespace hatch::cpu {

at::Tensor cell_similarity(const at::Tensor& emb) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, "hatch.cell_similarity: cpu kernel not written yet");
}

at::Tensor cell_similarity_backward(const at::Tensor& grad, const at::Tensor& emb) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, "hatch.cell_similarity_backward: cpu kernel not written yet");
}

}  // namespace hatch::cpu
