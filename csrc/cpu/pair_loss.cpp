#include "pair_loss.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "../common/checks.h"
#include "../common/loss_tiles.h"
#include "../common/normalize.h"

namespace hatch::cpu {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// exp for the elementwise passes over a similarity tile, written so that GCC/Clang vectorise the loops
// that call it (std::exp stays scalar without -ffast-math, and float selects are not if-converted
// under the default -ftrapping-math, hence the integer masks). float: Cephes' expf scheme,
// exp(x) = 2^n exp(r) with n = round(x log2 e), |r| <= ln2 / 2 and a degree-6 polynomial (relative
// error < 1e-7 measured); results below FLT_MIN flush to 0, so exp(-inf) = 0. Domain: x <= 88; every
// caller passes a similarity minus its row/column maximum or log-sum-exp (<= 0 up to rounding).
// double: std::exp.
template <typename T>
inline T exp_fast(T x) {
  return std::exp(x);
}

template <>
inline float exp_fast<float>(float x) {
  const float t = x * 1.44269504088896341f;
  const float nf = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
  const int32_t n = static_cast<int32_t>(nf);        // -inf / huge: INT_MIN, masked below
  const float r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = (p * r * r + r + 1.0f) * [&] {
    const uint32_t bits = (static_cast<uint32_t>(n) + 127u) << 23;  // 2^n
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return scale;
  }();
  uint32_t ybits;
  std::memcpy(&ybits, &y, sizeof(y));
  ybits &= 0u - static_cast<uint32_t>(static_cast<uint32_t>(n + 126) <= 253u);  // n in [-126, 127]
  float out;
  std::memcpy(&out, &ybits, sizeof(out));
  return out;
}

// Tasks of the elementwise passes hold at least this many similarities (parallel overhead).
constexpr int64_t kMinTaskElems = 16384;

// out[i] = logsumexp_j s[i, j] for the T rows of the tile s [T, P].
template <typename T>
void rows_lse(const T* s, int64_t rows, int64_t P, T* out) {
  at::parallel_for(0, rows, std::max<int64_t>(1, kMinTaskElems / P), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const T* row = s + i * P;
      T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
      for (int64_t j = 0; j < P; ++j) m = row[j] > m ? row[j] : m;
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t j = 0; j < P; ++j) acc += exp_fast<T>(row[j] - m);
      out[i] = m + std::log(acc);
    }
  });
}

// Merges the columns of the tile s [T, P] into the running column log-sum-exp, kept as a maximum and
// a sum of exp(s − maximum) per column (flash-attention's online softmax, across row tiles). Each
// column is owned by one task and summed in row order, so the result does not depend on the threads.
template <typename T>
void cols_lse_update(const T* s, int64_t rows, int64_t P, T* run_max, T* run_sum) {
  at::parallel_for(0, P, std::max<int64_t>(64, kMinTaskElems / std::max<int64_t>(rows, 1)),
                   [&](int64_t lo, int64_t hi) {
                     const int64_t n = hi - lo;
                     std::vector<T> m(run_max + lo, run_max + hi), acc(n);
                     for (int64_t i = 0; i < rows; ++i) {
                       const T* row = s + i * P + lo;
#pragma omp simd
                       for (int64_t j = 0; j < n; ++j) m[j] = row[j] > m[j] ? row[j] : m[j];
                     }
                     for (int64_t j = 0; j < n; ++j)
                       acc[j] = run_sum[lo + j] * exp_fast<T>(run_max[lo + j] - m[j]);
                     for (int64_t i = 0; i < rows; ++i) {
                       const T* row = s + i * P + lo;
                       T* a = acc.data();
                       const T* mm = m.data();
#pragma omp simd
                       for (int64_t j = 0; j < n; ++j) a[j] += exp_fast<T>(row[j] - mm[j]);
                     }
                     std::copy(m.begin(), m.end(), run_max + lo);
                     std::copy(acc.begin(), acc.end(), run_sum + lo);
                   });
}

