// The per-pixel loop of patch_overlap on x86-64 CPUs with AVX2, four pixels per instruction in float64
// lanes. Same math as geometry.h / cpu/pair_counts.h, operation for operation, so that every count is
// bit for bit the one of the portable loop (accumulate_pair_counts), which stays the fallback (CPUs
// without AVX2, HATCH_CPU_PORTABLE_OVERLAP=1, sizes past int32 indices):
//  * the projection is project_pixel's sequence of IEEE multiplies, adds and the one division
//    (1 / z, then two products), each an explicit intrinsic; the functions are compiled for "avx2"
//    only, never "fma", so the compiler cannot contract a multiply-add into an FMA (one rounding less
//    would move a pixel sitting exactly on a cell border);
//  * the inside test, the clamp (maxpd / minpd with the same NaN rule as clamp_coord), truncation for
//    floor and the depth test |z - dc| <= abs_tol + rel_tol * dc are those of landing_pixel /
//    depth_agrees, as ordered compares (NaN fails them all);
//  * cells: the landing pixel's cell is computed in float64 as floor(x * n / size + 0.5 / size),
//    verified equal to the integer rule of cell_of for every row and column before use.
// A row segment of view a (kBlock pixels) goes through: the divisions 1 / z alone (their throughput
// is the limit); the projection, inside test, landing pixel and bin, with the pixels that may be
// visible left-packed (vpermd by movemask) so that the rest runs over those only; view c's depths at
// the landing pixels by scalar loads (no gathers: slow on the AMD cores we measured); the depth test
// (a dummy bin where it fails); the counts, into kHistCopies interleaved int32 copies of the
// histogram (pixel k into copy k % 4: neighbouring pixels mostly share a bin, and one histogram would
// chain every increment through a store-to-load forward). Counts are integers: the copies merge
// exactly, in any order, and the result does not depend on the thread count.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../common/geometry.h"
#include "pair_counts.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HATCH_HAVE_AVX2_KERNEL 1
#include <immintrin.h>
#else
#define HATCH_HAVE_AVX2_KERNEL 0
#endif

namespace hatch::cpu::simd {

// Histogram copies of the row loop (count_bins is written for 4).
constexpr int kHistCopies = 4;
// Pixels per column block of a task (a multiple of 4).
#ifndef HATCH_OVERLAP_BLOCK
#define HATCH_OVERLAP_BLOCK 128
#endif
constexpr int32_t kBlock = HATCH_OVERLAP_BLOCK;

// Per-task constants of the row loop (one task = sample s, view a, one cell row of view a).
struct RowGeometry {
  int32_t H, W, nc, nc4;    // image size, taking-part columns of a row, nc rounded up to 4
  const int32_t* row_cell;  // [H] (r * gh / H) * gw
  const int32_t* col_cell;  // [W] c * gw / W
  const int32_t* src_bin;   // [nc4] local source cell of column k times P (0 in the padding)
  const double* ucol;       // [nc4] u = k * stride as double
  const double* src_bin_d;  // [nc4] src_bin as double
  int32_t dummy;            // the bin of a pixel not visible
  int32_t gw;               // grid columns
  // Cell row of pixel row x: floor(x * row_scale + row_offset) (and columns alike), see
  // cells_by_product.
  double row_scale, row_offset, col_scale, col_offset;
};

// Whether floor(x * n / size) == trunc(double(x) * (n / size) + 0.5 / size) for every x in [0, size):
// the exact quotient is an integer or at least 1 / size below the next one, so the offset of half
// that absorbs the roundings of the product (relative 2^-53) without reaching the next integer.
// Checked exhaustively rather than trusted (size pixels, once per call).
inline bool cells_by_product(int64_t size, int64_t n, double& scale, double& offset) {
  scale = static_cast<double>(n) / static_cast<double>(size);
  offset = 0.5 / static_cast<double>(size);
  for (int64_t x = 0; x < size; ++x)
    if (static_cast<int64_t>(static_cast<double>(x) * scale + offset) != x * n / size) return false;
  return true;
}

#if HATCH_HAVE_AVX2_KERNEL
#define HATCH_AVX2 __attribute__((target("avx2")))

inline bool cpu_has_avx2() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return has;
}

