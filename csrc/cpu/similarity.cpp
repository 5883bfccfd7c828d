// hatch::cell_similarity (and its backward) on the CPU: cosine similarity between the cells of
// different views of one sample, [B, V, V, P, P]. Block sparsity: the blocks a == c are never formed,
// and each unordered pair {a, c} is one GEMM whose transpose gives the (c, a) block.
// Computed in float32 (float64 for float64 embeddings) and cast to emb's dtype at the end.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "../common/checks.h"
#include "../common/normalize.h"
#include "kernels.h"

namespace hatch::cpu {
namespace {

struct Normalized {
  at::Tensor e_hat;  // [B, V, P, D] acc dtype, contiguous
  at::Tensor norm;   // [B, V, P] acc dtype, |e|
};

// ê = e / max(|e|, eps) per cell (common/normalize.h), in the accumulation dtype. The norms come from
// at::linalg_vector_norm (ATen's vectorised reduction; the loss kernels sum sequentially: pair_loss.cpp).
Normalized normalize(const at::Tensor& emb) {
  const at::Tensor e = emb.to(acc_type_for(emb.scalar_type())).contiguous();
  const at::Tensor norm = at::linalg_vector_norm(e, 2, {-1}, /*keepdim=*/false).contiguous();
  at::Tensor e_hat = at::empty_like(e);
  const int64_t D = e.size(-1), rows = e.numel() / D;
  AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "hatch::cell_similarity_norm", [&] {
    const scalar_t* in = e.data_ptr<scalar_t>();
    const scalar_t* n = norm.data_ptr<scalar_t>();
    scalar_t* out = e_hat.data_ptr<scalar_t>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / D), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) normalize_row(in + r * D, n[r], out + r * D, D);
    });
  });
  return {e_hat, norm};
}

// Columns of the views (a, V) of one sample as one matrix: ê[:, a+1:] viewed as [B, (V-a-1)*P, D].
// The view dims (V, P) of a contiguous [B, V, P, D] tensor merge without a copy.
at::Tensor views_after(const at::Tensor& e_hat, int64_t a) {
  const int64_t B = e_hat.size(0), V = e_hat.size(1), P = e_hat.size(2), D = e_hat.size(3);
  return e_hat.narrow(1, a + 1, V - a - 1).reshape({B, (V - a - 1) * P, D});
}

// Normalisation backward (common/normalize.h) for the rows of view a, fused (one pass for g.ê, one to
// write, in emb's dtype). g_a [B, P, D] contiguous; e_hat [B, V, P, D], norm [B, V, P], out [B, V, P, D]
// contiguous.
template <typename acc_t, typename out_t>
void normalize_backward_view(const acc_t* g_a, const acc_t* e_hat, const acc_t* norm, out_t* out, int64_t B,
                             int64_t V, int64_t P, int64_t D, int64_t a) {
  const int64_t grain = std::max<int64_t>(1, 32768 / D);
  at::parallel_for(0, B * P, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / P, p = row % P;
      const int64_t cell = (b * V + a) * P + p;
      const acc_t* g = g_a + row * D;
      const acc_t* e = e_hat + cell * D;
      normalize_backward_row(g, e, dot_part(g, e, D), norm[cell], acc_t(1), out + cell * D, D);
    }
  });
}

}  // namespace

at::Tensor cell_similarity(const at::Tensor& emb) {
  check_embeddings("cell_similarity", emb);
  const int64_t B = emb.size(0), V = emb.size(1), P = emb.size(2);
  const at::Tensor e_hat = normalize(emb).e_hat;
  // Zero-filled: the a == c blocks hold 0 and are never computed.
  at::Tensor out = at::zeros({B, V, V, P, P}, emb.options());
  for (int64_t a = 0; a + 1 < V; ++a) {
    const int64_t n = V - a - 1;  // views c > a
    // [B, P, n*P]: sim[b, i, (c-a-1)*P + j] = ê[b, a, i] . ê[b, c, j], for all c > a in one GEMM.
    const at::Tensor sim = at::bmm(e_hat.select(1, a), views_after(e_hat, a).transpose(1, 2));
    const at::Tensor blocks = sim.view({B, P, n, P});
    out.select(1, a).narrow(1, a + 1, n).copy_(blocks.permute({0, 2, 1, 3}));  // (a, c): [i, j]
    out.select(2, a).narrow(1, a + 1, n).copy_(blocks.permute({0, 2, 3, 1}));  // (c, a): [j, i]
  }
  return out;
}

at::Tensor cell_similarity_backward(const at::Tensor& grad, const at::Tensor& emb) {
  check_embeddings("cell_similarity_backward", emb);
  const int64_t B = emb.size(0), V = emb.size(1), P = emb.size(2), D = emb.size(3);
  check_similarity_grad("cell_similarity_backward", grad, emb);

  const auto acc = acc_type_for(emb.scalar_type());
  const Normalized nz = normalize(emb);
  const at::Tensor& e_hat = nz.e_hat;
  const at::Tensor G = grad.to(acc);
  // out[a, c, i, j] = ê_a,i . ê_c,j feeds both ê_a (through G_ac) and ê_c (through G_ac^T), so
  //   gê_a = sum_{c != a} (G_ac + G_ca^T) ê_c.
  // Hs[b, a, i, c, j] = G[b, a, c, i, j] + G[b, c, a, j, i]: then the blocks c < a and c > a of row a
  // are each one [P, n*P] matrix (strided view), multiplied with the contiguous ê of those views.
  // The blocks a == c of grad are never read.
  const at::Tensor Hs = (G.permute({0, 1, 3, 2, 4}) + G.permute({0, 2, 4, 1, 3})).contiguous();
  at::Tensor grad_emb = at::empty({B, V, P, D}, emb.options());
  for (int64_t a = 0; a < V; ++a) {
    // (at::bmm, not baddbmm_: in-place baddbmm on these strided operands takes a slow non-BLAS path.)
    const at::Tensor H_a = Hs.select(1, a);  // [B, P, V, P]
    at::Tensor g_a;                          // [B, P, D]: gê of view a
    if (a > 0)
      g_a = at::bmm(H_a.narrow(2, 0, a).reshape({B, P, a * P}), e_hat.narrow(1, 0, a).reshape({B, a * P, D}));
    if (a + 1 < V) {
      const int64_t n = V - a - 1;
      at::Tensor hi = at::bmm(H_a.narrow(2, a + 1, n).reshape({B, P, n * P}), views_after(e_hat, a));
      g_a = g_a.defined() ? g_a.add_(hi) : hi;
    }
    if (!g_a.defined()) g_a = at::zeros({B, P, D}, e_hat.options());  // V == 1: no pair at all
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, emb.scalar_type(), "hatch::cell_similarity_backward", [&] {
          using acc_t = at::opmath_type<scalar_t>;  // float64 for float64, float32 otherwise
          normalize_backward_view<acc_t, scalar_t>(g_a.contiguous().data_ptr<acc_t>(),
                                                   e_hat.data_ptr<acc_t>(), nz.norm.data_ptr<acc_t>(),
                                                   grad_emb.data_ptr<scalar_t>(), B, V, P, D, a);
        });
  }
  return grad_emb;
}

}  // namespace hatch::cpu
