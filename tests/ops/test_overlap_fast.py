"""The fast (AVX2) patch_overlap CPU kernel against the naive reference (hatch_ext.reference), exactly
(float64), on edge cases built so that every number of both computations is exact in binary (focal a
power of two, dyadic principal points, translations and depths): landings exactly half-way between two
pixels (the nearest-pixel rule floor(v + 0.5) on a tie) and on cell borders, exactly on the image
edge (fc == 0 inside, fc == W outside), depth differences exactly at the tolerance (|z - D| <= tol
accepts), strides, odd sizes, grids that do not divide the image, invalid depth in both views. Also
against the portable loop (HATCH_CPU_PORTABLE_OVERLAP=1, a subprocess) bit for bit on random rooms,
float32 and float64, so that a kernel that is faster but counts one pixel differently fails."""
import os
import subprocess
import sys

import pytest
import torch

import hatch_ext
from hatch_ext import reference as R
from hatch_ext import testing

F = 8.0  # focal length (a power of two: K^-1 and every projection below are exact)


def exact_rig(H, W, shifts, depth0=2.0, dtype=torch.float64):
    """Camera 0 at the origin, camera i (i >= 1) translated by shifts[i - 1] = (tx, ty) metres, all
    facing +z, on a fronto-parallel plane at depth0. With K = [[F, 0, cx], [0, F, cy], [0, 0, 1]] a
    pixel (r, c) of view 0 lands in view i at (r - F ty / d, c - F tx / d): every value is dyadic."""
    V = 1 + len(shifts)
    cx, cy = (W - 1) / 2, (H - 1) / 2  # integers or halves: exact
    K = torch.tensor([[F, 0.0, cx], [0.0, F, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
    Ts = [torch.eye(4, dtype=torch.float64) for _ in range(V)]
    for T, (tx, ty) in zip(Ts[1:], shifts):
        T[0, 3], T[1, 3] = tx, ty
    depth = torch.full((1, V, H, W), depth0, dtype=torch.float64)
    return testing.Scene(depth.to(dtype), K.expand(1, V, 3, 3).clone(), torch.stack(Ts)[None])


def both(s, gh, gw, **kw):
    M = hatch_ext.patch_overlap(s.depth, s.K, s.cam_to_world, gh, gw, **kw)
    ref = R.patch_overlap(s.depth, s.K, s.cam_to_world, gh, gw, **kw)
    return M, ref


def assert_exact(M, ref):
    assert M.dtype == ref.dtype == torch.float64
    assert torch.equal(M, ref), f"max |diff| {(M - ref).abs().max()}"


# Half-pixel shifts (F * t / d = 0.5, 1.5, ...): every landing is a tie, in both directions and both
# axes, so that pixels land exactly on pixel (and cell) borders and exactly on the image edges.
HALF_SHIFTS = [(0.125, 0.0), (-0.125, 0.0), (0.0, 0.125), (0.0, -0.375), (0.375, -0.125), (-0.625, 0.875)]


@pytest.mark.parametrize("H,W,gh,gw", [(12, 16, 3, 4), (13, 17, 3, 4), (9, 11, 2, 5), (16, 16, 4, 4),
                                       (7, 5, 7, 5)])
def test_half_pixel_ties_and_image_edges(H, W, gh, gw):
    s = exact_rig(H, W, HALF_SHIFTS)
    M, ref = both(s, gh, gw)
    assert_exact(M, ref)
    # The rule on a tie is floor(v + 0.5): a shift of +0.5 px (tx = 0.125 at d = 2) lands pixel c
    # of view 0 on c - 0.5 in view 1, i.e. pixel c; column 0 lands on -0.5 -> fc = 0, still inside.
    # A shift of -0.5 px lands the last column on W - 0.5 -> fc = W: outside. So view 0 -> 1 keeps
    # every pixel, view 0 -> 2 loses the last column.
    P = gh * gw
    den = torch.zeros(P, dtype=torch.float64)
    lost = torch.zeros(P, dtype=torch.float64)
    for r in range(H):
        for c in range(W):
            i = (r * gh // H) * gw + c * gw // W
            den[i] += 1
            lost[i] += c == W - 1
    torch.testing.assert_close(M[0, 0, 1].sum(-1), torch.ones(P, dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(M[0, 0, 2].sum(-1), 1 - lost / den, rtol=0, atol=0)
    # Same view, same cell: a pure half-pixel tie keeps every pixel in its own cell.
    torch.testing.assert_close(M[0, 0, 1], torch.eye(P, dtype=torch.float64), rtol=0, atol=0)


def test_depth_varies_per_pixel_and_stride():
    """Depths 1, 2, 4 (shifts of 1, 1/2, 1/4 px at tx = 0.125): ties, exact quarter landings, and
    points that leave the image, with strides 1, 2, 3 and an odd image."""
    H, W = 15, 19
    s = exact_rig(H, W, HALF_SHIFTS[:4])
    g = torch.Generator().manual_seed(0)
    depth = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)[torch.randint(0, 3, (1, 5, H, W), generator=g)]
    s = testing.Scene(depth, s.K, s.cam_to_world)
    for stride in (1, 2, 3):
        for gh, gw in ((3, 4), (5, 2), (4, 7)):
            M, ref = both(s, gh, gw, stride=stride)
            assert_exact(M, ref)
    assert M.sum() > 0


# (abs_tol, rel_tol, D accepted, D rejected) with z = 2: |2 - D| == abs_tol + rel_tol * D exactly for
# the accepted D (behind or in front of the point), beyond it for the rejected one.
TOLERANCE_CASES = [
    (0.25, 0.0, 2.25, 2.5),
    (0.25, 0.0, 1.75, 1.5),
    (0.1875, 0.125, 2.5, 2.75),
    (0.3125, 0.125, 1.5, 1.25),
    (0.0, 0.0, 2.0, 2.0 + 2.0 ** -40),
]


@pytest.mark.parametrize("abs_tol,rel_tol,d_ok,d_bad", TOLERANCE_CASES)
def test_depth_exactly_at_the_tolerance(abs_tol, rel_tol, d_ok, d_bad):
    """View 1's depth differs from the landing point's z by exactly the tolerance on even rows
    (accepted: <=) and by more on odd rows (rejected)."""
    assert abs(2.0 - d_ok) == abs_tol + rel_tol * d_ok and abs(2.0 - d_bad) > abs_tol + rel_tol * d_bad
    H, W = 11, 13
    s = exact_rig(H, W, [(0.25, 0.0)])  # one whole pixel to the left, z = 2 everywhere
    depth = s.depth.clone()
    depth[0, 1, 0::2] = d_ok
    depth[0, 1, 1::2] = d_bad
    s = testing.Scene(depth, s.K, s.cam_to_world)
    M, ref = both(s, 3, 4, abs_tol=abs_tol, rel_tol=rel_tol)
    assert_exact(M, ref)
    # A cell per pixel: view 0 -> 1 keeps the pixels of the even rows but the first column (it lands
    # on column -1, outside), none of the odd rows.
    M_px, ref_px = both(s, H, W, abs_tol=abs_tol, rel_tol=rel_tol)
    assert_exact(M_px, ref_px)
    kept = M_px[0, 0, 1].sum(-1).reshape(H, W)
    expected = torch.zeros(H, W, dtype=torch.float64)
    expected[0::2, 1:] = 1
    assert torch.equal(kept, expected)


def test_invalid_depth_in_both_views():
    H, W = 13, 17
    s = exact_rig(H, W, HALF_SHIFTS[:3])
    depth = s.depth.clone()
    g = torch.Generator().manual_seed(1)
    bad = torch.tensor([float("nan"), 0.0, -1.0, float("inf"), -float("inf"), -0.0], dtype=torch.float64)
    mask = torch.rand(depth.shape, generator=g) < 0.2
    depth[mask] = bad[torch.randint(0, len(bad), (int(mask.sum()),), generator=g)]
    depth[0, 0, :, 0] = float("nan")   # a whole column of view 0
    depth[0, 1, 0, :] = 0.0            # a whole row of view 1
    depth[0, 2] = float("nan")         # a whole view: no denominators, nothing lands on it
    s = testing.Scene(depth, s.K, s.cam_to_world)
    for stride in (1, 2):
        M, ref = both(s, 3, 4, stride=stride)
        assert_exact(M, ref)
        assert torch.all(M[0, 2] == 0) and torch.all(M[0, :, 2] == 0)
        assert M.sum() > 0


def test_single_column_and_row_images():
    for H, W, gh, gw in ((1, 9, 1, 3), (9, 1, 3, 1), (1, 1, 1, 1), (2, 3, 2, 3)):
        s = exact_rig(H, W, HALF_SHIFTS[:2])
        M, ref = both(s, gh, gw)
        assert_exact(M, ref)


@pytest.mark.parametrize("B,V,H,W,gh,gw,stride,invalid,seed", [
    (2, 3, 41, 57, 3, 5, 1, 0.1, 20),
    (1, 4, 31, 29, 4, 3, 2, 0.2, 21),
    (1, 3, 25, 38, 5, 7, 3, 0.05, 22),
    (1, 2, 64, 64, 32, 32, 1, 0.1, 23),  # P = 1024: one histogram copy
    (1, 3, 17, 23, 17, 23, 1, 0.0, 24),  # a cell per pixel
])
def test_random_rooms_match_reference(B, V, H, W, gh, gw, stride, invalid, seed):
    s = testing.room_scene(B, V, H, W, seed=seed, invalid_fraction=invalid, occluders=2)
    M, ref = both(s, gh, gw, stride=stride)
    torch.testing.assert_close(M, ref, rtol=0, atol=1e-12)
    assert M.sum() > 0


_PORTABLE_SCRIPT = r"""
import sys, torch, hatch_ext
from hatch_ext import testing
cases = eval(sys.argv[1])
out = []
for (B, V, H, W, gh, gw, stride, invalid, seed, dt) in cases:
    s = testing.room_scene(B, V, H, W, seed=seed, invalid_fraction=invalid, occluders=2)
    s = s.to(getattr(torch, dt))
    out.append(hatch_ext.patch_overlap(s.depth, s.K, s.cam_to_world, gh, gw, stride=stride))
torch.save(out, sys.argv[2])
"""

PORTABLE_CASES = [
    (2, 3, 37, 53, 3, 5, 1, 0.1, 30, "float64"),
    (2, 3, 37, 53, 3, 5, 1, 0.1, 30, "float32"),
    (1, 4, 64, 80, 4, 4, 1, 0.05, 31, "float32"),
    (1, 3, 29, 31, 4, 4, 2, 0.2, 32, "float64"),
    (1, 3, 33, 27, 5, 2, 3, 0.0, 33, "float32"),
    (1, 2, 48, 48, 24, 24, 1, 0.1, 34, "float64"),
]


def test_bitwise_equal_to_portable_loop(tmp_path):
    """The portable loop (cpu/pair_counts.h) forced by HATCH_CPU_PORTABLE_OVERLAP=1 in a subprocess
    gives the very same tensors as the default (AVX2 where the CPU has it) kernel."""
    path = tmp_path / "portable.pt"
    env = dict(os.environ, HATCH_CPU_PORTABLE_OVERLAP="1")
    subprocess.run([sys.executable, "-c", _PORTABLE_SCRIPT, repr(PORTABLE_CASES), str(path)], env=env,
                   check=True)
    portable = torch.load(path)
    for case, P_out in zip(PORTABLE_CASES, portable):
        B, V, H, W, gh, gw, stride, invalid, seed, dt = case
        s = testing.room_scene(B, V, H, W, seed=seed, invalid_fraction=invalid, occluders=2)
        s = s.to(getattr(torch, dt))
        M = hatch_ext.patch_overlap(s.depth, s.K, s.cam_to_world, gh, gw, stride=stride)
        assert M.dtype == P_out.dtype and torch.equal(M, P_out), case