// Left-packing of 4 lanes by a movemask: kPack32[m] lists the set lanes of m first (32-bit lanes),
// kPack64[m] the same for 64-bit lanes as pairs of 32-bit ones (for vpermd).
alignas(32) inline constexpr int32_t kPack32[16][8] = {
    {0, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0}, {1, 0, 0, 0, 0, 0, 0, 0}, {0, 1, 0, 0, 0, 0, 0, 0},
    {2, 0, 0, 0, 0, 0, 0, 0}, {0, 2, 0, 0, 0, 0, 0, 0}, {1, 2, 0, 0, 0, 0, 0, 0}, {0, 1, 2, 0, 0, 0, 0, 0},
    {3, 0, 0, 0, 0, 0, 0, 0}, {0, 3, 0, 0, 0, 0, 0, 0}, {1, 3, 0, 0, 0, 0, 0, 0}, {0, 1, 3, 0, 0, 0, 0, 0},
    {2, 3, 0, 0, 0, 0, 0, 0}, {0, 2, 3, 0, 0, 0, 0, 0}, {1, 2, 3, 0, 0, 0, 0, 0}, {0, 1, 2, 3, 0, 0, 0, 0}};
alignas(32) inline constexpr int32_t kPack64[16][8] = {
    {0, 0, 0, 0, 0, 0, 0, 0}, {0, 1, 0, 0, 0, 0, 0, 0}, {2, 3, 0, 0, 0, 0, 0, 0}, {0, 1, 2, 3, 0, 0, 0, 0},
    {4, 5, 0, 0, 0, 0, 0, 0}, {0, 1, 4, 5, 0, 0, 0, 0}, {2, 3, 4, 5, 0, 0, 0, 0}, {0, 1, 2, 3, 4, 5, 0, 0},
    {6, 7, 0, 0, 0, 0, 0, 0}, {0, 1, 6, 7, 0, 0, 0, 0}, {2, 3, 6, 7, 0, 0, 0, 0}, {0, 1, 2, 3, 6, 7, 0, 0},
    {4, 5, 6, 7, 0, 0, 0, 0}, {0, 1, 4, 5, 6, 7, 0, 0}, {2, 3, 4, 5, 6, 7, 0, 0}, {0, 1, 2, 3, 4, 5, 6, 7}};

// dcs[k] = depth_c[at[k]]: scalar loads (faster than vgatherdps / vgatherdpd on the AMD
// cores we run on, and compiled without AVX2 so that the compiler does not turn them into gathers).
template <typename DT>
__attribute__((noinline)) void fetch_depths(const DT* __restrict depth_c, const int32_t* __restrict at,
                                            int32_t n, DT* __restrict dcs) {
  for (int32_t k = 0; k < n; ++k) dcs[k] = depth_c[at[k]];
}

