"""hatch::cell_similarity and cell_similarity_backward (CPU) against the naive reference
(hatch_ext.reference.cell_similarity and its autograd), gradcheck, opcheck, low precision."""
import pytest
import torch

import hatch_ext
from hatch_ext import reference as R


def emb_of(B, V, P, D, dtype=torch.float64, seed=0, zero_rows=0):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(B, V, P, D, generator=g, dtype=torch.float64)
    if zero_rows:  # cells with a zero (or tiny) embedding: normalised by eps, not by |e|
        e[0, 0, :zero_rows] = 0
        e[-1, -1, -1] *= 1e-14
    return e.to(dtype)


@pytest.mark.parametrize("B,V,P,D", [(2, 3, 7, 5), (1, 4, 15, 33), (3, 2, 1, 1), (1, 5, 12, 8)])
def test_forward_matches_reference_float64(B, V, P, D):
    e = emb_of(B, V, P, D, zero_rows=1)
    out = hatch_ext.cell_similarity(e)
    assert out.shape == (B, V, V, P, P) and out.dtype == torch.float64
    torch.testing.assert_close(out, R.cell_similarity(e), rtol=0, atol=1e-12)
    for a in range(V):  # never computed, hold 0
        assert torch.all(out[:, a, a] == 0)
    # Cosines: symmetric under (a, i) <-> (c, j).
    torch.testing.assert_close(out, out.permute(0, 2, 1, 4, 3), rtol=0, atol=1e-12)


def test_single_view_is_all_zero():
    out = hatch_ext.cell_similarity(emb_of(2, 1, 4, 3))
    assert out.shape == (2, 1, 1, 4, 4) and torch.all(out == 0)


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-6), (torch.float16, 2e-3),
                                        (torch.bfloat16, 1e-2)])
def test_forward_low_precision(dtype, atol):
    """Accumulated in float32 and rounded once: within an output rounding of the float64 answer."""
    e = emb_of(2, 3, 9, 24, dtype=dtype, seed=1)
    out = hatch_ext.cell_similarity(e)
    assert out.dtype == dtype
    ref = R.cell_similarity(e.double())
    assert (out.double() - ref).abs().max() <= atol


def reference_grad(e, grad):
    e = e.detach().double().requires_grad_(True)
    (g,) = torch.autograd.grad(R.cell_similarity(e), e, grad.double())
    return g


@pytest.mark.parametrize("B,V,P,D", [(2, 3, 7, 5), (1, 4, 10, 17), (2, 2, 1, 3)])
def test_backward_matches_reference_autograd(B, V, P, D):
    e = emb_of(B, V, P, D, seed=2, zero_rows=1)
    grad = torch.randn(B, V, V, P, P, dtype=torch.float64)  # diagonal blocks too: must be ignored
    g = torch.ops.hatch.cell_similarity_backward(grad, e)
    torch.testing.assert_close(g, reference_grad(e, grad), rtol=1e-10, atol=1e-9)
    # Through autograd (hatch_ext registers the backward op).
    e2 = e.clone().requires_grad_(True)
    (g2,) = torch.autograd.grad(hatch_ext.cell_similarity(e2), e2, grad)
    assert torch.equal(g2, g)


def test_backward_ignores_diagonal_blocks():
    e = emb_of(1, 3, 4, 6, seed=3)
    grad = torch.zeros(1, 3, 3, 4, 4, dtype=torch.float64)
    for a in range(3):
        grad[:, a, a] = torch.randn(4, 4, dtype=torch.float64)
    assert torch.all(torch.ops.hatch.cell_similarity_backward(grad, e) == 0)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_backward_low_precision(dtype, tol):
    e = emb_of(2, 3, 5, 8, dtype=dtype, seed=4)
    grad = torch.randn(2, 3, 3, 5, 5, dtype=torch.float64)
    g = torch.ops.hatch.cell_similarity_backward(grad.to(dtype), e)
    assert g.dtype == dtype
    ref = reference_grad(e, grad.to(dtype))
    assert (g.double() - ref).abs().max() <= tol * ref.abs().max()


def test_gradcheck_float64():
    e = emb_of(2, 3, 4, 5, seed=5).requires_grad_(True)
    assert torch.autograd.gradcheck(hatch_ext.cell_similarity, (e,), eps=1e-6, atol=1e-7)


def test_opcheck():
    e = emb_of(2, 3, 4, 5, seed=6)
    torch.library.opcheck(torch.ops.hatch.cell_similarity.default, (e.clone().requires_grad_(True),))
    torch.library.opcheck(torch.ops.hatch.cell_similarity.default, (e.float(),))
    grad = torch.randn(2, 3, 3, 4, 4, dtype=torch.float64)
    torch.library.opcheck(torch.ops.hatch.cell_similarity_backward.default, (grad, e))


def test_repeated_runs_bitwise_identical():
    e = emb_of(2, 4, 16, 32, dtype=torch.float32, seed=7)
    grad = torch.randn(2, 4, 4, 16, 16)
    out, g = hatch_ext.cell_similarity(e), torch.ops.hatch.cell_similarity_backward(grad, e)
    for _ in range(3):
        assert torch.equal(hatch_ext.cell_similarity(e), out)
        assert torch.equal(torch.ops.hatch.cell_similarity_backward(grad, e), g)


def test_non_contiguous_inputs():
    e = emb_of(2, 3, 6, 5, seed=8)
    e_nc = e.transpose(0, 2).contiguous().transpose(0, 2)
    assert not e_nc.is_contiguous()
    torch.testing.assert_close(hatch_ext.cell_similarity(e_nc), R.cell_similarity(e), rtol=0, atol=1e-12)
    grad = torch.randn(2, 3, 3, 6, 6, dtype=torch.float64)
    grad_nc = grad.transpose(-1, -2).contiguous().transpose(-1, -2)
    torch.testing.assert_close(torch.ops.hatch.cell_similarity_backward(grad_nc, e_nc),
                               reference_grad(e, grad), rtol=1e-10, atol=1e-9)


def test_output_fully_written_over_poisoned_memory():
    e = emb_of(2, 3, 5, 4, seed=9)
    ref = R.cell_similarity(e)
    for _ in range(3):
        poison = torch.full(ref.shape, float("nan"), dtype=ref.dtype)
        del poison
        out = hatch_ext.cell_similarity(e)
        assert not torch.isnan(out).any()
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
