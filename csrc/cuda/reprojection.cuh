// The CUDA reprojection kernels shared by patch_overlap (all view pairs at once) and the fused PaStA
// loss (one view pair at a time): per-cell counts of valid-depth pixels (the denominators of M) and
// per-(cell i, cell j) counts of the pixels of cell i that are visible in the other view and land in
// its cell j (the numerators). Counts are int32 and added with integer atomics, so the result does not
// depend on the order in which threads run: it is deterministic, bit for bit.
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
#include "launch.cuh"

namespace hatch::cuda {

// Which (sample b, source view a, target view c) triples one launch of the pair-count kernel covers.
// Triple t writes its P x P counts at counts + t * P * P.
struct Triples {
  int64_t count;  // number of triples
  int64_t V;
  bool all;       // true: every (b, a, c) with t = (b * V + a) * V + c (the [B, V, V, P, P] layout)
  int64_t b, a, c;  // all == false: exactly two triples, t = 0 -> (b, a, c) and t = 1 -> (b, c, a)

  static Triples every(int64_t B, int64_t V) { return {B * V * V, V, true, 0, 0, 0}; }
  static Triples pair(int64_t V, int64_t b, int64_t a, int64_t c) { return {2, V, false, b, a, c}; }
};

__device__ __forceinline__ void decode_triple(const Triples& s, int64_t t, int64_t& b, int64_t& a,
                                              int64_t& c) {
  if (s.all) {
    c = t % s.V;
    a = (t / s.V) % s.V;
    b = t / (s.V * s.V);
  } else {
    b = s.b;
    a = t == 0 ? s.a : s.c;
    c = t == 0 ? s.c : s.a;
  }
}

// Taking-part pixels (r % stride == 0 and c % stride == 0) of an H x W map, enumerated n = rs * Ws + cs.
struct PixelGrid {
  int64_t H, W, grid_h, grid_w, stride;
  int64_t Hs, Ws;  // taking-part rows / columns

