// CPU emulation harness of the CUDA kernels of hatch (csrc/cuda/device/*.cuh, compiled here by g++
// with the shim of csrc/cuda/device/compat.cuh). It runs each kernel with the launch configuration
// the .cu host code uses (the same LaunchCfg functions), on host buffers, and replays the host-side
// drivers of csrc/cuda/overlap.cu and csrc/cuda/pasta_loss.cu around them: the normalisation kernels
// (device/normalize.cuh, launched as launch.cuh does), the chunk loop over the pairs (the same
// loss_plan), the row tiles, the gathers and batched GEMMs (plain loops here, ATen / cuBLAS there: not
// emulated) and the final scaling (ATen there). It counts the kernel launches of the loss
// (launches.bin). tests/emulation/test_cuda_emulation.py compares the results with the CPU ops.
//
//   harness overlap <dir>   patch_overlap: M, den and counts
//   harness loss <dir>      soft_infonce (mode overlap) or patch_align (mode depth), forward and
//                           backward: loss, row_lse, num_valid, valid rows, grad_emb, launches
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
#include "cuda/device/normalize.cuh"
#include "cuda/device/reprojection.cuh"

using namespace hatch;
using namespace hatch::cuda;

#define LAUNCH(kernel, cfg, ...)                                                                 \
  do {                                                                                           \
    ++g_launches;                                                                                \
    hatch_emu::launch(#kernel, dim3((cfg).grid), dim3((cfg).block), (cfg).shmem, kernel, __VA_ARGS__); \
  } while (0)

namespace {

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

// --------------------------------------------- pair projections (reprojection.cuh: device_pair_projections)
int64_t g_launches = 0;  // hatch kernel launches of the replayed driver (the launch plan's count)

std::vector<double> pair_projections(const std::vector<double>& K, const std::vector<double>& T,
                                     int64_t B, int64_t V) {
  std::vector<double> o(B * V * V * kPairProjSize);
  LAUNCH(pair_projections_kernel, pair_projections_launch(B, V), K.data(), T.data(), B, V, o.data());
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
  LAUNCH(cell_valid_counts_kernel<D>, L.cfg, depth.data(), g, maps, L.args, den.data());
}

template <typename D>
void pair_counts(const std::vector<D>& depth, const std::vector<double>& proj, const Triples& tri,
                 const PixelGrid& g, double abs_tol, double rel_tol, std::vector<int32_t>& counts) {
  const CountsLaunch L = pair_counts_launch(g, tri);
  LAUNCH(pair_counts_kernel<D>, L.cfg, depth.data(), proj.data(), tri, g, abs_tol, rel_tol, L.args,
         counts.data());
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
// The chunk of pairs q0 .. q0 + n - 1 (pasta_loss.cu: Chunk, prepare_chunk).
template <typename T>
struct Chunk {
  int64_t q0, n;
  std::vector<int64_t> info;
  std::vector<T> S, ea, ec, t_lse_row, t_lse_col;
  std::vector<double> S64, t_sum_row, t_sum_col;
};

// S of a chunk: from the overlap input (soft_infonce) or from the depth maps (patch_align).
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

  void make(Chunk<T>& ch) {
    const LaunchCfg L = elementwise_launch(ch.n * P * P);
    if (!from_depth) {
      LAUNCH((targets_from_overlap_kernel<D, T>), L, overlap.data(), V, P, ch.n, ch.info.data(),
             ch.S.data(), ch.S64.data());
      return;
    }
    counts.assign(ch.n * 2 * P * P, 0);  // cnt.zero_() there
    pair_counts(depth, proj, Triples::chunk(V, ch.q0, ch.n), geo.g(), geo.abs_tol, geo.rel_tol,
                counts);
    LAUNCH((targets_from_counts_kernel<D, T>), L, counts.data(), den.data(), P, ch.n, ch.info.data(),
           ch.S.data(), ch.S64.data());
  }
};

template <typename D, typename T>
Chunk<T> prepare_chunk(Targets<D, T>& tg, const std::vector<T>& e_hat, int64_t P, int64_t Dm,
                       int64_t q0, int64_t n, const LossConsts<T>& k) {
  const int64_t V = tg.V;
  Chunk<T> ch{q0, n};
  ch.info.assign(4 * n, -1);
  LAUNCH(pair_info_kernel, per_item_launch(n), q0, n, V, P, ch.info.data());
  ch.S.assign(n * P * P, T(0));
  ch.S64.assign(n * P * P, 0.0);
  tg.make(ch);
  // at::index_select there.
  ch.ea.resize(n * P * Dm);
  ch.ec.resize(n * P * Dm);
  for (int64_t q = 0; q < n; ++q) {
    std::copy_n(e_hat.data() + ch.info[q] * P * Dm, P * Dm, ch.ea.data() + q * P * Dm);
    std::copy_n(e_hat.data() + ch.info[n + q] * P * Dm, P * Dm, ch.ec.data() + q * P * Dm);
  }
  ch.t_lse_row.assign(n * P, T(0));
  ch.t_lse_col.assign(n * P, T(0));
  ch.t_sum_row.assign(n * P, 0.0);
  ch.t_sum_col.assign(n * P, 0.0);
  LAUNCH(target_row_stats_kernel<T>, per_row_launch(n * P), ch.S.data(), ch.S64.data(), n * P, P,
         k.inv_tau_t, ch.t_lse_row.data(), ch.t_sum_row.data());
  const int64_t slabs = col_slabs(P);
  std::vector<T> pm(n * slabs * P), pz(n * slabs * P);
  std::vector<double> ps(n * slabs * P);
  LAUNCH(target_col_partial_kernel<T>, per_item_launch(n * slabs * P), ch.S.data(), ch.S64.data(), n,
         P, slabs, k.inv_tau_t, pm.data(), pz.data(), ps.data());
  LAUNCH(target_col_merge_kernel<T>, per_item_launch(n * P), pm.data(), pz.data(), ps.data(), n, P,
         slabs, ch.t_lse_col.data(), ch.t_sum_col.data());
  return ch;
}

// dots[q, i, j] = ea[q, r0 + i] . ec[q, j] (at::bmm on the GPU; a plain loop in the accumulation
// dtype here).
template <typename T>
std::vector<T> tile_dots(const Chunk<T>& ch, int64_t r0, int64_t rows, int64_t P, int64_t D) {
  std::vector<T> dots(ch.n * rows * P);
  for (int64_t q = 0; q < ch.n; ++q)
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < P; ++j) {
        T s = T(0);
        for (int64_t d = 0; d < D; ++d)
          s += ch.ea[(q * P + r0 + i) * D + d] * ch.ec[(q * P + j) * D + d];
        dots[(q * rows + i) * P + j] = s;
      }
  return dots;
}

template <typename D, typename T>
void run_loss(const std::string& dir, const Params& p) {
  const bool from_depth = p.s("mode") == "depth";
  const int64_t B = p.i("B"), V = p.i("V"), P = p.i("P"), Dm = p.i("D");
  const double tau_t = p.d("tau_t"), tau_p = p.d("tau_p"), min_overlap = p.d("min_overlap");
  const double grad_loss = p.d("grad_loss");
  const auto emb = read_array<T>(dir, "emb.bin", B * V * P * Dm);
  const LossPlan plan = loss_plan(B, V, P, Dm, sizeof(T), from_depth);

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

  // normalize_rows (launch.cuh): e_hat = e / max(|e|, eps) and |e|, by the same kernel.
  const int64_t rows_total = B * V * P;
  std::vector<T> e_hat(emb.size()), norm(rows_total);
  LAUNCH(normalize_rows_kernel<T>, normalize_launch(rows_total), emb.data(), rows_total, Dm, e_hat.data(),
         norm.data());
  const LossConsts<T> k = loss_consts<T>(tau_t, tau_p, min_overlap);

  // Forward.
  const int64_t launches_before_fwd = g_launches;
  const int64_t nrow = B * V * V * P;
  std::vector<T> row_lse(nrow, T(0)), H(nrow, T(0));
  std::unique_ptr<bool[]> valid(new bool[nrow]());
  for (int64_t q0 = 0; q0 < plan.pairs; q0 += plan.per_chunk) {
    const int64_t n = std::min(plan.per_chunk, plan.pairs - q0);
    const Chunk<T> ch = prepare_chunk(tg, e_hat, P, Dm, q0, n, k);
    // Poisoned, as at::empty: the first tile must not read them.
    std::vector<T> run_m(n * P, T(NAN)), run_z(n * P, T(NAN)), run_x(n * P, T(NAN));
    const int64_t max_slabs = col_slabs(plan.tile_rows);
    std::vector<T> pm(n * max_slabs * P), pz(n * max_slabs * P), px(n * max_slabs * P);
    for (int64_t r0 = 0; r0 < P; r0 += plan.tile_rows) {
      const int64_t rows = std::min(plan.tile_rows, P - r0), slabs = col_slabs(rows);
      const std::vector<T> dots = tile_dots(ch, r0, rows, P, Dm);
      LAUNCH(tile_rows_forward_kernel<T>, per_row_launch(n * rows), dots.data(), n, rows, r0, P,
             ch.S.data(), ch.t_lse_row.data(), ch.t_sum_row.data(), ch.info.data(), k, row_lse.data(),
             H.data(), valid.get());
      LAUNCH(tile_cols_partial_kernel<T>, per_item_launch(n * slabs * P), dots.data(), n, rows, r0, P,
             slabs, ch.S.data(), ch.t_lse_col.data(), k, pm.data(), pz.data(), px.data());
      LAUNCH(tile_cols_merge_kernel<T>, per_item_launch(n * P), pm.data(), pz.data(), px.data(), n, P,
             slabs, r0 == 0, r0 + rows == P, run_m.data(), run_z.data(), run_x.data(),
             ch.t_sum_col.data(), ch.info.data(), k.min_overlap, row_lse.data(), H.data(),
             valid.get());
    }
  }
  const int64_t launches_fwd = g_launches - launches_before_fwd;
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
  const int64_t launches_before_bwd = g_launches;
  std::vector<T> g_hat(emb.size(), T(0));
  const int64_t np = pairs_per_sample(V), PD = P * Dm;
  for (int64_t q0 = 0; q0 < plan.pairs; q0 += plan.per_chunk) {
    const int64_t n = std::min(plan.per_chunk, plan.pairs - q0);
    const Chunk<T> ch = prepare_chunk(tg, e_hat, P, Dm, q0, n, k);
    std::vector<T> ga(n * PD, T(0)), gc(n * PD, T(0));
    for (int64_t r0 = 0; r0 < P; r0 += plan.tile_rows) {
      const int64_t rows = std::min(plan.tile_rows, P - r0);
      const std::vector<T> dots = tile_dots(ch, r0, rows, P, Dm);
      std::vector<T> G(n * rows * P);
      LAUNCH(tile_grad_kernel<T>, elementwise_launch(n * rows * P), dots.data(), n, rows, r0, P,
             ch.S.data(), ch.t_lse_row.data(), ch.t_sum_row.data(), ch.t_lse_col.data(),
             ch.t_sum_col.data(), row_lse.data(), ch.info.data(), k, G.data());
      // ga[q, r0 + i] += G[q, i] ec[q]; gc[q, j] += G[q, :, j]^T ea[q, tile] (baddbmm_ on the GPU).
      for (int64_t q = 0; q < n; ++q)
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < P; ++j) {
            const T gij = G[(q * rows + i) * P + j];
            for (int64_t d = 0; d < Dm; ++d) {
              ga[q * PD + (r0 + i) * Dm + d] += gij * ch.ec[q * PD + j * Dm + d];
              gc[q * PD + j * Dm + d] += gij * ch.ea[q * PD + (r0 + i) * Dm + d];
            }
          }
    }
    const int64_t b_lo = q0 / np, nb = (q0 + n - 1) / np - b_lo + 1;
    LAUNCH(scatter_grad_kernel<T>, elementwise_launch(nb * V * PD), ga.data(), gc.data(), q0, n, V,
           PD, b_lo, nb, g_hat.data());
  }
  const int64_t launches_bwd = g_launches - launches_before_bwd;
  const T scale = static_cast<T>(grad_loss / (static_cast<double>(std::max<int64_t>(num_valid, 1)) * tau_p));
  for (auto& v : g_hat) v *= scale;
  // normalize_backward (launch.cuh), in place, by the same kernel.
  LAUNCH(normalize_backward_kernel<T>, normalize_launch(rows_total), g_hat.data(), e_hat.data(), norm.data(),
         rows_total, Dm);
  write_array(dir, "loss.bin", std::vector<double>{loss});
  write_array(dir, "row_lse.bin", row_lse);
  write_array(dir, "num_valid.bin", std::vector<int64_t>{num_valid});
  write_array(dir, "valid.bin", valid_out);
  write_array(dir, "grad.bin", g_hat);
  // Kernel launches of the forward and the backward (not counting those made once per call before
  // the chunk loop), and the plan's chunks.
  write_array(dir, "launches.bin", std::vector<int64_t>{launches_fwd, launches_bwd, plan.chunks});
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
