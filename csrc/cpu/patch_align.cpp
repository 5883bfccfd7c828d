// hatch::patch_align (and its backward) on the CPU: the fused PaStA loss with S = ½(M_ac + M_caᵀ)
// reprojected from depth pair by pair (M is never materialised for all pairs; the binning of
// pair_counts.h, as patch_overlap's). The per-pair loss is the shared core of pair_loss.h (soft_infonce.cpp
// runs the same core on the overlap input).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "../common/checks.h"
#include "../common/geometry.h"
#include "kernels.h"
#include "pair_counts.h"
#include "pair_loss.h"

namespace hatch::cpu {
namespace {

// A zero-filled buffer from calloc: large ones come as fresh zero pages, so only the pages a sparse
// histogram touches cost anything.
class ZeroedCounts {
 public:
  explicit ZeroedCounts(size_t n)
      : p_(static_cast<int32_t*>(std::calloc(std::max<size_t>(n, 1), sizeof(int32_t)))) {
    TORCH_CHECK(p_ != nullptr, "hatch: out of memory allocating ", n, " overlap counts");
  }
  ~ZeroedCounts() { std::free(p_); }
  ZeroedCounts(const ZeroedCounts&) = delete;
  ZeroedCounts& operator=(const ZeroedCounts&) = delete;
  int32_t* data() const { return p_; }

 private:
  int32_t* p_;
};

// S from depth: the reprojection counts of both directions (a → c and c → a), each divided by its
// per-cell count of valid pixels (docs/design.md step 2), halved and listed as entries. Work is split into
// chunks (direction × band of source rows), each with its own count buffer, so the parallel loop has
// no shared writes; the counts are integers, so the merged result is exact and deterministic.
struct ReprojectionSource {
  at::Tensor depth;  // [B, V, H, W] contiguous
  at::Tensor proj;   // [B, V, V, kPairProjSize] float64
  GeometryDims g;
  double abs_tol, rel_tol;
  int64_t stride;

  void operator()(int64_t b, int64_t a, int64_t c, std::vector<SEntry>& out) const {
    const int64_t P = g.P, H = g.H, W = g.W;
    const int64_t pixels = ((H + stride - 1) / stride) * ((W + stride - 1) / stride);
    // Bands only pay off when a band's pixels outnumber the P² buffer it must merge.
    const int64_t threads = at::in_parallel_region() ? 1 : std::max<int64_t>(at::get_num_threads(), 1);
    const int64_t bands = std::clamp<int64_t>(pixels / std::max<int64_t>(P * P, 4096), 1, threads);
    const int64_t chunks = 2 * bands;
    ZeroedCounts counts(static_cast<size_t>(chunks * P * P));
    std::vector<int32_t> den(static_cast<size_t>(chunks * P), 0);
    AT_DISPATCH_FLOATING_TYPES(depth.scalar_type(), "patch_align_reproject", [&] {
      const scalar_t* d = depth.data_ptr<scalar_t>() + b * g.V * H * W;
      const double* pr = proj.data_ptr<double>() + b * g.V * g.V * kPairProjSize;
      at::parallel_for(0, chunks, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t k = lo; k < hi; ++k) {
          const int64_t dir = k / bands, band = k % bands;
          const int64_t src = dir == 0 ? a : c, dst = dir == 0 ? c : a;
          // Bands split the source rows; their starts need not be multiples of the stride
          // (accumulate_pair_counts rounds up to the next taking-part row).
          const int64_t r0 = band * H / bands, r1 = (band + 1) * H / bands;
          accumulate_pair_counts<scalar_t, int32_t>(
              d + src * H * W, d + dst * H * W, pr + (src * g.V + dst) * kPairProjSize, H, W, g.grid_h,
              g.grid_w, abs_tol, rel_tol, stride, r0, r1, counts.data() + k * P * P, den.data() + k * P);
        }
      });
    });
    for (int64_t dir = 0; dir < 2; ++dir) {
      // Merge the bands into the direction's first chunk, then list M / 2 at its nonzeros.
      int32_t* n0 = counts.data() + dir * bands * P * P;
      int32_t* d0 = den.data() + dir * bands * P;
      for (int64_t band = 1; band < bands; ++band) {
        const int32_t* nb = n0 + band * P * P;
        const int32_t* db = d0 + band * P;
        for (int64_t k = 0; k < P * P; ++k) n0[k] += nb[k];
        for (int64_t i = 0; i < P; ++i) d0[i] += db[i];
      }
      for (int64_t k = 0; k < P * P; ++k) {
        if (n0[k] == 0) continue;
        const auto r = static_cast<int32_t>(k / P), col = static_cast<int32_t>(k % P);
        const double v = 0.5 * (static_cast<double>(n0[k]) / d0[r]);  // ½ M[r, col]
        out.push_back(dir == 0 ? SEntry{r, col, v} : SEntry{col, r, v});
      }
    }
  }
};

ReprojectionSource reprojection_source(const char* op, const at::Tensor& depth, const at::Tensor& K,
                                       const at::Tensor& cam_to_world, const GeometryDims& g, double abs_tol,
                                       double rel_tol, int64_t stride) {
  return {depth.contiguous(), pair_projections(op, K, cam_to_world), g, abs_tol, rel_tol, stride};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> patch_align(const at::Tensor& emb, const at::Tensor& depth,
                                                           const at::Tensor& K,
                                                           const at::Tensor& cam_to_world, int64_t grid_h,
                                                           int64_t grid_w, double tau_t, double tau_p,
                                                           double abs_tol, double rel_tol, int64_t stride,
                                                           double min_overlap) {
  constexpr const char* op = "patch_align";
  const GeometryDims g = check_patch_align(op, emb, depth, K, cam_to_world, grid_h, grid_w, tau_t, tau_p,
                                           abs_tol, rel_tol, stride, min_overlap);
  return loss_forward(emb, reprojection_source(op, depth, K, cam_to_world, g, abs_tol, rel_tol, stride),
                      tau_t, tau_p, min_overlap);
}

at::Tensor patch_align_backward(const at::Tensor& grad_loss, const at::Tensor& emb, const at::Tensor& depth,
                                const at::Tensor& K, const at::Tensor& cam_to_world,
                                const at::Tensor& row_lse, const at::Tensor& num_valid, int64_t grid_h,
                                int64_t grid_w, double tau_t, double tau_p, double abs_tol, double rel_tol,
                                int64_t stride, double min_overlap) {
  constexpr const char* op = "patch_align_backward";
  const GeometryDims g = check_patch_align(op, emb, depth, K, cam_to_world, grid_h, grid_w, tau_t, tau_p,
                                           abs_tol, rel_tol, stride, min_overlap);
  check_grad_loss(op, grad_loss, emb);
  check_saved(op, row_lse, num_valid, emb);
  return loss_backward(grad_loss, emb,
                       reprojection_source(op, depth, K, cam_to_world, g, abs_tol, rel_tol, stride), row_lse,
                       num_valid, tau_t, tau_p, min_overlap);
}

}  // namespace hatch::cpu
