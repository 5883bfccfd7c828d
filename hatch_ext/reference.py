"""The naive PyTorch implementation of the PaStA math (docs/design.md), written the way a user would:
vectorised, every intermediate materialised ([B, V, V, H*W] per-pixel tensors for the reprojection,
the full [B, V, V, P, P] similarity for the loss). It is the ground truth for the tests and the
baseline of the benchmarks; the signatures match `hatch_ext.ops`.

Computes in the inputs' dtype (so float64 inputs give a float64 reference, and a bf16 run shows what
naive low-precision PyTorch does).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .ops import ABS_TOL, GRID, MIN_OVERLAP, REL_TOL, STRIDE, TAU_P, TAU_T

NORM_EPS = 1e-12  # e / max(|e|, eps), as F.normalize


def cell_index(rows: Tensor, cols: Tensor, H: int, W: int, grid_h: int, grid_w: int) -> Tensor:
    """Cell of pixel (r, c): (floor(r*grid_h/H), floor(c*grid_w/W)) -> row*grid_w + col."""
    return (rows * grid_h // H) * grid_w + (cols * grid_w // W)


def taking_part(depth: Tensor, stride: int) -> Tensor:
    """[B, V, H, W] bool: pixels with valid depth (finite, > 0) on the stride grid."""
    H, W = depth.shape[-2:]
    rr, cc = torch.meshgrid(torch.arange(H, device=depth.device), torch.arange(W, device=depth.device),
                            indexing="ij")
    take = (rr % stride == 0) & (cc % stride == 0)
    return torch.isfinite(depth) & (depth > 0) & take


def overlap_from_projection(depth: Tensor, valid: Tensor, z: Tensor, u: Tensor, v: Tensor,
                            grid_h: int, grid_w: int, abs_tol: float, rel_tol: float) -> Tensor:
    """docs/design.md's visibility test and overlap (steps 1-2) once every pixel of every view a has been
    projected into every view c: z (depth in c), u (column), v (row) are [B, V(a), V(c), H*W], u and v
    before rounding (any value where z <= 1e-6). valid: [B, V, H, W] pixels taking part. Returns M."""
    B, V, H, W = depth.shape
    N, P = H * W, grid_h * grid_w
    dt, dev = depth.dtype, depth.device
    front = z > 1e-6
    col_f = torch.floor(u + 0.5)
    row_f = torch.floor(v + 0.5)
    inside = front & (col_f >= 0) & (col_f < W) & (row_f >= 0) & (row_f < H)
    col = torch.where(inside, col_f, torch.zeros_like(col_f)).long()
    row = torch.where(inside, row_f, torch.zeros_like(row_f)).long()

    # Nearest-pixel depth of view c where the point lands, and the depth test.
    depth_c = depth.reshape(B, 1, V, N).expand(B, V, V, N)
    D_c = torch.gather(depth_c, -1, row * W + col)
    D_ok = torch.isfinite(D_c) & (D_c > 0)
    D_c = torch.where(D_ok, D_c, torch.zeros_like(D_c))
    visible = inside & D_ok & ((z - D_c).abs() <= abs_tol + rel_tol * D_c)
    visible = visible & valid.reshape(B, V, 1, N)
    visible = visible & ~torch.eye(V, dtype=torch.bool, device=dev)[None, :, :, None]

    rr, cc = torch.meshgrid(torch.arange(H, device=dev), torch.arange(W, device=dev), indexing="ij")
    cell_a = cell_index(rr, cc, H, W, grid_h, grid_w).reshape(N)
    cell_c = cell_index(row, col, H, W, grid_h, grid_w)                     # [B, V, V, N]
    num = torch.zeros(B, V, V, P * P, dtype=dt, device=dev)
    num.scatter_add_(-1, cell_a * P + cell_c, visible.to(dt))
    den = torch.zeros(B, V, P, dtype=dt, device=dev)
    den.scatter_add_(-1, cell_a.expand(B, V, N), valid.reshape(B, V, N).to(dt))
    den = den[:, :, None, :, None]
    M = num.reshape(B, V, V, P, P)
    return torch.where(den > 0, M / den.clamp_min(1), torch.zeros_like(M))


def patch_overlap(depth: Tensor, K: Tensor, cam_to_world: Tensor, grid_h: int = GRID,
                  grid_w: int | None = None, abs_tol: float = ABS_TOL, rel_tol: float = REL_TOL,
                  stride: int = STRIDE) -> Tensor:
    grid_w = grid_h if grid_w is None else grid_w
    B, V, H, W = depth.shape
    N = H * W
    dt, dev = depth.dtype, depth.device
    K = K.to(dt)
    T = cam_to_world.to(dt)
    valid = taking_part(depth, stride)                                       # [B, V, H, W]
    d = torch.where(valid, depth, torch.zeros_like(depth)).reshape(B, V, 1, N)

    # Unproject every pixel of every view: X_a = d K_a^-1 (u, v, 1), u = column, v = row.
    rr, cc = torch.meshgrid(torch.arange(H, device=dev), torch.arange(W, device=dev), indexing="ij")
    pix = torch.stack([cc, rr, torch.ones_like(rr)]).to(dt).reshape(3, N)
    X_a = (torch.linalg.inv(K) @ pix) * d                                    # [B, V, 3, N]
    X_w = T[..., :3, :3] @ X_a + T[..., :3, 3:]                              # [B, V, 3, N]
    T_inv = torch.linalg.inv(T)
    # Into every view c: [B, V(a), V(c), 3, N].
    X_c = T_inv[:, None, :, :3, :3] @ X_w[:, :, None] + T_inv[:, None, :, :3, 3:]
    z = X_c[..., 2, :]
    proj = K[:, None] @ X_c
    z_safe = torch.where(z > 1e-6, z, torch.ones_like(z))
    return overlap_from_projection(depth, valid, z, proj[..., 0, :] / z_safe, proj[..., 1, :] / z_safe,
                                   grid_h, grid_w, abs_tol, rel_tol)


def normalize(emb: Tensor) -> Tensor:
    return F.normalize(emb, dim=-1, eps=NORM_EPS)


def cell_similarity(emb: Tensor) -> Tensor:
    """[B, V, V, P, P]: cos(e[b, a, i], e[b, c, j]) for a != c, 0 on the blocks a == c."""
    e = normalize(emb)
    sim = torch.einsum("bapd,bcqd->bacpq", e, e)
    V = emb.shape[1]
    off = ~torch.eye(V, dtype=torch.bool, device=emb.device)
    return sim * off[None, :, :, None, None].to(sim.dtype)


def symmetric_overlap(overlap: Tensor) -> Tensor:
    """S[a, c] = (M[a, c] + M[c, a]^T) / 2."""
    return 0.5 * (overlap + overlap.transpose(1, 2).transpose(-1, -2))


def valid_rows(overlap: Tensor, min_overlap: float = MIN_OVERLAP) -> Tensor:
    """[B, V, V, P] bool: row (a, c, i) with a != c and sum_j S[a, c, i, j] > min_overlap."""
    S = symmetric_overlap(overlap)
    V = overlap.shape[1]
    off = ~torch.eye(V, dtype=torch.bool, device=overlap.device)
    return (S.sum(-1) > min_overlap) & off[None, :, :, None]


def soft_infonce(emb: Tensor, overlap: Tensor, tau_t: float = TAU_T, tau_p: float = TAU_P,
                 min_overlap: float = MIN_OVERLAP, return_num_valid: bool = False):
    e = normalize(emb)
    logits = torch.einsum("bapd,bcqd->bacpq", e, e) / tau_p                # [B, V, V, P, P]
    S = symmetric_overlap(overlap).to(emb.dtype)
    p = torch.softmax(S / tau_t, dim=-1)
    log_q = torch.log_softmax(logits, dim=-1)
    H = -(p * log_q).sum(-1)                                                # [B, V, V, P]
    valid = valid_rows(overlap, min_overlap)
    num_valid = valid.sum()
    loss = torch.where(valid, H, torch.zeros_like(H)).sum() / num_valid.clamp_min(1).to(H.dtype)
    return (loss, num_valid) if return_num_valid else loss


def patch_align(emb: Tensor, depth: Tensor, K: Tensor, cam_to_world: Tensor, grid_h: int = GRID,
                grid_w: int | None = None, tau_t: float = TAU_T, tau_p: float = TAU_P,
                abs_tol: float = ABS_TOL, rel_tol: float = REL_TOL, stride: int = STRIDE,
                min_overlap: float = MIN_OVERLAP, return_num_valid: bool = False):
    overlap = patch_overlap(depth, K, cam_to_world, grid_h, grid_w, abs_tol, rel_tol, stride)
    return soft_infonce(emb, overlap, tau_t, tau_p, min_overlap, return_num_valid)
