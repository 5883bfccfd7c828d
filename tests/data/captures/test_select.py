"""View selection: every kept tuple's pairs lie in the overlap band, the overlaps equal an independent
numpy computation (per-pixel visibility with hatch_vlm.geometry.visible_in, cells counted here), the cap
holds, and the choice is deterministic with a seed and changes with it."""
import itertools

import numpy as np
import pytest

from hatch_vlm import geometry as geo
from hatch_vlm.data.captures.nerfstudio import NerfstudioCapture
from hatch_vlm.data.captures.select import SelectConfig, select_views

from ._scene import orbit_poses, write_nerfstudio

GRID = 8


def overlap_numpy(f_a, f_b, grid=GRID, cell_match=0.5) -> float:
    """Fraction of grid cells with >= cell_match of their valid pixels visible in the other view, mean of
    both directions (the definition in select.py's docstring), from the full-size depth maps."""
    da, db = f_a.depth(), f_b.depth()

    def one(d0, f0, d1, f1):
        vis, *_ = geo.visible_in(d0, f0.K, f0.cam_to_world, d1, f1.K, f1.cam_to_world, abs_tol=0.05, rel_tol=0.05)
        H, W = d0.shape
        rows, cols = np.mgrid[0:H, 0:W]
        cell = (rows * grid // H) * grid + cols * grid // W
        valid = d0 > 0
        matched = 0
        for c in range(grid * grid):
            m = (cell == c) & valid
            if m.sum() and vis[m].mean() >= cell_match:
                matched += 1
        return matched / grid ** 2

    return (one(da, f_a, db, f_b) + one(db, f_b, da, f_a)) / 2


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    root = write_nerfstudio(tmp_path_factory.mktemp("sel") / "ns", orbit_poses(14, degrees_per_frame=9), H=48, W=64)
    return root


def _cfg(**kw):
    base = dict(band=(0.2, 0.75), sizes=(2, 3), max_tuples=1000, window=4, frame_step=1, grid=GRID,
                overlap_width=64, seed=0)
    return SelectConfig(**{**base, **kw})


def test_kept_tuples_are_exactly_those_in_band(capture):
    cap = NerfstudioCapture(capture)
    frames = list(cap.frames())
    sel = select_views(iter(frames), _cfg())
    ov = {}
    for i, j in itertools.combinations(range(len(frames)), 2):
        if j - i <= 4:                                   # the window: each frame meets its 4 predecessors
            ov[(i, j)] = overlap_numpy(frames[i], frames[j])
    inband = {k for k, o in ov.items() if 0.2 <= o <= 0.75}
    assert 0 < len(inband) < len(ov)                     # the band cuts both ways in this capture
    want = {(i, j) for i, j in inband} | {
        (i, j, k) for i, j, k in itertools.combinations(range(len(frames)), 3)
        if {(i, j), (i, k), (j, k)} <= inband}
    got = {tuple(f.index for f in t) for t in sel.tuples}
    assert got == want
    assert sel.pairs_considered == len(ov) and sel.pairs_in_band == len(inband)
    assert sum(sel.histogram) == len(ov)
    for t in sel.tuples:                                # stored overlaps = the independent ones
        names = tuple(f.name for f in t)
        expect = [ov[(a.index, b.index)] for a, b in itertools.combinations(t, 2)]
        np.testing.assert_allclose(sel.overlaps[names], expect, atol=1e-9)


def test_cap_and_seed(capture):
    frames = list(NerfstudioCapture(capture).frames())
    full = {tuple(f.name for f in t) for t in select_views(iter(frames), _cfg()).tuples}
    a = [tuple(f.name for f in t) for t in select_views(iter(frames), _cfg(max_tuples=5)).tuples]
    b = [tuple(f.name for f in t) for t in select_views(iter(frames), _cfg(max_tuples=5)).tuples]
    c = [tuple(f.name for f in t) for t in select_views(iter(frames), _cfg(max_tuples=5, seed=1)).tuples]
    assert len(full) > 5 and len(a) == 5 and set(a) <= full
    assert a == b                          # deterministic
    assert set(a) != set(c)                # the seed changes the choice


def test_frame_step_and_bad_arguments(capture):
    frames = list(NerfstudioCapture(capture).frames())
    sel = select_views(iter(frames), _cfg(frame_step=2))
    assert sel.frames_sampled == 7 and sel.frames_not_sampled == 7
    assert all(f.index % 2 == 0 for t in sel.tuples for f in t)
    with pytest.raises(ValueError, match="--band"):
        select_views(iter(frames), _cfg(band=(0.8, 0.2)))
    with pytest.raises(ValueError, match="--views"):
        select_views(iter(frames), _cfg(sizes=(5,)))