// Bins of the pixels [k0, k1) of one row of view a (depths drow[k] as float64, NaN-padded to nc4,
// invalid as they come) into view c with pair projection m (geometry.h layout), for row v = r. Writes
// bins[0, n4) and returns n4 (a multiple of 4): one entry per pixel that may be visible (inside view c,
// valid depth), src_bin[k] + j if it passes the depth test and lands in cell j, else g.dummy; padding
// entries are g.dummy. at, zs, dcs, invz: scratch of nc4 + 4 entries.
template <typename DT>
HATCH_AVX2 inline int32_t row_bins(const RowGeometry& g, const double* __restrict drow, const double* m,
                                   double v, const DT* __restrict depth_c, double abs_tol, double rel_tol,
                                   int32_t* __restrict bins, int32_t* __restrict at, double* __restrict zs,
                                   DT* __restrict dcs, double* __restrict invz, int32_t k0, int32_t k1) {
  // Row terms, exactly as project_pixel groups them: m[k] * u + (m[k+1] * v + m[k+2]).
  const __m256d rz = _mm256_set1_pd(m[13] * v + m[14]);
  const __m256d ru = _mm256_set1_pd(m[1] * v + m[2]);
  const __m256d rv = _mm256_set1_pd(m[4] * v + m[5]);
  const __m256d m0 = _mm256_set1_pd(m[0]), m3 = _mm256_set1_pd(m[3]), m12 = _mm256_set1_pd(m[12]);
  const __m256d m9 = _mm256_set1_pd(m[9]), m10 = _mm256_set1_pd(m[10]), m15 = _mm256_set1_pd(m[15]);
  const __m256d one = _mm256_set1_pd(1.0), half = _mm256_set1_pd(0.5), zero = _mm256_setzero_pd();
  const __m256d zmin = _mm256_set1_pd(1e-6), inf = _mm256_set1_pd(std::numeric_limits<double>::infinity());
  const __m256d Wd = _mm256_set1_pd(static_cast<double>(g.W)), Hd = _mm256_set1_pd(static_cast<double>(g.H));
  const __m256d Wm1 = _mm256_set1_pd(static_cast<double>(g.W - 1));
  const __m256d Hm1 = _mm256_set1_pd(static_cast<double>(g.H - 1));
  const __m256d atol = _mm256_set1_pd(abs_tol), rtol = _mm256_set1_pd(rel_tol);
  const __m256d sign = _mm256_set1_pd(-0.0);
  const __m128i dummy = _mm_set1_epi32(g.dummy);
  const __m256d gwd = _mm256_set1_pd(static_cast<double>(g.gw));
  const __m256d sr = _mm256_set1_pd(g.row_scale), er = _mm256_set1_pd(g.row_offset);
  const __m256d sc = _mm256_set1_pd(g.col_scale), ec = _mm256_set1_pd(g.col_offset);
  const __m256i pick_low = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);  // 64-bit mask -> 32-bit lanes
  // project_pixel, in two passes: the divisions alone first (their throughput is the limit, and
  // nothing waits on them there), then the rest.
  for (int32_t k = k0; k < k1; k += 4) {
    const __m256d d = _mm256_loadu_pd(drow + k);
    const __m256d u = _mm256_loadu_pd(g.ucol + k);
    const __m256d z = _mm256_add_pd(_mm256_mul_pd(d, _mm256_add_pd(_mm256_mul_pd(m12, u), rz)), m15);
    _mm256_storeu_pd(invz + k, _mm256_div_pd(one, z));
  }
  int32_t n = 0;  // candidates so far
  for (int32_t k = k0; k < k1; k += 4) {
    const __m256d d = _mm256_loadu_pd(drow + k);
    const __m256d u = _mm256_loadu_pd(g.ucol + k);
    const __m256d z = _mm256_add_pd(_mm256_mul_pd(d, _mm256_add_pd(_mm256_mul_pd(m12, u), rz)), m15);
    const __m256d pu = _mm256_add_pd(_mm256_mul_pd(d, _mm256_add_pd(_mm256_mul_pd(m0, u), ru)), m9);
    const __m256d pv = _mm256_add_pd(_mm256_mul_pd(d, _mm256_add_pd(_mm256_mul_pd(m3, u), rv)), m10);
    const __m256d inv_z = _mm256_loadu_pd(invz + k);
    const __m256d fc = _mm256_add_pd(_mm256_mul_pd(pu, inv_z), half);
    const __m256d fr = _mm256_add_pd(_mm256_mul_pd(pv, inv_z), half);
    // landing_pixel and depth_valid(d)
    __m256d ok = _mm256_and_pd(_mm256_cmp_pd(d, zero, _CMP_GT_OQ), _mm256_cmp_pd(d, inf, _CMP_LT_OQ));
    ok = _mm256_and_pd(ok, _mm256_cmp_pd(z, zmin, _CMP_GT_OQ));
    ok = _mm256_and_pd(ok, _mm256_cmp_pd(fc, zero, _CMP_GE_OQ));
    ok = _mm256_and_pd(ok, _mm256_cmp_pd(fc, Wd, _CMP_LT_OQ));
    ok = _mm256_and_pd(ok, _mm256_cmp_pd(fr, zero, _CMP_GE_OQ));
    ok = _mm256_and_pd(ok, _mm256_cmp_pd(fr, Hd, _CMP_LT_OQ));
    // clamp_coord: (x > 0 ? x : 0) is maxpd(x, 0) (NaN -> 0), (lo < hi ? lo : hi) is minpd(lo, hi);
    // then truncation (the landing pixel, as a double: every integer here is exact in float64).
    const __m256d r2 =
        _mm256_round_pd(_mm256_min_pd(_mm256_max_pd(fr, zero), Hm1), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256d c2 =
        _mm256_round_pd(_mm256_min_pd(_mm256_max_pd(fc, zero), Wm1), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m128i at4 = _mm256_cvttpd_epi32(_mm256_add_pd(_mm256_mul_pd(r2, Wd), c2));
    // bin if visible: src_bin[k] + row_cell[r2] + col_cell[c2], the cell rows / columns computed as
    // floor(x * (n / size) + 0.5 / size), checked against the tables for every x (cells_by_product)
    const __m256d qr =
        _mm256_round_pd(_mm256_add_pd(_mm256_mul_pd(r2, sr), er), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256d qc =
        _mm256_round_pd(_mm256_add_pd(_mm256_mul_pd(c2, sc), ec), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m128i bin4 = _mm256_cvttpd_epi32(
        _mm256_add_pd(_mm256_add_pd(_mm256_mul_pd(qr, gwd), qc), _mm256_loadu_pd(g.src_bin_d + k)));
    // Keep only the pixels that may be visible (inside, valid depth): left-packed, so that the
    // depth lookups, the depth test and the counting below run over those alone.
    const int mask = _mm256_movemask_pd(ok);
    const __m256i p64 = _mm256_load_si256(reinterpret_cast<const __m256i*>(kPack64[mask]));
    const __m256i p32 = _mm256_load_si256(reinterpret_cast<const __m256i*>(kPack32[mask]));
    _mm256_storeu_pd(zs + n, _mm256_castsi256_pd(_mm256_permutevar8x32_epi32(_mm256_castpd_si256(z), p64)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(at + n),
                     _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_castsi128_si256(at4), p32)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(bins + n),
                     _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_castsi128_si256(bin4), p32)));
    n += __builtin_popcount(static_cast<unsigned>(mask));
  }
  // Pad the candidates to a multiple of 4 with ones that fail the depth test (z NaN, pixel 0).
  const int32_t n4 = (n + 3) & ~3;
  for (int32_t q = n; q < n4; ++q) {
    zs[q] = std::numeric_limits<double>::quiet_NaN();
    at[q] = 0;
  }
  // Second pass: view c's depth at the landing pixels (addresses known up front, so the loads of many
  // pixels are in flight together), depth_agrees, and the dummy bin where not visible.
  fetch_depths(depth_c, at, n4, dcs);
  for (int32_t k = 0; k < n4; k += 4) {
    __m256d dc;
    if constexpr (std::is_same_v<DT, float>)
      dc = _mm256_cvtps_pd(_mm_loadu_ps(dcs + k));
    else
      dc = _mm256_loadu_pd(dcs + k);
    const __m256d z = _mm256_loadu_pd(zs + k);
    __m256d ok = _mm256_and_pd(_mm256_cmp_pd(dc, zero, _CMP_GT_OQ), _mm256_cmp_pd(dc, inf, _CMP_LT_OQ));
    const __m256d diff = _mm256_andnot_pd(sign, _mm256_sub_pd(z, dc));
    const __m256d tol = _mm256_add_pd(atol, _mm256_mul_pd(rtol, dc));
    ok = _mm256_and_pd(ok, _mm256_cmp_pd(diff, tol, _CMP_LE_OQ));
    const __m128i vis =
        _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_castpd_si256(ok), pick_low));
    const __m128i bin = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bins + k));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(bins + k), _mm_blendv_epi8(dummy, bin, vis));
  }
  return n4;
}
#endif

