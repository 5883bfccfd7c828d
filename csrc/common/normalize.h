// The cosine normalisation of the cell embeddings, ê = e / max(|e|, kNormEps) (as F.normalize), and its
// backward, written once for every backend. A row's work is split as k = first, first + step, ... < D:
// the CPU kernels (cpu/similarity.cpp, cpu/pair_loss.cpp) run a whole row per call (first 0, step 1),
// the CUDA kernels (cuda/device/normalize.cuh, also run by the CPU emulation) one warp per row (first =
// lane, step 32) and add the lanes' partial sums with a warp sum. Only the reduction behind |e| is the
// caller's: sum_squares + row_norm below (sequential in pair_loss.cpp, warp sums on CUDA), or
// at::linalg_vector_norm (similarity.cpp). Header-only, no ATen.
#pragma once
#include <cmath>
#include <cstdint>

#include "geometry.h"  // HATCH_HD

namespace hatch {

// The eps of ê = e / max(|e|, eps) on every backend (F.normalize's). The backward takes the |e| branch
// when |e| >= kNormEps (at equality too, as autograd through clamp_min does).
constexpr double kNormEps = 1e-12;

// Σ_k x_k² over the row's elements k of this part, accumulated in T.
template <typename T, typename In>
HATCH_HD T sum_squares(const In* x, int64_t D, int64_t first = 0, int64_t step = 1) {
  T sq = T(0);
  for (int64_t k = first; k < D; k += step) sq += static_cast<T>(x[k]) * static_cast<T>(x[k]);
  return sq;
}

// Σ_k a_k b_k over the row's elements k of this part.
template <typename T>
HATCH_HD T dot_part(const T* a, const T* b, int64_t D, int64_t first = 0, int64_t step = 1) {
  T acc = T(0);
  for (int64_t k = first; k < D; k += step) acc += a[k] * b[k];
  return acc;
}

// |e| from the row's whole sum of squares.
HATCH_HD float row_norm(float sum_sq) { return sqrtf(sum_sq); }
HATCH_HD double row_norm(double sum_sq) { return sqrt(sum_sq); }

// ê_k = e_k / max(|e|, eps) for the row's elements k of this part (norm = |e|).
template <typename T, typename In>
HATCH_HD void normalize_row(const In* x, T norm, T* y, int64_t D, int64_t first = 0, int64_t step = 1) {
  const T den = norm < T(kNormEps) ? T(kNormEps) : norm;  // std::max(norm, eps); NaN stays NaN
  for (int64_t k = first; k < D; k += step) y[k] = static_cast<T>(x[k]) / den;
}

// The backward of ê = e / max(|e|, eps) for the upstream gradient scale · g of ê, written to out (which
// may be g itself), for the row's elements k of this part:
//   |e| >= eps: (scale g_k − (scale g·ê) ê_k) / |e|;   |e| < eps (ê = e / eps, linear in e): scale g_k / eps.
// dot = g·ê over the whole row (unscaled), norm = |e|.
template <typename T, typename Out>
HATCH_HD void normalize_backward_row(const T* g, const T* e_hat, T dot, T norm, T scale, Out* out, int64_t D,
                                     int64_t first = 0, int64_t step = 1) {
  if (norm >= T(kNormEps)) {
    const T sdot = dot * scale;
    for (int64_t k = first; k < D; k += step)
      out[k] = static_cast<Out>((g[k] * scale - sdot * e_hat[k]) / norm);
  } else {
    for (int64_t k = first; k < D; k += step) out[k] = static_cast<Out>(g[k] * scale / T(kNormEps));
  }
}

}  // namespace hatch
