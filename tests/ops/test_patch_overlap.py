"""hatch::patch_overlap on every device (the `device` fixture: CPU, and CUDA where built) against the
naive reference (hatch_ext.reference), against the CPU kernel and against answers known by hand: random
rooms with occluders and invalid depth, odd image sizes, non-square grids, strides, cameras that see
nothing of each other, the analytic plane pair, the depth test; then its error cases (bad input gets a
specific error that names the argument, never a crash, a hang or a silent NaN).

On CUDA a comparison with the reference or the CPU allows one pixel per (view pair, cell row)
(_cases.assert_overlap_close: FMA contraction); hand-made integer-shift rigs are exact on every device."""
import math

import pytest
import torch
from _cases import BAD_GEOMETRY, assert_overlap_close, bad_geometry, is_cuda, other_device

import hatch_ext
from hatch_ext import reference as R
from hatch_ext import testing

OPS = torch.ops.hatch
ABS_TOL, REL_TOL = 0.05, 0.05


def overlap(scene, grid_h, grid_w, **kw):
    return hatch_ext.patch_overlap(scene.depth, scene.K, scene.cam_to_world, grid_h, grid_w, **kw)


def reference(scene, grid_h, grid_w, **kw):
    """The float64 reference of the scene, on the CPU."""
    return R.patch_overlap(scene.depth.cpu(), scene.K.cpu(), scene.cam_to_world.cpu(), grid_h, grid_w, **kw)


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
def test_matches_reference_float64(device, B, V, H, W, gh, gw, stride, invalid, occluders, seed):
    s = testing.room_scene(B, V, H, W, seed=seed, invalid_fraction=invalid, occluders=occluders)
    sd = s.to(device)
    M = overlap(sd, gh, gw, stride=stride)
    ref = reference(s, gh, gw, stride=stride)
    assert M.shape == (B, V, V, gh * gw, gh * gw) and M.dtype == torch.float64
    assert M.device.type == device.type
    assert_overlap_close(M, ref, s.depth, gh, gw, stride, rtol=0, atol=1e-12)
    # The case must be a real one: cameras overlap, and the depth test rejects some pixels.
    off = ~torch.eye(V, dtype=torch.bool)
    M = M.cpu()
    assert M[:, off].sum() > 0.1 * B * V * (V - 1)
    if occluders:
        assert overlap(sd, gh, gw, stride=stride, abs_tol=100.0).sum().cpu() > M.sum()
    assert_blocks_a_eq_c_zero(M)
    assert torch.all(M >= 0) and torch.all(M.sum(-1) <= 1 + 1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("grid_h,grid_w,stride", [(3, 5, 1), (4, 4, 2), (5, 3, 3), (10, 10, 1)])
def test_matches_reference_and_cpu(device, dtype, grid_h, grid_w, stride):
    # (10, 10) has P^2 = 10000 bins: on CUDA the global-atomics path instead of the shared-memory
    # histogram.
    s = testing.room_scene(2, 3, 23, 29, seed=grid_h + stride, dtype=dtype, occluders=2,
                           invalid_fraction=0.1)
    args = (grid_h, grid_w, ABS_TOL, REL_TOL, stride)
    M = OPS.patch_overlap(s.depth.to(device), s.K.to(device), s.cam_to_world.to(device), *args)
    assert M.dtype == dtype and M.device.type == device.type
    assert M.shape == (2, 3, 3, grid_h * grid_w, grid_h * grid_w)
    # Both kernels reproject in float64 whatever the depth dtype: compare with the float64 reference.
    # Stated tolerance: at most ONE pixel per (view pair, cell row) binned differently, i.e. in row
    # (b, a, c, i) at most one pixel gained and one lost, so an entry differs by at most 1/n_i (n_i =
    # taking-part pixels of cell i; hatch_ext.testing.assert_overlap_within_one_pixel). Not bit
    # equality: nvcc contracts the float64 projection into FMAs where the CPU compiler does not, so a
    # pixel landing within rounding of a .5 pixel boundary or of the depth threshold can bin
    # differently. Everything else (integer counts, the same denominators) is exact.
    ref = R.patch_overlap(s.depth.double(), s.K.double(), s.cam_to_world.double(), *args).to(dtype)
    assert ref.abs().sum() > 0, "the scene must overlap for the test to mean anything"
    testing.assert_overlap_within_one_pixel(M, ref, s.depth, grid_h, grid_w, stride)
    cpu = OPS.patch_overlap(s.depth, s.K, s.cam_to_world, *args)
    testing.assert_overlap_within_one_pixel(M, cpu, s.depth, grid_h, grid_w, stride)
    # The entries are count / n_i in depth's dtype on both devices: where a row's counts agree, its
    # entries agree within one rounding of the division.
    n = testing.cell_pixel_counts(s.depth, grid_h, grid_w, stride)
    rows_equal = ((M.cpu().double() - cpu.double()) * n[:, :, None, :, None]).round().abs().sum(-1) == 0
    torch.testing.assert_close(M.cpu()[rows_equal], cpu[rows_equal], rtol=torch.finfo(dtype).eps,
                               atol=0)


def test_float32_matches_float64_math(device):
    """Float32 inputs are processed in float64 inside; the result is the float64 reference of the same
    (upcast) inputs, rounded to float32, and within a pixel flip of the naive float32 version."""
    s = testing.room_scene(2, 3, 37, 53, seed=7, invalid_fraction=0.1).to(torch.float32)
    M = overlap(s.to(device), 3, 5)
    assert M.dtype == torch.float32
    ref64 = R.patch_overlap(s.depth.double(), s.K.double(), s.cam_to_world.double(), 3, 5)
    assert_overlap_close(M, ref64.float(), s.depth, 3, 5, rtol=1e-6, atol=1e-7)
    naive32 = reference(s, 3, 5)
    assert (M.cpu() - naive32).abs().max() <= 0.05


def test_mixed_dtypes_depth_f32_cameras_f64(device):
    s = testing.room_scene(1, 3, 21, 25, seed=8)
    sd = s.to(device)
    M = hatch_ext.patch_overlap(sd.depth.float(), sd.K, sd.cam_to_world, 3, 3)
    ref = R.patch_overlap(s.depth.float().double(), s.K, s.cam_to_world, 3, 3)
    assert_overlap_close(M, ref.float(), s.depth, 3, 3, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shift,expected_pairs", [(4, "whole"), (2, "half")])
def test_plane_pair_analytic(device, shift, expected_pairs):
    """Fronto-parallel plane, pure sideways translation: the overlap is known by hand. Exact on every
    device, no pixel tolerance: a pure integer shift projects every pixel onto a pixel centre, far from
    any rounding boundary, so FMA contraction cannot move one."""
    s = testing.plane_pair(H=12, W=16, shift_px=shift)
    M = overlap(s.to(device), 3, 4)[0].cpu()
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
    assert M[0, 0].abs().sum() == 0 and M[1, 1].abs().sum() == 0


def test_plane_pair_with_stride_and_invalid_pixels(device):
    """Stride 2 on the whole-cell shift: every taking-part pixel still maps a whole cell; an invalid
    (NaN / 0 / -1 / inf) taking-part pixel leaves the denominator, a skipped one is never looked at.
    An integer-shift rig: exact on every device."""
    s = testing.plane_pair(H=12, W=16, shift_px=4)
    depth = s.depth.clone()
    depth[0, 0, 0, 4] = float("nan")   # taking part (row 0, col 4), cell 1
    depth[0, 0, 0, 5] = 0.0            # not taking part (col 5)
    depth[0, 0, 2, 6] = -1.0           # taking part, cell 1
    depth[0, 0, 4, 8] = float("inf")   # taking part, cell 2
    s = testing.Scene(depth, s.K, s.cam_to_world)
    M = overlap(s.to(device), 3, 4, stride=2).cpu()
    torch.testing.assert_close(M, reference(s, 3, 4, stride=2), rtol=0, atol=0)
    # Cell 1 of view 0 (rows 0-3, cols 4-7) has 2 x 2 taking-part pixels, 2 of them invalid: the
    # other 2 all land in cell 0 of view 1.
    assert M[0, 0, 1, 1, 0] == 1
    # View 1 looks up view 0's depth: view-1 pixels landing on the NaN / -1 / inf pixels are rejected.
    # Cell 0 of view 1: (0,0) (0,2) (2,0) (2,2) land on (0,4) NaN, (0,6), (2,4), (2,6) = -1.
    assert M[0, 1, 0, 0, 1] == 0.5
    # Cell 5 of view 1: (4,4) (4,6) (6,4) (6,6) land on (4,8) = inf, and three valid pixels.
    assert M[0, 1, 0, 5, 6] == 0.75


def test_no_overlap_cameras_facing_away(device):
    H, W = 15, 17
    K = testing.intrinsics(H, W, fov_deg=70)
    room = torch.tensor([3.0, 2.5, 1.5], dtype=torch.float64)
    pos = torch.zeros(3, dtype=torch.float64)
    poses = [testing.look_pose(pos, yaw, 0.0) for yaw in (0.0, math.pi, math.pi / 2 + 0.05)]
    depth = torch.stack([testing.render_depth(K, T, H, W, room, []) for T in poses])[None]
    s = testing.Scene(depth, K.expand(1, 3, 3, 3).clone(), torch.stack(poses)[None])
    M = overlap(s.to(device), 3, 3).cpu()
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



def test_depth_test_rejects_hidden_pixels(device):
    """The sphere hides part of the wall from camera 1 only. View-0 pixels on that part of the wall
    land where view 1 sees the sphere (nearer than the wall): the depth test must reject exactly those,
    and nothing else changes; with a tolerance wider than the sphere-to-wall gap they pass again."""
    clear, occluded, (centre, radius), d0, K, T0, T1 = _occluder_rig()
    clear_d, occluded_d = clear.to(device), occluded.to(device)
    M_clear, M_occ = overlap(clear_d, 3, 4), overlap(occluded_d, 3, 4)
    assert_overlap_close(M_occ, reference(occluded, 3, 4), occluded.depth, 3, 4, rtol=0, atol=0)
    assert_overlap_close(M_clear, reference(clear, 3, 4), clear.depth, 3, 4, rtol=0, atol=0)
    M_clear, M_occ = M_clear.cpu(), M_occ.cpu()

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
    torch.testing.assert_close(overlap(occluded_d, 3, 4, abs_tol=10.0)[0, 0, 1],
                               overlap(clear_d, 3, 4, abs_tol=10.0)[0, 0, 1], rtol=0, atol=0)


def test_stride_larger_than_image(device):
    """Only pixel (0, 0) takes part: cell 0 is all or nothing, every other cell has no pixel -> 0."""
    s = testing.room_scene(1, 3, 13, 17, seed=9)
    M = overlap(s.to(device), 2, 2, stride=100)
    assert_overlap_close(M, reference(s, 2, 2, stride=100), s.depth, 2, 2, 100, rtol=0, atol=0)
    assert torch.all(M[..., 1:, :] == 0)


def test_grid_equal_to_image(device):
    s = testing.room_scene(1, 2, 7, 9, seed=10)
    assert_overlap_close(overlap(s.to(device), 7, 9), reference(s, 7, 9), s.depth, 7, 9, rtol=0, atol=1e-12)


def test_repeated_runs_and_thread_counts_bitwise_identical(device):
    """Every run gives the same bits; on the CPU also with one thread."""
    s = testing.room_scene(2, 3, 37, 53, seed=11, invalid_fraction=0.1).to(torch.float32).to(device)
    first = overlap(s, 3, 5)
    for _ in range(3):
        assert torch.equal(overlap(s, 3, 5), first)
    if is_cuda(device):
        return
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(overlap(s, 3, 5), first)
    finally:
        torch.set_num_threads(threads)


def test_output_fully_written_over_poisoned_memory(device):
    """The kernel allocates its output uninitialised: free a NaN-filled buffer of the same size first
    (the allocator hands the memory back) so that any element left unwritten shows up. (On CUDA every
    op's outputs over a poisoned allocator cache: test_cuda.py.)"""
    s = testing.room_scene(2, 3, 21, 29, seed=12, invalid_fraction=0.1)
    sd = s.to(device)
    ref = reference(s, 3, 4)
    for _ in range(3):
        poison = torch.full(ref.shape, float("nan"), dtype=ref.dtype, device=device)
        del poison
        M = overlap(sd, 3, 4)
        assert not torch.isnan(M).any()
        assert_overlap_close(M, ref, s.depth, 3, 4, rtol=0, atol=1e-12)  # includes every zero


def test_non_contiguous_inputs(device):
    s = testing.room_scene(1, 3, 23, 19, seed=13, invalid_fraction=0.1)
    sd = s.to(device)
    depth_t = sd.depth.transpose(-1, -2).contiguous().transpose(-1, -2)       # column-major images
    K_big = torch.zeros(1, 3, 3, 6, dtype=torch.float64, device=device)
    K_big[..., ::2] = sd.K
    K_strided = K_big[..., ::2]
    T_perm = sd.cam_to_world.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not (depth_t.is_contiguous() or K_strided.is_contiguous() or T_perm.is_contiguous())
    M = hatch_ext.patch_overlap(depth_t, K_strided, T_perm, 3, 2)
    assert_overlap_close(M, reference(s, 3, 2), s.depth, 3, 2, rtol=0, atol=1e-12)


def test_opcheck(device):
    s = testing.room_scene(1, 2, 11, 13, seed=14, invalid_fraction=0.1).to(device)
    for dt in (torch.float64, torch.float32):
        sd = s.to(dt)
        torch.library.opcheck(torch.ops.hatch.patch_overlap.default,
                              (sd.depth, sd.K, sd.cam_to_world, 2, 3, 0.05, 0.05, 1))


def test_torch_compile_fullgraph_same_values():
    """Inductor, fullgraph, on the CPU."""
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


# ------------------------------------------------------------------------------------- error cases
ERRORS = (ValueError, TypeError, RuntimeError)
CPU_ONLY = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)


@pytest.fixture
def scene(device):
    return testing.room_scene(2, 3, 12, 14, seed=0).to(device)


def call_overlap(depth, K, T, grid_h=3, grid_w=2, abs_tol=0.05, rel_tol=0.05, stride=1):
    return torch.ops.hatch.patch_overlap(depth, K, T, grid_h, grid_w, abs_tol, rel_tol, stride)


def test_good_input_runs(scene):
    M = call_overlap(scene.depth, scene.K, scene.cam_to_world)
    assert M.shape == (2, 3, 3, 6, 6) and torch.isfinite(M).all()


def _singular_K(s):
    K = s.K.clone()
    K[1, 2, 0, 0] = 0.0  # focal length 0
    return K


def _repeated_row_K(s):
    K = s.K.clone()
    K[0, 1, 1] = K[0, 1, 0]
    return K


def _with(t, index, value):
    t = t.clone()
    t[index] = value
    return t


# (name, builder(scene) -> kwargs for call_overlap, message regex)
BAD_OVERLAP = [
    ("depth rank 3", lambda s: dict(depth=s.depth[0]), r"'depth'.*\[B, V, H, W\]"),
    ("depth rank 5", lambda s: dict(depth=s.depth[None]), r"'depth'.*\[B, V, H, W\]"),
    ("depth int", lambda s: dict(depth=s.depth.long()), r"'depth'.*float32 or float64"),
    ("depth bool", lambda s: dict(depth=s.depth > 1), r"'depth'.*float32 or float64"),
    ("depth complex", lambda s: dict(depth=s.depth.to(torch.complex128)), r"'depth'.*float32 or float64"),
    ("depth float16", lambda s: dict(depth=s.depth.half()), r"'depth'.*float32 or float64"),
    ("empty batch", lambda s: dict(depth=s.depth[:0], K=s.K[:0], T=s.cam_to_world[:0]),
     r"'depth' must be non-empty"),
    ("zero-width image", lambda s: dict(depth=s.depth[..., :0]), r"'depth' must be non-empty"),
    ("K rank", lambda s: dict(K=s.K[0]), r"'K'.*\[B, V, 3, 3\]"),
    ("K 4x4", lambda s: dict(K=s.cam_to_world), r"'K'.*rows"),
    ("K wrong B", lambda s: dict(K=s.K[:1]), r"'K'.*B \(samples"),
    ("K wrong V", lambda s: dict(K=s.K[:, :2]), r"'K'.*V \(views"),
    ("K int", lambda s: dict(K=s.K.int()), r"'K' must be a floating-point"),
    ("K complex", lambda s: dict(K=s.K.to(torch.complex64)), r"'K' must be a floating-point"),
    ("K singular", lambda s: dict(K=_singular_K(s)), r"'K' is singular at sample 1, view 2"),
    ("K repeated row", lambda s: dict(K=_repeated_row_K(s)), r"'K' is singular at sample 0, view 1"),
    ("K nan", lambda s: dict(K=_with(s.K, (0, 0, 0, 2), math.nan)), r"'K' has non-finite"),
    ("pose rank", lambda s: dict(T=s.cam_to_world[0]), r"'cam_to_world'.*\[B, V, 4, 4\]"),
    ("pose 3x4", lambda s: dict(T=s.cam_to_world[..., :3, :]), r"'cam_to_world'.*rows"),
    ("pose wrong B", lambda s: dict(T=torch.cat([s.cam_to_world] * 2)), r"'cam_to_world'.*B \(samples"),
    ("pose wrong V", lambda s: dict(T=s.cam_to_world[:, :1]), r"'cam_to_world'.*V \(views"),
    ("pose int", lambda s: dict(T=s.cam_to_world.long()), r"'cam_to_world' must be a floating-point"),
    ("pose complex", lambda s: dict(T=s.cam_to_world.to(torch.complex128)),
     r"'cam_to_world' must be a floating-point"),
    ("pose nan", lambda s: dict(T=_with(s.cam_to_world, (1, 0, 0, 3), math.nan)),
     r"'cam_to_world' has non-finite"),
    ("pose inf", lambda s: dict(T=_with(s.cam_to_world, (0, 2, 1, 1), math.inf)),
     r"'cam_to_world' has non-finite"),
    ("pose singular", lambda s: dict(T=_with(s.cam_to_world, (0, 1, slice(0, 3), 0), 0.0)),
     r"'cam_to_world' has a singular rotation"),
    ("grid taller than image", lambda s: dict(grid_h=13), r"grid.*larger than the depth image"),
    ("grid wider than image", lambda s: dict(grid_w=15), r"grid.*larger than the depth image"),
    ("grid 0", lambda s: dict(grid_h=0), r"grid_h and grid_w must be >= 1"),
    ("grid negative", lambda s: dict(grid_w=-2), r"grid_h and grid_w must be >= 1"),
    ("abs_tol negative", lambda s: dict(abs_tol=-0.01), r"abs_tol must be finite and >= 0"),
    ("abs_tol nan", lambda s: dict(abs_tol=math.nan), r"abs_tol must be finite and >= 0"),
    ("rel_tol negative", lambda s: dict(rel_tol=-1.0), r"rel_tol must be finite and >= 0"),
    ("rel_tol inf", lambda s: dict(rel_tol=math.inf), r"rel_tol must be finite and >= 0"),
    ("stride 0", lambda s: dict(stride=0), r"stride must be >= 1"),
    ("stride negative", lambda s: dict(stride=-3), r"stride must be >= 1"),
]


@pytest.mark.parametrize("name,build,match", BAD_OVERLAP, ids=[b[0] for b in BAD_OVERLAP])
def test_bad_input(scene, name, build, match):
    kw = dict(depth=scene.depth, K=scene.K, T=scene.cam_to_world)
    kw.update(build(scene))
    with pytest.raises(ERRORS, match=match):
        call_overlap(**kw)


def test_error_types(scene):
    """Shape/value problems are ValueError, dtype problems TypeError (as torch's own ops)."""
    with pytest.raises(ValueError, match="hatch.patch_overlap: argument 'K'"):
        call_overlap(scene.depth, scene.K[:1], scene.cam_to_world)
    with pytest.raises(TypeError, match="hatch.patch_overlap: argument 'depth'"):
        call_overlap(scene.depth.int(), scene.K, scene.cam_to_world)


def test_public_wrapper_names_argument(scene):
    with pytest.raises(ValueError, match="stride must be >= 1"):
        hatch_ext.patch_overlap(scene.depth, scene.K, scene.cam_to_world, 3, stride=0)


@pytest.mark.parametrize("bad", sorted(BAD_GEOMETRY))
def test_bad_geometry_same_message_as_cpu(device, bad):
    """K and the poses are checked as on the CPU, with the CPU's error type and message (on CUDA on the
    host, outside graph capture: csrc/cuda/reprojection.cuh)."""
    s = testing.room_scene(1, 2, 13, 17, seed=40, occluders=2, invalid_fraction=0.1)
    K, T = bad_geometry(s, bad)
    with pytest.raises(ValueError, match=BAD_GEOMETRY[bad]) as cpu_err:
        OPS.patch_overlap(s.depth, K, T, 3, 4, ABS_TOL, REL_TOL, 1)
    with pytest.raises(ValueError, match=BAD_GEOMETRY[bad]) as err:
        OPS.patch_overlap(s.depth.to(device), K.to(device), T.to(device), 3, 4, ABS_TOL, REL_TOL, 1)
    assert str(err.value).splitlines()[0] == str(cpu_err.value).splitlines()[0]


@pytest.mark.parametrize("which", ["K", "cam_to_world"])
def test_tensors_on_different_devices_cpu_kernel(which):
    """A second device without a GPU: "meta". A meta argument routes the public call to the fake
    implementation, so the CPU kernel's own device check is reached by dispatching to it directly."""
    scene = testing.room_scene(2, 3, 12, 14, seed=0)
    K = scene.K.to("meta") if which == "K" else scene.K
    T = scene.cam_to_world.to("meta") if which == "cam_to_world" else scene.cam_to_world
    with pytest.raises(ValueError, match=rf"'{which}' is on meta but 'depth' is on cpu"):
        torch.ops.hatch.patch_overlap.default.redispatch(CPU_ONLY, scene.depth, K, T, 3, 2, 0.05,
                                                         0.05, 1)


@pytest.mark.parametrize("which", ["K", "cam_to_world"])
def test_devices_checked_through_public_call(scene, device, which):
    """Through the public call a mix with "meta" reaches the fake implementation, which checks devices
    too; a CPU tensor beside CUDA ones reaches the CUDA kernel's check."""
    other = other_device(device)
    K = scene.K.to(other) if which == "K" else scene.K
    T = scene.cam_to_world.to(other) if which == "cam_to_world" else scene.cam_to_world
    with pytest.raises(ValueError, match=rf"'{which}' is on {other} but 'depth' is on {device.type}"):
        hatch_ext.patch_overlap(scene.depth, K, T, 3, 2)
