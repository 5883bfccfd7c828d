"""The hatch ops as documented Python functions (thin wrappers over `torch.ops.hatch.*`).

Conventions (docs/design.md): depth is z-depth in metres `[B, V, H, W]` (<= 0 or non-finite = invalid);
K `[B, V, 3, 3]` in pixels of the depth map, OpenCV (pixel (r, c) centre at (u, v) = (c, r)); poses are
camera-to-world `[B, V, 4, 4]`, OpenCV camera axes. An image is cut into grid_h x grid_w cells; pixel
(r, c) lies in cell (floor(r*grid_h/H), floor(c*grid_w/W)), index row*grid_w + col; P = grid_h*grid_w.
Embeddings are `[B, V, P, D]` in that cell order. Every op accepts CPU tensors and, when the library is
built with CUDA, CUDA tensors; all inputs of one call must be on one device.
"""
from __future__ import annotations

import torch
from torch import Tensor

# Defaults (ours; the paper gives none). Shared by the ops, the reference and the training framework.
GRID = 4
TAU_T = 0.1
TAU_P = 0.07
ABS_TOL = 0.05
REL_TOL = 0.05
STRIDE = 1
MIN_OVERLAP = 0.0

# patch_align keeps the dense overlap [B, V, V, P, P] for backward when it takes at most this many bytes
# (float32). Few cells per view (the paper's n = 4: P = 16) make it tiny, and keeping it saves backward the
# per-pixel reprojection, which is then nearly all of its cost; larger P keep the O(B*V*P*D + P*P) path.
DENSE_OVERLAP_MAX_BYTES = 16 * 2**20


def patch_overlap(depth: Tensor, K: Tensor, cam_to_world: Tensor, grid_h: int = GRID,
                  grid_w: int | None = None, abs_tol: float = ABS_TOL, rel_tol: float = REL_TOL,
                  stride: int = STRIDE) -> Tensor:
    """Cross-view cell overlap from depth and cameras, by fused per-pixel reprojection.

    Args:
        depth: `[B, V, H, W]` float32/float64 z-depth in metres; <= 0 or non-finite marks a pixel invalid.
        K: `[B, V, 3, 3]` intrinsics in pixels of the depth map (OpenCV convention).
        cam_to_world: `[B, V, 4, 4]` camera-to-world poses (OpenCV camera axes).
        grid_h, grid_w: cells per column / row (grid_w defaults to grid_h); each <= the image side.
        abs_tol, rel_tol: a reprojected pixel is visible in view c iff |z - D_c| <= abs_tol + rel_tol*D_c
            (metres; nearest-pixel lookup of c's depth D_c).
        stride: only pixels with r % stride == 0 and c % stride == 0 take part.

    Returns:
        M `[B, V, V, P, P]` in depth's dtype: M[b, a, c, i, j] = fraction of the taking-part valid-depth
        pixels of cell i of view a that are visible in view c and land in its cell j (0 where cell i has
        none). Blocks a == c are 0. Not differentiable (it is supervision).
    """
    grid_w = grid_h if grid_w is None else grid_w
    return torch.ops.hatch.patch_overlap(depth, K, cam_to_world, grid_h, grid_w, float(abs_tol),
                                         float(rel_tol), stride)


def cell_similarity(emb: Tensor) -> Tensor:
    """Block-sparse cross-view cosine similarity of cell embeddings.

    Args:
        emb: `[B, V, P, D]` float32/float64/float16/bfloat16 cell embeddings.

    Returns:
        `[B, V, V, P, P]` in emb's dtype: cos(emb[b, a, i], emb[b, c, j]) for a != c (each embedding
        normalised as e / max(|e|, 1e-12)); the blocks a == c are never computed and hold 0.
        Differentiable in emb.
    """
    return torch.ops.hatch.cell_similarity(emb)


