// hatch::patch_overlap on the CPU: fused depth reprojection -> overlap M [B, V, V, P, P]
// (docs/design.md, "The PaStA math", steps 1-2). One pass over the pixels of each (view a, view c) pair,
// nothing per pixel is stored: pixels are reprojected a row at a time and binned (cpu/pair_counts.h)
// into an integer scratch per thread, of which a task uses the rows of its own cells. On x86-64 CPUs
// with AVX2 the same tasks run the vectorised loop of cpu/overlap_simd.h instead (same counts, bit for
// bit; about 2.4x faster at the paper's geometry, benchmarks/results/overlap_cpu_fast.md).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <vector>

#include "../common/checks.h"
#include "../common/geometry.h"
#include "kernels.h"
#include "overlap_simd.h"
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
      accumulate_pair_counts<scalar_t, int64_t>(depth_a, nullptr, nullptr, H, W, gh, gw, abs_tol, rel_tol,
                                                stride, r0, r1, nullptr, den.data());

      for (int64_t c = 0; c < V; ++c) {
        scalar_t* out_ac = out + ((s * V + a) * V + c) * P * P;
        if (c == a) {  // same view: not an overlap, written as 0
          std::fill(out_ac + i0 * P, out_ac + i1 * P, scalar_t(0));
          continue;
        }
        std::fill(counts.begin() + i0 * P, counts.begin() + i1 * P, 0);
        const double* proj_ac = proj + ((s * V + a) * V + c) * kPairProjSize;
        accumulate_pair_counts<scalar_t, int64_t>(depth_a, depth + (s * V + c) * HW, proj_ac, H, W, gh, gw,
                                                  abs_tol, rel_tol, stride, r0, r1, counts.data(), nullptr);
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

#if HATCH_HAVE_AVX2_KERNEL
template <typename scalar_t>
void overlap_kernel_avx2(const scalar_t* depth, const double* proj, scalar_t* out, const GeometryDims& g,
                         const simd::SimdTables& t, double abs_tol, double rel_tol, int64_t stride) {
  at::parallel_for(0, g.B * g.V * g.grid_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> drow(static_cast<size_t>(3 * t.g.nc4 + 4));   // row depths, zs, 1 / z
    std::vector<scalar_t> dcs(static_cast<size_t>(t.g.nc4 + 4));      // view c's depths at the landings
    std::vector<int32_t> bins(static_cast<size_t>(2 * t.g.nc4 + 8));  // bins, then pixel indices
    std::vector<int32_t> hist(static_cast<size_t>(t.nh * t.hstride));
    std::vector<int64_t> den(static_cast<size_t>(g.P));
    for (int64_t task = begin; task < end; ++task)
      simd::overlap_task_avx2<scalar_t>(task, depth, proj, out, g, t, abs_tol, rel_tol, stride, drow.data(),
                                        dcs.data(), bins.data(), hist.data(), den.data());
  });
}

// The AVX2 kernel needs a CPU with AVX2 and int32 pixel indices and bins. HATCH_CPU_PORTABLE_OVERLAP=1
// in the environment forces the portable loop (tests/ops/test_overlap_fast.py compares the two).
inline bool avx2_kernel_applies(const GeometryDims& g) {
  const char* portable = std::getenv("HATCH_CPU_PORTABLE_OVERLAP");
  if (portable != nullptr && portable[0] == '1') return false;
  return simd::cpu_has_avx2() && g.H * g.W < (int64_t(1) << 31) && g.grid_w * g.P < (int64_t(1) << 30);
}
#endif

}  // namespace

at::Tensor patch_overlap(const at::Tensor& depth, const at::Tensor& K, const at::Tensor& cam_to_world,
                         int64_t grid_h, int64_t grid_w, double abs_tol, double rel_tol, int64_t stride) {
  const GeometryDims g =
      check_geometry("patch_overlap", depth, K, cam_to_world, grid_h, grid_w, abs_tol, rel_tol, stride);
  const at::Tensor proj = pair_projections("patch_overlap", K, cam_to_world);  // [B, V, V, 16] f64
  const at::Tensor d = depth.contiguous();
  // Every element is written by the kernel (a == c blocks included), so no zero-fill is needed.
  at::Tensor out = at::empty({g.B, g.V, g.V, g.P, g.P}, d.options());
  AT_DISPATCH_FLOATING_TYPES(d.scalar_type(), "hatch::patch_overlap", [&] {
#if HATCH_HAVE_AVX2_KERNEL
    if (avx2_kernel_applies(g)) {
      const simd::SimdTables t = simd::simd_tables(g, stride);
      if (t.exact) {
        overlap_kernel_avx2<scalar_t>(d.data_ptr<scalar_t>(), proj.data_ptr<double>(),
                                      out.data_ptr<scalar_t>(), g, t, abs_tol, rel_tol, stride);
        return;
      }
    }
#endif
    overlap_kernel<scalar_t>(d.data_ptr<scalar_t>(), proj.data_ptr<double>(), out.data_ptr<scalar_t>(), g,
                             abs_tol, rel_tol, stride);
  });
  return out;
}

}  // namespace hatch::cpu
