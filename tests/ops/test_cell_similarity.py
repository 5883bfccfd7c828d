"""hatch::cell_similarity and cell_similarity_backward on every device (the `device` fixture: CPU, and
CUDA where built) against the naive reference (hatch_ext.reference.cell_similarity and its autograd)
and the CPU kernel; gradcheck, opcheck, low precision; then the error cases (bad input gets a specific
error that names the argument, never a crash, a hang or a silent NaN)."""
import pytest
import torch
from _cases import cuda_tol, is_cuda, other_device

import hatch_ext
from hatch_ext import reference as R

OPS = torch.ops.hatch


def emb_of(B, V, P, D, dtype=torch.float64, seed=0, zero_rows=0):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(B, V, P, D, generator=g, dtype=torch.float64)
    if zero_rows:  # cells with a zero (or tiny) embedding: normalised by eps, not by |e|
        e[0, 0, :zero_rows] = 0
        e[-1, -1, -1] *= 1e-14
    return e.to(dtype)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("B,V,P,D", [(2, 3, 7, 5), (1, 4, 15, 33), (3, 2, 1, 1), (1, 5, 12, 8)])
def test_forward_matches_reference_float64(device, B, V, P, D):
    e = emb_of(B, V, P, D, zero_rows=1)
    out = hatch_ext.cell_similarity(e.to(device))
    assert out.shape == (B, V, V, P, P) and out.dtype == torch.float64 and out.device.type == device.type
    rtol, atol = cuda_tol(device, torch.float64, 0, 1e-12)
    out = out.cpu()
    torch.testing.assert_close(out, R.cell_similarity(e), rtol=rtol, atol=atol)
    for a in range(V):  # never computed, hold 0
        assert torch.all(out[:, a, a] == 0)
    # Cosines: symmetric under (a, i) <-> (c, j).
    torch.testing.assert_close(out, out.permute(0, 2, 1, 4, 3), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_backward_matches_reference_and_cpu(device, dtype):
    emb = randn(2, 3, 7, 5, seed=1)
    upstream = randn(2, 3, 3, 7, 7, seed=2)
    # A non-contiguous input (the kernel must not assume a layout).
    x = emb.to(dtype).to(device).transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()
    out = OPS.cell_similarity(x)
    out.backward(upstream.to(dtype).to(device))
    # clone(): for float64 `.to(dtype).double()` is emb itself, and the reference's and the CPU run's
    # gradients would accumulate into one .grad.
    xr = emb.to(dtype).double().clone().requires_grad_()
    ref = R.cell_similarity(xr)
    ref.backward(upstream)
    # (rtol, atol) of a result in `dtype` against the float64 reference, as stated for CUDA results.
    rtol, atol = (1e-9, 1e-11) if dtype == torch.float64 else (1e-3, 2e-5)
    assert out.dtype == dtype
    torch.testing.assert_close(out.detach().cpu().double(), ref.detach(), rtol=rtol, atol=atol)
    torch.testing.assert_close(x.grad.cpu().double(), xr.grad, rtol=rtol, atol=atol)
    assert torch.all(out[:, [0, 1, 2], [0, 1, 2]] == 0)

    xc = emb.to(dtype).clone().requires_grad_()
    out_cpu = OPS.cell_similarity(xc)
    out_cpu.backward(upstream.to(dtype))
    torch.testing.assert_close(out.detach().cpu(), out_cpu.detach(), rtol=rtol, atol=atol)
    torch.testing.assert_close(x.grad.cpu(), xc.grad, rtol=rtol, atol=atol)


def test_single_view_is_all_zero(device):
    out = hatch_ext.cell_similarity(emb_of(2, 1, 4, 3).to(device))
    assert out.shape == (2, 1, 1, 4, 4) and torch.all(out == 0)


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-6), (torch.float16, 2e-3),
                                        (torch.bfloat16, 1e-2)])
def test_forward_low_precision(device, dtype, atol):
    """Accumulated in float32 and rounded once: within an output rounding of the float64 answer."""
    e = emb_of(2, 3, 9, 24, dtype=dtype, seed=1)
    out = hatch_ext.cell_similarity(e.to(device))
    assert out.dtype == dtype
    ref = R.cell_similarity(e.double())
    assert (out.cpu().double() - ref).abs().max() <= atol


def reference_grad(e, grad):
    e = e.detach().cpu().double().requires_grad_(True)
    (g,) = torch.autograd.grad(R.cell_similarity(e), e, grad.cpu().double())
    return g


