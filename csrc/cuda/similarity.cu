// cell_similarity on CUDA: normalise in the accumulation dtype (float32; float64 for float64 input),
// then one batched GEMM (cuBLAS through ATen) per unordered view pair a < c over the samples. The block
// (c, a) is the transpose of (a, c), and the same-view blocks are never computed (they stay 0).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>

#include "../common/checks.h"
#include "kernels.h"
#include "launch.cuh"

namespace hatch::cuda {

at::Tensor cell_similarity(const at::Tensor& emb) {
  const char* op = "cell_similarity";
  check_embeddings(op, emb);
  check_cuda(op, "emb", emb);
  const c10::cuda::CUDAGuard guard(emb.device());
  const int64_t B = emb.size(0), V = emb.size(1), P = emb.size(2);
  const Normalized n = normalize_rows(emb);

  at::Tensor out = at::zeros({B, V, V, P, P}, emb.options());
  for (int64_t a = 0; a < V; ++a) {
    const at::Tensor ea = n.e_hat.select(1, a);  // [B, P, D]
    for (int64_t c = a + 1; c < V; ++c) {
      const at::Tensor block = at::bmm(ea, n.e_hat.select(1, c).transpose(1, 2));  // [B, P, P]
      out.select(1, a).select(1, c).copy_(block);
      out.select(1, c).select(1, a).copy_(block.transpose(1, 2));
    }
  }
  return out;
}

// d/d e_hat[b, a, i] = sum_{c != a} sum_j (grad[b, a, c, i, j] + grad[b, c, a, j, i]) e_hat[b, c, j];
// then the normalisation backward. The grad of the same-view blocks is ignored (those outputs are
// constant 0).
at::Tensor cell_similarity_backward(const at::Tensor& grad, const at::Tensor& emb) {
  const char* op = "cell_similarity_backward";
  check_embeddings(op, emb);
  check_cuda(op, "emb", emb);
  check_similarity_grad(op, grad, emb);
  const int64_t V = emb.size(1);
  const c10::cuda::CUDAGuard guard(emb.device());
  const Normalized n = normalize_rows(emb);
  const auto acc = n.e_hat.scalar_type();

  at::Tensor g_hat = at::zeros_like(n.e_hat);
  for (int64_t a = 0; a < V; ++a) {
    const at::Tensor ea = n.e_hat.select(1, a);  // [B, P, D]
    for (int64_t c = a + 1; c < V; ++c) {
      const at::Tensor ec = n.e_hat.select(1, c);
      // Both blocks of the pair act on the same product e_a e_c^T: fold them into one [B, P, P].
      const at::Tensor G =
          grad.select(1, a).select(1, c).to(acc) + grad.select(1, c).select(1, a).transpose(1, 2).to(acc);
      g_hat.select(1, a).add_(at::bmm(G, ec));
      g_hat.select(1, c).add_(at::bmm(G.transpose(1, 2), ea));
    }
  }
  return normalize_backward(g_hat, n).to(emb.scalar_type()).contiguous();
}

}  // namespace hatch::cuda
