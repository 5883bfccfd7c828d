// CPU emulation harness of the CUDA kernels of hatch (csrc/cuda/device/*.cuh, compiled here by g++
// with the shim of csrc/cuda/device/compat.cuh). It runs each kernel with the launch configuration
// the .cu host code uses (the same LaunchCfg functions), on host buffers, and replays the host-side
// drivers of csrc/cuda/overlap.cu and csrc/cuda/pasta_loss.cu around them: the pair loop, the row
// tiles, the GEMMs (plain loops here, cuBLAS there: not emulated), the normalisation and the final
// scaling (ATen there). tests/emulation/test_emulation.py compares the results with the CPU ops.
//
//   harness overlap <dir>   patch_overlap: M, den and counts
//   harness loss <dir>      soft_infonce (mode overlap) or patch_align (mode depth), forward and
//                           backward: loss, row_lse, num_valid, valid rows, grad_emb
// <dir>/params.txt holds "key value" lines; arrays are raw little-endian files in <dir>. Exit status 3
// when the shim reported a problem (divergent barrier, bad shuffle), 2 on a launch error.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/device/compat.cuh"
#include "cuda/device/loss.cuh"
#include "cuda/device/reprojection.cuh"

using namespace hatch;
using namespace hatch::cuda;

#define LAUNCH(kernel, cfg, ...) \
  hatch_emu::launch(#kernel, dim3((cfg).grid), dim3((cfg).block), (cfg).shmem, kernel, __VA_ARGS__)

namespace {

constexpr double kEps = 1e-12;  // launch.cuh: kNormEps (F.normalize's eps)

// ----------------------------------------------------------------------------------------- I/O
struct Params {
  std::map<std::string, std::string> kv;
  std::string s(const std::string& k) const {
    auto it = kv.find(k);
    if (it == kv.end()) throw std::runtime_error("missing parameter " + k);
    return it->second;
  }
  int64_t i(const std::string& k) const { return std::stoll(s(k)); }
  double d(const std::string& k) const { return std::stod(s(k)); }
};

Params read_params(const std::string& dir) {
  Params p;
  std::ifstream f(dir + "/params.txt");
  std::string k, v;
  while (f >> k >> v) p.kv[k] = v;
  return p;
}

template <typename T>
std::vector<T> read_array(const std::string& dir, const std::string& name, size_t n) {
  std::vector<T> v(n);
  std::ifstream f(dir + "/" + name, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + name);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(T)));
  if (static_cast<size_t>(f.gcount()) != n * sizeof(T)) throw std::runtime_error("short file " + name);
  return v;
}

