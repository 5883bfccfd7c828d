#include "checks.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <vector>

#include "geometry.h"

namespace hatch {
namespace {

std::string shape_str(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

void check_floating(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), "hatch.", op, ": argument '", name,
                   "' must be a floating-point tensor, got ", t.scalar_type());
}

void check_rank(const char* op, const char* name, const at::Tensor& t, int64_t rank, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == rank, "hatch.", op, ": argument '", name, "' must have shape ", layout, " (",
                    rank, " dims), got shape ", shape_str(t));
}

void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t dim, int64_t expected,
               const char* what) {
  TORCH_CHECK_VALUE(t.size(dim) == expected, "hatch.", op, ": argument '", name, "' has ", what, " = ",
                    t.size(dim), " (dim ", dim, ", shape ", shape_str(t), ") but ", expected,
                    " was expected");
}

void check_device(const char* op, const char* name, const at::Tensor& t, const at::Device& device,
                  const char* ref) {
  TORCH_CHECK_VALUE(t.device() == device, "hatch.", op, ": argument '", name, "' is on ", t.device(),
                    " but '", ref, "' is on ", device, "; all tensors must be on one device");
}

}  // namespace

GeometryDims check_geometry(const char* op, const at::Tensor& depth, const at::Tensor& K,
                            const at::Tensor& cam_to_world, int64_t grid_h, int64_t grid_w, double abs_tol,
                            double rel_tol, int64_t stride) {
  check_rank(op, "depth", depth, 4, "[B, V, H, W]");
  TORCH_CHECK_TYPE(depth.scalar_type() == at::kFloat || depth.scalar_type() == at::kDouble, "hatch.", op,
                   ": argument 'depth' must be float32 or float64 (z-depth in metres), got ",
                   depth.scalar_type());
  const int64_t B = depth.size(0), V = depth.size(1), H = depth.size(2), W = depth.size(3);
  TORCH_CHECK_VALUE(B > 0 && V > 0 && H > 0 && W > 0, "hatch.", op,
                    ": argument 'depth' must be non-empty [B, V, H, W], got shape ", shape_str(depth));
  check_rank(op, "K", K, 4, "[B, V, 3, 3]");
  check_floating(op, "K", K);
  check_dim(op, "K", K, 0, B, "B (samples; from depth)");
  check_dim(op, "K", K, 1, V, "V (views; from depth)");
  check_dim(op, "K", K, 2, 3, "rows");
  check_dim(op, "K", K, 3, 3, "columns");
  check_rank(op, "cam_to_world", cam_to_world, 4, "[B, V, 4, 4]");
  check_floating(op, "cam_to_world", cam_to_world);
  check_dim(op, "cam_to_world", cam_to_world, 0, B, "B (samples; from depth)");
  check_dim(op, "cam_to_world", cam_to_world, 1, V, "V (views; from depth)");
  check_dim(op, "cam_to_world", cam_to_world, 2, 4, "rows");
  check_dim(op, "cam_to_world", cam_to_world, 3, 4, "columns");
  check_device(op, "K", K, depth.device(), "depth");
  check_device(op, "cam_to_world", cam_to_world, depth.device(), "depth");
  TORCH_CHECK_VALUE(grid_h >= 1 && grid_w >= 1, "hatch.", op,
                    ": grid_h and grid_w must be >= 1, got grid_h=", grid_h, ", grid_w=", grid_w);
  TORCH_CHECK_VALUE(grid_h <= H && grid_w <= W, "hatch.", op, ": the grid (grid_h=", grid_h,
                    ", grid_w=", grid_w, ") is larger than the depth image (H=", H, ", W=", W,
                    "); every cell must hold at least one pixel");
  TORCH_CHECK_VALUE(std::isfinite(abs_tol) && abs_tol >= 0, "hatch.", op,
                    ": abs_tol must be finite and >= 0 (metres), got ", abs_tol);
  TORCH_CHECK_VALUE(std::isfinite(rel_tol) && rel_tol >= 0, "hatch.", op,
                    ": rel_tol must be finite and >= 0, got ", rel_tol);
  TORCH_CHECK_VALUE(stride >= 1, "hatch.", op, ": stride must be >= 1, got ", stride);
  return {B, V, H, W, grid_h, grid_w, grid_h * grid_w};
}

