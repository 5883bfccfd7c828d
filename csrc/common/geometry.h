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
// I: the index type. The CUDA kernels use int32 (their host code checks up front that H * grid_h,
// W * grid_w and P^2 fit), so that no 64-bit division runs per pixel.
HATCH_HD int64_t cell_of(int64_t r, int64_t c, int64_t H, int64_t W, int64_t gh, int64_t gw) {
  return (r * gh / H) * gw + (c * gw / W);
}
HATCH_HD int32_t cell_of32(int32_t r, int32_t c, int32_t H, int32_t W, int32_t gh, int32_t gw) {
  return (r * gh / H) * gw + (c * gw / W);
}

// Depth is valid iff finite and > 0.
template <typename T>
HATCH_HD bool depth_valid(T d) {
  return (d > T(0)) & (d < T(INFINITY));  // NaN fails both comparisons
}

// Layout of one pair projection (16 numbers), precomputed for each (sample, view a, view c) (on the
// host for the CPU ops, by a kernel for the CUDA ops; both with pair_projection below):
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
HATCH_HD bool landing_visible(T z, T fc, T fr, const DT* depth_c, int64_t H, int64_t W, T abs_tol, T rel_tol,
                              int64_t& r2, int64_t& c2) {
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

// ------------------------------------------------------------------ per-view geometry (float64)
// One implementation for the CPU ops (checks.cpp: pair_projections, which raises with the failing
// test's message) and the CUDA ops (a kernel, device/reprojection.cuh: pair_projections_kernel,
// which cannot raise without a host synchronisation and instead makes the projections of an invalid
// view NaN, so that none of its pixels is visible anywhere). Small dense helpers: the per-call
// geometry is a few hundred flops, where ATen's batched linear algebra costs milliseconds.
HATCH_HD bool finite64(double x) { return fabs(x) <= 1.7976931348623157e308; }  // false for NaN

HATCH_HD double det3(const double* m) {
  return m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
         m[2] * (m[3] * m[7] - m[4] * m[6]);
}

HATCH_HD void inv3(const double* m, double* r) {
  const double d = det3(m);
  r[0] = (m[4] * m[8] - m[5] * m[7]) / d;
  r[1] = (m[2] * m[7] - m[1] * m[8]) / d;
  r[2] = (m[1] * m[5] - m[2] * m[4]) / d;
  r[3] = (m[5] * m[6] - m[3] * m[8]) / d;
  r[4] = (m[0] * m[8] - m[2] * m[6]) / d;
  r[5] = (m[2] * m[3] - m[0] * m[5]) / d;
  r[6] = (m[3] * m[7] - m[4] * m[6]) / d;
  r[7] = (m[1] * m[6] - m[0] * m[7]) / d;
  r[8] = (m[0] * m[4] - m[1] * m[3]) / d;
}

HATCH_HD void mul3(const double* a, const double* b, double* r) {
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      r[i * 3 + j] = a[i * 3] * b[j] + a[i * 3 + 1] * b[3 + j] + a[i * 3 + 2] * b[6 + j];
}

// Singular K: |det K| tiny relative to its scale (a focal length of 0, a repeated row, ...).
HATCH_HD bool intrinsics_invertible(const double* K) {
  double scale = 0;
  for (int i = 0; i < 9; ++i) scale = fabs(K[i]) > scale ? fabs(K[i]) : scale;
  return scale > 0 && fabs(det3(K)) / (scale * scale * scale) > 1e-12;
}

// A camera-to-world pose [4, 4] (row-major) must have bottom row [0, 0, 0, 1] ...
HATCH_HD bool pose_bottom_row_ok(const double* T) {
  return fabs(T[12]) <= 1e-6 && fabs(T[13]) <= 1e-6 && fabs(T[14]) <= 1e-6 && fabs(T[15] - 1) <= 1e-6;
}

// ... and an invertible rotation block.
HATCH_HD void pose_rotation(const double* T, double* R) {
  const int src[9] = {0, 1, 2, 4, 5, 6, 8, 9, 10};
  for (int i = 0; i < 9; ++i) R[i] = T[src[i]];
}
HATCH_HD bool pose_rotation_invertible(const double* T) {
  double R[9];
  pose_rotation(T, R);
  return fabs(det3(R)) > 1e-9;
}

// Every test of the CPU's checks (finite entries, invertible K, bottom row, rotation) for one view.
HATCH_HD bool view_geometry_valid(const double* K, const double* T) {
  bool ok = true;
  for (int i = 0; i < 9; ++i) ok = ok && finite64(K[i]);
  for (int i = 0; i < 16; ++i) ok = ok && finite64(T[i]);
  return ok && intrinsics_invertible(K) && pose_bottom_row_ok(T) && pose_rotation_invertible(T);
}

// The projection of the pair (view a, view c) in the layout above, from K_a, T_a (camera to world),
// K_c, T_c: rel = T_c^-1 T_a = [Rc^-1 Ra | Rc^-1 (ta - tc)], RQ = rel_R K_a^-1, A = K_c RQ,
// b = K_c rel_t. Assumes both views valid (view_geometry_valid).
HATCH_HD void pair_projection(const double* Ka, const double* Ta, const double* Kc, const double* Tc,
                              double* m) {
  double Ra[9], Rc[9], Rc_inv[9], Ka_inv[9], rel_R[9], RQ[9], A[9];
  pose_rotation(Ta, Ra);
  pose_rotation(Tc, Rc);
  inv3(Rc, Rc_inv);
  inv3(Ka, Ka_inv);
  mul3(Rc_inv, Ra, rel_R);
  double d[3], rel_t[3];
  for (int i = 0; i < 3; ++i) d[i] = Ta[i * 4 + 3] - Tc[i * 4 + 3];
  for (int i = 0; i < 3; ++i)
    rel_t[i] = Rc_inv[i * 3] * d[0] + Rc_inv[i * 3 + 1] * d[1] + Rc_inv[i * 3 + 2] * d[2];
  mul3(rel_R, Ka_inv, RQ);
  mul3(Kc, RQ, A);
  for (int i = 0; i < 9; ++i) m[i] = A[i];
  for (int i = 0; i < 3; ++i)
    m[9 + i] = Kc[i * 3] * rel_t[0] + Kc[i * 3 + 1] * rel_t[1] + Kc[i * 3 + 2] * rel_t[2];
  for (int j = 0; j < 3; ++j) m[12 + j] = RQ[6 + j];
  m[15] = rel_t[2];
}

}  // namespace hatch