// First pixel row of cell row gr: ceil(gr * H / grid_h) (as overlap.cpp's first_pixel_row).
inline int64_t task_first_row(int64_t gr, int64_t H, int64_t grid_h) {
  return (gr * H + grid_h - 1) / grid_h;
}

// Counts bins[0, n) (n a multiple of kHistCopies) into hist: copy q at hist + q * hstride.
inline void count_bins(const int32_t* __restrict bins, int32_t n, int32_t* __restrict hist, int64_t hstride) {
  int32_t* h0 = hist;
  int32_t* h1 = hist + hstride;
  int32_t* h2 = hist + 2 * hstride;
  int32_t* h3 = hist + 3 * hstride;
  for (int32_t k = 0; k < n; k += 4) {
    ++h0[bins[k]];
    ++h1[bins[k + 1]];
    ++h2[bins[k + 2]];
    ++h3[bins[k + 3]];
  }
}
static_assert(kHistCopies == 4, "count_bins is written for 4 copies");

// The same with one histogram (large grids, where copies would cost more to clear than they save).
inline void count_bins1(const int32_t* __restrict bins, int32_t n, int32_t* __restrict hist) {
  for (int32_t k = 0; k < n; ++k) ++hist[bins[k]];
}

#if HATCH_HAVE_AVX2_KERNEL
// One task of overlap_kernel (overlap.cpp) in AVX2: same tasks, same counts, bit for bit. Per task
// the bins of each row of view a are computed four pixels at a time (row_bins) and counted into
// int32 histograms (kHistCopies interleaved copies unless the grid is large), merged once per pair.
struct SimdTables {
  std::vector<int32_t> row_cell, col_cell, src_bin;
  std::vector<int32_t>
      col_k0;  // [gw + 1]: the taking-part columns k of cell column j are [col_k0[j], col_k0[j+1])
  std::vector<double> ucol, src_bin_d;
  RowGeometry g;
  int nh;           // histogram copies
  int64_t hstride;  // entries per copy (gw * P + 1: the task's bins and the dummy bin)
  bool exact;       // cells_by_product holds for the rows and the columns (else: portable kernel)
};