// In place on the tile: s → G = exp(s − L_i) − u_i + exp(s − L'_j) − u'_j (rows i of the tile,
// columns j; L = +inf and u = 0 on invalid rows / columns make their terms vanish).
template <typename T>
void grad_tile(T* s, int64_t rows, int64_t P, const T* L_row, const T* u_row, const T* L_col,
               const T* u_col) {
  at::parallel_for(0, rows, std::max<int64_t>(1, kMinTaskElems / P), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      T* row = s + i * P;
      const T Li = L_row[i], ui = u_row[i];
      if (ui == 0 && Li == std::numeric_limits<T>::infinity()) {  // invalid row: column term only
#pragma omp simd
        for (int64_t j = 0; j < P; ++j) row[j] = exp_fast<T>(row[j] - L_col[j]) - u_col[j];
      } else {
#pragma omp simd
        for (int64_t j = 0; j < P; ++j)
          row[j] = (exp_fast<T>(row[j] - Li) - ui) + (exp_fast<T>(row[j] - L_col[j]) - u_col[j]);
      }
    }
  });
}

// A host vector as a [P] tensor of the accumulation dtype.
at::Tensor as_tensor(const std::vector<double>& v, const at::TensorOptions& opts) {
  return at::tensor(v, at::TensorOptions().dtype(at::kDouble)).to(opts);
}

// log Σ_j exp(x_j) over a row (or column) whose `zeros` entries are 0 and whose other entries sum to
// sum_exp = Σ exp(x − shift), shift = their maximum (or -inf when there are none).
double log_partition(int64_t zeros, double shift, double sum_exp) {
  if (zeros > 0) {
    // The zero entries contribute exp(0 − shift') each; rebase to shift' = max(shift, 0).
    const double sh = std::max(shift, 0.0);
    const double rest = shift == -kInf ? 0.0 : sum_exp * std::exp(shift - sh);
    return sh + std::log(static_cast<double>(zeros) * std::exp(-sh) + rest);
  }
  return shift + std::log(sum_exp);
}

// Adds Σ_k w[k] s[i, col[k]] over the nonzeros of the tile's rows [r0, r0 + T) (forward), or subtracts
// w[k] from G there (backward). Sequential, so the sum's order is fixed.
template <typename scalar_t>
double sparse_dot(const PairTargets& t, const scalar_t* s, int64_t r0, int64_t T) {
  double acc = 0;
  for (int64_t i = r0; i < r0 + T; ++i) {
    const scalar_t* row = s + (i - r0) * t.P;
    for (int64_t k = t.row_ptr[i]; k < t.row_ptr[i + 1]; ++k) acc += t.w[k] * row[t.col[k]];
  }
  return acc;
}

template <typename scalar_t>
void sparse_sub(const PairTargets& t, scalar_t* g, int64_t r0, int64_t T) {
  for (int64_t i = r0; i < r0 + T; ++i) {
    scalar_t* row = g + (i - r0) * t.P;
    for (int64_t k = t.row_ptr[i]; k < t.row_ptr[i + 1]; ++k) row[t.col[k]] -= static_cast<scalar_t>(t.w[k]);
  }
}

// Σ over valid entries of an LSE vector, in float64.
double masked_sum(const at::Tensor& lse, const std::vector<uint8_t>& valid) {
  const at::Tensor l = lse.to(at::kDouble).contiguous();
  const double* p = l.data_ptr<double>();
  double acc = 0;
  for (size_t i = 0; i < valid.size(); ++i)
    if (valid[i]) acc += p[i];
  return acc;
}

// The LSE with +inf on invalid entries, so that exp(s − L) vanishes there.
at::Tensor masked_lse(const at::Tensor& lse, const std::vector<uint8_t>& valid) {
  std::vector<double> v(valid.size());
  const at::Tensor l = lse.to(at::kDouble).contiguous();
  const double* p = l.data_ptr<double>();
  for (size_t i = 0; i < valid.size(); ++i) v[i] = valid[i] ? p[i] : kInf;
  return as_tensor(v, lse.options());
}

