// The one CUDA registration block of the hatch library.
#include <torch/library.h>

#include "kernels.h"

TORCH_LIBRARY_IMPL(hatch, CUDA, m) {
  m.impl("patch_overlap", &hatch::cuda::patch_overlap);
  m.impl("cell_similarity", &hatch::cuda::cell_similarity);
  m.impl("cell_similarity_backward", &hatch::cuda::cell_similarity_backward);
  m.impl("soft_infonce", &hatch::cuda::soft_infonce);
  m.impl("soft_infonce_backward", &hatch::cuda::soft_infonce_backward);
  m.impl("patch_align", &hatch::cuda::patch_align);
  m.impl("patch_align_backward", &hatch::cuda::patch_align_backward);
}
