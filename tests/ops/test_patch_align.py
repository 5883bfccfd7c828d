"""hatch.patch_align (reprojection, targets and InfoNCE fused) on every device (the `device` fixture:
CPU, and CUDA where built) against the naive reference on rendered scenes (odd image sizes, non-square
grids, invalid depth, occluders, stride), against soft_infonce fed the overlap and against the CPU
kernel; plus no-overlap, low precision, gradcheck, opcheck, torch.compile, determinism and the dense
tiled path; then the error cases of patch_align and patch_align_backward (a specific error that names
the argument: never a crash, a hang or a silent NaN).

On CUDA the overlap inside may differ from the reference's by one pixel per (view pair, cell row)
(FMA contraction; test_patch_overlap.py), which moves a target: where a test compares with the reference
loss on CUDA, it is the reference loss on the CUDA kernel's overlap, and that overlap is asserted to be
within one pixel of the reference overlap (ref below). test_matches_reference_and_cpu compares with the
plain reference on every device, as stated for its scenes."""
import math

import pytest
import torch
from _cases import BAD_GEOMETRY, bad_geometry, cuda_tol, is_cuda, other_device

import hatch_ext
from hatch_ext import reference as R
from hatch_ext import testing

F64 = torch.float64
OPS = torch.ops.hatch
TAU_T, TAU_P, ABS_TOL, REL_TOL = 0.1, 0.07, 0.05, 0.05