template <typename Dims>
inline SimdTables simd_tables(const Dims& dims, int64_t stride) {
  const int64_t H = dims.H, W = dims.W, gh = dims.grid_h, gw = dims.grid_w, P = dims.P;
  SimdTables t;
  const int64_t nc = (W + stride - 1) / stride, nc4 = (nc + 3) / 4 * 4;
  t.row_cell.resize(H);
  t.col_cell.resize(W);
  for (int64_t r = 0; r < H; ++r) t.row_cell[r] = static_cast<int32_t>(cell_of(r, 0, H, W, gh, gw));
  for (int64_t c = 0; c < W; ++c) t.col_cell[c] = static_cast<int32_t>(cell_of(0, c, H, W, gh, gw));
  t.src_bin.assign(nc4, 0);
  t.col_k0.assign(gw + 1, static_cast<int32_t>(nc));
  t.ucol.assign(nc4, 0.0);
  t.src_bin_d.assign(nc4, 0.0);
  for (int64_t k = 0; k < nc; ++k) {
    t.src_bin[k] = static_cast<int32_t>(t.col_cell[k * stride] * P);
    t.ucol[k] = static_cast<double>(k * stride);
    t.src_bin_d[k] = static_cast<double>(t.src_bin[k]);
  }
  for (int64_t k = nc - 1; k >= 0; --k) t.col_k0[t.col_cell[k * stride]] = static_cast<int32_t>(k);
  for (int64_t j = gw - 1; j >= 0; --j) t.col_k0[j] = std::min(t.col_k0[j], t.col_k0[j + 1]);
  t.hstride = gw * P + 1;
  t.nh = t.hstride <= (int64_t(1) << 14) ? kHistCopies : 1;
  t.g = RowGeometry{static_cast<int32_t>(H),
                    static_cast<int32_t>(W),
                    static_cast<int32_t>(nc),
                    static_cast<int32_t>(nc4),
                    t.row_cell.data(),
                    t.col_cell.data(),
                    t.src_bin.data(),
                    t.ucol.data(),
                    t.src_bin_d.data(),
                    static_cast<int32_t>(gw * P),
                    static_cast<int32_t>(gw),
                    0,
                    0,
                    0,
                    0};
  t.exact = cells_by_product(H, gh, t.g.row_scale, t.g.row_offset) &&
            cells_by_product(W, gw, t.g.col_scale, t.g.col_offset);
  return t;
}