template <typename T>
void write_array(const std::string& dir, const std::string& name, const std::vector<T>& v) {
  std::ofstream f(dir + "/" + name, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
}

// ------------------------------------------------- pair projections (copy of checks.cpp, host)
// The CUDA host code computes these on the CPU (checks.cpp: pair_projections) and copies them to the
// device; the same float64 arithmetic here, without the validation.
using Mat3 = std::array<double, 9>;
double det3(const double* m) {
  return m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
         m[2] * (m[3] * m[7] - m[4] * m[6]);
}
Mat3 inv3(const double* m) {
  const double d = det3(m);
  return {(m[4] * m[8] - m[5] * m[7]) / d, (m[2] * m[7] - m[1] * m[8]) / d,
          (m[1] * m[5] - m[2] * m[4]) / d, (m[5] * m[6] - m[3] * m[8]) / d,
          (m[0] * m[8] - m[2] * m[6]) / d, (m[2] * m[3] - m[0] * m[5]) / d,
          (m[3] * m[7] - m[4] * m[6]) / d, (m[1] * m[6] - m[0] * m[7]) / d,
          (m[0] * m[4] - m[1] * m[3]) / d};
}
Mat3 mul3(const double* a, const double* b) {
  Mat3 r{};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      r[i * 3 + j] = a[i * 3] * b[j] + a[i * 3 + 1] * b[3 + j] + a[i * 3 + 2] * b[6 + j];
  return r;
}

std::vector<double> pair_projections(const std::vector<double>& kp, const std::vector<double>& tp,
                                     int64_t B, int64_t V) {
  std::vector<Mat3> Ks(B * V), Kinv(B * V), R(B * V), Rinv(B * V);
  std::vector<std::array<double, 3>> t(B * V);
  for (int64_t n = 0; n < B * V; ++n) {
    const double* km = kp.data() + n * 9;
    const double* tm = tp.data() + n * 16;
    Mat3 r{tm[0], tm[1], tm[2], tm[4], tm[5], tm[6], tm[8], tm[9], tm[10]};
    std::copy(km, km + 9, Ks[n].begin());
    Kinv[n] = inv3(km);
    R[n] = r;
    Rinv[n] = inv3(r.data());
    t[n] = {tm[3], tm[7], tm[11]};
  }
  std::vector<double> o(B * V * V * 16);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t a = 0; a < V; ++a)
      for (int64_t c = 0; c < V; ++c) {
        const int64_t na = b * V + a, nc = b * V + c;
        const Mat3 rel_R = mul3(Rinv[nc].data(), R[na].data());
        double d[3], rel_t[3];
        for (int i = 0; i < 3; ++i) d[i] = t[na][i] - t[nc][i];
        for (int i = 0; i < 3; ++i)
          rel_t[i] = Rinv[nc][i * 3] * d[0] + Rinv[nc][i * 3 + 1] * d[1] + Rinv[nc][i * 3 + 2] * d[2];
        const Mat3 RQ = mul3(rel_R.data(), Kinv[na].data());
        const Mat3 A = mul3(Ks[nc].data(), RQ.data());
        double* m = o.data() + ((b * V + a) * V + c) * 16;
        for (int i = 0; i < 9; ++i) m[i] = A[i];
        for (int i = 0; i < 3; ++i)
          m[9 + i] = Ks[nc][i * 3] * rel_t[0] + Ks[nc][i * 3 + 1] * rel_t[1] + Ks[nc][i * 3 + 2] * rel_t[2];
        for (int j = 0; j < 3; ++j) m[12 + j] = RQ[6 + j];
        m[15] = rel_t[2];
      }
  return o;
}

// ------------------------------------------------------------- reprojection (overlap.cu, host)
struct Geometry {
  int64_t B, V, H, W, gh, gw, stride;
  double abs_tol, rel_tol;
  PixelGrid g() const { return PixelGrid::make(H, W, gh, gw, stride); }
};

Geometry read_geometry(const Params& p) {
  return {p.i("B"), p.i("V"), p.i("H"), p.i("W"), p.i("grid_h"), p.i("grid_w"), p.i("stride"),
          p.d("abs_tol"), p.d("rel_tol")};
}

template <typename D>
void cell_valid_counts(const std::vector<D>& depth, const PixelGrid& g, int64_t maps,
                       std::vector<int32_t>& den) {
  const CountsLaunch L = cell_valid_counts_launch(g, maps);
  LAUNCH(cell_valid_counts_kernel<D>, L.cfg, depth.data(), g, maps, L.blocks_per_item, L.per_block,
         L.use_shared, den.data());
}

template <typename D>
void pair_counts(const std::vector<D>& depth, const std::vector<double>& proj, const Triples& tri,
                 const PixelGrid& g, double abs_tol, double rel_tol, std::vector<int32_t>& counts) {
  const CountsLaunch L = pair_counts_launch(g, tri);
  LAUNCH(pair_counts_kernel<D>, L.cfg, depth.data(), proj.data(), tri, g, abs_tol, rel_tol,
         L.blocks_per_item, L.per_block, L.use_shared, counts.data());
}

template <typename D>
void run_overlap(const std::string& dir, const Params& p) {
  const Geometry geo = read_geometry(p);
  const PixelGrid g = geo.g();
  const int64_t B = geo.B, V = geo.V, P = g.cells();
  const auto depth = read_array<D>(dir, "depth.bin", B * V * geo.H * geo.W);
  const auto proj = pair_projections(read_array<double>(dir, "K.bin", B * V * 9),
                                     read_array<double>(dir, "T.bin", B * V * 16), B, V);
  std::vector<int32_t> den(B * V * P, 0);
  cell_valid_counts(depth, g, B * V, den);
  std::vector<int32_t> counts(B * V * V * P * P, 0);
  pair_counts(depth, proj, Triples::every(B, V), g, geo.abs_tol, geo.rel_tol, counts);
  const int64_t total = B * V * V * P * P;
  std::vector<D> out(total);
  LAUNCH(overlap_ratios_kernel<D>, overlap_ratios_launch(total), counts.data(), den.data(), V, P,
         total, out.data());
  write_array(dir, "M.bin", out);
  write_array(dir, "den.bin", den);
  write_array(dir, "counts.bin", counts);
}

