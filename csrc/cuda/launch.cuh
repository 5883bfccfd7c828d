// Host-side helpers shared by the CUDA ops of hatch (launch geometry and warp reductions: device/common.cuh;
// argument checks: common/checks.h): the current stream and the embedding normalisation used by the
// similarity and the loss (kernels: device/normalize.cuh; math: common/normalize.h).
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "../common/checks.h"
#include "device/common.cuh"
#include "device/normalize.cuh"

namespace hatch::cuda {

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Normalised embeddings in the accumulation dtype (float32; float64 for float64 input):
// e_hat = e / max(|e|, eps) [.., D] and the norms |e| [..], both contiguous.
struct Normalized {
  at::Tensor e_hat;
  at::Tensor norm;
};

inline Normalized normalize_rows(const at::Tensor& emb) {
  const at::Tensor e = emb.to(acc_type_for(emb.scalar_type())).contiguous();
  const int64_t D = e.size(-1), rows = e.numel() / D;
  at::Tensor e_hat = at::empty(e.sizes(), e.options());
  at::Tensor norm = at::empty(e.sizes().slice(0, e.dim() - 1), e.options());
  const LaunchCfg L = normalize_launch(rows);
  AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "hatch_normalize_rows", [&] {
    normalize_rows_kernel<scalar_t><<<L.grid, L.block, L.shmem, current_stream()>>>(
        e.data_ptr<scalar_t>(), rows, D, e_hat.data_ptr<scalar_t>(), norm.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {e_hat, norm};
}

// Backward of e_hat = e / max(|e|, eps) for an upstream gradient g_hat (e_hat's dtype and shape,
// contiguous), in place on g_hat (which the caller owns; it is returned), so that a dense problem holds
// no extra [B, V, P, D] temporaries.
inline at::Tensor normalize_backward(at::Tensor g_hat, const Normalized& n) {
  TORCH_INTERNAL_ASSERT(g_hat.is_contiguous() && g_hat.scalar_type() == n.e_hat.scalar_type() &&
                        g_hat.sizes() == n.e_hat.sizes());
  const int64_t D = g_hat.size(-1), rows = g_hat.numel() / D;
  const LaunchCfg L = normalize_launch(rows);
  AT_DISPATCH_FLOATING_TYPES(g_hat.scalar_type(), "hatch_normalize_backward", [&] {
    normalize_backward_kernel<scalar_t><<<L.grid, L.block, L.shmem, current_stream()>>>(
        g_hat.data_ptr<scalar_t>(), n.e_hat.data_ptr<scalar_t>(), n.norm.data_ptr<scalar_t>(), rows, D);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return g_hat;
}

}  // namespace hatch::cuda
