// Host/device math shared by the CPU and CUDA kernels: cell indices and the per-pixel reprojection test
// of docs/design.md ("The PaStA math", step 1). Header-only so that both compilers inline it.
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
  return (d > T(0)) & (d < T(INFINITY));  // NaN fails both comparisons
}

// Layout of one pair projection (16 numbers), precomputed on the host for each (sample, view a, view c):
//   [0..8]  A = K_c R K_a^-1 (row-major 3x3), [9..11] b = K_c t, [12..14] zrow = (R K_a^-1) row 2,
//   [15] tz = t_z, with [R | t] = (T_c^-1 T_a)[:3]. For w = d (u, v, 1): K_c X_c = A w + b and
//   z = X_c.z = zrow . w + tz.
constexpr int kPairProjSize = 16;

// Where pixel (r, c) of view a with depth d lands in view c (v = r, u = c as floating point): its depth
// z in c and its continuous pixel coordinates plus one half, (fc, fr) = (u' / z + 0.5, v' / z + 0.5),
// so that the pixel it falls in is (floor(fr), floor(fc)). The row terms are grouped so that a loop
// over c can hoist them; no branches, so a loop over a row vectorises. inf/NaN where z <= 0 (rejected
// by landing_pixel).
template <typename T>
HATCH_HD void project_pixel(const T* m, T d, T v, T u, T& z, T& fc, T& fr) {
  z = d * (m[12] * u + (m[13] * v + m[14])) + m[15];
  const T pu = d * (m[0] * u + (m[1] * v + m[2])) + m[9];
  const T pv = d * (m[3] * u + (m[4] * v + m[5])) + m[10];
  const T inv_z = T(1) / z;
  fc = pu * inv_z + T(0.5);
  fr = pv * inv_z + T(0.5);
}

// x clamped to [0, hi]; NaN gives 0. Written as the compare-selects that compile to maxsd / minsd.
template <typename T>
HATCH_HD T clamp_coord(T x, T hi) {
  const T lo = x > T(0) ? x : T(0);
  return lo < hi ? lo : hi;
}

// Where a projected pixel (z, fc, fr) from project_pixel lands: true iff z > 1e-6 and it falls inside
// the H x W image; (r2, c2) is then that pixel, otherwise some pixel inside the image (clamped), so
// that callers may read at (r2, c2) unconditionally and weight by the result.
//
// Branch-free on purpose (as depth_agrees): visibility depends on the data (occlusion edges, holes),
// so branches mispredict on the CPU and diverge on the GPU.
// Pixel = floor(x): for x >= 0, floor(x) < W <=> x < W and floor(x) == (int)x, so the range is tested
// on x first (as floating point: a far-off point must not overflow the integer) and truncation stands
// in for floor (a libm call on baseline x86-64). I: the index type (int32 lets a CPU loop vectorise).
template <typename T, typename I>
HATCH_HD bool landing_pixel(T z, T fc, T fr, I H, I W, I& r2, I& c2) {
  const bool inside = (z > T(1e-6)) & (fc >= T(0)) & (fc < T(W)) & (fr >= T(0)) & (fr < T(H));
  r2 = static_cast<I>(clamp_coord(fr, T(H - 1)));
  c2 = static_cast<I>(clamp_coord(fc, T(W - 1)));
  return inside;
}

// The depth test at the landing pixel: view c's depth dc there is valid and |z - dc| <= abs_tol +
// rel_tol * dc. False for a NaN z (so a caller may mark a pixel "not visible" by setting z = NaN).
template <typename T>
HATCH_HD bool depth_agrees(T z, T dc, T abs_tol, T rel_tol) {
  return depth_valid(dc) & (fabs(z - dc) <= abs_tol + rel_tol * dc);
}

// landing_pixel then depth_agrees: true iff the projected pixel is visible in view c; (r2, c2) as
// landing_pixel. depth_c points at view c's H x W depth map (row-major).
template <typename T, typename DT>
HATCH_HD bool landing_visible(T z, T fc, T fr, const DT* depth_c, int64_t H, int64_t W, T abs_tol,
                              T rel_tol, int64_t& r2, int64_t& c2) {
  const bool inside = landing_pixel<T, int64_t>(z, fc, fr, H, W, r2, c2);
  return inside & depth_agrees(z, static_cast<T>(depth_c[r2 * W + c2]), abs_tol, rel_tol);
}

// Reprojects pixel (r, c) of view a with depth d (valid) into view c: project_pixel then
// landing_visible. True iff visible in c; (r2, c2) as landing_pixel.
template <typename T, typename DT>
HATCH_HD bool reproject_visible(const T* m, T d, int64_t r, int64_t c, const DT* depth_c, int64_t H,
                                int64_t W, T abs_tol, T rel_tol, int64_t& r2, int64_t& c2) {
  T z, fc, fr;
  project_pixel(m, d, T(r), T(c), z, fc, fr);
  return landing_visible(z, fc, fr, depth_c, H, W, abs_tol, rel_tol, r2, c2);
}

}  // namespace hatch
