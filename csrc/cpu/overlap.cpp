// hatch::patch_overlap on the CPU: fused depth reprojection -> overlap M [B, V, V, P, P]
// (DESIGN.md, "The PaStA math", steps 1-2). One pass over the pixels of each (view a, view c) pair,
// nothing per pixel is stored: each pixel is reprojected and binned in registers
// (cpu/pair_counts.h), the counts of a cell row live in a small integer scratch.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../common/checks.h"
#include "../common/geometry.h"
#include "kernels.h"
#include "pair_counts.h"

namespace hatch::cpu {
namespace {

// First pixel row of cell row gr: the smallest r with floor(r * grid_h / H) == gr, i.e. ceil(gr*H/grid_h).
inline int64_t first_pixel_row(int64_t gr, int64_t H, int64_t grid_h) {
  return (gr * H + grid_h - 1) / grid_h;
}

// One task = (sample s, source view a, cell row gr): it owns the output rows M[s, a, :, i, :] for the
// cells i of that cell row, so tasks never write the same element and the result does not depend on
// the thread count. Counts are integers (exact), the division happens once per output element.
template <typename scalar_t>
void overlap_kernel(const scalar_t* depth, const double* proj, scalar_t* out, const GeometryDims& g,
                    double abs_tol, double rel_tol, int64_t stride) {
  const int64_t B = g.B, V = g.V, H = g.H, W = g.W, gh = g.grid_h, gw = g.grid_w, P = g.P;
  const int64_t HW = H * W;
  at::parallel_for(0, B * V * gh, 1, [&](int64_t begin, int64_t end) {
    // Indexed by the global cell i (the loop's convention), but only the rows of the task's cell row
    // are ever touched, zeroed or read: P*P entries allocated once per chunk, gw*P used per task.
    std::vector<int64_t> counts(static_cast<size_t>(P * P));
    std::vector<int64_t> den(static_cast<size_t>(P));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t gr = task % gh;
      const int64_t a = (task / gh) % V;
      const int64_t s = task / (gh * V);
      const int64_t r0 = first_pixel_row(gr, H, gh), r1 = first_pixel_row(gr + 1, H, gh);
      const int64_t i0 = gr * gw, i1 = i0 + gw;  // the cells of this cell row
      const scalar_t* depth_a = depth + (s * V + a) * HW;

      // Denominators once per task (they do not depend on the target view).
      std::fill(den.begin() + i0, den.begin() + i1, 0);
      accumulate_pair_counts<scalar_t, int64_t>(depth_a, nullptr, nullptr, H, W, gh, gw, abs_tol,
                                                rel_tol, stride, r0, r1, nullptr, den.data());

      for (int64_t c = 0; c < V; ++c) {
        scalar_t* out_ac = out + ((s * V + a) * V + c) * P * P;
        if (c == a) {  // same view: not an overlap, written as 0
          std::fill(out_ac + i0 * P, out_ac + i1 * P, scalar_t(0));
          continue;
        }
        std::fill(counts.begin() + i0 * P, counts.begin() + i1 * P, 0);
        const double* proj_ac = proj + ((s * V + a) * V + c) * kPairProjSize;
        accumulate_pair_counts<scalar_t, int64_t>(depth_a, depth + (s * V + c) * HW, proj_ac, H, W,
                                                  gh, gw, abs_tol, rel_tol, stride, r0, r1,
                                                  counts.data(), nullptr);
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t n = den[i];
          const int64_t* cnt = counts.data() + i * P;
          scalar_t* row = out_ac + i * P;
          // Divide in the output's dtype, as the reference does (count / den, both exact).
          for (int64_t j = 0; j < P; ++j)
            row[j] = n > 0 ? static_cast<scalar_t>(cnt[j]) / static_cast<scalar_t>(n) : scalar_t(0);
        }
      }
    }
  });
}

}  // namespace

at::Tensor patch_overlap(const at::Tensor& depth, const at::Tensor& K, const at::Tensor& cam_to_world,
                         int64_t grid_h, int64_t grid_w, double abs_tol, double rel_tol, int64_t stride) {
  const GeometryDims g = check_geometry("patch_overlap", depth, K, cam_to_world, grid_h, grid_w,
                                        abs_tol, rel_tol, stride);
  const at::Tensor proj = pair_projections("patch_overlap", K, cam_to_world);  // [B, V, V, 16] f64
  const at::Tensor d = depth.contiguous();
  // Every element is written by the kernel (a == c blocks included), so no zero-fill is needed.
  at::Tensor out = at::empty({g.B, g.V, g.V, g.P, g.P}, d.options());
  AT_DISPATCH_FLOATING_TYPES(d.scalar_type(), "hatch::patch_overlap", [&] {
    overlap_kernel<scalar_t>(d.data_ptr<scalar_t>(), proj.data_ptr<double>(),
                             out.data_ptr<scalar_t>(), g, abs_tol, rel_tol, stride);
  });
  return out;
}

}  // namespace hatch::cpu
