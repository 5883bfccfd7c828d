"""hatch.soft_infonce (CPU kernel) against the naive reference (hatch_ext.reference), which follows
docs/design.md's PaStA math: loss, saved row log-sum-exp, valid-row count and gradients, on random sparse
overlaps and on overlaps of rendered scenes; plus the low-precision rule, gradcheck, opcheck,
torch.compile, determinism and the tiled (dense-grid) path."""
import pytest
import torch

import hatch_ext
from hatch_ext import reference as R
from hatch_ext import testing
from hatch_ext.testing import sparse_overlap

F64 = torch.float64
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
                             atol=1e-12):
    loss, row_lse, nv, grad = op_loss_grad(emb, overlap, tau_t, tau_p, min_overlap)
    rloss, rnv, rgrad = ref_loss_grad(emb, overlap, tau_t, tau_p, min_overlap)
    assert nv.dtype == torch.int64 and nv.dim() == 0
    assert nv.item() == rnv.item()
    assert loss.dtype == emb.dtype and loss.dim() == 0
    torch.testing.assert_close(loss, rloss, rtol=rtol, atol=atol)
    torch.testing.assert_close(grad, rgrad, rtol=rtol, atol=atol)
    V = emb.shape[1]
    off = ~torch.eye(V, dtype=torch.bool)
    assert row_lse.shape == (emb.shape[0], V, V, emb.shape[2])
    torch.testing.assert_close(row_lse[:, off], ref_row_lse(emb, tau_p)[:, off].to(row_lse.dtype),
                               rtol=rtol, atol=atol)
    assert torch.all(row_lse[:, ~off] == 0)
    return loss, nv


@pytest.mark.parametrize("tau_t,tau_p,min_overlap", [(0.1, 0.07, 0.0), (0.5, 0.3, 0.2), (0.02, 1.5, 0.0)])
def test_random_sparse_overlap_float64(tau_t, tau_p, min_overlap):
    B, V, P, D = 2, 3, 15, 7
    emb = randn(B, V, P, D, seed=1)
    M = sparse_overlap(B, V, P, seed=2)
    _, nv = assert_matches_reference(emb, M, tau_t, tau_p, min_overlap)
    assert 0 < nv.item() < B * V * (V - 1) * P  # some rows valid, some not


def test_min_overlap_drops_rows():
    B, V, P, D = 2, 3, 15, 7
    emb, M = randn(B, V, P, D, seed=3), sparse_overlap(B, V, P, seed=4, density=0.4)
    _, nv0 = assert_matches_reference(emb, M, min_overlap=0.0)
    _, nv1 = assert_matches_reference(emb, M, min_overlap=0.35)
    assert 0 < nv1.item() < nv0.item()


@pytest.mark.parametrize("stride", [1, 2])
def test_room_scene_overlaps(stride):
    """Overlaps of rendered scenes (invalid depth, occluders), grid 3 x 5 on an odd-sized image."""
    s = testing.room_scene(2, 3, 23, 31, seed=5, occluders=2, invalid_fraction=0.1)
    M = R.patch_overlap(s.depth, s.K, s.cam_to_world, 3, 5, stride=stride)
    emb = randn(2, 3, 15, 7, seed=6)
    _, nv = assert_matches_reference(emb, M)
    assert nv.item() > 0


def test_float32_overlap_and_dense_rows():
    """A float32 overlap input and a fully dense overlap (every entry nonzero)."""
    B, V, P, D = 1, 3, 6, 5
    emb = randn(B, V, P, D, seed=7)
    M = sparse_overlap(B, V, P, seed=8, density=1.1, empty_rows=-1)
    assert (M[:, 0, 1] > 0).all()
    assert_matches_reference(emb, M)
    M32 = M.float()
    loss, _, _, grad = op_loss_grad(emb, M32)
    rloss, _, rgrad = ref_loss_grad(emb, M32.double())
    torch.testing.assert_close(loss, rloss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, rgrad, rtol=1e-6, atol=1e-7)