def soft_infonce(emb: Tensor, overlap: Tensor, tau_t: float = TAU_T, tau_p: float = TAU_P,
                 min_overlap: float = MIN_OVERLAP, return_num_valid: bool = False):
    """Soft-target InfoNCE between cells of different views (docs/design.md steps 3-6), similarity fused.

    S[a, c] = (M[a, c] + M[c, a]^T) / 2; row (a, c, i) is valid iff sum_j S[a, c, i, j] > min_overlap;
    p = softmax_j(S / tau_t), q = softmax_j(cos(e_a,i, e_c,j) / tau_p); the loss is the mean over valid
    rows of the cross-entropy H(p, q), and 0 (zero gradient) when no row is valid. The similarity of all
    view pairs is never held at once: it is formed one pair at a time with an online log-sum-exp.

    Args:
        emb: `[B, V, P, D]` cell embeddings (float32/float64/float16/bfloat16); differentiable.
        overlap: `[B, V, V, P, P]` overlap M, e.g. from :func:`patch_overlap`; not differentiated.
        tau_t, tau_p: target and prediction temperatures (> 0).
        min_overlap: validity threshold on a row's total overlap (>= 0).
        return_num_valid: also return the number of valid rows (int64 scalar tensor).

    Returns:
        The scalar loss in emb's dtype (and the valid-row count when asked).
    """
    loss, _, num_valid = torch.ops.hatch.soft_infonce(emb, overlap, float(tau_t), float(tau_p),
                                                      float(min_overlap))
    return (loss, num_valid) if return_num_valid else loss


def patch_align(emb: Tensor, depth: Tensor, K: Tensor, cam_to_world: Tensor, grid_h: int = GRID,
                grid_w: int | None = None, tau_t: float = TAU_T, tau_p: float = TAU_P,
                abs_tol: float = ABS_TOL, rel_tol: float = REL_TOL, stride: int = STRIDE,
                min_overlap: float = MIN_OVERLAP, return_num_valid: bool = False):
    """The PaStA loss in one call: reprojection -> overlap -> soft targets -> InfoNCE, fused.

    Equal to ``soft_infonce(emb, patch_overlap(depth, K, cam_to_world, ...), ...)`` but never builds the
    overlap or the similarity of all view pairs: both are formed one view pair at a time (and recomputed
    in backward), so memory stays O(B*V*P*D + P*P). Exception: when a gradient is needed and the dense
    overlap is small (<= DENSE_OVERLAP_MAX_BYTES, e.g. the paper's 4 x 4 cells), it is computed once and
    kept, so that backward does not redo the reprojection (exactly that composition; see
    :func:`keeps_dense_overlap`).

    Args:
        emb: `[B, V, P, D]` cell embeddings, P = grid_h*grid_w, cells in row-major grid order;
            differentiable.
        depth, K, cam_to_world, grid_h, grid_w, abs_tol, rel_tol, stride: as in :func:`patch_overlap`.
        tau_t, tau_p, min_overlap, return_num_valid: as in :func:`soft_infonce`.

    Returns:
        The scalar loss in emb's dtype (and the valid-row count when asked).

    `torch.ops.hatch.patch_align` itself returns `(loss, row_lse, num_valid)`: row_lse `[B, V, V, P]`
    (float32; float64 for float64 emb) holds logsumexp_j cos(e_a,i, e_c,j)/tau_p, saved for backward.
    """
    grid_w = grid_h if grid_w is None else grid_w
    if keeps_dense_overlap(emb, depth, grid_h, grid_w):
        # Same value and gradient (same kernels: reprojection, then the fused InfoNCE), backward cheaper.
        overlap = patch_overlap(depth, K, cam_to_world, grid_h, grid_w, abs_tol, rel_tol, stride)
        return soft_infonce(emb, overlap, tau_t, tau_p, min_overlap, return_num_valid)
    loss, _, num_valid = torch.ops.hatch.patch_align(
        emb, depth, K, cam_to_world, grid_h, grid_w, float(tau_t), float(tau_p), float(abs_tol),
        float(rel_tol), stride, float(min_overlap))
    return (loss, num_valid) if return_num_valid else loss


def keeps_dense_overlap(emb, depth, grid_h: int, grid_w: int) -> bool:
    """Whether :func:`patch_align` computes the overlap once and keeps it for backward (see
    DENSE_OVERLAP_MAX_BYTES): only when a gradient will be taken and the inputs are well-formed (anything
    else goes to the fused op, whose checks name the bad argument)."""
    if not (isinstance(emb, Tensor) and isinstance(depth, Tensor) and emb.requires_grad
            and torch.is_grad_enabled() and emb.dim() == 4 and depth.dim() == 4):
        return False
    B, V, P = emb.shape[:3]
    if P != grid_h * grid_w or tuple(depth.shape[:2]) != (B, V):
        return False
    return B * V * V * P * P * 4 <= DENSE_OVERLAP_MAX_BYTES