// ê = e / max(|e|, eps) per cell (common/normalize.h), in the accumulation dtype: ê [B, V, P, D] and |e|
// [B, V, P], contiguous.
struct Normalized {
  at::Tensor e_hat, norm;
};

Normalized normalize(const at::Tensor& emb) {
  const at::Tensor e = emb.contiguous();
  const auto acc = acc_type_for(e.scalar_type());
  at::Tensor out = at::empty(e.sizes(), e.options().dtype(acc));
  at::Tensor norm = at::empty(e.sizes().slice(0, e.dim() - 1), e.options().dtype(acc));
  const int64_t D = e.size(-1), rows = e.numel() / D;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, e.scalar_type(), "hatch_normalize", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* in = e.data_ptr<scalar_t>();
    acc_t* o = out.data_ptr<acc_t>();
    acc_t* n = norm.data_ptr<acc_t>();
    at::parallel_for(0, rows, std::max<int64_t>(1, kMinTaskElems / D), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        n[r] = row_norm(sum_squares<acc_t>(in + r * D, D));
        normalize_row(in + r * D, n[r], o + r * D, D);
      }
    });
  });
  return {out, norm};
}

// In place on g = dL/dê (accumulation dtype), scaled by `scale` first: the normalisation backward of
// common/normalize.h. Returns it in emb's dtype.
at::Tensor normalize_backward(const at::Tensor& emb, const Normalized& nz, at::Tensor g, double scale) {
  const int64_t D = g.size(-1), rows = g.numel() / D;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "hatch_normalize_bwd", [&] {
    using acc_t = scalar_t;
    const acc_t* eh = nz.e_hat.data_ptr<acc_t>();
    const acc_t* n = nz.norm.data_ptr<acc_t>();
    acc_t* gp = g.data_ptr<acc_t>();
    const acc_t sc = static_cast<acc_t>(scale);
    at::parallel_for(0, rows, std::max<int64_t>(1, kMinTaskElems / D), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        acc_t* y = gp + r * D;
        const acc_t* u = eh + r * D;
        normalize_backward_row(y, u, dot_part(y, u, D), n[r], sc, y, D);
      }
    });
  });
  return g.scalar_type() == emb.scalar_type() ? g : g.to(emb.scalar_type());
}

// Rounds of a round-robin schedule: every view pair a < c exactly once, the pairs of a round
// disjoint (circle method; a dummy view when V is odd).
std::vector<std::vector<std::pair<int64_t, int64_t>>> pair_rounds(int64_t V) {
  const int64_t n = V % 2 == 0 ? V : V + 1;
  std::vector<std::vector<std::pair<int64_t, int64_t>>> rounds;
  for (int64_t r = 0; r + 1 < n; ++r) {
    std::vector<std::pair<int64_t, int64_t>> round;
    const auto add = [&](int64_t x, int64_t y) {
      if (x < V && y < V) round.emplace_back(std::min(x, y), std::max(x, y));
    };
    add(r, n - 1);
    for (int64_t k = 1; k < n / 2; ++k) add((r + k) % (n - 1), (r - k + n - 1) % (n - 1));
    if (!round.empty()) rounds.push_back(std::move(round));
  }
  return rounds;
}

// Runs fn(b, a, c) for every sample b and view pair a < c. Pairs that share a view never run at the
// same time, so fn may accumulate into per-view buffers without races, and every buffer receives its
// contributions in the same order whatever the thread count. When a round has at least as many
// (sample, pair) tasks as there are threads, the tasks run in parallel (each single-threaded inside:
// few large tasks beat many small parallel regions, above all on a busy machine); otherwise they run
// one after another and parallelise inside (GEMM and elementwise passes).
void for_each_pair(int64_t B, int64_t V, const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  const int64_t threads = at::get_num_threads();
  for (const auto& round : pair_rounds(V)) {
    const int64_t n = static_cast<int64_t>(round.size()), tasks = B * n;
    const auto run = [&](int64_t k) { fn(k / n, round[k % n].first, round[k % n].second); };
    if (threads > 1 && tasks >= threads && !at::in_parallel_region()) {
      at::parallel_for(0, tasks, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t k = lo; k < hi; ++k) run(k);
      });
    } else {
      for (int64_t k = 0; k < tasks; ++k) run(k);
    }
  }
}

}  // namespace