def randn(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def op(emb, s, gh, gw, stride=1, min_overlap=0.0, tau_t=TAU_T, tau_p=TAU_P, device="cpu"):
    """(loss, row_lse, num_valid, grad) of torch.ops.hatch.patch_align on `device`, on the CPU."""
    emb = emb.detach().to(device).requires_grad_()
    s = s.to(device)
    loss, row_lse, nv = torch.ops.hatch.patch_align(emb, s.depth, s.K, s.cam_to_world, gh, gw, tau_t,
                                                    tau_p, ABS_TOL, REL_TOL, stride, min_overlap)
    (grad,) = torch.autograd.grad(loss, emb)
    return loss.detach().cpu(), row_lse.cpu(), nv.cpu(), grad.cpu()


def ref(emb, s, gh, gw, stride=1, min_overlap=0.0, tau_t=TAU_T, tau_p=TAU_P, device="cpu"):
    """(loss, num_valid, grad) of the reference, on the CPU. For a CUDA result: the reference loss on the
    CUDA kernel's overlap, which must be within one pixel of the reference overlap (module docstring)."""
    emb = emb.detach().cpu().requires_grad_()
    s = s.to("cpu")
    if is_cuda(device):
        sd = s.to(device)
        M = OPS.patch_overlap(sd.depth, sd.K, sd.cam_to_world, gh, gw, ABS_TOL, REL_TOL, stride).cpu()
        testing.assert_overlap_within_one_pixel(
            M, R.patch_overlap(s.depth, s.K, s.cam_to_world, gh, gw, ABS_TOL, REL_TOL, stride), s.depth, gh,
            gw, stride)
        loss, nv = R.soft_infonce(emb, M, tau_t, tau_p, min_overlap, return_num_valid=True)
    else:
        loss, nv = R.patch_align(emb, s.depth, s.K, s.cam_to_world, gh, gw, tau_t, tau_p, ABS_TOL,
                                 REL_TOL, stride, min_overlap, return_num_valid=True)
    (grad,) = torch.autograd.grad(loss, emb)
    return loss.detach(), nv, grad


def assert_matches(emb, s, gh, gw, rtol=1e-10, atol=1e-12, device="cpu", **kw):
    loss, row_lse, nv, grad = op(emb, s, gh, gw, device=device, **kw)
    rloss, rnv, rgrad = ref(emb, s, gh, gw, device=device, **kw)
    rtol, atol = cuda_tol(device, emb.dtype, rtol, atol)
    lse_atol = atol * 10 if is_cuda(device) else atol
    assert nv.item() == rnv.item()
    torch.testing.assert_close(loss, rloss, rtol=rtol, atol=atol)
    torch.testing.assert_close(grad, rgrad, rtol=rtol, atol=atol)
    # The saved row log-sum-exp: cos / tau_p of every cell against every cell of the other view.
    e = R.normalize(emb)
    lse = (torch.einsum("bapd,bcqd->bacpq", e, e) / kw.get("tau_p", TAU_P)).logsumexp(-1)
    off = ~torch.eye(emb.shape[1], dtype=torch.bool)
    torch.testing.assert_close(row_lse[:, off], lse[:, off].to(row_lse.dtype), rtol=rtol, atol=lse_atol)
    assert torch.all(row_lse[:, ~off] == 0)
    return loss, nv


@pytest.mark.parametrize("stride", [1, 2])
def test_room_scene_matches_reference(device, stride):
    s = testing.room_scene(2, 3, 23, 31, seed=1, occluders=2, invalid_fraction=0.1)
    emb = randn(2, 3, 15, 7, seed=2)
    _, nv = assert_matches(emb, s, 3, 5, stride=stride, device=device)
    assert nv.item() > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tile_rows", [None, "5"])
@pytest.mark.parametrize("grid_h,grid_w,stride", [(4, 3, 1), (3, 5, 2)])
def test_matches_reference_and_cpu(device, dtype, tile_rows, grid_h, grid_w, stride, monkeypatch):
    """Against the plain reference (float64) with the tolerance stated for CUDA results on every
    device, against the two-step soft_infonce(patch_overlap(...)) on the same device, and against the
    CPU kernel."""
    if tile_rows is not None:
        monkeypatch.setenv("HATCH_LOSS_TILE_ROWS", tile_rows)
    s = testing.room_scene(2, 3, 25, 31, seed=5 + stride, occluders=2, invalid_fraction=0.1)
    P = grid_h * grid_w
    emb = randn(2, 3, P, 7, seed=6).to(dtype)
    geo = (grid_h, grid_w, TAU_T, TAU_P, ABS_TOL, REL_TOL, stride, 0.0)

    def fused(dev):
        sd = s.to(dev)
        return lambda x: OPS.patch_align(x, sd.depth, sd.K, sd.cam_to_world, *geo)

    def loss_and_grad(fn, x):
        x = x.detach().clone().requires_grad_()
        loss, lse, nv = fn(x)
        loss.backward()
        return loss.detach(), lse.detach(), nv, x.grad

    loss, lse, nv, grad = loss_and_grad(fused(device), emb.to(device))
    xr = emb.double().clone().requires_grad_()
    ref_loss, nv_ref = R.patch_align(xr, s.depth, s.K, s.cam_to_world, grid_h, grid_w, TAU_T, TAU_P,
                                     ABS_TOL, REL_TOL, stride, 0.0, return_num_valid=True)
    ref_loss.backward()
    assert nv_ref > 0
    assert nv.item() == nv_ref.item()
    rtol, atol = (1e-9, 1e-11) if dtype == torch.float64 else (1e-3, 2e-5)
    e = R.normalize(emb.double())
    off = (~torch.eye(3, dtype=torch.bool))[None, :, :, None]
    ref_lse = torch.logsumexp(torch.einsum("bapd,bcqd->bacpq", e, e) / TAU_P, dim=-1) * off
    torch.testing.assert_close(loss.cpu().double(), ref_loss.detach(), rtol=rtol, atol=atol)
    torch.testing.assert_close(lse.cpu().double(), ref_lse, rtol=rtol, atol=atol * 10)
    torch.testing.assert_close(grad.cpu().double(), xr.grad, rtol=rtol, atol=atol)

    # The fused op equals the two-step soft_infonce(patch_overlap(...)) on the same device.
    sd = s.to(device)
    M = OPS.patch_overlap(sd.depth, sd.K, sd.cam_to_world, grid_h, grid_w, ABS_TOL, REL_TOL, stride)
    loss2, lse2, nv2, grad2 = loss_and_grad(
        lambda x: OPS.soft_infonce(x, M, TAU_T, TAU_P, 0.0), emb.to(device))
    assert nv2.item() == nv.item()
    torch.testing.assert_close(loss, loss2, rtol=rtol, atol=atol)
    torch.testing.assert_close(grad, grad2, rtol=rtol, atol=atol)

    loss_c, lse_c, nv_c, grad_c = loss_and_grad(fused("cpu"), emb)
    assert nv_c.item() == nv.item()
    torch.testing.assert_close(loss.cpu(), loss_c, rtol=rtol, atol=atol)
    torch.testing.assert_close(lse.cpu(), lse_c, rtol=rtol, atol=atol * 10)
    torch.testing.assert_close(grad.cpu(), grad_c, rtol=rtol, atol=atol)


def test_matches_soft_infonce_on_reference_overlap(device):
    """The fused op equals soft_infonce(emb, reference.patch_overlap(...)) (non-square grid 4 x 3); on
    CUDA soft_infonce is fed the CUDA patch_overlap (within one pixel of the reference's: module
    docstring), within the tolerance stated for CUDA results."""
    s = testing.room_scene(1, 4, 21, 17, seed=3, occluders=1, invalid_fraction=0.05)
    emb = randn(1, 4, 12, 6, seed=4)
    loss, row_lse, nv, grad = op(emb, s, 4, 3, device=device)
    M = R.patch_overlap(s.depth, s.K, s.cam_to_world, 4, 3, ABS_TOL, REL_TOL)
    if is_cuda(device):
        sd = s.to(device)
        M_dev = OPS.patch_overlap(sd.depth, sd.K, sd.cam_to_world, 4, 3, ABS_TOL, REL_TOL, 1)
        testing.assert_overlap_within_one_pixel(M_dev, M, s.depth, 4, 3)
        M = M_dev
    e = emb.detach().to(device).requires_grad_()
    loss2, row_lse2, nv2 = torch.ops.hatch.soft_infonce(e, M, TAU_T, TAU_P, 0.0)
    (grad2,) = torch.autograd.grad(loss2, e)
    assert nv.item() == nv2.item()
    rtol, atol = cuda_tol(device, F64, 1e-12, 1e-14)
    torch.testing.assert_close(loss, loss2.detach().cpu(), rtol=rtol, atol=atol)
    lse_rtol, lse_atol = cuda_tol(device, F64, 0, 0)
    torch.testing.assert_close(row_lse, row_lse2.cpu(), rtol=lse_rtol, atol=lse_atol)
    torch.testing.assert_close(grad, grad2.cpu(), rtol=rtol, atol=atol)


def test_min_overlap(device):
    s = testing.room_scene(2, 3, 23, 31, seed=5, occluders=2)
    emb = randn(2, 3, 15, 7, seed=6)
    _, nv0 = assert_matches(emb, s, 3, 5, device=device)
    _, nv1 = assert_matches(emb, s, 3, 5, min_overlap=0.4, tau_t=0.3, tau_p=0.2, device=device)
    assert 0 < nv1.item() < nv0.item()


def turned_away(s, view):
    """The scene with `view`'s camera rotated 180 degrees about world up: it sees nothing of the
    others (depth stays as rendered, so its pixels are valid but land behind the other cameras)."""
    T = s.cam_to_world.clone()
    c, si = math.cos(math.pi), math.sin(math.pi)
    Rz = torch.tensor([[c, -si, 0], [si, c, 0], [0, 0, 1]], dtype=T.dtype)
    T[:, view, :3, :3] = Rz @ T[:, view, :3, :3]
    return testing.Scene(s.depth, s.K, T)


def test_no_overlap_is_zero_with_zero_grad(device):
    s = testing.room_scene(1, 2, 16, 20, seed=7)
    s_invalid = testing.Scene(torch.zeros_like(s.depth), s.K, s.cam_to_world)
    for scene in (s_invalid, turned_away(s, 1)):
        emb = randn(1, 2, 12, 5, seed=8).to(device).requires_grad_()
        sd = scene.to(device)
        loss, row_lse, nv = torch.ops.hatch.patch_align(emb, sd.depth, sd.K, sd.cam_to_world,
                                                        3, 4, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)
        assert R.patch_overlap(scene.depth, scene.K, scene.cam_to_world, 3, 4).abs().sum() == 0
        loss.backward()
        assert loss.item() == 0.0 and nv.item() == 0
        assert torch.all(emb.grad == 0) and torch.isfinite(row_lse).all()


def test_no_valid_depth_is_zero_with_zero_grad(device):
    """No valid depth at all (B = 2, V = 3): every denominator is 0, so nothing overlaps."""
    emb = randn(2, 3, 6, 5, seed=7).to(device)
    s = testing.room_scene(2, 3, 9, 11, seed=8, occluders=2, invalid_fraction=0.1).to(device)
    depth = torch.zeros_like(s.depth)
    x = emb.clone().requires_grad_()
    loss, _, nv = OPS.patch_align(x, depth, s.K, s.cam_to_world, 2, 3, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1,
                                  0.0)
    loss.backward()
    assert loss.item() == 0.0 and nv.item() == 0 and torch.all(x.grad == 0)
    assert torch.isfinite(x.grad).all()


def test_one_pair_without_overlap(device):
    """V = 3 with view 2 turned away: only the pair (0, 1) contributes."""
    s = turned_away(testing.room_scene(1, 3, 19, 23, seed=9), 2)
    emb = randn(1, 3, 12, 5, seed=10)
    _, nv = assert_matches(emb, s, 3, 4, device=device)
    assert nv.item() > 0
    _, _, _, grad = op(emb, s, 3, 4, device=device)
    assert torch.all(grad[0, 2] == 0) and grad[0, :2].abs().sum() > 0


def test_float32_close_to_float64(device):
    s = testing.room_scene(2, 3, 23, 31, seed=11, occluders=2, invalid_fraction=0.1)
    emb = randn(2, 3, 15, 7, seed=12)
    loss64, lse64, nv64, grad64 = op(emb, s, 3, 5, device=device)
    loss32, lse32, nv32, grad32 = op(emb.float(), s, 3, 5, device=device)
    assert nv32.item() == nv64.item()
    rtol, atol = cuda_tol(device, torch.float32, 1e-5, 1e-5)
    torch.testing.assert_close(loss32.double(), loss64, rtol=rtol, atol=atol)
    torch.testing.assert_close(lse32.double(), lse64, rtol=rtol, atol=atol)
    rtol, atol = cuda_tol(device, torch.float32, 1e-4, 1e-5)
    torch.testing.assert_close(grad32.double(), grad64, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_rule(dtype):
    """Error vs a float32 reference <= 2x the naive reference's error in the same dtype (CPU kernel; the
    CUDA kernels' rule, with a floor of one output rounding: test_cuda.py::test_low_precision_rule)."""
    s = testing.room_scene(2, 3, 23, 31, seed=13, occluders=1, dtype=torch.float32)
    emb = randn(2, 3, 15, 16, seed=14, dtype=dtype)
    rloss, _, rgrad = ref(emb.float(), s, 3, 5)
    loss, row_lse, _, grad = op(emb, s, 3, 5)
    assert loss.dtype == dtype and grad.dtype == dtype and row_lse.dtype == torch.float32
    nloss, _, ngrad = ref(emb, s, 3, 5)
    err = ((loss.float() - rloss).abs().item(), (grad.float() - rgrad).abs().max().item())
    naive = ((nloss.float() - rloss).abs().item(), (ngrad.float() - rgrad).abs().max().item())
    assert err[0] <= 2 * naive[0] + 1e-6, (err, naive)
    assert err[1] <= 2 * naive[1] + 1e-6, (err, naive)


def test_gradcheck(device):
    s = testing.room_scene(1, 3, 12, 14, seed=15).to(device)
    emb = randn(1, 3, 6, 3, seed=16).to(device).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda e: hatch_ext.patch_align(e, s.depth, s.K, s.cam_to_world, 2, 3, tau_t=0.3, tau_p=0.5),
        (emb,))


def test_opcheck(device):
    s = testing.room_scene(1, 3, 12, 14, seed=17).to(device)
    emb = randn(1, 3, 6, 4, seed=18).to(device).requires_grad_()
    args = (emb, s.depth, s.K, s.cam_to_world, 2, 3, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)
    torch.library.opcheck(torch.ops.hatch.patch_align.default, args)
    _, row_lse, nv = torch.ops.hatch.patch_align(emb.detach(), *args[1:])
    bargs = (torch.tensor(1.5, dtype=F64, device=device), emb.detach(), s.depth, s.K, s.cam_to_world,
             row_lse, nv, 2, 3, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)
    torch.library.opcheck(torch.ops.hatch.patch_align_backward.default, bargs)


def test_torch_compile_fullgraph():
    """Inductor, fullgraph, on the CPU: both fused losses in one compiled function, forward and
    backward."""
    s = testing.room_scene(1, 3, 12, 14, seed=19)
    M = R.patch_overlap(s.depth, s.K, s.cam_to_world, 2, 3)

    def f(e):
        return hatch_ext.patch_align(e, s.depth, s.K, s.cam_to_world, 2, 3) + \
            0.5 * hatch_ext.soft_infonce(e, M)

    emb = randn(1, 3, 6, 4, seed=20)
    e1, e2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    l1, l2 = f(e1), torch.compile(f, fullgraph=True)(e2)
    l1.backward()
    l2.backward()
    torch.testing.assert_close(l1, l2, rtol=1e-14, atol=0)
    torch.testing.assert_close(e1.grad, e2.grad, rtol=1e-14, atol=0)


def test_repeated_runs_bitwise_identical(device):
    s = testing.room_scene(2, 4, 30, 36, seed=21, occluders=2, invalid_fraction=0.05,
                           dtype=torch.float32)
    emb = randn(2, 4, 30, 11, seed=22, dtype=torch.float32)
    first = op(emb, s, 5, 6, device=device)
    for _ in range(3):
        again = op(emb, s, 5, 6, device=device)
        for x, y in zip(first, again):
            assert torch.equal(x, y)


def test_dense_tiled(device, monkeypatch):
    """P = 300 cells (grid 15 x 20), V = 3, 64-row similarity tiles."""
    monkeypatch.setenv("HATCH_LOSS_TILE_ROWS", "64")
    s = testing.room_scene(1, 3, 30, 40, seed=23, occluders=1, invalid_fraction=0.05)
    emb = randn(1, 3, 300, 8, seed=24)
    _, nv = assert_matches(emb, s, 15, 20, rtol=1e-9, atol=1e-11, device=device)
    assert nv.item() > 100


# ------------------------------------------------------------------------------------- error cases
B, V, GH, GW = 2, 3, 2, 3
P = GH * GW
SCENE = testing.room_scene(B, V, 8, 9, seed=0)


def emb_of(*shape, dtype=F64, device="cpu"):
    return torch.randn(*(shape or (B, V, P, 4)), dtype=F64).to(dtype=dtype, device=device)


def pa(device, e=None, depth=None, K=None, T=None, grid=(GH, GW), tau_t=0.1, tau_p=0.07, min_overlap=0.0):
    e = emb_of(device=device) if e is None else e
    depth = SCENE.depth.to(device) if depth is None else depth
    K = SCENE.K.to(device) if K is None else K
    T = SCENE.cam_to_world.to(device) if T is None else T
    return torch.ops.hatch.patch_align(e, depth, K, T, grid[0], grid[1], tau_t, tau_p, 0.05, 0.05, 1,
                                       min_overlap)


def raises(exc, *words):
    """pytest.raises whose message must contain every word (the argument's name, ...)."""
    class _Ctx:
        def __enter__(self):
            self.ctx = pytest.raises(exc)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *a):
            handled = self.ctx.__exit__(*a)
            msg = str(self.info.value)
            for w in words:
                assert w in msg, f"{w!r} not in error message: {msg}"
            return handled

    return _Ctx()


