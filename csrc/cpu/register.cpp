// The one CPU registration block of the hatch library.
#include <torch/library.h>

#include "kernels.h"

TORCH_LIBRARY_IMPL(hatch, CPU, m) {
  m.impl("patch_overlap", &hatch::cpu::patch_overlap);
  m.impl("cell_similarity", &hatch::cpu::cell_similarity);
  m.impl("cell_similarity_backward", &hatch::cpu::cell_similarity_backward);
  m.impl("soft_infonce", &hatch::cpu::soft_infonce);
  m.impl("soft_infonce_backward", &hatch::cpu::soft_infonce_backward);
  m.impl("patch_align", &hatch::cpu::patch_align);
  m.impl("patch_align_backward", &hatch::cpu::patch_align_backward);
}
