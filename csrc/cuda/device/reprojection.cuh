// Device code of the reprojection kernels (patch_overlap and patch_align; host side in
// ../reprojection.cuh and ../overlap.cu): the pair projections from K and the poses, per-cell counts of
// valid-depth pixels (the denominators of M) and per-(cell i, cell j) counts of the pixels of cell i
// that are visible in the other view and land in its cell j (the numerators). Counts are int32 and
// added with integer atomics, so the result does not depend on the order in which threads run. No
// ATen here: compiled by nvcc and, for the CPU emulation, by g++ (compat.cuh).
//
// Histograms: a block takes a run of kPixelsPerBlock consecutive taking-part pixels of one map, whose
// source cells lie in a short index range [lo, hi] (source_cell_range). Its shared histogram has
// (hi - lo + 1) x tile_w bins: the source-cell range times a range of tile_w target cells; the block
// reprojects its pixels once (caching each pixel's cells in shared memory) and then makes one pass
// over the target-cell tiles [j0, j0 + tile_w), each zeroed, filled with warp-aggregated shared
// atomics and flushed with one global atomic per nonzero bin. So the shared histogram serves any P;
// global atomics remain only when one block's source range alone exceeds kMaxSharedBins cells (a grid
// more than 8192 cells wide). Per-pixel index math is int32 (the host checks the sizes up front);
// 64-bit offsets are formed once per block.
#pragma once
#include <cmath>
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
  bool all;    // true: every (b, a, c) with t = (b * V + a) * V + c (the [B, V, V, P, P] layout)
  int64_t q0;  // all == false: the pairs q0 .. q0 + count / 2 - 1 (common.cuh: decode_pair), both
               // directions: t = 2 (q - q0) -> (b, a, c), t + 1 -> (b, c, a) (a [n, 2, P, P] layout)

  static Triples every(int64_t B, int64_t V) { return {B * V * V, V, true, 0}; }
  static Triples chunk(int64_t V, int64_t q0, int64_t n) { return {2 * n, V, false, q0}; }
};

__device__ __forceinline__ void decode_triple(const Triples& s, int64_t t, int64_t& b, int64_t& a,
                                              int64_t& c) {
  if (s.all) {
    c = t % s.V;
    a = (t / s.V) % s.V;
    b = t / (s.V * s.V);
  } else {
    decode_pair(s.q0 + t / 2, s.V, b, a, c);
    if (t % 2 == 1) {
      const int64_t x = a;
      a = c;
      c = x;
    }
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

// Shared histograms hold at most this many bins (32 KB of int32).
constexpr int64_t kMaxSharedBins = 8192;
// Taking-part pixels per block (a multiple of kThreads, so the per-pixel loops are warp-uniform).
constexpr int64_t kPixelsPerBlock = int64_t(kThreads) * 4;

// The cells [lo, hi] (index row * grid_w + col) that hold the taking-part pixels [start, end) (start <
// end): one taking-part row gives the cells of its columns, several rows whole rows of cells. A pure
// function, so that the host (to size the histograms) and the kernels agree.
HATCH_HD void source_cell_range(const PixelGrid& g, int32_t start, int32_t end, int32_t& lo, int32_t& hi) {
  const int32_t Ws = static_cast<int32_t>(g.Ws), st = static_cast<int32_t>(g.stride);
  const int32_t H = static_cast<int32_t>(g.H), W = static_cast<int32_t>(g.W);
  const int32_t gh = static_cast<int32_t>(g.grid_h), gw = static_cast<int32_t>(g.grid_w);
  const int32_t rs0 = start / Ws, rs1 = (end - 1) / Ws;
  if (rs0 == rs1) {
    lo = cell_of32(rs0 * st, (start % Ws) * st, H, W, gh, gw);
    hi = cell_of32(rs0 * st, ((end - 1) % Ws) * st, H, W, gh, gw);
  } else {
    lo = cell_of32(rs0 * st, 0, H, W, gh, gw);
    hi = cell_of32(rs1 * st, W - 1, H, W, gh, gw);
  }
}

// The blocking of one histogram launch, passed to the kernel.
struct CountsArgs {
  int32_t blocks_per_item;  // blocks per depth map (valid counts) / per triple (pair counts)
  int32_t per_block;        // taking-part pixels per block (kPixelsPerBlock)
  int32_t span_max;         // the largest source-cell range of a block (host: max_source_span)
  int32_t tile_w;           // target cells per pass of the pair-count histogram (P when it fits)
  bool use_shared;          // false only when span_max > kMaxSharedBins: global atomics
};

// HATCH-EMULATION-KERNEL-BEGIN pair_projections_kernel
// proj[b, a, c] (kPairProjSize float64, geometry.h: pair_projection) from K [B, V, 3, 3] and
// cam_to_world [B, V, 4, 4] (float64, contiguous, on the device), one thread per (b, a, c). A view that
// fails the CPU's checks (geometry.h: view_geometry_valid) gets NaN projections to and from it: none of
// its pixels is visible anywhere, so its overlaps are 0 (the CPU op raises instead; raising here would
// need a host synchronisation). static: a non-template kernel in a header included by two .cu files.
static __global__ void pair_projections_kernel(const double* __restrict__ K, const double* __restrict__ T,
                                               int64_t B, int64_t V, double* __restrict__ proj) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= B * V * V) return;
  const int64_t c = idx % V, a = (idx / V) % V, b = idx / (V * V);
  const double* Ka = K + (b * V + a) * 9;
  const double* Kc = K + (b * V + c) * 9;
  const double* Ta = T + (b * V + a) * 16;
  const double* Tc = T + (b * V + c) * 16;
  double* m = proj + idx * kPairProjSize;
  if (view_geometry_valid(Ka, Ta) && view_geometry_valid(Kc, Tc)) {
    pair_projection(Ka, Ta, Kc, Tc, m);
  } else {
    for (int k = 0; k < kPairProjSize; ++k) m[k] = NAN;
  }
}
// HATCH-EMULATION-KERNEL-END pair_projections_kernel

