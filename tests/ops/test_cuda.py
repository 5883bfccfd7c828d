"""The CUDA kernels of hatch_ext against the naive reference (hatch_ext.reference) and the CPU kernels.

The overlap (patch_overlap, and through it the fused loss) may differ from the CPU by at most one edge
pixel per (view pair, cell row), stated in test_patch_overlap_matches_reference_and_cpu (FMA
contraction on the GPU); the loss values are compared within float rounding.

Needs a CUDA GPU and a CUDA build of hatch_ext (`pip install --no-build-isolation -e .` on a machine
with a CUDA toolkit and a CUDA torch; scripts/gpu_check.sh does it and records the result); skipped
with the reason otherwise. Covers: values and gradients of every op on random room scenes with odd
sizes, non-square grids, invalid depth, occluders and stride > 1; the online column statistics across
many row tiles (HATCH_LOSS_TILE_ROWS); run-to-run determinism; the low-precision rule; outputs fully
written over poisoned memory; torch.library.opcheck; the memory of a dense problem; a launch count
(torch.profiler) that does not depend on B and V; and forward + backward captured in a CUDA graph.
"""
from __future__ import annotations

import pytest
import torch

import hatch_ext
from hatch_ext import reference as R
from hatch_ext import testing


def _skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine (CI has none); run scripts/gpu_check.sh on a GPU host"
    if not hatch_ext.has_cuda_kernels():
        return ("hatch_ext was built without its CUDA kernels (needs a CUDA toolkit and a CUDA build of "
                "torch); rebuild with `pip install --no-build-isolation -e .` on a GPU host")
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")

CUDA = torch.device("cuda")
OPS = torch.ops.hatch
TAU_T, TAU_P, ABS_TOL, REL_TOL = 0.1, 0.07, 0.05, 0.05


# ------------------------------------------------------------------------------------------ helpers
def scene(B=2, V=3, H=23, W=29, seed=0, dtype=torch.float64, invalid=0.1):
    """Odd-sized room scene with two occluders and some invalid (0 / NaN) depth."""
    return testing.room_scene(B, V, H, W, seed=seed, dtype=dtype, occluders=2,
                              invalid_fraction=invalid)


def geometry(s, device):
    return s.depth.to(device), s.K.to(device), s.cam_to_world.to(device)


