// Device code of the reprojection kernels (patch_overlap and patch_align; host side in
// ../reprojection.cuh and ../overlap.cu): per-cell counts of valid-depth pixels (the denominators of
// M) and per-(cell i, cell j) counts of the pixels of cell i that are visible in the other view and
// land in its cell j (the numerators). Counts are int32 and added with integer atomics, so the result
// does not depend on the order in which threads run. No ATen here: compiled by nvcc and, for the CPU
// emulation, by g++ (compat.cuh).
#pragma once
#include <cstdint>

#include "../../common/geometry.h"
#include "common.cuh"
#include "compat.cuh"

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

// HATCH-EMULATION-KERNEL-BEGIN cell_valid_counts_kernel
// den[m, i] += number of taking-part pixels of cell i of depth map m (m = b * V + v) with valid depth.
// Grid: maps * blocks_per_map blocks; block k of map m handles pixels [k, k + 1) * pix_per_block.
template <typename scalar_t>
__global__ void cell_valid_counts_kernel(const scalar_t* __restrict__ depth, PixelGrid g,
                                         int64_t maps, int64_t blocks_per_map, int64_t pix_per_block,
                                         bool use_shared, int32_t* __restrict__ den) {
  HATCH_DYNAMIC_SHARED(int32_t, hist);
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
// HATCH-EMULATION-KERNEL-END cell_valid_counts_kernel

// HATCH-EMULATION-KERNEL-BEGIN pair_counts_kernel
// counts[t, i, j] += number of taking-part valid-depth pixels of cell i of view a (sample b) that are
// visible in view c and land in its cell j, for each triple t = (b, a, c) of `tri` with a != c.
// proj: [B, V, V, kPairProjSize] float64 on the device. Grid: tri.count * blocks_per_triple blocks.
template <typename scalar_t>
__global__ void pair_counts_kernel(const scalar_t* __restrict__ depth,
                                   const double* __restrict__ proj, Triples tri, PixelGrid g,
                                   double abs_tol, double rel_tol, int64_t blocks_per_triple,
                                   int64_t pix_per_block, bool use_shared,
                                   int32_t* __restrict__ counts) {
  HATCH_DYNAMIC_SHARED(int32_t, hist);
  HATCH_STATIC_SHARED(double, m, kPairProjSize);
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
// HATCH-EMULATION-KERNEL-END pair_counts_kernel

// M = count / den as the CPU does it: the quotient of two integers taken in float64 and rounded once
// to the output dtype (never the approximate single-precision division of --use_fast_math), so that
// CPU and CUDA give the same bits.
template <typename T>
__device__ __forceinline__ T overlap_ratio(int32_t count, int32_t den) {
  return den > 0 ? static_cast<T>(static_cast<double>(count) / static_cast<double>(den)) : T(0);
}

// HATCH-EMULATION-KERNEL-BEGIN overlap_ratios_kernel
// out[b, a, c, i, j] = counts[b, a, c, i, j] / den[b, a, i] (0 where den is 0), every element written.
template <typename scalar_t>
__global__ void overlap_ratios_kernel(const int32_t* __restrict__ counts,
                                      const int32_t* __restrict__ den, int64_t V, int64_t P,
                                      int64_t total, scalar_t* __restrict__ out) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = (k / P) % P;
    const int64_t t = k / (P * P);  // (b * V + a) * V + c
    const int64_t ba = t / V;       // b * V + a
    out[k] = overlap_ratio<scalar_t>(counts[k], den[ba * P + i]);
  }
}
// HATCH-EMULATION-KERNEL-END overlap_ratios_kernel

// ------------------------------------------------------------------- launch configurations (host)
// Pixels per block: enough that the shared histogram's zeroing and flush (P^2 bins) stay a small part
// of a block's work.
inline int64_t pixels_per_block(int64_t bins, bool use_shared) {
  const int64_t base = int64_t(kThreads) * 8;
  return use_shared ? std::max<int64_t>(base, 2 * bins) : base;
}

// A histogram launch: the configuration plus the kernel's own blocking arguments.
struct CountsLaunch {
  LaunchCfg cfg;
  int64_t blocks_per_item;  // blocks per depth map (valid counts) / per triple (pair counts)
  int64_t per_block;        // pixels per block
  bool use_shared;
};

inline CountsLaunch counts_launch(const PixelGrid& g, int64_t items, int64_t bins, const char* what) {
  const bool use_shared = bins <= kMaxSharedBins;
  const int64_t per_block = pixels_per_block(bins, use_shared);
  const int64_t blocks_per_item = (g.count() + per_block - 1) / per_block;
  const int64_t blocks = items * blocks_per_item;
  HATCH_LAUNCH_CHECK(blocks <= INT32_MAX, "too many ", what, " for one CUDA launch (", blocks,
                     " blocks)");
  const size_t shmem = use_shared ? static_cast<size_t>(bins) * sizeof(int32_t) : 0;
  return {{static_cast<unsigned int>(blocks), static_cast<unsigned int>(kThreads), shmem},
          blocks_per_item, per_block, use_shared};
}

// cell_valid_counts_kernel over `maps` depth maps.
inline CountsLaunch cell_valid_counts_launch(const PixelGrid& g, int64_t maps) {
  return counts_launch(g, maps, g.cells(), "depth pixels");
}

// pair_counts_kernel over tri.count triples.
inline CountsLaunch pair_counts_launch(const PixelGrid& g, const Triples& tri) {
  return counts_launch(g, tri.count, g.cells() * g.cells(), "(pixel, view pair) items");
}

// overlap_ratios_kernel over `total` outputs.
inline LaunchCfg overlap_ratios_launch(int64_t total) {
  return {blocks_for(total), static_cast<unsigned int>(kThreads), 0};
}

}  // namespace hatch::cuda