@pytest.mark.parametrize("B,V,P,D", [(2, 3, 7, 5), (1, 4, 10, 17), (2, 2, 1, 3)])
def test_backward_matches_reference_autograd(device, B, V, P, D):
    e = emb_of(B, V, P, D, seed=2, zero_rows=1).to(device)
    grad = torch.randn(B, V, V, P, P, dtype=torch.float64).to(device)  # diagonal blocks too: ignored
    g = torch.ops.hatch.cell_similarity_backward(grad, e)
    rtol, atol = cuda_tol(device, torch.float64, 1e-10, 1e-9)
    torch.testing.assert_close(g.cpu(), reference_grad(e, grad), rtol=rtol, atol=atol)
    # Through autograd (hatch_ext registers the backward op).
    e2 = e.clone().requires_grad_(True)
    (g2,) = torch.autograd.grad(hatch_ext.cell_similarity(e2), e2, grad)
    assert torch.equal(g2, g)


def test_backward_ignores_diagonal_blocks(device):
    e = emb_of(1, 3, 4, 6, seed=3).to(device)
    grad = torch.zeros(1, 3, 3, 4, 4, dtype=torch.float64)
    for a in range(3):
        grad[:, a, a] = torch.randn(4, 4, dtype=torch.float64)
    assert torch.all(torch.ops.hatch.cell_similarity_backward(grad.to(device), e) == 0)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_backward_low_precision(device, dtype, tol):
    e = emb_of(2, 3, 5, 8, dtype=dtype, seed=4)
    grad = torch.randn(2, 3, 3, 5, 5, dtype=torch.float64)
    g = torch.ops.hatch.cell_similarity_backward(grad.to(dtype).to(device), e.to(device))
    assert g.dtype == dtype
    ref = reference_grad(e, grad.to(dtype))
    assert (g.cpu().double() - ref).abs().max() <= tol * ref.abs().max()


def test_gradcheck_float64(device):
    e = emb_of(2, 3, 4, 5, seed=5).to(device).requires_grad_(True)
    assert torch.autograd.gradcheck(hatch_ext.cell_similarity, (e,), eps=1e-6, atol=1e-7)


def test_opcheck(device):
    e = emb_of(2, 3, 4, 5, seed=6).to(device)
    torch.library.opcheck(torch.ops.hatch.cell_similarity.default, (e.clone().requires_grad_(True),))
    torch.library.opcheck(torch.ops.hatch.cell_similarity.default, (e.float(),))
    grad = torch.randn(2, 3, 3, 4, 4, dtype=torch.float64).to(device)
    torch.library.opcheck(torch.ops.hatch.cell_similarity_backward.default, (grad, e))


def test_repeated_runs_bitwise_identical(device):
    e = emb_of(2, 4, 16, 32, dtype=torch.float32, seed=7).to(device)
    grad = torch.randn(2, 4, 4, 16, 16).to(device)
    out, g = hatch_ext.cell_similarity(e), torch.ops.hatch.cell_similarity_backward(grad, e)
    for _ in range(3):
        assert torch.equal(hatch_ext.cell_similarity(e), out)
        assert torch.equal(torch.ops.hatch.cell_similarity_backward(grad, e), g)


def test_non_contiguous_inputs(device):
    e = emb_of(2, 3, 6, 5, seed=8)
    e_nc = e.to(device).transpose(0, 2).contiguous().transpose(0, 2)
    assert not e_nc.is_contiguous()
    rtol, atol = cuda_tol(device, torch.float64, 0, 1e-12)
    torch.testing.assert_close(hatch_ext.cell_similarity(e_nc).cpu(), R.cell_similarity(e), rtol=rtol,
                               atol=atol)
    grad = torch.randn(2, 3, 3, 6, 6, dtype=torch.float64)
    grad_nc = grad.to(device).transpose(-1, -2).contiguous().transpose(-1, -2)
    rtol, atol = cuda_tol(device, torch.float64, 1e-10, 1e-9)
    torch.testing.assert_close(torch.ops.hatch.cell_similarity_backward(grad_nc, e_nc).cpu(),
                               reference_grad(e, grad), rtol=rtol, atol=atol)