template <typename scalar_t, typename Dims>
HATCH_AVX2 void overlap_task_avx2(int64_t task, const scalar_t* depth, const double* proj, scalar_t* out,
                                  const Dims& dims, const SimdTables& t, double abs_tol, double rel_tol,
                                  int64_t stride, double* drow, scalar_t* dcs, int32_t* bins, int32_t* hist,
                                  int64_t* den) {
  const int64_t V = dims.V, H = dims.H, W = dims.W, gh = dims.grid_h, gw = dims.grid_w, P = dims.P;
  const int64_t HW = H * W;
  const int32_t nc = t.g.nc, nc4 = t.g.nc4;
  const int64_t gr = task % gh;
  const int64_t a = (task / gh) % V;
  const int64_t s = task / (gh * V);
  const int64_t r0 = task_first_row(gr, H, gh), r1 = task_first_row(gr + 1, H, gh);
  const int64_t i0 = gr * gw, i1 = i0 + gw;
  const scalar_t* depth_a = depth + (s * V + a) * HW;
  const int64_t first = ((r0 + stride - 1) / stride) * stride;

  // Denominators: valid pixels per cell of view a (a cell's columns are the range col_k0[j], ...).
  std::fill(den + i0, den + i1, 0);
  for (int64_t r = first; r < r1; r += stride) {
    const scalar_t* row = depth_a + r * W;
    for (int64_t j = 0; j < gw; ++j) {
      int64_t n = 0;
      for (int32_t k = t.col_k0[j]; k < t.col_k0[j + 1]; ++k)
        n += static_cast<int64_t>(depth_valid(row[k * stride]));
      den[i0 + j] += n;
    }
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (int32_t k = nc; k < nc4; ++k) drow[k] = nan;  // padding: invalid depth, never counted

  for (int64_t c = 0; c < V; ++c) {
    scalar_t* out_ac = out + ((s * V + a) * V + c) * P * P;
    if (c == a) {  // same view: not an overlap, written as 0
      std::fill(out_ac + i0 * P, out_ac + i1 * P, scalar_t(0));
      continue;
    }
    const double* m = proj + ((s * V + a) * V + c) * kPairProjSize;
    const scalar_t* depth_c = depth + (s * V + c) * HW;
    std::fill(hist, hist + t.nh * t.hstride, 0);
    // Column blocks of kBlock pixels, all the task's rows of a block before the next one: the
    // pixels of a block land in a compact part of view c, whose depths then stay in cache.
    for (int32_t k0 = 0; k0 < nc4; k0 += kBlock) {
      const int32_t k1 = std::min(k0 + kBlock, nc4), kv = std::min(k1, nc);
      for (int64_t r = first; r < r1; r += stride) {
        const scalar_t* row = depth_a + r * W;
        for (int32_t k = k0; k < kv; ++k) drow[k] = static_cast<double>(row[k * stride]);
        const int32_t n4 =
            row_bins<scalar_t>(t.g, drow, m, static_cast<double>(r), depth_c, abs_tol, rel_tol, bins,
                               bins + nc4 + 4, drow + nc4, dcs, drow + 2 * nc4 + 4, k0, k1);
        if (t.nh == kHistCopies)
          count_bins(bins, n4, hist, t.hstride);
        else
          count_bins1(bins, n4, hist);
      }
    }
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = den[i];
      const int64_t base = (i - i0) * P;
      scalar_t* orow = out_ac + i * P;
      for (int64_t j = 0; j < P; ++j) {
        int64_t cnt = 0;
        for (int q = 0; q < t.nh; ++q) cnt += hist[q * t.hstride + base + j];
        // Divide in the output's dtype, as the reference does (count / den, both exact).
        orow[j] = n > 0 ? static_cast<scalar_t>(cnt) / static_cast<scalar_t>(n) : scalar_t(0);
      }
    }
  }
}

#endif

}  // namespace hatch::cpu::simd