LOSS_PARAMS = [({"tau_t": 0.0}, "tau_t"), ({"tau_t": -1.0}, "tau_t"), ({"tau_p": 0.0}, "tau_p"),
               ({"tau_p": float("nan")}, "tau_p"), ({"tau_t": float("inf")}, "tau_t"),
               ({"min_overlap": -0.1}, "min_overlap"), ({"min_overlap": float("nan")}, "min_overlap")]


@pytest.mark.parametrize("kw,name", LOSS_PARAMS)
def test_loss_params(device, kw, name):
    with raises(ValueError, name):
        pa(device, **kw)


def test_empty_batch(device):
    s = SCENE.to(device)
    with raises(ValueError, "'depth'", "non-empty"):
        pa(device, e=emb_of(0, V, P, 4, device=device), depth=s.depth[:0], K=s.K[:0], T=s.cam_to_world[:0])


def test_different_devices(device):
    """emb or K on another device than depth is refused: beside the CPU a meta tensor (the fake
    implementation checks devices), beside CUDA a CPU tensor (the CUDA kernel's check)."""
    other = other_device(device)
    with raises(ValueError, "'emb'", "device"):
        pa(device, e=emb_of(device=other))
    with raises(ValueError, "'K'", "device"):
        pa(device, K=SCENE.K.to(other))
    if is_cuda(device):  # emb on CUDA, the geometry on the CPU
        s = testing.room_scene(1, 2, 9, 11, seed=0, occluders=2, invalid_fraction=0.1)
        with pytest.raises(ValueError, match="emb"):
            OPS.patch_align(randn(1, 2, 4, 3).to(device), s.depth, s.K, s.cam_to_world, 2, 2, TAU_T, TAU_P,
                            ABS_TOL, REL_TOL, 1, 0.0)