def randn(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def ref_row_lse(emb: torch.Tensor, tau_p: float) -> torch.Tensor:
    """The documented row_lse: logsumexp_j cos(e_a,i, e_c,j) / tau_p, 0 on the blocks a == c."""
    e = R.normalize(emb)
    lse = torch.logsumexp(torch.einsum("bapd,bcqd->bacpq", e, e) / tau_p, dim=-1)
    off = ~torch.eye(emb.shape[1], dtype=torch.bool, device=emb.device)
    return lse * off[None, :, :, None]


def tol(dtype):
    """(rtol, atol) of a CUDA result in `dtype` against the float64 reference."""
    return (1e-9, 1e-11) if dtype == torch.float64 else (1e-3, 2e-5)


def loss_and_grad(fn, emb):
    """Runs fn(emb) -> (loss, row_lse, num_valid) and backprops the loss; returns values and grad."""
    x = emb.detach().clone().requires_grad_()
    loss, lse, nv = fn(x)
    loss.backward()
    return loss.detach(), lse.detach(), nv, x.grad


# --------------------------------------------------------------------------------------- patch_overlap
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("grid_h,grid_w,stride", [(3, 5, 1), (4, 4, 2), (5, 3, 3), (10, 10, 1)])
def test_patch_overlap_matches_reference_and_cpu(dtype, grid_h, grid_w, stride):
    # (10, 10) has P^2 = 10000 bins: the global-atomics path instead of the shared-memory histogram.
    s = scene(dtype=dtype, seed=grid_h + stride)
    args = (grid_h, grid_w, ABS_TOL, REL_TOL, stride)
    M = OPS.patch_overlap(*geometry(s, CUDA), *args)
    assert M.dtype == dtype and M.device.type == "cuda"
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
    cpu = OPS.patch_overlap(*geometry(s, "cpu"), *args)
    testing.assert_overlap_within_one_pixel(M, cpu, s.depth, grid_h, grid_w, stride)
    # The entries are count / n_i in depth's dtype on both devices: where a row's counts agree, its
    # entries agree within one rounding of the division.
    n = testing.cell_pixel_counts(s.depth, grid_h, grid_w, stride)
    rows_equal = ((M.cpu().double() - cpu.double()) * n[:, :, None, :, None]).round().abs().sum(-1) == 0
    torch.testing.assert_close(M.cpu()[rows_equal], cpu[rows_equal], rtol=torch.finfo(dtype).eps,
                               atol=0)


def test_patch_overlap_plane_pair_exact():
    # Exact, no pixel tolerance: a pure integer shift projects every pixel onto a pixel centre, far
    # from any rounding boundary, so FMA contraction cannot move one.
    s = testing.plane_pair(H=12, W=16, shift_px=4)
    M = OPS.patch_overlap(*geometry(s, CUDA), 3, 4, ABS_TOL, REL_TOL, 1).cpu()
    expected = torch.zeros(12, 12, dtype=torch.float64)
    for row in range(3):
        for col in range(1, 4):  # column 0 of view 0 falls off the left edge of view 1
            expected[row * 4 + col, row * 4 + col - 1] = 1
    assert torch.equal(M[0, 0, 1], expected)
    assert torch.equal(M[0, 1, 0], expected.T)
    assert M[0, 0, 0].abs().sum() == 0 and M[0, 1, 1].abs().sum() == 0


# ------------------------------------------------------------------------------------- cell_similarity
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cell_similarity_forward_backward(dtype):
    emb = randn(2, 3, 7, 5, seed=1)
    upstream = randn(2, 3, 3, 7, 7, seed=2)
    # A non-contiguous CUDA input (the kernel must not assume a layout).
    x = emb.to(dtype).to(CUDA).transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()
    out = OPS.cell_similarity(x)
    out.backward(upstream.to(dtype).to(CUDA))
    xr = emb.to(dtype).double().requires_grad_()
    ref = R.cell_similarity(xr)
    ref.backward(upstream)
    rtol, atol = tol(dtype)
    assert out.dtype == dtype
    torch.testing.assert_close(out.detach().cpu().double(), ref.detach(), rtol=rtol, atol=atol)
    torch.testing.assert_close(x.grad.cpu().double(), xr.grad, rtol=rtol, atol=atol)
    assert torch.all(out[:, [0, 1, 2], [0, 1, 2]] == 0)

    xc = emb.to(dtype).requires_grad_()
    out_cpu = OPS.cell_similarity(xc)
    out_cpu.backward(upstream.to(dtype))
    torch.testing.assert_close(out.detach().cpu(), out_cpu.detach(), rtol=rtol, atol=atol)
    torch.testing.assert_close(x.grad.cpu(), xc.grad, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------- soft_infonce
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tile_rows", [None, "4"])
@pytest.mark.parametrize("min_overlap", [0.0, 0.2718])  # not a small-integer ratio: no ties
def test_soft_infonce_matches_reference_and_cpu(dtype, tile_rows, min_overlap, monkeypatch):
    # tile_rows "4" splits P = 15 rows into 4 tiles: the online column log-sum-exp is exercised.
    if tile_rows is not None:
        monkeypatch.setenv("HATCH_LOSS_TILE_ROWS", tile_rows)
    s = scene(seed=3)
    M = R.patch_overlap(s.depth, s.K, s.cam_to_world, 3, 5)  # P = 15, float64
    emb = randn(2, 3, 15, 6, seed=4).to(dtype)
    params = (TAU_T, TAU_P, min_overlap)

    loss, lse, nv, grad = loss_and_grad(lambda x: OPS.soft_infonce(x, M.to(dtype).to(CUDA), *params),
                                        emb.to(CUDA))
    xr = emb.double().requires_grad_()
    ref, nv_ref = R.soft_infonce(xr, M, *params, return_num_valid=True)
    ref.backward()
    assert 0 < nv_ref < 2 * 3 * 2 * 15, "the case must have both valid and invalid rows"
    assert nv.dtype == torch.int64 and nv.item() == nv_ref.item()
    assert loss.dtype == dtype and lse.dtype == dtype
    rtol, atol = tol(dtype)
    torch.testing.assert_close(loss.cpu().double(), ref.detach(), rtol=rtol, atol=atol)
    torch.testing.assert_close(lse.cpu().double(), ref_row_lse(emb.double(), TAU_P), rtol=rtol,
                               atol=atol * 10)
    torch.testing.assert_close(grad.cpu().double(), xr.grad, rtol=rtol, atol=atol)

    loss_c, lse_c, nv_c, grad_c = loss_and_grad(lambda x: OPS.soft_infonce(x, M.to(dtype), *params),
                                                emb)
    assert nv_c.item() == nv.item()
    torch.testing.assert_close(loss.cpu(), loss_c, rtol=rtol, atol=atol)
    torch.testing.assert_close(lse.cpu(), lse_c, rtol=rtol, atol=atol * 10)
    torch.testing.assert_close(grad.cpu(), grad_c, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------- patch_align
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tile_rows", [None, "5"])
@pytest.mark.parametrize("grid_h,grid_w,stride", [(4, 3, 1), (3, 5, 2)])
def test_patch_align_matches_reference_and_cpu(dtype, tile_rows, grid_h, grid_w, stride,
                                               monkeypatch):
    if tile_rows is not None:
        monkeypatch.setenv("HATCH_LOSS_TILE_ROWS", tile_rows)
    s = scene(seed=5 + stride, H=25, W=31)
    P = grid_h * grid_w
    emb = randn(2, 3, P, 7, seed=6).to(dtype)
    geo = (grid_h, grid_w, TAU_T, TAU_P, ABS_TOL, REL_TOL, stride, 0.0)

    def fused(device):
        d, K, T = geometry(s, device)
        return lambda x: OPS.patch_align(x, d, K, T, *geo)

    loss, lse, nv, grad = loss_and_grad(fused(CUDA), emb.to(CUDA))
    xr = emb.double().requires_grad_()
    ref, nv_ref = R.patch_align(xr, s.depth, s.K, s.cam_to_world, grid_h, grid_w, TAU_T, TAU_P,
                                ABS_TOL, REL_TOL, stride, 0.0, return_num_valid=True)
    ref.backward()
    assert nv_ref > 0
    assert nv.item() == nv_ref.item()
    rtol, atol = tol(dtype)
    torch.testing.assert_close(loss.cpu().double(), ref.detach(), rtol=rtol, atol=atol)
    torch.testing.assert_close(lse.cpu().double(), ref_row_lse(emb.double(), TAU_P), rtol=rtol,
                               atol=atol * 10)
    torch.testing.assert_close(grad.cpu().double(), xr.grad, rtol=rtol, atol=atol)

    # The fused op equals the two-step soft_infonce(patch_overlap(...)) on the same device.
    M = OPS.patch_overlap(*geometry(s, CUDA), grid_h, grid_w, ABS_TOL, REL_TOL, stride)
    loss2, lse2, nv2, grad2 = loss_and_grad(
        lambda x: OPS.soft_infonce(x, M, TAU_T, TAU_P, 0.0), emb.to(CUDA))
    assert nv2.item() == nv.item()
    torch.testing.assert_close(loss, loss2, rtol=rtol, atol=atol)
    torch.testing.assert_close(grad, grad2, rtol=rtol, atol=atol)

    loss_c, lse_c, nv_c, grad_c = loss_and_grad(fused("cpu"), emb)
    assert nv_c.item() == nv.item()
    torch.testing.assert_close(loss.cpu(), loss_c, rtol=rtol, atol=atol)
    torch.testing.assert_close(lse.cpu(), lse_c, rtol=rtol, atol=atol * 10)
    torch.testing.assert_close(grad.cpu(), grad_c, rtol=rtol, atol=atol)


def test_no_overlap_gives_zero_loss_and_zero_grad():
    emb = randn(2, 3, 6, 5, seed=7).to(CUDA)
    loss, _, nv, grad = loss_and_grad(
        lambda x: OPS.soft_infonce(x, torch.zeros(2, 3, 3, 6, 6, device=CUDA), TAU_T, TAU_P, 0.0), emb)
    assert loss.item() == 0.0 and nv.item() == 0 and torch.all(grad == 0)
    # No valid depth at all: every denominator is 0, so nothing overlaps.
    s = scene(B=2, V=3, H=9, W=11, seed=8)
    depth = torch.zeros_like(s.depth).to(CUDA)
    loss, _, nv, grad = loss_and_grad(
        lambda x: OPS.patch_align(x, depth, s.K.to(CUDA), s.cam_to_world.to(CUDA), 2, 3, TAU_T, TAU_P,
                                  ABS_TOL, REL_TOL, 1, 0.0), emb)
    assert loss.item() == 0.0 and nv.item() == 0 and torch.all(grad == 0)
    assert torch.isfinite(grad).all()


def test_inputs_on_two_devices_are_rejected():
    emb = randn(1, 2, 4, 3).to(CUDA)
    with pytest.raises(ValueError, match="overlap"):
        OPS.soft_infonce(emb, torch.zeros(1, 2, 2, 4, 4, dtype=torch.float64), TAU_T, TAU_P, 0.0)
    s = scene(B=1, V=2, H=9, W=11)
    with pytest.raises(ValueError, match="emb"):
        OPS.patch_align(emb, *geometry(s, "cpu"), 2, 2, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)


@pytest.mark.parametrize("bad", ["shape", "dtype"])
def test_similarity_grad_errors_match_the_cpu(bad):
    """cell_similarity_backward checks grad in common/checks.cpp on both backends: the same message."""
    emb = randn(1, 2, 4, 3)
    grad = torch.zeros(1, 2, 2, 4, 5, dtype=torch.float64) if bad == "shape" else torch.zeros(
        1, 2, 2, 4, 4, dtype=torch.int64)
    err = ValueError if bad == "shape" else TypeError
    with pytest.raises(err) as cpu:
        OPS.cell_similarity_backward(grad, emb)
    with pytest.raises(err) as cuda:
        OPS.cell_similarity_backward(grad.to(CUDA), emb.to(CUDA))
    assert str(cuda.value).splitlines()[0] == str(cpu.value).splitlines()[0]


# ---------------------------------------------------------------------------------- determinism
def test_repeated_runs_are_bitwise_identical(monkeypatch):
    # Counts are integer atomics and the loss uses no floating-point atomics: every run gives the same
    # bits. A larger image gives many blocks per view pair, so a race in the histograms would show.
    monkeypatch.setenv("HATCH_LOSS_TILE_ROWS", "7")
    s = scene(B=2, V=4, H=61, W=83, seed=9)
    d, K, T = geometry(s, CUDA)
    emb = randn(2, 4, 16, 9, seed=10).to(torch.float32).to(CUDA)

    def run():
        x = emb.clone().requires_grad_()
        loss, lse, nv = OPS.patch_align(x, d, K, T, 4, 4, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)
        loss.backward()
        sim = OPS.cell_similarity(x.detach())
        return [OPS.patch_overlap(d, K, T, 4, 4, ABS_TOL, REL_TOL, 1),
                OPS.patch_overlap(d, K, T, 12, 12, ABS_TOL, REL_TOL, 1),  # global-atomics path
                loss.detach(), lse, nv, x.grad, sim]

    first = run()
    for _ in range(4):
        for a, b in zip(first, run()):
            assert torch.equal(a, b)


# ---------------------------------------------------------------------------------- low precision
def _lp_case(op: str):
    """(kernel fn, reference fn, emb float32 on CUDA, upstream weights or None) for one op."""
    s = scene(B=2, V=3, H=23, W=29, seed=11)
    d, K, T = geometry(s, CUDA)
    emb = randn(2, 3, 12, 16, seed=12).to(torch.float32).to(CUDA)
    if op == "cell_similarity":
        w = randn(2, 3, 3, 12, 12, seed=13).to(torch.float32).to(CUDA)
        return OPS.cell_similarity, R.cell_similarity, emb, w
    if op == "soft_infonce":
        M = R.patch_overlap(d, K, T, 3, 4)
        return (lambda x: OPS.soft_infonce(x, M, TAU_T, TAU_P, 0.0)[0],
                lambda x: R.soft_infonce(x, M, TAU_T, TAU_P, 0.0), emb, None)
    return (lambda x: OPS.patch_align(x, d, K, T, 3, 4, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)[0],
            lambda x: R.patch_align(x, d, K, T, 3, 4, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0), emb,
            None)


def _value_and_grad(fn, emb, w):
    x = emb.detach().clone().requires_grad_()
    out = fn(x)
    (out if w is None else (out * w.to(out.dtype)).sum()).backward()
    return out.detach().float(), x.grad.float()


@pytest.mark.parametrize("lp", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("op", ["cell_similarity", "soft_infonce", "patch_align"])
def test_low_precision_rule(lp, op):
    """The kernel's error against a float32 reference is at most 2x the error of the naive PyTorch
    reference run in the same dtype (plus one rounding unit of the output itself, which no kernel can
    avoid when it returns `lp`: without it, a naive result that happens to round to the exact value
    would demand an error of 0)."""
    kernel, naive, emb32, w = _lp_case(op)
    emb_lp = emb32.to(lp)
    w = None if w is None else w.to(lp).float()  # the same upstream gradient for every run
    exact = _value_and_grad(naive, emb_lp.float(), w)   # float32 reference on the same rounded inputs
    naive_lp = _value_and_grad(naive, emb_lp, w)
    kernel_lp = _value_and_grad(kernel, emb_lp, w)
    eps = torch.finfo(lp).eps
    for name, k, n, r in zip(("value", "grad"), kernel_lp, naive_lp, exact):
        err_kernel = (k - r).abs().max().item()
        err_naive = (n - r).abs().max().item()
        floor = eps * r.abs().max().item()
        assert err_kernel <= 2 * err_naive + floor, (
            f"{op} {lp} {name}: kernel error {err_kernel:.3g} > 2 x naive {err_naive:.3g} + {floor:.3g}")


# ---------------------------------------------------------------------------------- poisoned memory
def _poison_cuda_cache():
    """Fills freed blocks of both caching-allocator pools with NaN, so that an output element a kernel
    forgets to write shows up as NaN (instead of a lucky 0)."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    blocks = [torch.full((n,), float("nan"), device=CUDA) for n in (2**8, 2**12, 2**16, 2**18) * 8]
    blocks.append(torch.full((2**24,), float("nan"), device=CUDA))  # 64 MB, large pool
    torch.cuda.synchronize()
    del blocks


def test_outputs_fully_written_over_poisoned_memory():
    s = scene(B=2, V=3, H=23, W=29, seed=14)
    d, K, T = geometry(s, CUDA)
    emb = randn(2, 3, 12, 5, seed=15).to(torch.float32).to(CUDA)

    def run():
        x = emb.clone().requires_grad_()
        loss, lse, nv = OPS.patch_align(x, d, K, T, 3, 4, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)
        loss.backward()
        xs = emb.clone().requires_grad_()
        sim = OPS.cell_similarity(xs)
        sim.sum().backward()
        M = OPS.patch_overlap(d, K, T, 3, 4, ABS_TOL, REL_TOL, 1)
        return [M, loss.detach(), lse, nv, x.grad, sim.detach(), xs.grad]

    clean = run()
    _poison_cuda_cache()
    poisoned = run()
    for a, b in zip(clean, poisoned):
        assert torch.isfinite(b.float()).all()
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------- opcheck
def _opcheck_cases(contiguous=True):
    s = scene(B=1, V=3, H=13, W=17, seed=16)
    d, K, T = geometry(s, CUDA)
    emb = randn(1, 3, 6, 4, seed=17).to(CUDA)
    if not contiguous:
        # Transposed emb and depth (same values, other strides): the kernels return contiguous
        # tensors, and the fakes must say so.
        emb = emb.transpose(2, 3).contiguous().transpose(2, 3)
        d = d.transpose(2, 3).contiguous().transpose(2, 3)
        assert not emb.is_contiguous() and not d.is_contiguous()
    M = OPS.patch_overlap(d, K, T, 2, 3, ABS_TOL, REL_TOL, 1)
    loss, lse, nv = OPS.soft_infonce(emb, M, TAU_T, TAU_P, 0.0)
    _, lse_a, nv_a = OPS.patch_align(emb, d, K, T, 2, 3, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)
    g = torch.ones((), dtype=emb.dtype, device=CUDA)
    req = emb.clone().requires_grad_()
    return {
        "patch_overlap": (OPS.patch_overlap.default, (d, K, T, 2, 3, ABS_TOL, REL_TOL, 1)),
        "cell_similarity": (OPS.cell_similarity.default, (req,)),
        "cell_similarity_backward": (OPS.cell_similarity_backward.default,
                                     (torch.ones(1, 3, 3, 6, 6, dtype=emb.dtype, device=CUDA), emb)),
        "soft_infonce": (OPS.soft_infonce.default, (req, M, TAU_T, TAU_P, 0.0)),
        "soft_infonce_backward": (OPS.soft_infonce_backward.default,
                                  (g, emb, M, lse, nv, TAU_T, TAU_P, 0.0)),
        "patch_align": (OPS.patch_align.default,
                        (req, d, K, T, 2, 3, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)),
        "patch_align_backward": (OPS.patch_align_backward.default,
                                 (g, emb, d, K, T, lse_a, nv_a, 2, 3, TAU_T, TAU_P, ABS_TOL, REL_TOL,
                                  1, 0.0)),
    }


@pytest.mark.parametrize("name", ["patch_overlap", "cell_similarity", "cell_similarity_backward",
                                  "soft_infonce", "soft_infonce_backward", "patch_align",
                                  "patch_align_backward"])
@pytest.mark.parametrize("contiguous", [True, False])
def test_opcheck_on_cuda(name, contiguous):
    op, args = _opcheck_cases(contiguous)[name]
    torch.library.opcheck(op, args)


# ---------------------------------------------------------------------------------- dense memory
def test_dense_problem_memory_bound_and_values():
    """P = 1024 cells (32 x 32 grid), V = 4, D = 256, B = 2: forward + backward of patch_align must
    allocate at most 64 MiB beyond its inputs, half of ONE float32 similarity of all view pairs
    (B V^2 P^2 x 4 B = 128 MiB), which the naive version holds several times over."""
    B, V, P, D = 2, 4, 1024, 256
    s = testing.room_scene(B, V, 64, 64, seed=18, dtype=torch.float32)
    d, K, T = geometry(s, CUDA)
    emb = torch.randn(B, V, P, D, generator=torch.Generator().manual_seed(19)).to(CUDA)

    def run(x):
        loss = hatch_ext.ops.patch_align(x, d, K, T, 32, 32)
        loss.backward()
        return loss.detach()

    run(emb.clone().requires_grad_())  # warm-up: cuBLAS handle and workspace stay allocated after it
    x = emb.clone().requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = run(x)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    all_pairs = B * V * V * P * P * 4
    bound = 64 * 2**20
    assert bound <= all_pairs // 2
    assert extra <= bound, f"peak {extra / 2**20:.1f} MiB beyond the inputs > {bound / 2**20:.0f} MiB"

    # The same values as the naive reference (float32 embeddings on CUDA; it needs the full
    # similarities). Its geometry in float64, as the kernel reprojects in float64: with 2 x 2-pixel
    # cells, one pixel binned differently by float32 rounding would move a whole row's target.
    xr = emb.clone().requires_grad_()
    ref = R.patch_align(xr, d.double(), K.double(), T.double(), 32, 32)
    ref.backward()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-3, atol=1e-6)


# ---------------------------------------------------------------------------------- launch count
def _kernel_launches(fn) -> tuple[int, list[str]]:
    """Kernels (and memset / memcpy operations) on the GPU while fn() runs, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = sorted(e.name for e in prof.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA)
    return len(names), names


def _loss_step(op, B, V, seed=30):
    """forward + backward of op ('soft_infonce' / 'patch_align') at (B, V), P = 12, as a closure."""
    s = scene(B=B, V=V, H=13, W=17, seed=seed)
    d, K, T = geometry(s, CUDA)
    emb = randn(B, V, 12, 8, seed=seed + 1).to(torch.float32).to(CUDA)
    if op == "soft_infonce":
        M = OPS.patch_overlap(d, K, T, 3, 4, ABS_TOL, REL_TOL, 1)
        fwd = lambda x: OPS.soft_infonce(x, M, TAU_T, TAU_P, 0.0)
    else:
        fwd = lambda x: OPS.patch_align(x, d, K, T, 3, 4, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)

    def step(x=emb):
        x = x.detach().requires_grad_()
        loss, _, _ = fwd(x)
        (g,) = torch.autograd.grad(loss, x)
        return loss.detach(), g

    return step, emb


@pytest.mark.parametrize("op", ["soft_infonce", "patch_align"])
def test_launch_count_independent_of_B_and_V(op):
    """Forward + backward make the same number of GPU launches for (B, V) = (1, 2), (2, 4), (4, 8):
    every kernel and batched GEMM covers all view pairs of a chunk, and these sizes are one chunk
    (csrc/cuda/device/loss.cuh: loss_plan). Before issue 14 the host looped over (sample, pair) with
    ~8 + 3 tiles launches each. (If this fails on a new cuBLAS, compare the names: a GEMM heuristic
    that splits K for one batch size adds a kernel without the pair loop coming back.)"""
    counts = {}
    for B, V in [(1, 2), (2, 4), (4, 8)]:
        step, _ = _loss_step(op, B, V)
        step()  # warm-up: cuBLAS handles, allocator
        counts[(B, V)] = _kernel_launches(step)
    sizes = {k: v[0] for k, v in counts.items()}
    assert len(set(sizes.values())) == 1, (sizes, {k: v[1] for k, v in counts.items()})


# ---------------------------------------------------------------------------------- CUDA graphs
@pytest.mark.parametrize("op", ["soft_infonce", "patch_align"])
def test_cuda_graph_capture_and_replay(op):
    """Forward + backward captured in a CUDA graph (no host synchronisation, no host reads of device
    data: K and the poses become projections on the device) and replayed on new embeddings equal
    eager runs bit for bit."""
    step, emb = _loss_step(op, 2, 3, seed=31)
    static_x = emb.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up on a side stream, as torch.cuda.graphs asks
            step(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss, static_grad = step(static_x)
    for seed in (32, 33):
        new = randn(*emb.shape, seed=seed).to(torch.float32).to(CUDA)
        static_x.copy_(new)
        graph.replay()
        torch.cuda.synchronize()
        loss, grad = step(new)
        assert torch.equal(static_loss, loss)
        assert torch.equal(static_grad, grad)


# ------------------------------------------------------------------------------ geometry errors
@pytest.mark.parametrize("op", ["patch_overlap", "patch_align"])
@pytest.mark.parametrize("bad", ["singular K", "non-finite pose"])
def test_bad_geometry_raises_the_cpu_message(op, bad):
    """Outside graph capture the CUDA ops check K and the poses on the host exactly as the CPU ops do
    (csrc/cuda/reprojection.cuh): same error type, same message."""
    s = scene(B=1, V=2, H=13, W=17, seed=40)
    K, T = s.K.clone(), s.cam_to_world.clone()
    if bad == "singular K":
        K[0, 1] = 0.0
    else:
        T[0, 0, 0, 3] = float("nan")
    emb = randn(1, 2, 12, 8, seed=41)

    def call(device):
        d, k, t = s.depth.to(device), K.to(device), T.to(device)
        if op == "patch_overlap":
            return OPS.patch_overlap(d, k, t, 3, 4, ABS_TOL, REL_TOL, 1)
        return OPS.patch_align(emb.to(device), d, k, t, 3, 4, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0)

    with pytest.raises(ValueError) as cpu_err:
        call("cpu")
    with pytest.raises(ValueError) as cuda_err:
        call(CUDA)
    assert str(cuda_err.value).splitlines()[0] == str(cpu_err.value).splitlines()[0]


def test_geometry_checks_can_be_turned_off():
    """HATCH_CUDA_GEOMETRY_CHECKS=0: no host check (no synchronisation); a singular K then gives its view no
    overlap instead of an error (csrc/cuda/reprojection.cuh)."""
    import os
    import subprocess
    import sys

    code = (
        "import torch, hatch_ext; from hatch_ext import testing\n"
        "s = testing.room_scene(1, 2, 13, 17, seed=40, dtype=torch.float64)\n"
        "K = s.K.clone(); K[0, 1] = 0.0\n"
        "M = torch.ops.hatch.patch_overlap(s.depth.cuda(), K.cuda(), s.cam_to_world.cuda(), 3, 4, 0.05, 0.05, 1)\n"
        "assert M[0, 1].abs().sum().item() == 0 and M[0, 0, 1].abs().sum().item() == 0, M\n"
        "print('ok')\n")
    env = {**os.environ, "HATCH_CUDA_GEOMETRY_CHECKS": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
