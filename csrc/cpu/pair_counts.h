// The per-pixel reprojection loop of one (sample, view a, view c), shared by patch_overlap and the
// fused PaStA loss on the CPU. No per-pixel intermediates: each row of pixels is unprojected and
// transformed in a row-sized tile, then depth-tested and binned.
#pragma once
#include <cstdint>
#include <limits>
#include <vector>

#include "../common/geometry.h"

namespace hatch::cpu {

// For the taking-part pixels of view a in rows [r0, r1): adds 1 to den[i] (if den) for every pixel of
// cell i with valid depth, and 1 to counts[i * P + j] (if depth_c) for every such pixel that is visible
// in view c and lands in its cell j. proj is the pair's kPairProjSize numbers (checks.h:
// pair_projections). Rows that take part are those with r % stride == 0 (columns likewise).
template <typename scalar_t, typename count_t>
void accumulate_pair_counts(const scalar_t* depth_a, const scalar_t* depth_c, const double* proj, int64_t H,
                            int64_t W, int64_t grid_h, int64_t grid_w, double abs_tol, double rel_tol,
                            int64_t stride, int64_t r0, int64_t r1, count_t* counts, count_t* den) {
  const int64_t P = grid_h * grid_w;
  const int64_t nc = (W + stride - 1) / stride;  // taking-part columns of a row
  // Cell of a pixel row / column by table lookup: two integer divisions per pixel (cell_of) would
  // cost more than the whole reprojection. Same rule as cell_of: row part (r*gh/H)*gw, column c*gw/W.
  std::vector<int64_t> row_cell(static_cast<size_t>(H)), col_cell(static_cast<size_t>(W));
  for (int64_t r = 0; r < H; ++r) row_cell[r] = cell_of(r, 0, H, W, grid_h, grid_w);
  for (int64_t c = 0; c < W; ++c) col_cell[c] = cell_of(0, c, H, W, grid_h, grid_w);
  // One row of projections: not a per-pixel intermediate of the image, a row-sized tile that lets the
  // arithmetic of a row (projection, inside test, landing pixel) run as one branch-free, vectorised
  // loop; the second loop then only gathers c's depth, tests it and bins.
  std::vector<double> zs_(depth_c ? static_cast<size_t>(nc) : 0);
  std::vector<int32_t> rc_(depth_c ? static_cast<size_t>(2 * nc) : 0);
  double* __restrict zs = zs_.data();    // z in view c, NaN where the pixel cannot be visible
  int32_t* __restrict r2s = rc_.data();  // landing pixel (clamped into the image)
  int32_t* __restrict c2s = r2s + nc;
  const double nan = std::numeric_limits<double>::quiet_NaN();

  const int64_t first = ((r0 + stride - 1) / stride) * stride;
  for (int64_t r = first; r < r1; r += stride) {
    const int64_t cell_row = row_cell[r];
    const scalar_t* __restrict depth_row = depth_a + r * W;
    if (!depth_c) {  // denominators only
      if (den)
        for (int64_t k = 0; k < nc; ++k) {
          const int64_t c = k * stride;
          den[cell_row + col_cell[c]] += static_cast<count_t>(depth_valid(depth_row[c]));
        }
      continue;
    }
    const double v = static_cast<double>(r);
    for (int32_t k = 0; k < static_cast<int32_t>(nc); ++k) {
      const int32_t c = k * static_cast<int32_t>(stride);
      const double d = static_cast<double>(depth_row[c]);
      double z, fc, fr;
      project_pixel<double>(proj, d, v, static_cast<double>(c), z, fc, fr);
      const bool inside = landing_pixel<double, int32_t>(z, fc, fr, static_cast<int32_t>(H),
                                                         static_cast<int32_t>(W), r2s[k], c2s[k]);
      zs[k] = (inside & depth_valid(d)) ? z : nan;
    }
    for (int64_t k = 0; k < nc; ++k) {
      const int64_t c = k * stride, r2 = r2s[k], c2 = c2s[k];
      const int64_t i = cell_row + col_cell[c];
      if (den) den[i] += static_cast<count_t>(depth_valid(depth_row[c]));
      const bool vis = depth_agrees(zs[k], static_cast<double>(depth_c[r2 * W + c2]), abs_tol, rel_tol);
      counts[i * P + row_cell[r2] + col_cell[c2]] += static_cast<count_t>(vis);
    }
  }
}

}  // namespace hatch::cpu