@pytest.mark.parametrize("shape,what", [((B, V, P), "[B, V, P, D]"), ((B + 1, V, P, 4), "B"),
                                        ((B, V - 1, P, 4), "V"), ((B, V, P + 1, 4), "P")])
def test_emb_shape(device, shape, what):
    with raises(ValueError, "'emb'", what):
        pa(device, e=emb_of(*shape, device=device))


def test_geometry(device):
    s = SCENE.to(device)
    with raises(ValueError, "'depth'"):
        pa(device, depth=s.depth[0])
    with raises(ValueError, "'K'", "V"):
        pa(device, K=s.K[:, :2])
    with raises(ValueError, "'cam_to_world'", "B"):
        pa(device, T=s.cam_to_world[:1])
    with raises(TypeError, "'depth'"):
        pa(device, depth=s.depth.long())
    with raises(TypeError, "'emb'"):
        pa(device, e=emb_of(dtype=torch.int32, device=device))
    with raises(ValueError, "grid"):
        pa(device, e=emb_of(B, V, 9 * 10, 4, device=device), grid=(9, 10))
    K = s.K.clone()
    K[1, 2, 0, 0] = 0
    with raises(ValueError, "'K'", "singular"):
        pa(device, K=K)
    T = s.cam_to_world.clone()
    T[0, 1, 0, 3] = float("nan")
    with raises(ValueError, "'cam_to_world'", "non-finite"):
        pa(device, T=T)