// ------------------------------------------------------------------ loss (pasta_loss.cu, host)
template <typename T>
struct TargetStats {
  std::vector<T> row_lse, col_lse;
  std::vector<double> row_sum, col_sum;
};

template <typename T>
TargetStats<T> target_stats(const std::vector<T>& S, const std::vector<double>& S64, int64_t P,
                            T inv_tau_t) {
  TargetStats<T> st{std::vector<T>(P), std::vector<T>(P), std::vector<double>(P),
                    std::vector<double>(P)};
  LAUNCH(target_row_stats_kernel<T>, per_row_launch(P), S.data(), S64.data(), P, inv_tau_t,
         st.row_lse.data(), st.row_sum.data());
  LAUNCH(target_col_stats_kernel<T>, per_column_launch(P), S.data(), S64.data(), P, inv_tau_t,
         st.col_lse.data(), st.col_sum.data());
  return st;
}

// dots[i, j] = ea[r0 + i] . ec[j] (cuBLAS on the GPU; a plain loop in the accumulation dtype here).
template <typename T>
std::vector<T> tile_dots(const T* ea, const T* ec, int64_t r0, int64_t rows, int64_t P, int64_t D) {
  std::vector<T> dots(rows * P);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < P; ++j) {
      T s = T(0);
      for (int64_t d = 0; d < D; ++d) s += ea[(r0 + i) * D + d] * ec[j * D + d];
      dots[i * P + j] = s;
    }
  return dots;
}

template <typename T>
void forward_pair(const std::vector<T>& S, const std::vector<double>& S64, const T* ea, const T* ec,
                  int64_t P, int64_t D, const LossConsts<T>& k, int64_t tile_rows, T* lse_ac,
                  T* H_ac, bool* valid_ac, T* lse_ca, T* H_ca, bool* valid_ca) {
  const TargetStats<T> st = target_stats<T>(S, S64, P, k.inv_tau_t);
  std::vector<T> run_max(P, -std::numeric_limits<T>::infinity()), run_sum(P, T(0)), run_cross(P, T(0));
  for (int64_t r0 = 0; r0 < P; r0 += tile_rows) {
    const int64_t rows = std::min(tile_rows, P - r0);
    const std::vector<T> dots = tile_dots(ea, ec, r0, rows, P, D);
    LAUNCH(tile_rows_forward_kernel<T>, per_row_launch(rows), dots.data(), rows, r0, P, S.data(),
           st.row_lse.data(), st.row_sum.data(), k, lse_ac, H_ac, valid_ac);
    LAUNCH(tile_cols_forward_kernel<T>, per_column_launch(P), dots.data(), rows, r0, P, S.data(),
           st.col_lse.data(), k, run_max.data(), run_sum.data(), run_cross.data());
  }
  LAUNCH(cols_finalize_kernel<T>, per_column_launch(P), P, run_max.data(), run_sum.data(),
         run_cross.data(), st.col_sum.data(), k.min_overlap, lse_ca, H_ca, valid_ca);
}

template <typename T>
void backward_pair(const std::vector<T>& S, const std::vector<double>& S64, const T* ea, const T* ec,
                   int64_t P, int64_t D, const LossConsts<T>& k, int64_t tile_rows, const T* L_ac,
                   const T* L_ca, T* ga, T* gc) {
  const TargetStats<T> st = target_stats<T>(S, S64, P, k.inv_tau_t);
  for (int64_t r0 = 0; r0 < P; r0 += tile_rows) {
    const int64_t rows = std::min(tile_rows, P - r0);
    const std::vector<T> dots = tile_dots(ea, ec, r0, rows, P, D);
    std::vector<T> G(rows * P);
    LAUNCH(tile_grad_kernel<T>, elementwise_launch(rows * P), dots.data(), rows, r0, P, S.data(),
           st.row_lse.data(), st.row_sum.data(), st.col_lse.data(), st.col_sum.data(), L_ac, L_ca,
           k, G.data());
    // ga[r0 + i] += G[i] ec ; gc[j] += G[:, j]^T ea_tile (addmm_ on the GPU).
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < P; ++j) {
        const T gij = G[i * P + j];
        for (int64_t d = 0; d < D; ++d) {
          ga[(r0 + i) * D + d] += gij * ec[j * D + d];
          gc[j * D + d] += gij * ea[(r0 + i) * D + d];
        }
      }
  }
}