void check_embeddings(const char* op, const at::Tensor& emb) {
  check_rank(op, "emb", emb, 4, "[B, V, P, D]");
  const auto t = emb.scalar_type();
  TORCH_CHECK_TYPE(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16, "hatch.", op,
                   ": argument 'emb' must be float32, float64, float16 or bfloat16, got ", t);
  TORCH_CHECK_VALUE(emb.numel() > 0, "hatch.", op,
                    ": argument 'emb' must be non-empty [B, V, P, D], got shape ", shape_str(emb));
}

void check_embeddings(const char* op, const at::Tensor& emb, int64_t B, int64_t V, int64_t P,
                      const at::Device& device) {
  check_embeddings(op, emb);
  check_dim(op, "emb", emb, 0, B, "B (samples; from depth)");
  check_dim(op, "emb", emb, 1, V, "V (views; from depth)");
  check_dim(op, "emb", emb, 2, P, "P (cells; grid_h * grid_w)");
  check_device(op, "emb", emb, device, "depth");
}

void check_similarity_grad(const char* op, const at::Tensor& grad, const at::Tensor& emb) {
  const int64_t B = emb.size(0), V = emb.size(1), P = emb.size(2);
  std::ostringstream want;
  want << "[" << B << ", " << V << ", " << V << ", " << P << ", " << P << "]";
  TORCH_CHECK_VALUE(grad.sizes() == at::IntArrayRef({B, V, V, P, P}), "hatch.", op,
                    ": argument 'grad' must have the output's shape [B, V, V, P, P] = ", want.str(),
                    " (from emb), got shape ", grad.sizes());
  check_floating(op, "grad", grad);
  check_device(op, "grad", grad, emb.device(), "emb");
}

void check_overlap(const char* op, const at::Tensor& overlap, const at::Tensor& emb) {
  check_rank(op, "overlap", overlap, 5, "[B, V, V, P, P]");
  check_floating(op, "overlap", overlap);
  const int64_t B = emb.size(0), V = emb.size(1), P = emb.size(2);
  check_dim(op, "overlap", overlap, 0, B, "B (samples; from emb)");
  check_dim(op, "overlap", overlap, 1, V, "V (views; from emb)");
  check_dim(op, "overlap", overlap, 2, V, "V (views; from emb)");
  check_dim(op, "overlap", overlap, 3, P, "P (cells; from emb)");
  check_dim(op, "overlap", overlap, 4, P, "P (cells; from emb)");
  check_device(op, "overlap", overlap, emb.device(), "emb");
}

void check_loss_params(const char* op, double tau_t, double tau_p, double min_overlap) {
  TORCH_CHECK_VALUE(std::isfinite(tau_t) && tau_t > 0, "hatch.", op,
                    ": tau_t (target temperature) must be finite and > 0, got ", tau_t);
  TORCH_CHECK_VALUE(std::isfinite(tau_p) && tau_p > 0, "hatch.", op,
                    ": tau_p (prediction temperature) must be finite and > 0, got ", tau_p);
  TORCH_CHECK_VALUE(std::isfinite(min_overlap) && min_overlap >= 0, "hatch.", op,
                    ": min_overlap must be finite and >= 0, got ", min_overlap);
}

GeometryDims check_patch_align(const char* op, const at::Tensor& emb, const at::Tensor& depth,
                               const at::Tensor& K, const at::Tensor& cam_to_world, int64_t grid_h,
                               int64_t grid_w, double tau_t, double tau_p, double abs_tol, double rel_tol,
                               int64_t stride, double min_overlap) {
  const GeometryDims g = check_geometry(op, depth, K, cam_to_world, grid_h, grid_w, abs_tol, rel_tol, stride);
  check_embeddings(op, emb, g.B, g.V, g.P, depth.device());
  check_loss_params(op, tau_t, tau_p, min_overlap);
  return g;
}

void check_grad_loss(const char* op, const at::Tensor& grad_loss, const at::Tensor& emb) {
  TORCH_CHECK_VALUE(grad_loss.dim() == 0, "hatch.", op,
                    ": argument 'grad_loss' must be a 0-dim tensor (the loss is a scalar), got shape ",
                    grad_loss.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(grad_loss.scalar_type()), "hatch.", op,
                   ": argument 'grad_loss' must be floating-point, got ", grad_loss.scalar_type());
  TORCH_CHECK_VALUE(grad_loss.device() == emb.device(), "hatch.", op, ": argument 'grad_loss' is on ",
                    grad_loss.device(), " but 'emb' is on ", emb.device());
}

