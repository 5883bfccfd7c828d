// The per-pixel reprojection loop of one (sample, view a, view c), shared by patch_overlap and the
// fused PaStA loss on the CPU. No per-pixel intermediates: each row of pixels is unprojected and
// transformed in a row-sized tile, then depth-tested and binned.
#pragma once
#include <cstdint>
#include <vector>

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
  const int64_t nc = (W + stride - 1) / stride;  // taking-part columns of a row
  // Cell of a pixel row / column by table lookup: two integer divisions per pixel (cell_of) would
  // cost more than the whole reprojection. Same rule as cell_of: row part (r*gh/H)*gw, column c*gw/W.
  std::vector<int64_t> row_cell(static_cast<size_t>(H)), col_cell(static_cast<size_t>(W));
  for (int64_t r = 0; r < H; ++r) row_cell[r] = cell_of(r, 0, H, W, grid_h, grid_w);
  for (int64_t c = 0; c < W; ++c) col_cell[c] = cell_of(0, c, H, W, grid_h, grid_w);
  // One row of projections (z, fc, fr): not a per-pixel intermediate of the image, a row-sized tile
  // that lets the arithmetic of a row run as one branch-free, vectorised loop.
  std::vector<double> tile(depth_c ? static_cast<size_t>(3 * nc) : 0);
  double* __restrict zs = tile.data();
  double* __restrict fcs = zs + nc;
  double* __restrict frs = fcs + nc;

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
    // Project the row into the tile (vectorised: no branches, no gathers).
    const double v = static_cast<double>(r);
    for (int32_t k = 0; k < static_cast<int32_t>(nc); ++k) {
      const int32_t c = k * static_cast<int32_t>(stride);
      project_pixel<double>(proj, static_cast<double>(depth_row[c]), v, static_cast<double>(c), zs[k],
                            fcs[k], frs[k]);
    }
    // Branch-free: invalid source pixels and invisible ones add 0, so the loop has no data-dependent
    // branch and the loads of c's depth (addresses known from the tile) overlap.
    for (int64_t k = 0; k < nc; ++k) {
      const int64_t c = k * stride;
      const bool ok = depth_valid(depth_row[c]);
      const int64_t i = cell_row + col_cell[c];
      if (den) den[i] += static_cast<count_t>(ok);
      int64_t r2, c2;  // always inside the image
      const bool vis = landing_visible<double, scalar_t>(zs[k], fcs[k], frs[k], depth_c, H, W,
                                                         abs_tol, rel_tol, r2, c2);
      counts[i * P + row_cell[r2] + col_cell[c2]] += static_cast<count_t>(ok & vis);
    }
  }
}

}  // namespace hatch::cpu