PairTargets pair_targets(std::vector<SEntry>& entries, int64_t P, double tau_t, double min_overlap) {
  PairTargets t;
  t.P = P;
  // Row-major order: counting sort by row, then by column within a row, merging entries of one cell.
  t.row_ptr.assign(P + 1, 0);
  std::vector<int64_t> start(P + 1, 0);
  for (const SEntry& e : entries) ++start[e.i + 1];
  for (int64_t i = 0; i < P; ++i) start[i + 1] += start[i];
  std::vector<SEntry> sorted(entries.size());
  {
    std::vector<int64_t> pos(start.begin(), start.end() - 1);
    for (const SEntry& e : entries) sorted[pos[e.i]++] = e;
  }
  std::vector<double> row_sum(P, 0.0), col_sum(P, 0.0), col_max(P, -kInf), col_exp(P, 0.0);
  std::vector<int64_t> col_nnz(P, 0);
  std::vector<double> x;  // S_ij / τ_t at the nonzeros
  std::vector<double> z_row(P), z_col(P);
  for (int64_t i = 0; i < P; ++i) {
    const auto first = sorted.begin() + start[i], last = sorted.begin() + start[i + 1];
    std::sort(first, last, [](const SEntry& p, const SEntry& q) { return p.j < q.j; });
    double rmax = -kInf;
    for (auto it = first; it != last;) {
      const int32_t j = it->j;
      double v = it->v;
      for (++it; it != last && it->j == j; ++it) v += it->v;
      if (v == 0) continue;  // an exact zero of S is a zero entry (uniform target)
      // Σ over the nonzeros in column order equals the dense sum (adding zeros changes nothing).
      row_sum[i] += v;
      col_sum[j] += v;
      const double xv = v / tau_t;
      t.col.push_back(j);
      x.push_back(xv);
      rmax = std::max(rmax, xv);
      col_max[j] = std::max(col_max[j], xv);
      ++col_nnz[j];
    }
    t.row_ptr[i + 1] = static_cast<int64_t>(t.col.size());
    double rexp = 0;
    for (int64_t k = t.row_ptr[i]; k < t.row_ptr[i + 1]; ++k) rexp += std::exp(x[k] - rmax);
    z_row[i] = log_partition(P - (t.row_ptr[i + 1] - t.row_ptr[i]), rmax, rexp);
  }
  // Column partition functions (over the nonzeros).
  for (size_t k = 0; k < x.size(); ++k) col_exp[t.col[k]] += std::exp(x[k] - col_max[t.col[k]]);
  for (int64_t j = 0; j < P; ++j) z_col[j] = log_partition(P - col_nnz[j], col_max[j], col_exp[j]);

  t.valid_row.resize(P);
  t.valid_col.resize(P);
  t.u_row.resize(P);
  t.u_col.resize(P);
  for (int64_t i = 0; i < P; ++i) {
    t.valid_row[i] = row_sum[i] > min_overlap;
    t.valid_col[i] = col_sum[i] > min_overlap;
    t.n_valid_rows += t.valid_row[i];
    t.n_valid_cols += t.valid_col[i];
    t.u_row[i] = t.valid_row[i] ? std::exp(-z_row[i]) : 0.0;
    t.u_col[i] = t.valid_col[i] ? std::exp(-z_col[i]) : 0.0;
  }
  // w = valid_i (p_ij − u_i) + valid'_j (p'_ji − u'_j) at the nonzeros.
  t.w.resize(x.size());
  for (int64_t i = 0; i < P; ++i) {
    for (int64_t k = t.row_ptr[i]; k < t.row_ptr[i + 1]; ++k) {
      const int64_t j = t.col[k];
      double w = 0;
      if (t.valid_row[i]) w += std::exp(x[k] - z_row[i]) - t.u_row[i];
      if (t.valid_col[j]) w += std::exp(x[k] - z_col[j]) - t.u_col[j];
      t.w[k] = w;
    }
  }
  return t;
}