void check_saved(const char* op, const at::Tensor& row_lse, const at::Tensor& num_valid,
                 const at::Tensor& emb) {
  check_rank(op, "row_lse", row_lse, 4, "[B, V, V, P]");
  TORCH_CHECK_TYPE(row_lse.scalar_type() == acc_type_for(emb.scalar_type()), "hatch.", op,
                   ": argument 'row_lse' must be ", acc_type_for(emb.scalar_type()), ", got ",
                   row_lse.scalar_type());
  const int64_t B = emb.size(0), V = emb.size(1), P = emb.size(2);
  check_dim(op, "row_lse", row_lse, 0, B, "B");
  check_dim(op, "row_lse", row_lse, 1, V, "V");
  check_dim(op, "row_lse", row_lse, 2, V, "V");
  check_dim(op, "row_lse", row_lse, 3, P, "P");
  TORCH_CHECK_VALUE(num_valid.dim() == 0 && num_valid.scalar_type() == at::kLong, "hatch.", op,
                    ": argument 'num_valid' must be a 0-dim int64 tensor, got ", num_valid.scalar_type(),
                    " of shape ", shape_str(num_valid));
  check_device(op, "row_lse", row_lse, emb.device(), "emb");
}

void check_cuda(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.is_cuda(), "hatch.", op, ": argument '", name,
                    "' must be a CUDA tensor for the CUDA kernel, got a tensor on ", t.device());
}

void check_cuda_index_limits(const char* op, const GeometryDims& g, int64_t pixel_margin) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  TORCH_CHECK_VALUE(g.H * g.W <= kMax - pixel_margin, "hatch.", op, ": argument 'depth' has maps of ", g.H,
                    " x ", g.W, " pixels, too large for the CUDA kernel's int32 pixel indices");
  TORCH_CHECK_VALUE(g.P * g.P <= kMax, "hatch.", op, ": grid_h * grid_w = ", g.P,
                    " cells, too many for the CUDA kernel's int32 (cell, cell) bins (at most 46340)");
  TORCH_CHECK_VALUE(g.H * g.grid_h <= kMax && g.W * g.grid_w <= kMax, "hatch.", op, ": grid_h = ", g.grid_h,
                    ", grid_w = ", g.grid_w, " with depth maps of ", g.H, " x ", g.W,
                    " pixels overflow the CUDA kernel's int32 cell index math");
}

at::Tensor pair_projections(const char* op, const at::Tensor& K, const at::Tensor& cam_to_world) {
  const auto opts = at::TensorOptions().dtype(at::kDouble).device(at::kCPU);
  const at::Tensor k = K.to(opts).contiguous();
  const at::Tensor T = cam_to_world.to(opts).contiguous();
  const int64_t B = k.size(0), V = k.size(1);
  const double* kp = k.data_ptr<double>();
  const double* tp = T.data_ptr<double>();
  for (int64_t i = 0; i < k.numel(); ++i)
    TORCH_CHECK_VALUE(finite64(kp[i]), "hatch.", op, ": argument 'K' has non-finite entries");
  for (int64_t i = 0; i < T.numel(); ++i)
    TORCH_CHECK_VALUE(finite64(tp[i]), "hatch.", op, ": argument 'cam_to_world' has non-finite entries");
  // The tests of geometry.h (view_geometry_valid, which the CUDA kernel applies), one by one so that
  // the message names the failing one.
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t v = 0; v < V; ++v) {
      const double* km = kp + (b * V + v) * 9;
      const double* tm = tp + (b * V + v) * 16;
      TORCH_CHECK_VALUE(intrinsics_invertible(km), "hatch.", op, ": argument 'K' is singular at sample ", b,
                        ", view ", v, " (|det K| / max|K|^3 <= 1e-12); intrinsics must be invertible");
      TORCH_CHECK_VALUE(pose_bottom_row_ok(tm), "hatch.", op, ": argument 'cam_to_world' at sample ", b,
                        ", view ", v, " must have bottom row [0, 0, 0, 1], got [", tm[12], ", ", tm[13], ", ",
                        tm[14], ", ", tm[15], "]");
      TORCH_CHECK_VALUE(pose_rotation_invertible(tm), "hatch.", op,
                        ": argument 'cam_to_world' has a singular rotation block at sample ", b, ", view ",
                        v);
    }
  }
  at::Tensor out = at::empty({B, V, V, kPairProjSize}, opts);
  double* o = out.data_ptr<double>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t a = 0; a < V; ++a)
      for (int64_t c = 0; c < V; ++c)
        pair_projection(kp + (b * V + a) * 9, tp + (b * V + a) * 16, kp + (b * V + c) * 9,
                        tp + (b * V + c) * 16, o + ((b * V + a) * V + c) * kPairProjSize);
  return out;
}

}  // namespace hatch