// S of one pair: from the overlap input (soft_infonce) or from the depth maps (patch_align).
template <typename D, typename T>
struct Targets {
  bool from_depth;
  int64_t B, V, P;
  // overlap mode
  std::vector<D> overlap;
  // depth mode
  Geometry geo;
  std::vector<D> depth;
  std::vector<double> proj;
  std::vector<int32_t> den, counts;

  void make(int64_t b, int64_t a, int64_t c, std::vector<T>& S, std::vector<double>& S64) {
    S.assign(P * P, T(0));
    S64.assign(P * P, 0.0);
    if (!from_depth) {
      const D* M_ac = overlap.data() + ((b * V + a) * V + c) * P * P;
      const D* M_ca = overlap.data() + ((b * V + c) * V + a) * P * P;
      for (int64_t i = 0; i < P; ++i)
        for (int64_t j = 0; j < P; ++j) {
          // (M_ac + M_ca^T) * 0.5 in the overlap dtype, then to T (ATen there).
          S[i * P + j] = static_cast<T>(static_cast<D>(M_ac[i * P + j] + M_ca[j * P + i]) * D(0.5));
          S64[i * P + j] = static_cast<double>(M_ac[i * P + j]) * 0.5 +
                           static_cast<double>(M_ca[j * P + i]) * 0.5;
        }
      return;
    }
    const PixelGrid g = geo.g();
    counts.assign(2 * P * P, 0);
    pair_counts(depth, proj, Triples::pair(V, b, a, c), g, geo.abs_tol, geo.rel_tol, counts);
    LAUNCH((targets_from_counts_kernel<D, T>), elementwise_launch(P * P), counts.data(),
           counts.data() + P * P, den.data() + (b * V + a) * P, den.data() + (b * V + c) * P, P,
           S.data(), S64.data());
  }
};

