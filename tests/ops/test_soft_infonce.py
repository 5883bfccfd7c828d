"""hatch.soft_infonce on every device (the `device` fixture: CPU, and CUDA where built) against the naive
reference (hatch_ext.reference), which follows docs/design.md's PaStA math, and against the CPU kernel:
loss, saved row log-sum-exp, valid-row count and gradients, on random sparse overlaps and on overlaps of
rendered scenes; plus the low-precision rule, gradcheck, opcheck, torch.compile, determinism and the tiled
(dense-grid) path; then the error cases of soft_infonce and soft_infonce_backward (a specific error that
names the argument: never a crash, a hang or a silent NaN)."""
import pytest
import torch
from _cases import cuda_tol, is_cuda, other_device

import hatch_ext
from hatch_ext import reference as R
from hatch_ext import testing
from hatch_ext.testing import sparse_overlap

F64 = torch.float64
OPS = torch.ops.hatch
TAU_T, TAU_P = 0.1, 0.07


def randn(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def op_loss_grad(emb, overlap, tau_t=TAU_T, tau_p=TAU_P, min_overlap=0.0):
    emb = emb.detach().requires_grad_()
    loss, row_lse, num_valid = torch.ops.hatch.soft_infonce(emb, overlap, tau_t, tau_p, min_overlap)
    (grad,) = torch.autograd.grad(loss, emb)
    return loss.detach(), row_lse, num_valid, grad


def ref_loss_grad(emb, overlap, tau_t=TAU_T, tau_p=TAU_P, min_overlap=0.0):
    emb = emb.detach().requires_grad_()
    loss, num_valid = R.soft_infonce(emb, overlap, tau_t, tau_p, min_overlap, return_num_valid=True)
    (grad,) = torch.autograd.grad(loss, emb)
    return loss.detach(), num_valid, grad


def ref_row_lse(emb, tau_p=TAU_P):
    e = R.normalize(emb.detach())
    return (torch.einsum("bapd,bcqd->bacpq", e, e) / tau_p).logsumexp(-1)


def assert_matches_reference(emb, overlap, tau_t=TAU_T, tau_p=TAU_P, min_overlap=0.0, rtol=1e-10,
                             atol=1e-12, device="cpu"):
    """The op on `device` against the reference on the CPU (on CUDA within _cases.cuda_tol, the row
    log-sum-exp within 10x its atol, as stated for CUDA results)."""
    loss, row_lse, nv, grad = op_loss_grad(emb.to(device), overlap.to(device), tau_t, tau_p, min_overlap)
    loss, row_lse, nv, grad = loss.cpu(), row_lse.cpu(), nv.cpu(), grad.cpu()
    emb, overlap = emb.cpu(), overlap.cpu()
    rloss, rnv, rgrad = ref_loss_grad(emb, overlap, tau_t, tau_p, min_overlap)
    rtol, atol = cuda_tol(device, emb.dtype, rtol, atol)
    lse_atol = atol * 10 if is_cuda(device) else atol
    assert nv.dtype == torch.int64 and nv.dim() == 0
    assert nv.item() == rnv.item()
    assert loss.dtype == emb.dtype and loss.dim() == 0
    torch.testing.assert_close(loss, rloss, rtol=rtol, atol=atol)
    torch.testing.assert_close(grad, rgrad, rtol=rtol, atol=atol)
    V = emb.shape[1]
    off = ~torch.eye(V, dtype=torch.bool)
    assert row_lse.shape == (emb.shape[0], V, V, emb.shape[2])
    torch.testing.assert_close(row_lse[:, off], ref_row_lse(emb, tau_p)[:, off].to(row_lse.dtype),
                               rtol=rtol, atol=lse_atol)
    assert torch.all(row_lse[:, ~off] == 0)
    return loss, nv


@pytest.mark.parametrize("tau_t,tau_p,min_overlap", [(0.1, 0.07, 0.0), (0.5, 0.3, 0.2), (0.02, 1.5, 0.0)])
def test_random_sparse_overlap_float64(device, tau_t, tau_p, min_overlap):
    B, V, P, D = 2, 3, 15, 7
    emb = randn(B, V, P, D, seed=1)
    M = sparse_overlap(B, V, P, seed=2)
    _, nv = assert_matches_reference(emb, M, tau_t, tau_p, min_overlap, device=device)
    assert 0 < nv.item() < B * V * (V - 1) * P  # some rows valid, some not


def test_min_overlap_drops_rows(device):
    B, V, P, D = 2, 3, 15, 7
    emb, M = randn(B, V, P, D, seed=3), sparse_overlap(B, V, P, seed=4, density=0.4)
    _, nv0 = assert_matches_reference(emb, M, min_overlap=0.0, device=device)
    _, nv1 = assert_matches_reference(emb, M, min_overlap=0.35, device=device)
    assert 0 < nv1.item() < nv0.item()


@pytest.mark.parametrize("stride", [1, 2])
def test_room_scene_overlaps(device, stride):
    """Overlaps of rendered scenes (invalid depth, occluders), grid 3 x 5 on an odd-sized image."""
    s = testing.room_scene(2, 3, 23, 31, seed=5, occluders=2, invalid_fraction=0.1)
    M = R.patch_overlap(s.depth, s.K, s.cam_to_world, 3, 5, stride=stride)
    emb = randn(2, 3, 15, 7, seed=6)
    _, nv = assert_matches_reference(emb, M, device=device)
    assert nv.item() > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tile_rows", [None, "4"])
@pytest.mark.parametrize("min_overlap", [0.0, 0.2718])  # not a small-integer ratio: no ties
def test_matches_reference_and_cpu(device, dtype, tile_rows, min_overlap, monkeypatch):
    """A rendered room's reference overlap (P = 15), float64 and float32, with the tolerance stated for
    CUDA results on every device; on CUDA also against the CPU kernel."""
    # tile_rows "4" splits P = 15 rows into 4 tiles: the online column log-sum-exp is exercised.
    if tile_rows is not None:
        monkeypatch.setenv("HATCH_LOSS_TILE_ROWS", tile_rows)
    s = testing.room_scene(2, 3, 23, 29, seed=3, occluders=2, invalid_fraction=0.1)
    M = R.patch_overlap(s.depth, s.K, s.cam_to_world, 3, 5)  # P = 15, float64
    emb = randn(2, 3, 15, 6, seed=4).to(dtype)
    params = (TAU_T, TAU_P, min_overlap)

    loss, lse, nv, grad = op_loss_grad(emb.to(device), M.to(dtype).to(device), *params)
    xr = emb.double().clone().requires_grad_()
    ref, nv_ref = R.soft_infonce(xr, M, *params, return_num_valid=True)
    ref.backward()
    assert 0 < nv_ref < 2 * 3 * 2 * 15, "the case must have both valid and invalid rows"
    assert nv.dtype == torch.int64 and nv.item() == nv_ref.item()
    assert loss.dtype == dtype and lse.dtype == dtype
    rtol, atol = (1e-9, 1e-11) if dtype == torch.float64 else (1e-3, 2e-5)
    off = (~torch.eye(3, dtype=torch.bool))[None, :, :, None]
    torch.testing.assert_close(loss.cpu().double(), ref.detach(), rtol=rtol, atol=atol)
    torch.testing.assert_close(lse.cpu().double(), ref_row_lse(emb.double(), TAU_P) * off, rtol=rtol,
                               atol=atol * 10)
    torch.testing.assert_close(grad.cpu().double(), xr.grad, rtol=rtol, atol=atol)

    loss_c, lse_c, nv_c, grad_c = op_loss_grad(emb, M.to(dtype), *params)
    assert nv_c.item() == nv.item()
    torch.testing.assert_close(loss.cpu(), loss_c, rtol=rtol, atol=atol)
    torch.testing.assert_close(lse.cpu(), lse_c, rtol=rtol, atol=atol * 10)
    torch.testing.assert_close(grad.cpu(), grad_c, rtol=rtol, atol=atol)


def test_float32_overlap_and_dense_rows(device):
    """A float32 overlap input and a fully dense overlap (every entry nonzero)."""
    B, V, P, D = 1, 3, 6, 5
    emb = randn(B, V, P, D, seed=7)
    M = sparse_overlap(B, V, P, seed=8, density=1.1, empty_rows=-1)
    assert (M[:, 0, 1] > 0).all()
    assert_matches_reference(emb, M, device=device)
    M32 = M.float()
    loss, _, _, grad = op_loss_grad(emb.to(device), M32.to(device))
    rloss, _, rgrad = ref_loss_grad(emb, M32.double())
    torch.testing.assert_close(loss.cpu(), rloss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad.cpu(), rgrad, rtol=1e-6, atol=1e-7)


def test_no_overlap_is_zero_with_zero_grad(device):
    emb = randn(2, 3, 5, 4, seed=9).to(device).requires_grad_()
    M = torch.zeros(2, 3, 3, 5, 5, dtype=F64, device=device)
    loss, row_lse, nv = torch.ops.hatch.soft_infonce(emb, M, TAU_T, TAU_P, 0.0)
    loss.backward()
    assert loss.item() == 0.0 and nv.item() == 0
    assert torch.all(emb.grad == 0) and torch.isfinite(row_lse).all()
    # Overlap everywhere but below min_overlap: likewise.
    emb.grad = None
    M = sparse_overlap(2, 3, 5, seed=10).to(device)
    loss = hatch_ext.soft_infonce(emb, M, min_overlap=10.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(emb.grad == 0)


def test_zero_float32_overlap_is_zero_with_zero_grad(device):
    """A float32 all-zero overlap beside float64 embeddings: no valid row, loss 0, gradient 0."""
    emb = randn(2, 3, 6, 5, seed=7).to(device)
    loss, _, nv, grad = op_loss_grad(emb, torch.zeros(2, 3, 3, 6, 6, device=device))
    assert loss.item() == 0.0 and nv.item() == 0 and torch.all(grad == 0)


def test_zero_embedding_rows(device):
    """A zero embedding (|e| < eps) is normalised to 0 and gets the g / eps gradient, as F.normalize."""
    emb = randn(1, 2, 4, 3, seed=11)
    emb[0, 1, 2] = 0
    M = sparse_overlap(1, 2, 4, seed=12, density=0.6, empty_rows=0)
    assert_matches_reference(emb, M, rtol=1e-9, atol=1e-9, device=device)


def test_float32_close_to_float64(device):
    B, V, P, D = 2, 3, 15, 7
    emb, M = randn(B, V, P, D, seed=13).to(device), sparse_overlap(B, V, P, seed=14).to(device)
    loss64, lse64, _, grad64 = op_loss_grad(emb, M)
    loss32, lse32, _, grad32 = op_loss_grad(emb.float(), M.float())
    assert loss32.dtype == torch.float32 and lse32.dtype == torch.float32
    rtol, atol = cuda_tol(device, torch.float32, 1e-5, 1e-5)
    torch.testing.assert_close(loss32.double(), loss64, rtol=rtol, atol=atol)
    torch.testing.assert_close(lse32.double(), lse64, rtol=rtol, atol=atol)
    rtol, atol = cuda_tol(device, torch.float32, 1e-4, 1e-5)
    torch.testing.assert_close(grad32.double(), grad64, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_rule(dtype):
    """Error vs a float32 reference <= 2x the naive reference's error in the same dtype (CPU kernel; the
    CUDA kernels' rule, with a floor of one output rounding: test_cuda.py::test_low_precision_rule)."""
    B, V, P, D = 2, 3, 15, 16
    emb = randn(B, V, P, D, seed=15, dtype=dtype)
    M = sparse_overlap(B, V, P, seed=16, dtype=torch.float32)
    rloss, _, rgrad = ref_loss_grad(emb.float(), M)
    loss, row_lse, _, grad = op_loss_grad(emb, M)
    assert loss.dtype == dtype and grad.dtype == dtype and row_lse.dtype == torch.float32
    nloss, _, ngrad = ref_loss_grad(emb, M)
    err = ((loss.float() - rloss).abs().item(), (grad.float() - rgrad).abs().max().item())
    naive = ((nloss.float() - rloss).abs().item(), (ngrad.float() - rgrad).abs().max().item())
    assert err[0] <= 2 * naive[0] + 1e-6, (err, naive)
    assert err[1] <= 2 * naive[1] + 1e-6, (err, naive)


def test_gradcheck(device):
    emb = randn(1, 3, 4, 3, seed=17).to(device).requires_grad_()
    M = sparse_overlap(1, 3, 4, seed=18, density=0.5, empty_rows=0.2).to(device)
    assert torch.autograd.gradcheck(lambda e: hatch_ext.soft_infonce(e, M, 0.3, 0.5), (emb,))


def test_opcheck(device):
    emb = randn(2, 3, 5, 4, seed=19).to(device).requires_grad_()
    M = sparse_overlap(2, 3, 5, seed=20).to(device)
    args = (emb, M, TAU_T, TAU_P, 0.0)
    torch.library.opcheck(torch.ops.hatch.soft_infonce.default, args)
    _, row_lse, nv = torch.ops.hatch.soft_infonce(emb.detach(), M, TAU_T, TAU_P, 0.0)
    bargs = (torch.tensor(0.5, dtype=F64, device=device), emb.detach(), M, row_lse, nv, TAU_T, TAU_P, 0.0)
    torch.library.opcheck(torch.ops.hatch.soft_infonce_backward.default, bargs)


def test_backward_op_scales_with_grad_loss(device):
    emb, M = randn(1, 3, 5, 4, seed=21), sparse_overlap(1, 3, 5, seed=22)
    e, m = emb.to(device), M.to(device)
    _, row_lse, nv = torch.ops.hatch.soft_infonce(e, m, TAU_T, TAU_P, 0.0)
    g1 = torch.ops.hatch.soft_infonce_backward(torch.tensor(1.0, dtype=F64, device=device), e, m, row_lse,
                                               nv, TAU_T, TAU_P, 0.0)
    g3 = torch.ops.hatch.soft_infonce_backward(torch.tensor(-3.0, dtype=F64, device=device), e, m, row_lse,
                                               nv, TAU_T, TAU_P, 0.0)
    torch.testing.assert_close(g3, -3 * g1)
    _, _, rgrad = ref_loss_grad(emb, M)
    torch.testing.assert_close(g1.cpu(), rgrad)


def test_torch_compile_fullgraph():
    emb, M = randn(2, 3, 5, 4, seed=23), sparse_overlap(2, 3, 5, seed=24)

    def f(e, m):
        return hatch_ext.soft_infonce(e, m) * 2

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")  # inductor: test_patch_align
    e1, e2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    l1, l2 = f(e1, M), compiled(e2, M)
    l1.backward()
    l2.backward()
    assert torch.equal(l1, l2)
    assert torch.equal(e1.grad, e2.grad)


def test_repeated_runs_bitwise_identical(device):
    emb = randn(2, 4, 40, 9, seed=25, dtype=torch.float32).to(device)
    M = sparse_overlap(2, 4, 40, seed=26, dtype=torch.float32).to(device)
    first = op_loss_grad(emb, M)
    for _ in range(3):
        again = op_loss_grad(emb, M)
        for x, y in zip(first, again):
            assert torch.equal(x, y)


@pytest.mark.parametrize("tile", ["64", None])
def test_dense_tiled(device, tile, monkeypatch):
    """P = 300 cells: several row tiles of 64 (the online column log-sum-exp across tiles), or the
    default tile."""
    if tile is not None:
        monkeypatch.setenv("HATCH_LOSS_TILE_ROWS", tile)
    B, V, P, D = 1, 3, 300, 8
    emb = randn(B, V, P, D, seed=27)
    M = sparse_overlap(B, V, P, seed=28, density=0.01)
    assert_matches_reference(emb, M, rtol=1e-9, atol=1e-11, device=device)


def test_non_contiguous_inputs(device):
    B, V, P, D = 2, 3, 6, 5
    emb = randn(B, P, V, D, seed=29).transpose(1, 2)         # [B, V, P, D], not contiguous
    M = sparse_overlap(B, V, P, seed=30).transpose(-1, -2)   # not contiguous either
    assert not emb.is_contiguous() and not M.is_contiguous()
    if is_cuda(device):  # the same values and strides on the device
        emb = randn(B, P, V, D, seed=29).to(device).transpose(1, 2)
        M = sparse_overlap(B, V, P, seed=30).to(device).transpose(-1, -2)
        assert not emb.is_contiguous() and not M.is_contiguous()
    assert_matches_reference(emb, M, device=device)


def test_thread_schedules_agree():
    """One thread (pairs one after another) and two (pairs of a round in parallel) agree (CPU kernel)."""
    emb, M = randn(2, 4, 20, 6, seed=31), sparse_overlap(2, 4, 20, seed=32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = op_loss_grad(emb, M)
        torch.set_num_threads(2)
        two = op_loss_grad(emb, M)
    finally:
        torch.set_num_threads(threads)
    for x, y in zip(one, two):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------- error cases
B, V, GH, GW = 2, 3, 2, 3
P = GH * GW


def emb(*shape, dtype=F64, device="cpu"):
    return torch.randn(*(shape or (B, V, P, 4)), dtype=F64).to(dtype=dtype, device=device)


def overlap(*shape, dtype=F64, device="cpu"):
    return torch.rand(*(shape or (B, V, V, P, P)), dtype=F64).to(dtype=dtype, device=device)


def si(device, e=None, m=None, tau_t=0.1, tau_p=0.07, min_overlap=0.0):
    e = emb(device=device) if e is None else e
    m = overlap(device=device) if m is None else m
    return torch.ops.hatch.soft_infonce(e, m, tau_t, tau_p, min_overlap)


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


@pytest.mark.parametrize("bad", [(B, V, P), (B, V, P, 4, 1)], ids=["rank 3", "rank 5"])
def test_emb_rank(device, bad):
    with raises(ValueError, "'emb'", "[B, V, P, D]"):
        si(device, e=emb(*bad, device=device), m=overlap(device=device))


@pytest.mark.parametrize("shape,what", [((B, V, V, P), "5 dims"), ((B + 1, V, V, P, P), "B"),
                                        ((B, V + 1, V, P, P), "V"), ((B, V, V, P, P + 1), "P")])
def test_overlap_shape(device, shape, what):
    with raises(ValueError, "'overlap'", what):
        si(device, m=overlap(*shape, device=device))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.complex64, torch.bool])
def test_dtypes(device, dtype):
    with raises(TypeError, "'emb'"):
        si(device, e=emb(dtype=dtype, device=device) if dtype != torch.bool else emb(device=device) > 0)
    with raises(TypeError, "'overlap'"):
        si(device, m=overlap(dtype=dtype, device=device) if dtype != torch.bool else overlap(device=device) > 0)


LOSS_PARAMS = [({"tau_t": 0.0}, "tau_t"), ({"tau_t": -1.0}, "tau_t"), ({"tau_p": 0.0}, "tau_p"),
               ({"tau_p": float("nan")}, "tau_p"), ({"tau_t": float("inf")}, "tau_t"),
               ({"min_overlap": -0.1}, "min_overlap"), ({"min_overlap": float("nan")}, "min_overlap")]


@pytest.mark.parametrize("kw,name", LOSS_PARAMS)
def test_loss_params(device, kw, name):
    with raises(ValueError, name):
        si(device, **kw)


def test_empty_batch(device):
    with raises(ValueError, "'emb'", "non-empty"):
        si(device, e=emb(0, V, P, 4, device=device), m=overlap(0, V, V, P, P, device=device))


def test_different_devices(device):
    """An overlap on another device than emb is refused: beside the CPU a meta tensor (the fake
    implementation checks devices), beside CUDA a CPU tensor (the CUDA kernel's check)."""
    with raises(ValueError, "'overlap'", "device"):
        si(device, m=overlap().to(other_device(device)))
    if is_cuda(device):
        with pytest.raises(ValueError, match="overlap"):
            OPS.soft_infonce(randn(1, 2, 4, 3).to(device), torch.zeros(1, 2, 2, 4, 4, dtype=F64), TAU_T,
                             TAU_P, 0.0)


def test_backward_op_checks_saved_and_grad_loss(device):
    e, m = emb(device=device), overlap(device=device)
    _, row_lse, nv = torch.ops.hatch.soft_infonce(e, m, 0.1, 0.07, 0.0)
    g = torch.tensor(1.0, dtype=F64, device=device)

    def sib(grad=g, r=row_lse, n=nv, tau_p=0.07):
        return torch.ops.hatch.soft_infonce_backward(grad, e, m, r, n, 0.1, tau_p, 0.0)

    assert torch.isfinite(sib()).all()
    with raises(ValueError, "'grad_loss'", "0-dim"):
        sib(grad=torch.ones(1, dtype=F64, device=device))
    with raises(TypeError, "'grad_loss'"):
        sib(grad=torch.tensor(1, device=device))
    with raises(ValueError, "'row_lse'"):
        sib(r=row_lse[..., :-1])
    with raises(TypeError, "'row_lse'"):
        sib(r=row_lse.float())
    with raises(ValueError, "'num_valid'"):
        sib(n=nv.double())
    with raises(ValueError, "tau_p"):
        sib(tau_p=-1.0)