  static PixelGrid make(int64_t H, int64_t W, int64_t grid_h, int64_t grid_w, int64_t stride) {
    return {H, W, grid_h, grid_w, stride, (H + stride - 1) / stride, (W + stride - 1) / stride};
  }
  HATCH_HD int64_t count() const { return Hs * Ws; }
  HATCH_HD int64_t cells() const { return grid_h * grid_w; }
};

// Histograms up to this many bins are kept in shared memory (32 KB of int32) and flushed with one
// global atomic per nonzero bin; larger ones go straight to global memory.
constexpr int64_t kMaxSharedBins = 8192;

// den[m, i] += number of taking-part pixels of cell i of depth map m (m = b * V + v) with valid depth.
// Grid: maps * blocks_per_map blocks; block k of map m handles pixels [k, k + 1) * pix_per_block.
template <typename scalar_t>
__global__ void cell_valid_counts_kernel(const scalar_t* __restrict__ depth, PixelGrid g,
                                         int64_t maps, int64_t blocks_per_map, int64_t pix_per_block,
                                         bool use_shared, int32_t* __restrict__ den) {
  extern __shared__ int32_t hist[];
  const int64_t map = blockIdx.x / blocks_per_map;
  const int64_t chunk = blockIdx.x % blocks_per_map;
  if (map >= maps) return;  // uniform across the block: no thread reaches a barrier
  const int64_t P = g.cells();
  const scalar_t* d = depth + map * g.H * g.W;
  int32_t* out = den + map * P;
  if (use_shared) {
    for (int64_t k = threadIdx.x; k < P; k += blockDim.x) hist[k] = 0;
  }
  __syncthreads();
  const int64_t start = chunk * pix_per_block;
  const int64_t end = min(start + pix_per_block, g.count());
  for (int64_t n = start + threadIdx.x; n < end; n += blockDim.x) {
    const int64_t r = (n / g.Ws) * g.stride, c = (n % g.Ws) * g.stride;
    if (!depth_valid(static_cast<double>(d[r * g.W + c]))) continue;
    const int64_t i = cell_of(r, c, g.H, g.W, g.grid_h, g.grid_w);
    if (use_shared) {
      atomicAdd(&hist[i], 1);
    } else {
      atomicAdd(&out[i], 1);
    }
  }
  if (use_shared) {
    __syncthreads();
    for (int64_t k = threadIdx.x; k < P; k += blockDim.x) {
      if (hist[k] != 0) atomicAdd(&out[k], hist[k]);
    }
  }
}

// counts[t, i, j] += number of taking-part valid-depth pixels of cell i of view a (sample b) that are
// visible in view c and land in its cell j, for each triple t = (b, a, c) of `tri` with a != c.
// proj: [B, V, V, kPairProjSize] float64 on the device. Grid: tri.count * blocks_per_triple blocks.
template <typename scalar_t>
__global__ void pair_counts_kernel(const scalar_t* __restrict__ depth,
                                   const double* __restrict__ proj, Triples tri, PixelGrid g,
                                   double abs_tol, double rel_tol, int64_t blocks_per_triple,
                                   int64_t pix_per_block, bool use_shared,
                                   int32_t* __restrict__ counts) {
  extern __shared__ int32_t hist[];
  __shared__ double m[kPairProjSize];
  const int64_t t = blockIdx.x / blocks_per_triple;
  const int64_t chunk = blockIdx.x % blocks_per_triple;
  if (t >= tri.count) return;  // block-uniform
  int64_t b, a, c;
  decode_triple(tri, t, b, a, c);
  if (a == c) return;  // block-uniform: same-view blocks are never formed (they stay 0)
  const int64_t V = tri.V, P = g.cells(), HW = g.H * g.W;
  const scalar_t* depth_a = depth + (b * V + a) * HW;
  const scalar_t* depth_c = depth + (b * V + c) * HW;
  int32_t* out = counts + t * P * P;
  if (threadIdx.x < kPairProjSize) m[threadIdx.x] = proj[((b * V + a) * V + c) * kPairProjSize + threadIdx.x];
  if (use_shared) {
    for (int64_t k = threadIdx.x; k < P * P; k += blockDim.x) hist[k] = 0;
  }
  __syncthreads();
  const int64_t start = chunk * pix_per_block;
  const int64_t end = min(start + pix_per_block, g.count());
  for (int64_t n = start + threadIdx.x; n < end; n += blockDim.x) {
    const int64_t r = (n / g.Ws) * g.stride, col = (n % g.Ws) * g.stride;
    const double d = static_cast<double>(depth_a[r * g.W + col]);
    if (!depth_valid(d)) continue;
    int64_t r2 = 0, c2 = 0;
    if (!reproject_visible<double, scalar_t>(m, d, r, col, depth_c, g.H, g.W, abs_tol, rel_tol, r2,
                                             c2))
      continue;
    const int64_t bin = cell_of(r, col, g.H, g.W, g.grid_h, g.grid_w) * P +
                        cell_of(r2, c2, g.H, g.W, g.grid_h, g.grid_w);
    if (use_shared) {
      atomicAdd(&hist[bin], 1);
    } else {
      atomicAdd(&out[bin], 1);
    }
  }
  if (use_shared) {
    __syncthreads();
    for (int64_t k = threadIdx.x; k < P * P; k += blockDim.x) {
      if (hist[k] != 0) atomicAdd(&out[k], hist[k]);
    }
  }
}

// Pixels per block: enough that the shared histogram's zeroing and flush (P^2 bins) stay a small part
// of a block's work.
inline int64_t pixels_per_block(int64_t bins, bool use_shared) {
  const int64_t base = int64_t(kThreads) * 8;
  return use_shared ? std::max<int64_t>(base, 2 * bins) : base;
}

inline void check_count_limits(const char* op, const PixelGrid& g) {
  TORCH_CHECK_VALUE(g.H * g.W <= std::numeric_limits<int32_t>::max(), "hatch.", op,
                    ": depth maps of ", g.H, " x ", g.W,
                    " pixels are too large for the CUDA kernel's int32 pixel counts");
}

// den [B * V, P] int32 (zeroed by the caller) += valid-depth pixel counts per cell.
inline void launch_cell_valid_counts(const at::Tensor& depth, const PixelGrid& g, int64_t maps,
                                     at::Tensor& den) {
  const int64_t P = g.cells();
  const bool use_shared = P <= kMaxSharedBins;
  const int64_t per_block = pixels_per_block(P, use_shared);
  const int64_t blocks_per_map = (g.count() + per_block - 1) / per_block;
  const int64_t blocks = maps * blocks_per_map;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(),
              "hatch: too many depth pixels for one CUDA launch (", blocks, " blocks)");
  const size_t shmem = use_shared ? static_cast<size_t>(P) * sizeof(int32_t) : 0;
  AT_DISPATCH_FLOATING_TYPES(depth.scalar_type(), "hatch_cell_valid_counts", [&] {
    cell_valid_counts_kernel<scalar_t><<<static_cast<unsigned int>(blocks), kThreads, shmem,
                                         current_stream()>>>(
        depth.data_ptr<scalar_t>(), g, maps, blocks_per_map, per_block, use_shared,
        den.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// counts (zeroed by the caller, tri.count * P * P int32) += pair counts of every triple of `tri`.
inline void launch_pair_counts(const at::Tensor& depth, const at::Tensor& proj, const Triples& tri,
                               const PixelGrid& g, double abs_tol, double rel_tol,
                               at::Tensor& counts) {
  const int64_t P = g.cells();
  const bool use_shared = P * P <= kMaxSharedBins;
  const int64_t per_block = pixels_per_block(P * P, use_shared);
  const int64_t blocks_per_triple = (g.count() + per_block - 1) / per_block;
  const int64_t blocks = tri.count * blocks_per_triple;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(),
              "hatch: too many (pixel, view pair) items for one CUDA launch (", blocks, " blocks)");
  TORCH_INTERNAL_ASSERT(proj.scalar_type() == at::kDouble && proj.is_contiguous());
  TORCH_INTERNAL_ASSERT(counts.scalar_type() == at::kInt && counts.is_contiguous() &&
                        counts.numel() >= tri.count * P * P);
  const size_t shmem = use_shared ? static_cast<size_t>(P * P) * sizeof(int32_t) : 0;
  AT_DISPATCH_FLOATING_TYPES(depth.scalar_type(), "hatch_pair_counts", [&] {
    pair_counts_kernel<scalar_t><<<static_cast<unsigned int>(blocks), kThreads, shmem,
                                   current_stream()>>>(
        depth.data_ptr<scalar_t>(), proj.data_ptr<double>(), tri, g, abs_tol, rel_tol,
        blocks_per_triple, per_block, use_shared, counts.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// M = count / den as the CPU does it: the quotient of two integers taken in float64 and rounded once
// to the output dtype (never the approximate single-precision division of --use_fast_math), so that
// CPU and CUDA give the same bits.
template <typename T>
__device__ __forceinline__ T overlap_ratio(int32_t count, int32_t den) {
  return den > 0 ? static_cast<T>(static_cast<double>(count) / static_cast<double>(den)) : T(0);
}

}  // namespace hatch::cuda
