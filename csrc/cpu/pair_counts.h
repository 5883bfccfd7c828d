// The per-pixel reprojection loop of one (sample, view a, view c), shared by patch_overlap and the
// fused PaStA loss on the CPU. No per-pixel intermediates: each pixel is unprojected, transformed,
// depth-tested and binned in registers.
#pragma once
#include <cstdint>

#include "../common/geometry.h"

namespace hatch::cpu {

// For the taking-part pixels of view a in rows [r0, r1): adds 1 to den[i] (if den) for every pixel of
// cell i with valid depth, and 1 to counts[i * P + j] (if depth_c) for every such pixel that is visible
// in view c and lands in its cell j. proj is the pair's kPairProjSize numbers (checks.h:
// pair_projections). Rows that take part are those with r % stride == 0 (columns likewise).
template <typename scalar_t, typename count_t>
void accumulate_pair_counts(const scalar_t* depth_a, const scalar_t* depth_c, const double* proj,
                            int64_t H, int64_t W, int64_t grid_h, int64_t grid_w, double abs_tol,
                            double rel_tol, int64_t stride, int64_t r0, int64_t r1, count_t* counts,
                            count_t* den) {
  const int64_t P = grid_h * grid_w;
  const int64_t first = ((r0 + stride - 1) / stride) * stride;
  for (int64_t r = first; r < r1; r += stride) {
    const int64_t cell_row = (r * grid_h / H) * grid_w;
    for (int64_t c = 0; c < W; c += stride) {
      const double d = static_cast<double>(depth_a[r * W + c]);
      if (!depth_valid(d)) continue;
      const int64_t i = cell_row + c * grid_w / W;
      if (den) den[i] += 1;
      if (!depth_c) continue;
      int64_t r2, c2;
      if (reproject_visible<double, scalar_t>(proj, d, r, c, depth_c, H, W, abs_tol, rel_tol, r2, c2))
        counts[i * P + cell_of(r2, c2, H, W, grid_h, grid_w)] += 1;
    }
  }
}

}  // namespace hatch::cpu
