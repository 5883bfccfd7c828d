"""hatch.patch_align (CPU kernel: reprojection, targets and InfoNCE fused) against the naive reference
on rendered scenes (odd image sizes, non-square grids, invalid depth, occluders, stride), and against
soft_infonce fed the reference overlap; plus no-overlap, low precision, gradcheck, opcheck,
torch.compile, determinism and the dense tiled path."""
import math

import pytest
import torch

import hatch_ext
from hatch_ext import reference as R
from hatch_ext import testing

F64 = torch.float64
TAU_T, TAU_P, ABS_TOL, REL_TOL = 0.1, 0.07, 0.05, 0.05


def randn(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def op(emb, s, gh, gw, stride=1, min_overlap=0.0, tau_t=TAU_T, tau_p=TAU_P):
    """(loss, row_lse, num_valid, grad) of torch.ops.hatch.patch_align."""
    emb = emb.detach().requires_grad_()
    loss, row_lse, nv = torch.ops.hatch.patch_align(emb, s.depth, s.K, s.cam_to_world, gh, gw, tau_t,
                                                    tau_p, ABS_TOL, REL_TOL, stride, min_overlap)
    (grad,) = torch.autograd.grad(loss, emb)
    return loss.detach(), row_lse, nv, grad


def ref(emb, s, gh, gw, stride=1, min_overlap=0.0, tau_t=TAU_T, tau_p=TAU_P):
    emb = emb.detach().requires_grad_()
    loss, nv = R.patch_align(emb, s.depth, s.K, s.cam_to_world, gh, gw, tau_t, tau_p, ABS_TOL,
                             REL_TOL, stride, min_overlap, return_num_valid=True)
    (grad,) = torch.autograd.grad(loss, emb)
    return loss.detach(), nv, grad


def assert_matches(emb, s, gh, gw, rtol=1e-10, atol=1e-12, **kw):
    loss, row_lse, nv, grad = op(emb, s, gh, gw, **kw)
    rloss, rnv, rgrad = ref(emb, s, gh, gw, **kw)
    assert nv.item() == rnv.item()
    torch.testing.assert_close(loss, rloss, rtol=rtol, atol=atol)
    torch.testing.assert_close(grad, rgrad, rtol=rtol, atol=atol)
    # The saved row log-sum-exp: cos / tau_p of every cell against every cell of the other view.
    e = R.normalize(emb)
    lse = (torch.einsum("bapd,bcqd->bacpq", e, e) / kw.get("tau_p", TAU_P)).logsumexp(-1)
    off = ~torch.eye(emb.shape[1], dtype=torch.bool)
    torch.testing.assert_close(row_lse[:, off], lse[:, off].to(row_lse.dtype), rtol=rtol, atol=atol)
    assert torch.all(row_lse[:, ~off] == 0)
    return loss, nv


@pytest.mark.parametrize("stride", [1, 2])
def test_room_scene_matches_reference(stride):
    s = testing.room_scene(2, 3, 23, 31, seed=1, occluders=2, invalid_fraction=0.1)
    emb = randn(2, 3, 15, 7, seed=2)
    _, nv = assert_matches(emb, s, 3, 5, stride=stride)
    assert nv.item() > 0


def test_matches_soft_infonce_on_reference_overlap():
    """The fused op equals soft_infonce(emb, reference.patch_overlap(...)) (non-square grid 4 x 3)."""
    s = testing.room_scene(1, 4, 21, 17, seed=3, occluders=1, invalid_fraction=0.05)
    emb = randn(1, 4, 12, 6, seed=4)
    loss, row_lse, nv, grad = op(emb, s, 4, 3)
    M = R.patch_overlap(s.depth, s.K, s.cam_to_world, 4, 3, ABS_TOL, REL_TOL)
    e = emb.detach().requires_grad_()
    loss2, row_lse2, nv2 = torch.ops.hatch.soft_infonce(e, M, TAU_T, TAU_P, 0.0)
    (grad2,) = torch.autograd.grad(loss2, e)
    assert nv.item() == nv2.item()
    torch.testing.assert_close(loss, loss2.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(row_lse, row_lse2, rtol=0, atol=0)
    torch.testing.assert_close(grad, grad2, rtol=1e-12, atol=1e-14)


def test_min_overlap():
    s = testing.room_scene(2, 3, 23, 31, seed=5, occluders=2)
    emb = randn(2, 3, 15, 7, seed=6)
    _, nv0 = assert_matches(emb, s, 3, 5)
    _, nv1 = assert_matches(emb, s, 3, 5, min_overlap=0.4, tau_t=0.3, tau_p=0.2)
    assert 0 < nv1.item() < nv0.item()


def turned_away(s, view):
    """The scene with `view`'s camera rotated 180 degrees about world up: it sees nothing of the
    others (depth stays as rendered, so its pixels are valid but land behind the other cameras)."""
    T = s.cam_to_world.clone()
    c, si = math.cos(math.pi), math.sin(math.pi)
    Rz = torch.tensor([[c, -si, 0], [si, c, 0], [0, 0, 1]], dtype=T.dtype)
    T[:, view, :3, :3] = Rz @ T[:, view, :3, :3]
    return testing.Scene(s.depth, s.K, T)


def test_no_overlap_is_zero_with_zero_grad():
    s = testing.room_scene(1, 2, 16, 20, seed=7)
    s_invalid = testing.Scene(torch.zeros_like(s.depth), s.K, s.cam_to_world)
    for scene in (s_invalid, turned_away(s, 1)):
        emb = randn(1, 2, 12, 5, seed=8).requires_grad_()
        loss, row_lse, nv = torch.ops.hatch.patch_align(emb, scene.depth, scene.K, scene.cam_to_world,
                                                        3, 4, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)
        assert R.patch_overlap(scene.depth, scene.K, scene.cam_to_world, 3, 4).abs().sum() == 0
        loss.backward()
        assert loss.item() == 0.0 and nv.item() == 0
        assert torch.all(emb.grad == 0) and torch.isfinite(row_lse).all()


def test_one_pair_without_overlap():
    """V = 3 with view 2 turned away: only the pair (0, 1) contributes."""
    s = turned_away(testing.room_scene(1, 3, 19, 23, seed=9), 2)
    emb = randn(1, 3, 12, 5, seed=10)
    _, nv = assert_matches(emb, s, 3, 4)
    assert nv.item() > 0
    _, _, _, grad = op(emb, s, 3, 4)
    assert torch.all(grad[0, 2] == 0) and grad[0, :2].abs().sum() > 0


def test_float32_close_to_float64():
    s = testing.room_scene(2, 3, 23, 31, seed=11, occluders=2, invalid_fraction=0.1)
    emb = randn(2, 3, 15, 7, seed=12)
    loss64, lse64, nv64, grad64 = op(emb, s, 3, 5)
    loss32, lse32, nv32, grad32 = op(emb.float(), s, 3, 5)
    assert nv32.item() == nv64.item()
    torch.testing.assert_close(loss32.double(), loss64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse32.double(), lse64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad32.double(), grad64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_rule(dtype):
    """Error vs a float32 reference <= 2x the naive reference's error in the same dtype."""
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


def test_gradcheck():
    s = testing.room_scene(1, 3, 12, 14, seed=15)
    emb = randn(1, 3, 6, 3, seed=16).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda e: hatch_ext.patch_align(e, s.depth, s.K, s.cam_to_world, 2, 3, tau_t=0.3, tau_p=0.5),
        (emb,))


def test_opcheck():
    s = testing.room_scene(1, 3, 12, 14, seed=17)
    emb = randn(1, 3, 6, 4, seed=18).requires_grad_()
    args = (emb, s.depth, s.K, s.cam_to_world, 2, 3, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)
    torch.library.opcheck(torch.ops.hatch.patch_align.default, args)
    _, row_lse, nv = torch.ops.hatch.patch_align(emb.detach(), *args[1:])
    bargs = (torch.tensor(1.5, dtype=F64), emb.detach(), s.depth, s.K, s.cam_to_world, row_lse, nv,
             2, 3, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)
    torch.library.opcheck(torch.ops.hatch.patch_align_backward.default, bargs)


def test_torch_compile_fullgraph():
    """Inductor, fullgraph: both fused losses in one compiled function, forward and backward."""
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


def test_repeated_runs_bitwise_identical():
    s = testing.room_scene(2, 4, 30, 36, seed=21, occluders=2, invalid_fraction=0.05,
                           dtype=torch.float32)
    emb = randn(2, 4, 30, 11, seed=22, dtype=torch.float32)
    first = op(emb, s, 5, 6)
    for _ in range(3):
        again = op(emb, s, 5, 6)
        for x, y in zip(first, again):
            assert torch.equal(x, y)


def test_dense_tiled(monkeypatch):
    """P = 300 cells (grid 15 x 20), V = 3, 64-row similarity tiles."""
    monkeypatch.setenv("HATCH_LOSS_TILE_ROWS", "64")
    s = testing.room_scene(1, 3, 30, 40, seed=23, occluders=1, invalid_fraction=0.05)
    emb = randn(1, 3, 300, 8, seed=24)
    _, nv = assert_matches(emb, s, 15, 20, rtol=1e-9, atol=1e-11)
    assert nv.item() > 100
