// Host-side helpers shared by the CUDA ops of hatch (launch geometry and warp reductions: device/common.cuh):
// the current stream, the device check, and the embedding normalisation (ATen ops) used by the similarity and
// the loss.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "../common/checks.h"
#include "device/common.cuh"

namespace hatch::cuda {

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Every CUDA op's inputs must live on a CUDA device (the dispatcher picks the CUDA kernel as soon as
// one argument is a CUDA tensor; the shared checks then verify that all of them are on that device).
inline void check_cuda(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.is_cuda(), "hatch.", op, ": argument '", name,
                    "' must be a CUDA tensor for the CUDA kernel, got a tensor on ", t.device());
}

// Normalised embeddings in the accumulation dtype (float32; float64 for float64 input):
// e_hat = e / max(|e|, eps) [.., D] and the norms |e| [.., 1].
struct Normalized {
  at::Tensor e_hat;
  at::Tensor norm;
};

inline Normalized normalize_rows(const at::Tensor& emb) {
  const at::Tensor e = emb.to(acc_type_for(emb.scalar_type())).contiguous();
  at::Tensor norm = at::linalg_vector_norm(e, 2, at::IntArrayRef{-1}, /*keepdim=*/true, std::nullopt);
  at::Tensor e_hat = (e / norm.clamp_min(kNormEps)).contiguous();
  return {e_hat, norm};
}

// Backward of e_hat = e / max(|e|, eps) for an upstream gradient g_hat (same dtype as e_hat), in place
// on g_hat (which the caller owns; it is returned): (g - (g.e_hat) e_hat) / |e| where |e| >= eps, and
// g / eps where the norm is clamped (as autograd through F.normalize gives). In place so that a dense
// problem holds no extra [B, V, P, D] temporaries.
inline at::Tensor normalize_backward(at::Tensor g_hat, const Normalized& n) {
  const at::Tensor dot = (g_hat * n.e_hat).sum(-1, /*keepdim=*/true) * (n.norm >= kNormEps);
  g_hat.addcmul_(dot, n.e_hat, /*value=*/-1);
  g_hat.div_(n.norm.clamp_min(kNormEps));
  return g_hat;
}

}  // namespace hatch::cuda
