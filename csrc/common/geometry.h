// Host/device math shared by the CPU and CUDA kernels: cell indices and the per-pixel reprojection test
// of DESIGN.md ("The PaStA math", step 1). Header-only so that both compilers inline it.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define HATCH_HD __host__ __device__ __forceinline__
#else
#define HATCH_HD inline
#endif

namespace hatch {

// Pixel (r, c) of an H x W image lies in cell (floor(r*gh/H), floor(c*gw/W)); index row*gw + col.
HATCH_HD int64_t cell_of(int64_t r, int64_t c, int64_t H, int64_t W, int64_t gh, int64_t gw) {
  return (r * gh / H) * gw + (c * gw / W);
}

// Depth is valid iff finite and > 0.
template <typename T>
HATCH_HD bool depth_valid(T d) {
  return d > T(0) && d < T(INFINITY);  // NaN fails both comparisons
}

// Layout of one pair projection (16 numbers), precomputed on the host for each (sample, view a, view c):
//   [0..8]  A = K_c R K_a^-1 (row-major 3x3), [9..11] b = K_c t, [12..14] zrow = (R K_a^-1) row 2,
//   [15] tz = t_z, with [R | t] = (T_c^-1 T_a)[:3]. For w = d (u, v, 1): K_c X_c = A w + b and
//   z = X_c.z = zrow . w + tz.
constexpr int kPairProjSize = 16;

// Reprojects pixel (r, c) of view a with depth d (valid) into view c. Returns true iff the pixel is
// visible in c (z > 1e-6, lands inside the image, c's depth there valid and within tolerance) and then
// sets (r2, c2) to the pixel it lands in. depth_c points at view c's H x W depth map (row-major).
template <typename T, typename DT>
HATCH_HD bool reproject_visible(const T* m, T d, int64_t r, int64_t c, const DT* depth_c, int64_t H,
                                int64_t W, T abs_tol, T rel_tol, int64_t& r2, int64_t& c2) {
  const T wu = d * T(c), wv = d * T(r), wd = d;
  const T z = m[12] * wu + m[13] * wv + m[14] * wd + m[15];
  if (!(z > T(1e-6))) return false;
  const T pu = m[0] * wu + m[1] * wv + m[2] * wd + m[9];
  const T pv = m[3] * wu + m[4] * wv + m[5] * wd + m[10];
  const T fc = floor(pu / z + T(0.5));
  const T fr = floor(pv / z + T(0.5));
  // Compare as floating point before converting: a far-off point must not overflow the integer.
  if (!(fc >= T(0) && fc < T(W) && fr >= T(0) && fr < T(H))) return false;
  r2 = static_cast<int64_t>(fr);
  c2 = static_cast<int64_t>(fc);
  const T dc = static_cast<T>(depth_c[r2 * W + c2]);
  if (!depth_valid(dc)) return false;
  return fabs(z - dc) <= abs_tol + rel_tol * dc;
}

}  // namespace hatch