// HATCH-EMULATION-KERNEL-BEGIN cell_valid_counts_kernel
// den[m, i] += number of taking-part pixels of cell i of depth map m (m = b * V + v) with valid depth.
// Grid: maps * blocks_per_map blocks; block k of map m handles pixels [k, k + 1) * per_block.
template <typename scalar_t>
__global__ void cell_valid_counts_kernel(const scalar_t* __restrict__ depth, PixelGrid g, int64_t maps,
                                         CountsArgs L, int32_t* __restrict__ den) {
  HATCH_DYNAMIC_SHARED(int32_t, hist);
  const int64_t map = blockIdx.x / L.blocks_per_item;
  const int32_t chunk = static_cast<int32_t>(blockIdx.x % L.blocks_per_item);
  if (map >= maps) return;  // uniform across the block: no thread reaches a barrier
  const int32_t H = static_cast<int32_t>(g.H), W = static_cast<int32_t>(g.W);
  const int32_t gh = static_cast<int32_t>(g.grid_h), gw = static_cast<int32_t>(g.grid_w);
  const int32_t Ws = static_cast<int32_t>(g.Ws), st = static_cast<int32_t>(g.stride);
  const int32_t npix = static_cast<int32_t>(g.count());
  const scalar_t* d = depth + map * g.H * g.W;
  int32_t* out = den + map * g.cells();
  const int32_t start = chunk * L.per_block;
  const int32_t end = min(start + L.per_block, npix);
  int32_t lo = 0, hi = 0;
  source_cell_range(g, start, end, lo, hi);
  if (L.use_shared) {
    for (int32_t k = threadIdx.x; k <= hi - lo; k += blockDim.x) hist[k] = 0;
  }
  __syncthreads();
  for (int32_t k = threadIdx.x; k < L.per_block; k += blockDim.x) {  // warp-uniform trip count
    const int32_t n = start + k;
    int32_t bin = -1;
    if (n < end) {
      const int32_t r = (n / Ws) * st, c = (n % Ws) * st;
      if (depth_valid(static_cast<double>(d[r * W + c]))) {
        const int32_t i = cell_of32(r, c, H, W, gh, gw);
        bin = L.use_shared ? i - lo : i;
      }
    }
    warp_aggregated_add(L.use_shared ? hist : out, bin);
  }
  if (L.use_shared) {
    __syncthreads();
    for (int32_t k = threadIdx.x; k <= hi - lo; k += blockDim.x) {
      if (hist[k] != 0) atomicAdd(&out[lo + k], hist[k]);
    }
  }
}
// HATCH-EMULATION-KERNEL-END cell_valid_counts_kernel