def test_no_overlap_is_zero_with_zero_grad():
    emb = randn(2, 3, 5, 4, seed=9).requires_grad_()
    M = torch.zeros(2, 3, 3, 5, 5, dtype=F64)
    loss, row_lse, nv = torch.ops.hatch.soft_infonce(emb, M, TAU_T, TAU_P, 0.0)
    loss.backward()
    assert loss.item() == 0.0 and nv.item() == 0
    assert torch.all(emb.grad == 0) and torch.isfinite(row_lse).all()
    # Overlap everywhere but below min_overlap: likewise.
    emb.grad = None
    M = sparse_overlap(2, 3, 5, seed=10)
    loss = hatch_ext.soft_infonce(emb, M, min_overlap=10.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(emb.grad == 0)


def test_zero_embedding_rows():
    """A zero embedding (|e| < eps) is normalised to 0 and gets the g / eps gradient, as F.normalize."""
    emb = randn(1, 2, 4, 3, seed=11)
    emb[0, 1, 2] = 0
    M = sparse_overlap(1, 2, 4, seed=12, density=0.6, empty_rows=0)
    assert_matches_reference(emb, M, rtol=1e-9, atol=1e-9)


def test_float32_close_to_float64():
    B, V, P, D = 2, 3, 15, 7
    emb, M = randn(B, V, P, D, seed=13), sparse_overlap(B, V, P, seed=14)
    loss64, lse64, _, grad64 = op_loss_grad(emb, M)
    loss32, lse32, _, grad32 = op_loss_grad(emb.float(), M.float())
    assert loss32.dtype == torch.float32 and lse32.dtype == torch.float32
    torch.testing.assert_close(loss32.double(), loss64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse32.double(), lse64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad32.double(), grad64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_rule(dtype):
    """Error vs a float32 reference <= 2x the naive reference's error in the same dtype."""
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


def test_gradcheck():
    emb = randn(1, 3, 4, 3, seed=17).requires_grad_()
    M = sparse_overlap(1, 3, 4, seed=18, density=0.5, empty_rows=0.2)
    assert torch.autograd.gradcheck(lambda e: hatch_ext.soft_infonce(e, M, 0.3, 0.5), (emb,))


def test_opcheck():
    emb = randn(2, 3, 5, 4, seed=19).requires_grad_()
    M = sparse_overlap(2, 3, 5, seed=20)
    args = (emb, M, TAU_T, TAU_P, 0.0)
    torch.library.opcheck(torch.ops.hatch.soft_infonce.default, args)
    _, row_lse, nv = torch.ops.hatch.soft_infonce(emb.detach(), M, TAU_T, TAU_P, 0.0)
    bargs = (torch.tensor(0.5, dtype=F64), emb.detach(), M, row_lse, nv, TAU_T, TAU_P, 0.0)
    torch.library.opcheck(torch.ops.hatch.soft_infonce_backward.default, bargs)


def test_backward_op_scales_with_grad_loss():
    emb, M = randn(1, 3, 5, 4, seed=21), sparse_overlap(1, 3, 5, seed=22)
    _, row_lse, nv = torch.ops.hatch.soft_infonce(emb, M, TAU_T, TAU_P, 0.0)
    g1 = torch.ops.hatch.soft_infonce_backward(torch.tensor(1.0, dtype=F64), emb, M, row_lse, nv,
                                               TAU_T, TAU_P, 0.0)
    g3 = torch.ops.hatch.soft_infonce_backward(torch.tensor(-3.0, dtype=F64), emb, M, row_lse, nv,
                                               TAU_T, TAU_P, 0.0)
    torch.testing.assert_close(g3, -3 * g1)
    _, _, rgrad = ref_loss_grad(emb, M)
    torch.testing.assert_close(g1, rgrad)


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


def test_repeated_runs_bitwise_identical():
    emb = randn(2, 4, 40, 9, seed=25, dtype=torch.float32)
    M = sparse_overlap(2, 4, 40, seed=26, dtype=torch.float32)
    first = op_loss_grad(emb, M)
    for _ in range(3):
        again = op_loss_grad(emb, M)
        for x, y in zip(first, again):
            assert torch.equal(x, y)


@pytest.mark.parametrize("tile", ["64", None])
def test_dense_tiled(tile, monkeypatch):
    """P = 300 cells: several row tiles of 64 (the online column log-sum-exp across tiles), or the
    default tile."""
    if tile is not None:
        monkeypatch.setenv("HATCH_LOSS_TILE_ROWS", tile)
    B, V, P, D = 1, 3, 300, 8
    emb = randn(B, V, P, D, seed=27)
    M = sparse_overlap(B, V, P, seed=28, density=0.01)
    assert_matches_reference(emb, M, rtol=1e-9, atol=1e-11)


def test_non_contiguous_inputs():
    B, V, P, D = 2, 3, 6, 5
    emb = randn(B, P, V, D, seed=29).transpose(1, 2)         # [B, V, P, D], not contiguous
    M = sparse_overlap(B, V, P, seed=30).transpose(-1, -2)   # not contiguous either
    assert not emb.is_contiguous() and not M.is_contiguous()
    assert_matches_reference(emb, M)


def test_thread_schedules_agree():
    """One thread (pairs one after another) and two (pairs of a round in parallel) agree."""
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
