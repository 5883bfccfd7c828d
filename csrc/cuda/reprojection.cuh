// Host side of the CUDA reprojection kernels shared by patch_overlap (all view pairs at once) and the
// fused PaStA loss (one view pair at a time): launches of the kernels of device/reprojection.cuh
// (which holds the device code, compiled also by g++ for the CPU emulation in tests/emulation).
//
// Precision: the projection numbers are computed on the CPU in float64 (checks.h: pair_projections)
// and every pixel is reprojected in float64, exactly as the CPU loop (cpu/pair_counts.h) does, so the
// two backends bin the same pixels (up to the rare pixel that lands within a rounding error of a pixel
// or tolerance boundary, where the GPU's fused multiply-adds may round differently).
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cstdint>
#include <limits>

#include "../common/geometry.h"
#include "device/reprojection.cuh"
#include "launch.cuh"

namespace hatch::cuda {

inline void check_count_limits(const char* op, const PixelGrid& g) {
  TORCH_CHECK_VALUE(g.H * g.W <= std::numeric_limits<int32_t>::max(), "hatch.", op,
                    ": depth maps of ", g.H, " x ", g.W,
                    " pixels are too large for the CUDA kernel's int32 pixel counts");
}

// den [B * V, P] int32 (zeroed by the caller) += valid-depth pixel counts per cell.
inline void launch_cell_valid_counts(const at::Tensor& depth, const PixelGrid& g, int64_t maps,
                                     at::Tensor& den) {
  const CountsLaunch L = cell_valid_counts_launch(g, maps);
  AT_DISPATCH_FLOATING_TYPES(depth.scalar_type(), "hatch_cell_valid_counts", [&] {
    cell_valid_counts_kernel<scalar_t><<<L.cfg.grid, L.cfg.block, L.cfg.shmem, current_stream()>>>(
        depth.data_ptr<scalar_t>(), g, maps, L.blocks_per_item, L.per_block, L.use_shared,
        den.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// counts (zeroed by the caller, tri.count * P * P int32) += pair counts of every triple of `tri`.
inline void launch_pair_counts(const at::Tensor& depth, const at::Tensor& proj, const Triples& tri,
                               const PixelGrid& g, double abs_tol, double rel_tol,
                               at::Tensor& counts) {
  const int64_t P = g.cells();
  const CountsLaunch L = pair_counts_launch(g, tri);
  TORCH_INTERNAL_ASSERT(proj.scalar_type() == at::kDouble && proj.is_contiguous());
  TORCH_INTERNAL_ASSERT(counts.scalar_type() == at::kInt && counts.is_contiguous() &&
                        counts.numel() >= tri.count * P * P);
  AT_DISPATCH_FLOATING_TYPES(depth.scalar_type(), "hatch_pair_counts", [&] {
    pair_counts_kernel<scalar_t><<<L.cfg.grid, L.cfg.block, L.cfg.shmem, current_stream()>>>(
        depth.data_ptr<scalar_t>(), proj.data_ptr<double>(), tri, g, abs_tol, rel_tol,
        L.blocks_per_item, L.per_block, L.use_shared, counts.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace hatch::cuda
