"""The stated tolerance of the CUDA-vs-CPU overlap tests (tests/ops/test_patch_overlap.py), on CPU results:
hatch_ext.testing.assert_overlap_within_one_pixel accepts a difference of one pixel per (view pair, cell
row) (one pixel moved to another cell, or gained / lost by the visibility test) and nothing more."""
from __future__ import annotations

import pytest
import torch

from hatch_ext import reference as R
from hatch_ext import testing

OPS = torch.ops.hatch
GH, GW, STRIDE = 3, 4, 1


@pytest.fixture(scope="module", params=[torch.float64, torch.float32])
def case(request):
    s = testing.room_scene(2, 3, 23, 29, seed=3, dtype=request.param, occluders=2,
                           invalid_fraction=0.1)
    M = OPS.patch_overlap(s.depth, s.K, s.cam_to_world, GH, GW, 0.05, 0.05, STRIDE)
    n = testing.cell_pixel_counts(s.depth, GH, GW, STRIDE)
    # A row with at least one counted pixel, and two cells of it.
    b, a, c, i, j = (int(x) for x in (M * n[:, :, None, :, None] >= 1).nonzero()[0])
    return s, M, n, (b, a, c, i, j)


def test_cell_pixel_counts_are_the_denominators(case):
    s, M, n, _ = case
    counts = (M.double() * n[:, :, None, :, None])
    assert torch.allclose(counts, counts.round(), atol=1e-3)
    assert n.sum() == R.taking_part(s.depth, STRIDE).sum()
    # Against the reference's own denominator: a row's entries sum to (visible pixels) / n <= 1.
    assert (M.double().sum(-1) <= 1 + 1e-6).all()


def test_identical_results_pass(case):
    s, M, _, _ = case
    assert testing.assert_overlap_within_one_pixel(M, M.clone(), s.depth, GH, GW, STRIDE) == 0


def test_one_pixel_moved_or_gained_passes(case):
    s, M, n, (b, a, c, i, j) = case
    unit = 1 / n[b, a, i].item()
    moved = M.double().clone()
    moved[b, a, c, i, j] -= unit
    moved[b, a, c, i, (j + 1) % (GH * GW)] += unit
    moved[b, c, a, 0, 0] += 1 / n[b, c, 0].item() if n[b, c, 0] > 0 else 0  # another row: one more
    assert testing.assert_overlap_within_one_pixel(moved.to(M.dtype), M, s.depth, GH, GW, STRIDE) >= 1
    lost = M.double().clone()
    lost[b, a, c, i, j] -= unit
    assert testing.assert_overlap_within_one_pixel(lost.to(M.dtype), M, s.depth, GH, GW, STRIDE) == 1


def test_two_pixels_in_one_row_fail(case):
    s, M, n, (b, a, c, i, j) = case
    unit = 1 / n[b, a, i].item()
    two = M.double().clone()
    two[b, a, c, i, (j + 1) % (GH * GW)] += unit
    two[b, a, c, i, (j + 2) % (GH * GW)] += unit
    with pytest.raises(AssertionError, match="more than one pixel"):
        testing.assert_overlap_within_one_pixel(two.to(M.dtype), M, s.depth, GH, GW, STRIDE)


def test_fractions_of_a_pixel_fail(case):
    s, M, n, (b, a, c, i, j) = case
    off = M.double().clone()
    off[b, a, c, i, j] += 0.5 / n[b, a, i].item()
    with pytest.raises(AssertionError, match="not whole pixels"):
        testing.assert_overlap_within_one_pixel(off.to(M.dtype), M, s.depth, GH, GW, STRIDE)