double pair_loss_forward(const at::Tensor& ea, const at::Tensor& ec, const PairTargets& t, double tau_p,
                         const at::Tensor& lse_ac, const at::Tensor& lse_ca) {
  const int64_t P = ea.size(0);
  const int64_t tile = loss_tile_rows(P, LossBackend::kCpu);
  const double inv_tau = 1.0 / tau_p;
  const auto opts = ea.options();
  at::Tensor s = at::empty({tile, P}, opts);
  at::Tensor lse_rows = at::empty({P}, opts);
  at::Tensor col_max = at::full({P}, -kInf, opts), col_sum = at::zeros({P}, opts);
  double cross = 0;  // Σ_k w_k s_k over the nonzeros of S
  for (int64_t r0 = 0; r0 < P; r0 += tile) {
    const int64_t T = std::min(tile, P - r0);
    at::Tensor st = s.narrow(0, 0, T);
    st.addmm_(ea.narrow(0, r0, T), ec.t(), /*beta=*/0, /*alpha=*/inv_tau);  // s = ê_a ê_cᵀ / τ_p
    AT_DISPATCH_FLOATING_TYPES(st.scalar_type(), "pair_loss_forward", [&] {
      const scalar_t* sp = st.data_ptr<scalar_t>();
      rows_lse<scalar_t>(sp, T, P, lse_rows.data_ptr<scalar_t>() + r0);
      cols_lse_update<scalar_t>(sp, T, P, col_max.data_ptr<scalar_t>(), col_sum.data_ptr<scalar_t>());
      if (t.n_valid_rows + t.n_valid_cols > 0) cross += sparse_dot<scalar_t>(t, sp, r0, T);
    });
  }
  lse_ac.copy_(lse_rows);
  lse_ca.copy_(col_max + col_sum.log());
  if (t.n_valid_rows + t.n_valid_cols == 0) return 0.0;

  // Σ_i u_i Σ_j s_ij = (Σ_i u_i ê_a,i) · (Σ_j ê_c,j) / τ_p, and likewise for the columns.
  const at::Tensor uniform_rows = at::dot(at::mv(ea.t(), as_tensor(t.u_row, opts)), ec.sum(0));
  const at::Tensor uniform_cols = at::dot(at::mv(ec.t(), as_tensor(t.u_col, opts)), ea.sum(0));
  const double uniform = (uniform_rows.item<double>() + uniform_cols.item<double>()) * inv_tau;
  return masked_sum(lse_ac, t.valid_row) + masked_sum(lse_ca, t.valid_col) - uniform - cross;
}

