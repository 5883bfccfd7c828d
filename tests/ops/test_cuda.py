"""What only a GPU run of the CUDA kernels means, with no CPU counterpart. The comparisons of every op
with the reference and the CPU kernel, and the error cases, are written once per op and run on every
device: tests/ops/test_<op>.py (the `device` fixture, tests/ops/conftest.py); this file keeps:

* bit-identical reruns of every op on a large image with the histogram's global-atomics path (a race
  in the integer atomics would show), forward and backward;
* the low-precision rule of the CUDA kernels: error against a float32 reference at most 2x the naive
  reference's in the same dtype, plus one output rounding;
* outputs fully written over a NaN-poisoned CUDA caching allocator (both pools);
* the memory bound of a dense problem (P = 1024) and its values;
* a launch count (torch.profiler) that does not depend on B and V;
* forward + backward captured in a CUDA graph and replayed;
* HATCH_CUDA_GEOMETRY_CHECKS=0 (no host check of K and the poses).

Needs a CUDA GPU and a CUDA build of hatch_ext (`pip install --no-build-isolation -e .` on a machine
with a CUDA toolkit and a CUDA torch; scripts/gpu_check.sh does it and records the result); skipped
with the reason otherwise.
"""
from __future__ import annotations

import pytest
import torch
from _cases import requires_cuda_kernels

import hatch_ext
from hatch_ext import reference as R
from hatch_ext import testing

pytestmark = requires_cuda_kernels

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


# ------------------------------------------------------------------------------ geometry checks
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
