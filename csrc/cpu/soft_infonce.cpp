// hatch::soft_infonce (and its backward) on the CPU: the fused PaStA loss with S = ½(M_ac + M_caᵀ) taken
// from the overlap input. The per-pair loss is the shared core of pair_loss.h (patch_align.cpp runs the
// same core on S reprojected from depth).
#include <ATen/Dispatch.h>

#include <vector>

#include "../common/checks.h"
#include "kernels.h"
#include "pair_loss.h"

namespace hatch::cpu {
namespace {

// Appends ½ v for every nonzero v of the dense [P, P] block M (row-major), as S entries (i, j) =
// (row, col), or (col, row) when `transpose` (M_ca contributes ½ M_caᵀ).
template <typename T>
void append_nonzeros(const T* M, int64_t P, bool transpose, std::vector<SEntry>& out) {
  for (int64_t k = 0; k < P * P; ++k) {
    const double v = static_cast<double>(M[k]);
    if (v == 0) continue;
    const auto r = static_cast<int32_t>(k / P), c = static_cast<int32_t>(k % P);
    out.push_back(transpose ? SEntry{c, r, 0.5 * v} : SEntry{r, c, 0.5 * v});
  }
}

// S from the overlap input [B, V, V, P, P].
PairOverlapFn overlap_source(const at::Tensor& overlap_in) {
  const at::Tensor overlap = overlap_in.contiguous();
  const int64_t V = overlap.size(1), P = overlap.size(3);
  return [overlap, V, P](int64_t b, int64_t a, int64_t c, std::vector<SEntry>& out) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, overlap.scalar_type(), "overlap_source", [&] {
      const scalar_t* base = overlap.data_ptr<scalar_t>();
      append_nonzeros(base + ((b * V + a) * V + c) * P * P, P, /*transpose=*/false, out);
      append_nonzeros(base + ((b * V + c) * V + a) * P * P, P, /*transpose=*/true, out);
    });
  };
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_infonce(const at::Tensor& emb, const at::Tensor& overlap,
                                                            double tau_t, double tau_p, double min_overlap) {
  constexpr const char* op = "soft_infonce";
  check_embeddings(op, emb);
  check_overlap(op, overlap, emb);
  check_loss_params(op, tau_t, tau_p, min_overlap);
  return loss_forward(emb, overlap_source(overlap), tau_t, tau_p, min_overlap);
}

at::Tensor soft_infonce_backward(const at::Tensor& grad_loss, const at::Tensor& emb,
                                 const at::Tensor& overlap, const at::Tensor& row_lse,
                                 const at::Tensor& num_valid, double tau_t, double tau_p,
                                 double min_overlap) {
  constexpr const char* op = "soft_infonce_backward";
  check_embeddings(op, emb);
  check_overlap(op, overlap, emb);
  check_loss_params(op, tau_t, tau_p, min_overlap);
  check_grad_loss(op, grad_loss, emb);
  check_saved(op, row_lse, num_valid, emb);
  return loss_backward(grad_loss, emb, overlap_source(overlap), row_lse, num_valid, tau_t, tau_p,
                       min_overlap);
}

}  // namespace hatch::cpu