void pair_loss_backward(const at::Tensor& ea, const at::Tensor& ec, const PairTargets& t, double tau_p,
                        const at::Tensor& lse_ac, const at::Tensor& lse_ca, const at::Tensor& ga,
                        const at::Tensor& gc) {
  const int64_t P = ea.size(0);
  const int64_t tile = loss_tile_rows(P, LossBackend::kCpu);
  const double inv_tau = 1.0 / tau_p;
  const auto opts = ea.options();
  const at::Tensor L_row = masked_lse(lse_ac, t.valid_row);
  const at::Tensor L_col = masked_lse(lse_ca, t.valid_col);
  const at::Tensor u_row = as_tensor(t.u_row, opts), u_col = as_tensor(t.u_col, opts);
  at::Tensor s = at::empty({tile, P}, opts);
  for (int64_t r0 = 0; r0 < P; r0 += tile) {
    const int64_t T = std::min(tile, P - r0);
    const at::Tensor ea_t = ea.narrow(0, r0, T);
    at::Tensor G = s.narrow(0, 0, T);
    G.addmm_(ea_t, ec.t(), /*beta=*/0, /*alpha=*/inv_tau);  // s, turned into G in place
    AT_DISPATCH_FLOATING_TYPES(G.scalar_type(), "pair_loss_backward", [&] {
      scalar_t* g = G.data_ptr<scalar_t>();
      grad_tile<scalar_t>(g, T, P, L_row.data_ptr<scalar_t>() + r0, u_row.data_ptr<scalar_t>() + r0,
                          L_col.data_ptr<scalar_t>(), u_col.data_ptr<scalar_t>());
      sparse_sub<scalar_t>(t, g, r0, T);
    });
    ga.narrow(0, r0, T).addmm_(G, ec);
    gc.addmm_(G.t(), ea_t);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> loss_forward(const at::Tensor& emb,
                                                            const PairOverlapFn& overlap, double tau_t,
                                                            double tau_p, double min_overlap) {
  const int64_t B = emb.size(0), V = emb.size(1), P = emb.size(2);
  const at::Tensor ehat = normalize(emb).e_hat;
  at::Tensor row_lse = at::zeros({B, V, V, P}, ehat.options());
  // Per-pair results, summed afterwards in a fixed order (deterministic whatever the schedule).
  std::vector<double> totals(B * V * V, 0.0);
  std::vector<int64_t> counts(B * V * V, 0);
  for_each_pair(B, V, [&](int64_t b, int64_t a, int64_t c) {
    std::vector<SEntry> entries;
    overlap(b, a, c, entries);
    const PairTargets t = pair_targets(entries, P, tau_t, min_overlap);
    counts[(b * V + a) * V + c] = t.n_valid_rows + t.n_valid_cols;
    totals[(b * V + a) * V + c] =
        pair_loss_forward(ehat[b][a], ehat[b][c], t, tau_p, row_lse[b][a][c], row_lse[b][c][a]);
  });
  double total = 0;
  int64_t num_valid = 0;
  for (size_t k = 0; k < totals.size(); ++k) {
    total += totals[k];
    num_valid += counts[k];
  }
  const double loss = num_valid > 0 ? total / static_cast<double>(num_valid) : 0.0;
  return {at::full({}, loss, emb.options()), row_lse,
          at::full({}, num_valid, emb.options().dtype(at::kLong))};
}

at::Tensor loss_backward(const at::Tensor& grad_loss, const at::Tensor& emb, const PairOverlapFn& overlap,
                         const at::Tensor& row_lse, const at::Tensor& num_valid, double tau_t, double tau_p,
                         double min_overlap) {
  const int64_t B = emb.size(0), V = emb.size(1), P = emb.size(2);
  const int64_t nv = num_valid.item<int64_t>();
  if (nv <= 0) return at::zeros_like(emb, at::MemoryFormat::Contiguous);
  const Normalized nz = normalize(emb);
  const at::Tensor& ehat = nz.e_hat;
  const at::Tensor lse = row_lse.to(ehat.scalar_type());
  at::Tensor g = at::zeros_like(ehat);
  for_each_pair(B, V, [&](int64_t b, int64_t a, int64_t c) {
    std::vector<SEntry> entries;
    overlap(b, a, c, entries);
    const PairTargets t = pair_targets(entries, P, tau_t, min_overlap);
    if (t.n_valid_rows + t.n_valid_cols == 0) return;  // no overlap: contributes nothing
    pair_loss_backward(ehat[b][a], ehat[b][c], t, tau_p, lse[b][a][c], lse[b][c][a], g[b][a], g[b][c]);
  });
  const double scale = grad_loss.item<double>() / (tau_p * static_cast<double>(nv));
  return normalize_backward(emb, nz, g, scale);
}

}  // namespace hatch::cpu
