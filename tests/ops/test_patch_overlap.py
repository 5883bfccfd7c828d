"""hatch::patch_overlap (CPU kernel) against the naive reference (hatch_ext.reference) and against
answers known by hand: random rooms with occluders and invalid depth, odd image sizes, non-square
grids, strides, cameras that see nothing of each other, the analytic plane pair, the depth test."""
import math

import pytest
import torch

import hatch_ext
from hatch_ext import reference as R
from hatch_ext import testing


def overlap(scene, grid_h, grid_w, **kw):
    return hatch_ext.patch_overlap(scene.depth, scene.K, scene.cam_to_world, grid_h, grid_w, **kw)


def reference(scene, grid_h, grid_w, **kw):
    return R.patch_overlap(scene.depth, scene.K, scene.cam_to_world, grid_h, grid_w, **kw)


def assert_blocks_a_eq_c_zero(M):
    V = M.shape[1]
    for a in range(V):
        assert torch.all(M[:, a, a] == 0)


# (B, V, H, W, grid_h, grid_w, stride, invalid_fraction, occluders, seed)
CASES = [
    (2, 3, 37, 53, 3, 5, 1, 0.0, 1, 0),
    (2, 3, 37, 53, 3, 5, 1, 0.15, 2, 1),
    (1, 4, 29, 31, 4, 4, 2, 0.1, 1, 2),
    (2, 2, 24, 41, 2, 3, 3, 0.2, 0, 3),
    (1, 3, 33, 27, 5, 2, 1, 0.05, 1, 4),
    (1, 2, 19, 23, 8, 10, 1, 0.0, 1, 5),  # dense grid: ~2 pixels per cell
]


@pytest.mark.parametrize("B,V,H,W,gh,gw,stride,invalid,occluders,seed", CASES)
def test_matches_reference_float64(B, V, H, W, gh, gw, stride, invalid, occluders, seed):
    s = testing.room_scene(B, V, H, W, seed=seed, invalid_fraction=invalid, occluders=occluders)
    M = overlap(s, gh, gw, stride=stride)
    ref = reference(s, gh, gw, stride=stride)
    assert M.shape == (B, V, V, gh * gw, gh * gw) and M.dtype == torch.float64
    torch.testing.assert_close(M, ref, rtol=0, atol=1e-12)
    # The case must be a real one: cameras overlap, and the depth test rejects some pixels.
    off = ~torch.eye(V, dtype=torch.bool)
    assert M[:, off].sum() > 0.1 * B * V * (V - 1)
    if occluders:
        assert overlap(s, gh, gw, stride=stride, abs_tol=100.0).sum() > M.sum()
    assert_blocks_a_eq_c_zero(M)
    assert torch.all(M >= 0) and torch.all(M.sum(-1) <= 1 + 1e-12)


def test_float32_matches_float64_math():
    """Float32 inputs are processed in float64 inside; the result is the float64 reference of the same
    (upcast) inputs, rounded to float32, and within a pixel flip of the naive float32 version."""
    s = testing.room_scene(2, 3, 37, 53, seed=7, invalid_fraction=0.1).to(torch.float32)
    M = overlap(s, 3, 5)
    assert M.dtype == torch.float32
    ref64 = R.patch_overlap(s.depth.double(), s.K.double(), s.cam_to_world.double(), 3, 5)
    torch.testing.assert_close(M, ref64.float(), rtol=1e-6, atol=1e-7)
    naive32 = reference(s, 3, 5)
    assert (M - naive32).abs().max() <= 0.05