template <typename D, typename T>
void run_loss(const std::string& dir, const Params& p) {
  const bool from_depth = p.s("mode") == "depth";
  const int64_t B = p.i("B"), V = p.i("V"), P = p.i("P"), Dm = p.i("D");
  const double tau_t = p.d("tau_t"), tau_p = p.d("tau_p"), min_overlap = p.d("min_overlap");
  const double grad_loss = p.d("grad_loss");
  const auto emb = read_array<T>(dir, "emb.bin", B * V * P * Dm);

  Targets<D, T> tg;
  tg.from_depth = from_depth;
  tg.B = B;
  tg.V = V;
  tg.P = P;
  if (from_depth) {
    tg.geo = read_geometry(p);
    tg.depth = read_array<D>(dir, "depth.bin", B * V * tg.geo.H * tg.geo.W);
    tg.proj = pair_projections(read_array<double>(dir, "K.bin", B * V * 9),
                               read_array<double>(dir, "T.bin", B * V * 16), B, V);
    tg.den.assign(B * V * P, 0);
    cell_valid_counts(tg.depth, tg.geo.g(), B * V, tg.den);
  } else {
    tg.overlap = read_array<D>(dir, "overlap.bin", B * V * V * P * P);
  }

  // normalize_rows (ATen there): e_hat = e / max(|e|, eps).
  const int64_t rows_total = B * V * P;
  std::vector<T> e_hat(emb.size()), norm(rows_total);
  for (int64_t r = 0; r < rows_total; ++r) {
    T s = T(0);
    for (int64_t d = 0; d < Dm; ++d) s += emb[r * Dm + d] * emb[r * Dm + d];
    norm[r] = std::sqrt(s);
    const T den = std::max(norm[r], static_cast<T>(kEps));
    for (int64_t d = 0; d < Dm; ++d) e_hat[r * Dm + d] = emb[r * Dm + d] / den;
  }
  const LossConsts<T> k = loss_consts<T>(tau_t, tau_p, min_overlap);
  const int64_t tile_rows = loss_tile_rows(P);

  // Forward.
  const int64_t nrow = B * V * V * P;
  std::vector<T> row_lse(nrow, T(0)), H(nrow, T(0));
  std::unique_ptr<bool[]> valid(new bool[nrow]());
  std::vector<T> S;
  std::vector<double> S64;
  auto pair_rows = [&](int64_t b, int64_t a, int64_t c) { return ((b * V + a) * V + c) * P; };
  auto emb_rows = [&](const std::vector<T>& e, int64_t b, int64_t a) {
    return e.data() + (b * V + a) * P * Dm;
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t a = 0; a < V; ++a)
      for (int64_t c = a + 1; c < V; ++c) {
        tg.make(b, a, c, S, S64);
        const int64_t ac = pair_rows(b, a, c), ca = pair_rows(b, c, a);
        forward_pair<T>(S, S64, emb_rows(e_hat, b, a), emb_rows(e_hat, b, c), P, Dm, k, tile_rows,
                        row_lse.data() + ac, H.data() + ac, valid.get() + ac, row_lse.data() + ca,
                        H.data() + ca, valid.get() + ca);
      }
  int64_t num_valid = 0;
  double Hsum = 0;
  std::vector<uint8_t> valid_out(nrow);
  for (int64_t r = 0; r < nrow; ++r) {
    num_valid += valid[r];
    valid_out[r] = valid[r];
    Hsum += static_cast<double>(H[r]);
  }
  const double loss = Hsum / static_cast<double>(std::max<int64_t>(num_valid, 1));

  // Backward, with the forward's row_lse.
  std::vector<T> g_hat(emb.size(), T(0));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t a = 0; a < V; ++a)
      for (int64_t c = a + 1; c < V; ++c) {
        tg.make(b, a, c, S, S64);
        backward_pair<T>(S, S64, emb_rows(e_hat, b, a), emb_rows(e_hat, b, c), P, Dm, k, tile_rows,
                         row_lse.data() + pair_rows(b, a, c), row_lse.data() + pair_rows(b, c, a),
                         g_hat.data() + (b * V + a) * P * Dm, g_hat.data() + (b * V + c) * P * Dm);
      }
  const T scale = static_cast<T>(grad_loss / (static_cast<double>(std::max<int64_t>(num_valid, 1)) * tau_p));
  for (auto& v : g_hat) v *= scale;
  // normalize_backward: (g - (g.e_hat) e_hat [|e| >= eps]) / max(|e|, eps).
  for (int64_t r = 0; r < rows_total; ++r) {
    T dot = T(0);
    for (int64_t d = 0; d < Dm; ++d) dot += g_hat[r * Dm + d] * e_hat[r * Dm + d];
    if (!(norm[r] >= static_cast<T>(kEps))) dot = T(0);
    const T den = std::max(norm[r], static_cast<T>(kEps));
    for (int64_t d = 0; d < Dm; ++d) g_hat[r * Dm + d] = (g_hat[r * Dm + d] - dot * e_hat[r * Dm + d]) / den;
  }
  write_array(dir, "loss.bin", std::vector<double>{loss});
  write_array(dir, "row_lse.bin", row_lse);
  write_array(dir, "num_valid.bin", std::vector<int64_t>{num_valid});
  write_array(dir, "valid.bin", valid_out);
  write_array(dir, "grad.bin", g_hat);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: harness overlap|loss <dir>\n");
    return 1;
  }
  const std::string op = argv[1], dir = argv[2];
  try {
    const Params p = read_params(dir);
    const bool in64 = p.s("in_dtype") == "float64";
    if (op == "overlap") {
      in64 ? run_overlap<double>(dir, p) : run_overlap<float>(dir, p);
    } else if (op == "loss") {
      const bool emb64 = p.s("emb_dtype") == "float64";
      if (in64) {
        emb64 ? run_loss<double, double>(dir, p) : run_loss<double, float>(dir, p);
      } else {
        emb64 ? run_loss<float, double>(dir, p) : run_loss<float, float>(dir, p);
      }
    } else {
      std::fprintf(stderr, "unknown op %s\n", op.c_str());
      return 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "harness: %s\n", e.what());
    return 2;
  }
  if (!hatch_emu::reports().empty()) {
    for (const auto& r : hatch_emu::reports()) std::fprintf(stderr, "emulation: %s\n", r.c_str());
    return 3;
  }
  return 0;
}