// HATCH-EMULATION-KERNEL-BEGIN pair_counts_kernel
// counts[t, i, j] += number of taking-part valid-depth pixels of cell i of view a (sample b) that are
// visible in view c and land in its cell j, for each triple t = (b, a, c) of `tri` with a != c.
// proj: [B, V, V, kPairProjSize] float64 on the device. Grid: tri.count * blocks_per_triple blocks.
// Dynamic shared memory: per_block source cells, per_block target cells, span_max * tile_w bins.
template <typename scalar_t>
__global__ void pair_counts_kernel(const scalar_t* __restrict__ depth, const double* __restrict__ proj,
                                   Triples tri, PixelGrid g, double abs_tol, double rel_tol, CountsArgs L,
                                   int32_t* __restrict__ counts) {
  HATCH_DYNAMIC_SHARED(int32_t, shm);
  HATCH_STATIC_SHARED(double, m, kPairProjSize);
  const int64_t t = blockIdx.x / L.blocks_per_item;
  const int32_t chunk = static_cast<int32_t>(blockIdx.x % L.blocks_per_item);
  if (t >= tri.count) return;  // block-uniform
  int64_t b, a, c;
  decode_triple(tri, t, b, a, c);
  if (a == c) return;  // block-uniform: same-view blocks are never formed (they stay 0)
  const int32_t H = static_cast<int32_t>(g.H), W = static_cast<int32_t>(g.W);
  const int32_t gh = static_cast<int32_t>(g.grid_h), gw = static_cast<int32_t>(g.grid_w);
  const int32_t Ws = static_cast<int32_t>(g.Ws), st = static_cast<int32_t>(g.stride);
  const int32_t P = static_cast<int32_t>(g.cells()), npix = static_cast<int32_t>(g.count());
  const int64_t V = tri.V, HW = g.H * g.W;
  const scalar_t* depth_a = depth + (b * V + a) * HW;
  const scalar_t* depth_c = depth + (b * V + c) * HW;
  int32_t* out = counts + t * int64_t(P) * P;
  // Without shared memory (use_shared false) there is no buffer to point into.
  int32_t* src_cache = shm;                                         // source cell - lo, or -1
  int32_t* dst_cache = L.use_shared ? shm + L.per_block : nullptr;  // target cell
  int32_t* hist = L.use_shared ? shm + 2 * L.per_block : nullptr;   // (src - lo) * w + (dst - j0)
  if (threadIdx.x < kPairProjSize) m[threadIdx.x] = proj[((b * V + a) * V + c) * kPairProjSize + threadIdx.x];
  __syncthreads();
  const int32_t start = chunk * L.per_block;
  const int32_t end = min(start + L.per_block, npix);
  int32_t lo = 0, hi = 0;
  source_cell_range(g, start, end, lo, hi);
  // Reproject every pixel of the block once.
  for (int32_t k = threadIdx.x; k < L.per_block; k += blockDim.x) {  // warp-uniform trip count
    const int32_t n = start + k;
    int32_t src = -1, dst = 0;
    if (n < end) {
      const int32_t r = (n / Ws) * st, col = (n % Ws) * st;
      const double d = static_cast<double>(depth_a[r * W + col]);
      if (depth_valid(d)) {
        double z, fc, fr;
        project_pixel(m, d, static_cast<double>(r), static_cast<double>(col), z, fc, fr);
        int32_t r2 = 0, c2 = 0;
        const bool inside = landing_pixel<double, int32_t>(z, fc, fr, H, W, r2, c2);
        if (inside & depth_agrees(z, static_cast<double>(depth_c[r2 * W + c2]), abs_tol, rel_tol)) {
          src = cell_of32(r, col, H, W, gh, gw) - lo;
          dst = cell_of32(r2, c2, H, W, gh, gw);
        }
      }
    }
    if (L.use_shared) {
      src_cache[k] = src;
      dst_cache[k] = dst;
    } else {
      warp_aggregated_add(out, src < 0 ? -1 : (src + lo) * P + dst);
    }
  }
  if (!L.use_shared) return;  // uniform across the launch
  const int32_t span = hi - lo + 1;
  for (int32_t j0 = 0; j0 < P; j0 += L.tile_w) {  // block-uniform
    const int32_t w = min(L.tile_w, P - j0), bins = span * w;
    __syncthreads();  // the caches are written; the previous tile's flush has read hist
    for (int32_t k = threadIdx.x; k < bins; k += blockDim.x) hist[k] = 0;
    __syncthreads();
    for (int32_t k = threadIdx.x; k < L.per_block; k += blockDim.x) {  // warp-uniform trip count
      const int32_t src = src_cache[k], dj = dst_cache[k] - j0;
      warp_aggregated_add(hist, (src >= 0 && dj >= 0 && dj < w) ? src * w + dj : -1);
    }
    __syncthreads();
    for (int32_t k = threadIdx.x; k < bins; k += blockDim.x) {
      if (hist[k] != 0) atomicAdd(&out[(lo + k / w) * P + j0 + k % w], hist[k]);
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
__global__ void overlap_ratios_kernel(const int32_t* __restrict__ counts, const int32_t* __restrict__ den,
                                      int64_t V, int64_t P, int64_t total, scalar_t* __restrict__ out) {
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
// The largest source-cell range of any block of a map (one O(1) step per block; the same function
// as the kernels').
inline int32_t max_source_span(const PixelGrid& g, int32_t per_block) {
  const int32_t npix = static_cast<int32_t>(g.count());
  int32_t best = 1;
  for (int32_t s = 0; s < npix; s += per_block) {
    int32_t lo = 0, hi = 0;
    source_cell_range(g, s, std::min(s + per_block, npix), lo, hi);
    best = std::max(best, hi - lo + 1);
  }
  return best;
}

// A histogram launch: the configuration plus the kernel's own blocking arguments.
struct CountsLaunch {
  LaunchCfg cfg;
  CountsArgs args;
};

// pair: the pair-count kernel (target cells tiled, pixel caches) rather than the valid counts.
inline CountsLaunch counts_launch(const PixelGrid& g, int64_t items, bool pair, const char* what) {
  const int32_t per_block = static_cast<int32_t>(kPixelsPerBlock);
  const int64_t blocks_per_item = (g.count() + per_block - 1) / per_block;
  const int64_t blocks = items * blocks_per_item;
  HATCH_LAUNCH_CHECK(blocks <= INT32_MAX, "too many ", what, " for one CUDA launch (", blocks, " blocks)");
  const int32_t span = max_source_span(g, per_block);
  const int32_t P = static_cast<int32_t>(g.cells());
  const bool use_shared = span <= kMaxSharedBins;
  const int32_t tile_w =
      pair && use_shared ? std::min<int32_t>(P, static_cast<int32_t>(kMaxSharedBins / span)) : P;
  size_t shmem = 0;
  if (use_shared) {
    shmem = pair ? (2 * static_cast<size_t>(per_block) + static_cast<size_t>(span) * tile_w) * 4
                 : static_cast<size_t>(span) * 4;
  }
  return {{static_cast<unsigned int>(blocks), static_cast<unsigned int>(kThreads), shmem},
          {static_cast<int32_t>(blocks_per_item), per_block, span, tile_w, use_shared}};
}

// cell_valid_counts_kernel over `maps` depth maps.
inline CountsLaunch cell_valid_counts_launch(const PixelGrid& g, int64_t maps) {
  return counts_launch(g, maps, false, "depth pixels");
}

// pair_counts_kernel over tri.count triples.
inline CountsLaunch pair_counts_launch(const PixelGrid& g, const Triples& tri) {
  return counts_launch(g, tri.count, true, "(pixel, view pair) items");
}

// overlap_ratios_kernel over `total` outputs.
inline LaunchCfg overlap_ratios_launch(int64_t total) {
  return {blocks_for(total), static_cast<unsigned int>(kThreads), 0};
}

// pair_projections_kernel over B * V * V triples.
inline LaunchCfg pair_projections_launch(int64_t B, int64_t V) {
  return {blocks_exact(B * V * V, kThreads), static_cast<unsigned int>(kThreads), 0};
}

}  // namespace hatch::cuda
