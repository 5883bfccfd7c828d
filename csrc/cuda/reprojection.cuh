// Host side of the CUDA reprojection kernels shared by patch_overlap (all view pairs at once) and the
// fused PaStA loss (a chunk of view pairs at a time): launches of the kernels of device/reprojection.cuh
// (which holds the device code, compiled also by g++ for the CPU emulation in tests/emulation).
//
// Precision: the projection numbers are computed on the device in float64 (pair_projections_kernel,
// the same geometry.h functions the CPU's checks.h: pair_projections uses) and every pixel is
// reprojected in float64, exactly as the CPU loop (cpu/pair_counts.h) does, so the two backends bin
// the same pixels (up to the rare pixel that lands within a rounding error of a pixel or tolerance
// boundary, where the GPU's fused multiply-adds may round differently).
//
// Geometry checks: outside CUDA-graph capture, K and cam_to_world (B·V·25 numbers) are copied to the
// host once per call and checked exactly as the CPU ops check them (common/checks.cpp:
// pair_projections), so a non-finite or singular K or a bad pose raises the same message on both
// backends; that copy is the ops' one synchronisation. While the current stream is being captured
// into a CUDA graph nothing is read on the host (a capture cannot synchronise): the projections come
// from the device only, and a view the CPU would reject gets NaN projections and overlaps nothing
// (zero targets). The projections themselves are always computed on the device.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "../common/checks.h"
#include "../common/geometry.h"
#include "device/reprojection.cuh"
#include "launch.cuh"

namespace hatch::cuda {

// [B, V, V, kPairProjSize] float64 projections from K [B, V, 3, 3] and cam_to_world [B, V, 4, 4] (any
// floating dtype, on the device): one kernel; the host reads K and the poses only for the checks above.
inline at::Tensor device_pair_projections(const char* op, const at::Tensor& K,
                                          const at::Tensor& cam_to_world) {
  // HATCH_CUDA_GEOMETRY_CHECKS=0 skips the host check (and its synchronisation) outside capture too,
  // for callers that validate their geometry once themselves.
  static const bool host_checks = [] {
    const char* v = std::getenv("HATCH_CUDA_GEOMETRY_CHECKS");
    return v == nullptr || std::string(v) != "0";
  }();
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(current_stream(), &capture));
  if (host_checks && capture == cudaStreamCaptureStatusNone)
    (void)hatch::pair_projections(op, K, cam_to_world);  // raises with the CPU op's message
  const at::Tensor k = K.to(at::kDouble).contiguous();
  const at::Tensor t = cam_to_world.to(at::kDouble).contiguous();
  const int64_t B = k.size(0), V = k.size(1);
  at::Tensor proj = at::empty({B, V, V, kPairProjSize}, k.options());
  const LaunchCfg L = pair_projections_launch(B, V);
  pair_projections_kernel<<<L.grid, L.block, L.shmem, current_stream()>>>(
      k.data_ptr<double>(), t.data_ptr<double>(), B, V, proj.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return proj;
}

// den [B * V, P] int32 (zeroed by the caller) += valid-depth pixel counts per cell.
inline void launch_cell_valid_counts(const at::Tensor& depth, const PixelGrid& g, int64_t maps,
                                     at::Tensor& den) {
  const CountsLaunch L = cell_valid_counts_launch(g, maps);
  AT_DISPATCH_FLOATING_TYPES(depth.scalar_type(), "hatch_cell_valid_counts", [&] {
    cell_valid_counts_kernel<scalar_t><<<L.cfg.grid, L.cfg.block, L.cfg.shmem, current_stream()>>>(
        depth.data_ptr<scalar_t>(), g, maps, L.args, den.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// counts (zeroed by the caller, tri.count * P * P int32) += pair counts of every triple of `tri`.
inline void launch_pair_counts(const at::Tensor& depth, const at::Tensor& proj, const Triples& tri,
                               const PixelGrid& g, double abs_tol, double rel_tol, at::Tensor& counts) {
  const int64_t P = g.cells();
  const CountsLaunch L = pair_counts_launch(g, tri);
  TORCH_INTERNAL_ASSERT(proj.scalar_type() == at::kDouble && proj.is_contiguous());
  TORCH_INTERNAL_ASSERT(counts.scalar_type() == at::kInt && counts.is_contiguous() &&
                        counts.numel() >= tri.count * P * P);
  AT_DISPATCH_FLOATING_TYPES(depth.scalar_type(), "hatch_pair_counts", [&] {
    pair_counts_kernel<scalar_t><<<L.cfg.grid, L.cfg.block, L.cfg.shmem, current_stream()>>>(
        depth.data_ptr<scalar_t>(), proj.data_ptr<double>(), tri, g, abs_tol, rel_tol, L.args,
        counts.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace hatch::cuda