def test_output_fully_written_over_poisoned_memory(device):
    """The output is allocated after a NaN-filled buffer of its size is freed (on CUDA every op's
    outputs over a poisoned allocator cache: test_cuda.py)."""
    e = emb_of(2, 3, 5, 4, seed=9)
    ref = R.cell_similarity(e)
    rtol, atol = cuda_tol(device, torch.float64, 0, 1e-12)
    for _ in range(3):
        poison = torch.full(ref.shape, float("nan"), dtype=ref.dtype, device=device)
        del poison
        out = hatch_ext.cell_similarity(e.to(device))
        assert not torch.isnan(out).any()
        torch.testing.assert_close(out.cpu(), ref, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------- error cases
ERRORS = (ValueError, TypeError, RuntimeError)
CPU_ONLY = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
EMB = torch.randn(2, 3, 4, 5, dtype=torch.float64)

BAD_EMB = [
    ("rank 3", EMB[0], r"'emb'.*\[B, V, P, D\]"),
    ("rank 5", EMB[None], r"'emb'.*\[B, V, P, D\]"),
    ("int", EMB.long(), r"'emb' must be float32, float64, float16 or bfloat16"),
    ("complex", EMB.to(torch.complex64), r"'emb' must be float32, float64, float16 or bfloat16"),
    ("bool", EMB > 0, r"'emb' must be float32, float64, float16 or bfloat16"),
    ("empty batch", EMB[:0], r"'emb' must be non-empty"),
    ("no channels", EMB[..., :0], r"'emb' must be non-empty"),
    ("no cells", EMB[:, :, :0], r"'emb' must be non-empty"),
]


@pytest.mark.parametrize("name,emb,match", BAD_EMB, ids=[b[0] for b in BAD_EMB])
def test_bad_emb(device, name, emb, match):
    emb = emb.to(device)
    with pytest.raises(ERRORS, match=match):
        torch.ops.hatch.cell_similarity(emb)
    with pytest.raises(ERRORS, match=match):
        grad = torch.zeros(2, 3, 3, 4, 4, dtype=torch.float64, device=device)
        torch.ops.hatch.cell_similarity_backward(grad, emb)


BAD_GRAD = [
    ("rank 4", torch.zeros(2, 3, 4, 4, dtype=torch.float64), r"'grad'.*\[2, 3, 3, 4, 4\]"),
    ("wrong B", torch.zeros(1, 3, 3, 4, 4, dtype=torch.float64), r"'grad'.*\[2, 3, 3, 4, 4\]"),
    ("wrong V", torch.zeros(2, 3, 2, 4, 4, dtype=torch.float64), r"'grad'.*\[2, 3, 3, 4, 4\]"),
    ("wrong P", torch.zeros(2, 3, 3, 4, 5, dtype=torch.float64), r"'grad'.*\[2, 3, 3, 4, 4\]"),
    ("int", torch.zeros(2, 3, 3, 4, 4, dtype=torch.int32), r"'grad' must be a floating-point"),
    ("complex", torch.zeros(2, 3, 3, 4, 4, dtype=torch.complex128), r"'grad' must be a floating-point"),
]


@pytest.mark.parametrize("name,grad,match", BAD_GRAD, ids=[b[0] for b in BAD_GRAD])
def test_backward_bad_grad(device, name, grad, match):
    with pytest.raises(ERRORS, match=match):
        torch.ops.hatch.cell_similarity_backward(grad.to(device), EMB.to(device))


@pytest.mark.parametrize("bad", ["shape", "dtype"])
def test_backward_grad_errors_same_message_as_cpu(device, bad):
    """cell_similarity_backward checks grad in common/checks.cpp on both backends: the same message."""
    emb = emb_of(1, 2, 4, 3)
    grad = torch.zeros(1, 2, 2, 4, 5, dtype=torch.float64) if bad == "shape" else torch.zeros(
        1, 2, 2, 4, 4, dtype=torch.int64)
    err = ValueError if bad == "shape" else TypeError
    with pytest.raises(err) as cpu:
        OPS.cell_similarity_backward(grad, emb)
    with pytest.raises(err) as on_device:
        OPS.cell_similarity_backward(grad.to(device), emb.to(device))
    assert str(on_device.value).splitlines()[0] == str(cpu.value).splitlines()[0]


def test_backward_devices(device):
    """grad on another device than emb: refused by the CPU kernel (dispatched to directly: a meta
    argument routes the public call to the fake implementation) and through the public call (the fake
    beside the CPU, the CUDA kernel beside CUDA)."""
    other = other_device(device)
    grad = torch.zeros(2, 3, 3, 4, 4, dtype=torch.float64, device=other)
    emb = EMB.to(device)
    match = rf"'grad' is on {other} but 'emb' is on {device.type}"
    if not is_cuda(device):
        with pytest.raises(ValueError, match=match):
            torch.ops.hatch.cell_similarity_backward.default.redispatch(CPU_ONLY, grad, emb)
    with pytest.raises(ValueError, match=match):
        torch.ops.hatch.cell_similarity_backward(grad, emb)


def test_no_nan_from_zero_embeddings(device):
    """All-zero embeddings are normalised by eps (as F.normalize): similarity 0 and finite gradients."""
    emb = torch.zeros(1, 2, 3, 4, dtype=torch.float64, device=device, requires_grad=True)
    out = hatch_ext.cell_similarity(emb)
    assert torch.all(out == 0)
    out.sum().backward()
    assert torch.isfinite(emb.grad).all()
