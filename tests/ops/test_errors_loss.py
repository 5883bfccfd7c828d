"""Bad input to soft_infonce / patch_align (and their backward ops) gets a specific error that names the
argument: never a crash, a hang or a silent NaN."""
import pytest
import torch

import hatch_ext  # noqa: F401  (registers the ops)
from hatch_ext import testing

F64 = torch.float64
B, V, GH, GW = 2, 3, 2, 3
P = GH * GW


def emb(*shape, dtype=F64, device="cpu"):
    return torch.randn(*(shape or (B, V, P, 4)), dtype=F64).to(dtype=dtype, device=device)


def overlap(*shape, dtype=F64):
    return torch.rand(*(shape or (B, V, V, P, P)), dtype=F64).to(dtype)


SCENE = testing.room_scene(B, V, 8, 9, seed=0)


def si(e=None, m=None, tau_t=0.1, tau_p=0.07, min_overlap=0.0):
    e = emb() if e is None else e
    m = overlap() if m is None else m
    return torch.ops.hatch.soft_infonce(e, m, tau_t, tau_p, min_overlap)


def pa(e=None, depth=None, K=None, T=None, grid=(GH, GW), tau_t=0.1, tau_p=0.07, min_overlap=0.0):
    e = emb() if e is None else e
    depth = SCENE.depth if depth is None else depth
    K = SCENE.K if K is None else K
    T = SCENE.cam_to_world if T is None else T
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


# ------------------------------------------------------------------------------- soft_infonce
@pytest.mark.parametrize("bad", [emb(B, V, P), emb(B, V, P, 4, 1)])
def test_soft_infonce_emb_rank(bad):
    with raises(ValueError, "'emb'", "[B, V, P, D]"):
        si(e=bad, m=overlap())


@pytest.mark.parametrize("shape,what", [((B, V, V, P), "5 dims"), ((B + 1, V, V, P, P), "B"),
                                        ((B, V + 1, V, P, P), "V"), ((B, V, V, P, P + 1), "P")])
def test_soft_infonce_overlap_shape(shape, what):
    with raises(ValueError, "'overlap'", what):
        si(m=overlap(*shape))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.complex64, torch.bool])
def test_soft_infonce_dtypes(dtype):
    with raises(TypeError, "'emb'"):
        si(e=emb(dtype=dtype) if dtype != torch.bool else emb() > 0)
    with raises(TypeError, "'overlap'"):
        si(m=overlap(dtype=dtype) if dtype != torch.bool else overlap() > 0)


@pytest.mark.parametrize("kw,name", [({"tau_t": 0.0}, "tau_t"), ({"tau_t": -1.0}, "tau_t"),
                                     ({"tau_p": 0.0}, "tau_p"), ({"tau_p": float("nan")}, "tau_p"),
                                     ({"tau_t": float("inf")}, "tau_t"),
                                     ({"min_overlap": -0.1}, "min_overlap"),
                                     ({"min_overlap": float("nan")}, "min_overlap")])
def test_loss_params(kw, name):
    with raises(ValueError, name):
        si(**kw)
    with raises(ValueError, name):
        pa(**kw)


def test_empty_batch():
    with raises(ValueError, "'emb'", "non-empty"):
        si(e=emb(0, V, P, 4), m=overlap(0, V, V, P, P))
    with raises(ValueError, "'depth'", "non-empty"):
        pa(e=emb(0, V, P, 4), depth=SCENE.depth[:0], K=SCENE.K[:0], T=SCENE.cam_to_world[:0])


def test_different_devices_meta():
    """A CPU tensor mixed with a meta tensor is refused (the fake implementation checks devices)."""
    with raises(ValueError, "'overlap'", "device"):
        si(m=overlap().to("meta"))
    with raises(ValueError, "'emb'", "device"):
        pa(e=emb(device="meta"))
    with raises(ValueError, "'K'", "device"):
        pa(K=SCENE.K.to("meta"))


# -------------------------------------------------------------------------------- patch_align
@pytest.mark.parametrize("shape,what", [((B, V, P), "[B, V, P, D]"), ((B + 1, V, P, 4), "B"),
                                        ((B, V - 1, P, 4), "V"), ((B, V, P + 1, 4), "P")])
def test_patch_align_emb_shape(shape, what):
    with raises(ValueError, "'emb'", what):
        pa(e=emb(*shape))


def test_patch_align_geometry():
    with raises(ValueError, "'depth'"):
        pa(depth=SCENE.depth[0])
    with raises(ValueError, "'K'", "V"):
        pa(K=SCENE.K[:, :2])
    with raises(ValueError, "'cam_to_world'", "B"):
        pa(T=SCENE.cam_to_world[:1])
    with raises(TypeError, "'depth'"):
        pa(depth=SCENE.depth.long())
    with raises(TypeError, "'emb'"):
        pa(e=emb(dtype=torch.int32))
    with raises(ValueError, "grid"):
        pa(e=emb(B, V, 9 * 10, 4), grid=(9, 10))
    K = SCENE.K.clone()
    K[1, 2, 0, 0] = 0
    with raises(ValueError, "'K'", "singular"):
        pa(K=K)
    T = SCENE.cam_to_world.clone()
    T[0, 1, 0, 3] = float("nan")
    with raises(ValueError, "'cam_to_world'", "non-finite"):
        pa(T=T)


# ------------------------------------------------------------------------------ backward ops
def test_backward_ops_check_saved_and_grad_loss():
    e, m = emb(), overlap()
    _, row_lse, nv = torch.ops.hatch.soft_infonce(e, m, 0.1, 0.07, 0.0)
    g = torch.tensor(1.0, dtype=F64)

    def sib(grad=g, r=row_lse, n=nv, tau_p=0.07):
        return torch.ops.hatch.soft_infonce_backward(grad, e, m, r, n, 0.1, tau_p, 0.0)

    assert torch.isfinite(sib()).all()
    with raises(ValueError, "'grad_loss'", "0-dim"):
        sib(grad=torch.ones(1, dtype=F64))
    with raises(TypeError, "'grad_loss'"):
        sib(grad=torch.tensor(1))
    with raises(ValueError, "'row_lse'"):
        sib(r=row_lse[..., :-1])
    with raises(TypeError, "'row_lse'"):
        sib(r=row_lse.float())
    with raises(ValueError, "'num_valid'"):
        sib(n=nv.double())
    with raises(ValueError, "tau_p"):
        sib(tau_p=-1.0)

    _, row_lse, nv = pa(e=e)
    s = SCENE

    def pab(grad=g, r=row_lse, e2=e):
        return torch.ops.hatch.patch_align_backward(grad, e2, s.depth, s.K, s.cam_to_world, r, nv, GH,
                                                    GW, 0.1, 0.07, 0.05, 0.05, 1, 0.0)

    assert torch.isfinite(pab()).all()
    with raises(ValueError, "'grad_loss'"):
        pab(grad=torch.ones(2, dtype=F64))
    with raises(ValueError, "'row_lse'"):
        pab(r=row_lse[:1])
    with raises(ValueError, "'emb'"):
        pab(e2=emb(B, V, P + 1, 4))
