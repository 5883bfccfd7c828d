// patch_overlap on CUDA: the pair projections (one kernel), one thread per (taking-part source pixel,
// view pair), histogrammed into int32 counts (shared memory per block, tiled over the target cells:
// device/reprojection.cuh), then one elementwise pass M = count / den. No host synchronisation.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../common/checks.h"
#include "../common/geometry.h"
#include "kernels.h"
#include "launch.cuh"
#include "reprojection.cuh"

namespace hatch::cuda {
at::Tensor patch_overlap(const at::Tensor& depth, const at::Tensor& K, const at::Tensor& cam_to_world,
                         int64_t grid_h, int64_t grid_w, double abs_tol, double rel_tol, int64_t stride) {
  const char* op = "patch_overlap";
  const GeometryDims dims =
      check_geometry(op, depth, K, cam_to_world, grid_h, grid_w, abs_tol, rel_tol, stride);
  check_cuda(op, "depth", depth);
  const c10::cuda::CUDAGuard guard(depth.device());
  const int64_t B = dims.B, V = dims.V, P = dims.P;
  const PixelGrid g = PixelGrid::make(dims.H, dims.W, grid_h, grid_w, stride);
  check_cuda_index_limits(op, dims, kPixelsPerBlock);

  // Float64 projection numbers, computed on the device; K and the poses are checked on the host as the
  // CPU op checks them, except under CUDA-graph capture (reprojection.cuh).
  const at::Tensor proj = device_pair_projections(op, K, cam_to_world);
  const at::Tensor d = depth.contiguous();
  const auto int_opts = depth.options().dtype(at::kInt);

  at::Tensor den = at::zeros({B, V, P}, int_opts);
  launch_cell_valid_counts(d, g, B * V, den);
  at::Tensor counts = at::zeros({B, V, V, P, P}, int_opts);
  launch_pair_counts(d, proj, Triples::every(B, V), g, abs_tol, rel_tol, counts);

  at::Tensor out = at::empty({B, V, V, P, P}, depth.options());
  const int64_t total = out.numel();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "hatch_overlap_ratios", [&] {
    const LaunchCfg L = overlap_ratios_launch(total);
    overlap_ratios_kernel<scalar_t><<<L.grid, L.block, L.shmem, current_stream()>>>(
        counts.data_ptr<int32_t>(), den.data_ptr<int32_t>(), V, P, total, out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace hatch::cuda