def test_mixed_dtypes_depth_f32_cameras_f64():
    s = testing.room_scene(1, 3, 21, 25, seed=8)
    M = hatch_ext.patch_overlap(s.depth.float(), s.K, s.cam_to_world, 3, 3)
    ref = R.patch_overlap(s.depth.float().double(), s.K, s.cam_to_world, 3, 3)
    torch.testing.assert_close(M, ref.float(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shift,expected_pairs", [(4, "whole"), (2, "half")])
def test_plane_pair_analytic(shift, expected_pairs):
    """Fronto-parallel plane, pure sideways translation: the overlap is known by hand."""
    s = testing.plane_pair(H=12, W=16, shift_px=shift)
    M = overlap(s, 3, 4)[0]
    expected = torch.zeros(12, 12, dtype=torch.float64)
    for row in range(3):
        for col in range(4):
            i = row * 4 + col
            if expected_pairs == "whole":  # 4 px = one cell: cell col -> col - 1, col 0 falls off
                if col > 0:
                    expected[i, i - 1] = 1
            else:  # 2 px = half a cell: half stays, half moves left (or falls off for col 0)
                expected[i, i] = 0.5
                if col > 0:
                    expected[i, i - 1] = 0.5
    assert torch.equal(M[0, 1], expected)
    # View 1 -> 0: pixels move right by `shift`; the transpose rule holds for this symmetric rig.
    assert torch.equal(M[1, 0], expected.T)
    assert_blocks_a_eq_c_zero(M[None])


def test_plane_pair_with_stride_and_invalid_pixels():
    """Stride 2 on the whole-cell shift: every taking-part pixel still maps a whole cell; an invalid
    (NaN / 0 / -1 / inf) taking-part pixel leaves the denominator, a skipped one is never looked at."""
    s = testing.plane_pair(H=12, W=16, shift_px=4)
    depth = s.depth.clone()
    depth[0, 0, 0, 4] = float("nan")   # taking part (row 0, col 4), cell 1
    depth[0, 0, 0, 5] = 0.0            # not taking part (col 5)
    depth[0, 0, 2, 6] = -1.0           # taking part, cell 1
    depth[0, 0, 4, 8] = float("inf")   # taking part, cell 2
    s = testing.Scene(depth, s.K, s.cam_to_world)
    M = overlap(s, 3, 4, stride=2)
    torch.testing.assert_close(M, reference(s, 3, 4, stride=2), rtol=0, atol=0)
    # Cell 1 of view 0 (rows 0-3, cols 4-7) has 2 x 2 taking-part pixels, 2 of them invalid: the
    # other 2 all land in cell 0 of view 1.
    assert M[0, 0, 1, 1, 0] == 1
    # View 1 looks up view 0's depth: view-1 pixels landing on the NaN / -1 / inf pixels are rejected.
    # Cell 0 of view 1: (0,0) (0,2) (2,0) (2,2) land on (0,4) NaN, (0,6), (2,4), (2,6) = -1.
    assert M[0, 1, 0, 0, 1] == 0.5
    # Cell 5 of view 1: (4,4) (4,6) (6,4) (6,6) land on (4,8) = inf, and three valid pixels.
    assert M[0, 1, 0, 5, 6] == 0.75


def test_no_overlap_cameras_facing_away():
    H, W = 15, 17
    K = testing.intrinsics(H, W, fov_deg=70)
    room = torch.tensor([3.0, 2.5, 1.5], dtype=torch.float64)
    pos = torch.zeros(3, dtype=torch.float64)
    poses = [testing.look_pose(pos, yaw, 0.0) for yaw in (0.0, math.pi, math.pi / 2 + 0.05)]
    depth = torch.stack([testing.render_depth(K, T, H, W, room, []) for T in poses])[None]
    s = testing.Scene(depth, K.expand(1, 3, 3, 3).clone(), torch.stack(poses)[None])
    M = overlap(s, 3, 3)
    torch.testing.assert_close(M, reference(s, 3, 3), rtol=0, atol=0)
    assert torch.all(M[0, 0, 1] == 0) and torch.all(M[0, 1, 0] == 0)  # back to back
    assert torch.all(M == 0)  # 70 deg fov, 90 deg apart: no overlap at all


def _occluder_rig(H=31, W=43):
    """Two cameras 0.6 m apart facing the +x wall of the room; `sphere` stands between camera 1 and the
    wall, off camera 0's line of sight to the region it hides."""
    K = testing.intrinsics(H, W, fov_deg=60)
    room = torch.tensor([3.0, 2.5, 1.5], dtype=torch.float64)
    T0 = testing.look_pose(torch.tensor([0.0, -0.3, 0.0], dtype=torch.float64), 0.0, 0.0)
    T1 = testing.look_pose(torch.tensor([0.0, 0.3, 0.0], dtype=torch.float64), 0.0, 0.0)
    sphere = (torch.tensor([1.2, 0.45, 0.0], dtype=torch.float64), 0.3)
    d0 = testing.render_depth(K, T0, H, W, room, [])
    d1_clear = testing.render_depth(K, T1, H, W, room, [])
    d1_occ = testing.render_depth(K, T1, H, W, room, [sphere])
    Ks = K.expand(1, 2, 3, 3).clone()
    Ts = torch.stack([T0, T1])[None]
    clear = testing.Scene(torch.stack([d0, d1_clear])[None], Ks, Ts)
    occluded = testing.Scene(torch.stack([d0, d1_occ])[None], Ks, Ts)
    return clear, occluded, sphere, d0, K, T0, T1


def test_depth_test_rejects_hidden_pixels():
    """The sphere hides part of the wall from camera 1 only. View-0 pixels on that part of the wall
    land where view 1 sees the sphere (nearer than the wall): the depth test must reject exactly those,
    and nothing else changes; with a tolerance wider than the sphere-to-wall gap they pass again."""
    clear, occluded, (centre, radius), d0, K, T0, T1 = _occluder_rig()
    M_clear, M_occ = overlap(clear, 3, 4), overlap(occluded, 3, 4)
    torch.testing.assert_close(M_occ, reference(occluded, 3, 4), rtol=0, atol=0)
    torch.testing.assert_close(M_clear, reference(clear, 3, 4), rtol=0, atol=0)

    visible_clear = M_clear[0, 0, 1].sum(-1)  # per cell of view 0: fraction visible in view 1
    visible_occ = M_occ[0, 0, 1].sum(-1)
    assert torch.all(visible_occ <= visible_clear)
    # Independent count of the hidden pixels: the segment camera 1 -> wall point of each view-0 pixel
    # passes through the sphere.
    H, W = d0.shape
    rr, cc = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    rays = torch.linalg.inv(K) @ torch.stack([cc, rr, torch.ones_like(rr)]).reshape(3, -1)
    X = T0[:3, :3] @ (rays * d0.reshape(1, -1)) + T0[:3, 3:]            # wall points, world
    o = T1[:3, 3:]
    seg = X - o
    t = ((centre[:, None] - o) * seg).sum(0) / (seg * seg).sum(0)
    closest = o + seg * t.clamp(0, 1)
    hidden = ((closest - centre[:, None]).norm(dim=0) < radius).reshape(H, W)
    n_hidden = int(hidden.sum())
    assert n_hidden > 20  # the rig really hides a patch of the wall
    cell_px = torch.zeros(12, dtype=torch.float64)
    cell_px.index_add_(0, R.cell_index(rr.long(), cc.long(), H, W, 3, 4).reshape(-1),
                       torch.ones(H * W, dtype=torch.float64))
    rejected = float(((visible_clear - visible_occ) * cell_px).sum())
    # Pixel-exact up to the sphere's silhouette edge (nearest-pixel lookup).
    assert abs(rejected - n_hidden) <= 0.2 * n_hidden
    # Cells with no hidden pixel are unchanged.
    hidden_cells = torch.zeros(12, dtype=torch.bool)
    hidden_cells[R.cell_index(rr.long(), cc.long(), H, W, 3, 4)[hidden].unique()] = True
    assert torch.equal(visible_occ[~hidden_cells], visible_clear[~hidden_cells])
    assert torch.all(visible_occ[hidden_cells] < visible_clear[hidden_cells])
    # A tolerance wider than the gap between sphere and wall accepts the hidden pixels again.
    torch.testing.assert_close(overlap(occluded, 3, 4, abs_tol=10.0)[0, 0, 1],
                               overlap(clear, 3, 4, abs_tol=10.0)[0, 0, 1], rtol=0, atol=0)


def test_stride_larger_than_image():
    """Only pixel (0, 0) takes part: cell 0 is all or nothing, every other cell has no pixel -> 0."""
    s = testing.room_scene(1, 3, 13, 17, seed=9)
    M = overlap(s, 2, 2, stride=100)
    torch.testing.assert_close(M, reference(s, 2, 2, stride=100), rtol=0, atol=0)
    assert torch.all(M[..., 1:, :] == 0)


def test_grid_equal_to_image():
    s = testing.room_scene(1, 2, 7, 9, seed=10)
    torch.testing.assert_close(overlap(s, 7, 9), reference(s, 7, 9), rtol=0, atol=1e-12)


def test_repeated_runs_and_thread_counts_bitwise_identical():
    s = testing.room_scene(2, 3, 37, 53, seed=11, invalid_fraction=0.1).to(torch.float32)
    first = overlap(s, 3, 5)
    for _ in range(3):
        assert torch.equal(overlap(s, 3, 5), first)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(overlap(s, 3, 5), first)
    finally:
        torch.set_num_threads(threads)


def test_output_fully_written_over_poisoned_memory():
    """The kernel allocates its output uninitialised: free a NaN-filled buffer of the same size first
    (the allocator hands the memory back) so that any element left unwritten shows up."""
    s = testing.room_scene(2, 3, 21, 29, seed=12, invalid_fraction=0.1)
    ref = reference(s, 3, 4)
    for _ in range(3):
        poison = torch.full(ref.shape, float("nan"), dtype=ref.dtype)
        del poison
        M = overlap(s, 3, 4)
        assert not torch.isnan(M).any()
        torch.testing.assert_close(M, ref, rtol=0, atol=1e-12)  # includes every zero


def test_non_contiguous_inputs():
    s = testing.room_scene(1, 3, 23, 19, seed=13, invalid_fraction=0.1)
    depth_t = s.depth.transpose(-1, -2).contiguous().transpose(-1, -2)       # column-major images
    K_big = torch.zeros(1, 3, 3, 6, dtype=torch.float64)
    K_big[..., ::2] = s.K
    K_strided = K_big[..., ::2]
    T_perm = s.cam_to_world.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not (depth_t.is_contiguous() or K_strided.is_contiguous() or T_perm.is_contiguous())
    M = hatch_ext.patch_overlap(depth_t, K_strided, T_perm, 3, 2)
    torch.testing.assert_close(M, reference(s, 3, 2), rtol=0, atol=1e-12)


def test_opcheck():
    s = testing.room_scene(1, 2, 11, 13, seed=14, invalid_fraction=0.1)
    for dt in (torch.float64, torch.float32):
        sd = s.to(dt)
        torch.library.opcheck(torch.ops.hatch.patch_overlap.default,
                              (sd.depth, sd.K, sd.cam_to_world, 2, 3, 0.05, 0.05, 1))


def test_torch_compile_fullgraph_same_values():
    s = testing.room_scene(1, 3, 17, 19, seed=15, invalid_fraction=0.05)
    emb = torch.randn(1, 3, 6, 5, dtype=torch.float64)

    def f(depth, K, T, emb):
        M = torch.ops.hatch.patch_overlap(depth, K, T, 2, 3, 0.05, 0.05, 1)
        sim = torch.ops.hatch.cell_similarity(emb)
        return M * sim, M

    compiled = torch.compile(f, fullgraph=True)
    out_c, M_c = compiled(s.depth, s.K, s.cam_to_world, emb)
    out_e, M_e = f(s.depth, s.K, s.cam_to_world, emb)
    assert torch.equal(M_c, M_e)
    torch.testing.assert_close(out_c, out_e, rtol=0, atol=0)
    assert M_e.sum() > 0