@pytest.mark.parametrize("bad", sorted(BAD_GEOMETRY))
def test_bad_geometry_same_message_as_cpu(device, bad):
    """K and the poses are checked as on the CPU, with the CPU's error type and message (on CUDA on the
    host, outside graph capture: csrc/cuda/reprojection.cuh)."""
    s = testing.room_scene(1, 2, 13, 17, seed=40, occluders=2, invalid_fraction=0.1)
    K, T = bad_geometry(s, bad)
    emb = randn(1, 2, 12, 8, seed=41)

    def call(dev):
        return OPS.patch_align(emb.to(dev), s.depth.to(dev), K.to(dev), T.to(dev), 3, 4, TAU_T, TAU_P, ABS_TOL,
                               REL_TOL, 1, 0.0)

    with pytest.raises(ValueError, match=BAD_GEOMETRY[bad]) as cpu_err:
        call("cpu")
    with pytest.raises(ValueError, match=BAD_GEOMETRY[bad]) as err:
        call(device)
    assert str(err.value).splitlines()[0] == str(cpu_err.value).splitlines()[0]


def test_backward_op_checks_saved_and_grad_loss(device):
    e = emb_of(device=device)
    _, row_lse, nv = pa(device, e=e)
    s = SCENE.to(device)
    g = torch.tensor(1.0, dtype=F64, device=device)

    def pab(grad=g, r=row_lse, e2=e):
        return torch.ops.hatch.patch_align_backward(grad, e2, s.depth, s.K, s.cam_to_world, r, nv, GH,
                                                    GW, 0.1, 0.07, 0.05, 0.05, 1, 0.0)

    assert torch.isfinite(pab()).all()
    with raises(ValueError, "'grad_loss'"):
        pab(grad=torch.ones(2, dtype=F64, device=device))
    with raises(ValueError, "'row_lse'"):
        pab(r=row_lse[:1])
    with raises(ValueError, "'emb'"):
        pab(e2=emb_of(B, V, P + 1, 4, device=device))
