"""Test helpers of the ops: the synthetic camera rigs (re-exported from `hatch_ext.scenes`, where they live
so that production code never imports this module) and the one-pixel overlap comparison across devices.

`room_scene` renders z-depth by ray casting into an axis-aligned room (+z up) with optional spherical
occluders, from cameras placed near the room centre with random yaw/pitch, so views overlap a lot and
the occluders hide surfaces from some views (the depth test must reject those pixels).
`plane_pair` is the analytic case: a fronto-parallel plane seen by two cameras that differ by a pure
sideways translation, where the overlap is known by hand.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .scenes import Scene, intrinsics, look_pose, plane_pair, render_depth, room_scene

__all__ = ["Scene", "intrinsics", "look_pose", "plane_pair", "render_depth", "room_scene",  # from .scenes
           "cell_pixel_counts", "assert_overlap_within_one_pixel"]


# ------------------------------------------------------------------ overlap across devices: one pixel
def cell_pixel_counts(depth: Tensor, grid_h: int, grid_w: int, stride: int = 1) -> Tensor:
    """[B, V, P] float64: the taking-part (valid-depth, on the stride grid) pixels of every cell, i.e.
    the denominator of patch_overlap's row (b, a, c, i) for every c."""
    from . import reference as R

    B, V, H, W = depth.shape
    valid = R.taking_part(depth, stride).reshape(B, V, H * W).to(torch.float64)
    rr, cc = torch.meshgrid(torch.arange(H, device=depth.device), torch.arange(W, device=depth.device),
                            indexing="ij")
    cell = R.cell_index(rr, cc, H, W, grid_h, grid_w).reshape(1, 1, H * W).expand(B, V, H * W)
    den = torch.zeros(B, V, grid_h * grid_w, dtype=torch.float64, device=depth.device)
    return den.scatter_add_(-1, cell, valid)


def assert_overlap_within_one_pixel(M: Tensor, expected: Tensor, depth: Tensor, grid_h: int,
                                    grid_w: int, stride: int = 1) -> int:
    """Asserts that two patch_overlap results (e.g. CUDA and CPU) differ by at most ONE pixel per
    (view pair, cell row): for every row (b, a, c, i), with n = the taking-part pixels of cell i of view
    a (the same on every device: no projection involved), n * (M - expected) is a count difference
    that is integral, and at most one pixel was gained (sum of its positive parts <= 1) and at most one
    lost (sum of its negative parts <= 1): one pixel binned into another cell j (-1, +1), or one pixel
    that passes the visibility test on one device only (+-1). So an entry differs by at most 1/n.

    Why a tolerance at all: the CUDA kernel reprojects in float64 too, but nvcc contracts a*b + c into
    FMAs where the CPU compiler does not, so a pixel whose projection lands within rounding of a pixel
    centre's .5 boundary (or of the depth test's threshold) can be decided differently. Returns the
    number of rows that differ (0 when the results are identical)."""
    M, expected = M.detach().cpu().double(), expected.detach().cpu().double()
    assert M.shape == expected.shape, f"shapes differ: {tuple(M.shape)} vs {tuple(expected.shape)}"
    n = cell_pixel_counts(depth.detach().cpu(), grid_h, grid_w, stride)       # [B, V, P]
    counts = (M - expected) * n[:, :, None, :, None]
    rounded = counts.round()
    off = (counts - rounded).abs().max().item() if counts.numel() else 0.0
    assert off <= 1e-3, f"count differences are not whole pixels (off by {off:.3g})"
    gained = rounded.clamp(min=0).sum(-1)                                     # [B, V, V, P]
    lost = (-rounded).clamp(min=0).sum(-1)
    bad = (gained > 1) | (lost > 1)
    if bad.any():
        b, a, c, i = (int(x) for x in bad.nonzero()[0])
        raise AssertionError(
            f"overlap row (b={b}, a={a}, c={c}, i={i}) differs by more than one pixel: "
            f"+{int(gained[b, a, c, i])} / -{int(lost[b, a, c, i])} pixels of {int(n[b, a, i])} "
            f"({int(bad.sum())} such rows)")
    return int(((gained > 0) | (lost > 0)).sum())


def sparse_overlap(B: int, V: int, P: int, seed: int = 0, density: float = 0.15, empty_rows: float = 0.3,
                   dtype: torch.dtype = torch.float64) -> Tensor:
    """Random overlap fractions [B, V, V, P, P]: a few nonzeros per row, some rows empty, rows summing
    to <= 1, diagonal blocks 0 (like patch_overlap's output)."""
    g = torch.Generator().manual_seed(seed)
    M = torch.rand(B, V, V, P, P, generator=g, dtype=torch.float64)
    M = M * (torch.rand(B, V, V, P, P, generator=g) < density)
    M = M * (torch.rand(B, V, V, P, 1, generator=g) > empty_rows)
    M = M / M.sum(-1, keepdim=True).clamp_min(1.0)
    M[:, range(V), range(V)] = 0
    return M.to(dtype)
