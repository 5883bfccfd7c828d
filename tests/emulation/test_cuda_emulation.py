"""The CUDA kernels of csrc/cuda/device, executed on the CPU (one host thread per CUDA thread, shim:
csrc/cuda/device/compat.cuh, harness: harness.cpp) and compared with the CPU ops, which are the oracle.

Counts (patch_overlap, num_valid, the valid rows) must match exactly; losses, row log-sum-exps and
gradients to rounding. Cases as tests/ops: odd sizes, several blocks per depth map, partial warps,
several row tiles, P^2 below and above 8192 bins (one and several target-cell tiles of the shared
histogram; P = 1024 in the slow set), stride > 1, invalid depth and an invalid view geometry, min_overlap
at and just below a row sum (the float64 validity rule), chunks of view pairs that cross samples, and
the driver's launch count for several (B, V). Negative controls build a
copy of the device code with planted bugs and check that the comparison fails; sanitizer runs are
marked slow. What the emulation cannot show (memory model outside barriers, FMA contraction, the
ATen / cuBLAS host side) still needs a GPU run.
"""
from __future__ import annotations

import concurrent.futures as cf
import math
import os

import numpy as np
import pytest
import torch

import hatch_ext  # noqa: F401  (registers torch.ops.hatch)
from hatch_ext import reference as R
from hatch_ext import testing
from hatch_ext.testing import sparse_overlap

import cuda_emu as E

pytestmark = pytest.mark.skipif(
    os.system(f"{E.CXX} --version >/dev/null 2>&1") != 0, reason="no host C++ compiler")

F32, F64 = torch.float32, torch.float64
TAU_T, TAU_P = 0.1, 0.07
ABS_TOL, REL_TOL = 0.05, 0.05

# Planted bugs, each guarded by `hatch_emu::mutant() == k` in one build of a mutated copy:
# (k, name, header, marked kernel, old text, new text).
MUTANTS = [
    (1, "barrier removed", "reprojection.cuh", "pair_counts_kernel",
     "  __syncthreads();\n  const int32_t start",
     "  if (::hatch_emu::mutant() != 1) __syncthreads();\n  const int32_t start"),
    (2, "half-warp sum", "common.cuh", "warp_sum",
     "for (int o = kWarpSize / 2;",
     "for (int o = (::hatch_emu::mutant() == 2 ? kWarpSize / 4 : kWarpSize / 2);"),
    (3, "cell off by one", "reprojection.cuh", "cell_valid_counts_kernel",
     "const int32_t i = cell_of32(r, c,",
     "const int32_t i = cell_of32(r, ::hatch_emu::mutant() == 3 ? min(c + 1, W - 1) : c,"),
    (4, "> became >=", "loss.cuh", "tile_rows_forward_kernel",
     "const bool valid = t_sum[q * P + gi] > k.min_overlap;",
     "const bool valid = ::hatch_emu::mutant() == 4 ? t_sum[q * P + gi] >= k.min_overlap"
     " : t_sum[q * P + gi] > k.min_overlap;"),
    (5, "unzeroed histogram", "reprojection.cuh", "pair_counts_kernel",
     "for (int32_t k = threadIdx.x; k < bins; k += blockDim.x) hist[k] = 0;",
     "for (int32_t k = threadIdx.x; k < bins; k += blockDim.x) if (::hatch_emu::mutant() != 5) hist[k] = 0;"),
    (6, "divergent barrier", "reprojection.cuh", "cell_valid_counts_kernel",
     "if (map >= maps) return;",
     "if (map >= maps || (::hatch_emu::mutant() == 6 && threadIdx.x == 7)) return;"),
    (7, "partial shuffle mask", "common.cuh", "warp_sum",
     "__shfl_xor_sync(0xffffffffu, v, o)",
     "__shfl_xor_sync(::hatch_emu::mutant() == 7 ? 0x0000ffffu : 0xffffffffu, v, o)"),
    # The validity rule before issue 14: row sum and min_overlap compared in the accumulation dtype.
    (8, "float32 validity", "loss.cuh", "tile_rows_forward_kernel",
     "const bool valid = ::hatch_emu::mutant() == 4 ?",
     "const bool valid = ::hatch_emu::mutant() == 8 ? static_cast<T>(t_sum[q * P + gi]) >"
     " static_cast<T>(k.min_overlap) : ::hatch_emu::mutant() == 4 ?"),
    # A launch configuration a GPU refuses (blockDim.x > 1024): the shim's limits must say so.
    (9, "block of 2048 threads", "loss.cuh", None,
     "  return {blocks_exact(items, kThreads), static_cast<unsigned int>(kThreads), 0};",
     "  return {blocks_exact(items, kThreads), static_cast<unsigned int>(::hatch_emu::mutant() == 9 ?"
     " 2048 : kThreads), 0};"),
    (8, "float32 validity", "loss.cuh", "tile_cols_merge_kernel",
     "const bool valid = t_sum_col[idx] > min_overlap;",
     "const bool valid = ::hatch_emu::mutant() == 8 ? static_cast<T>(t_sum_col[idx]) >"
     " static_cast<T>(min_overlap) : t_sum_col[idx] > min_overlap;"),
    # New with the batched loss and the tiled histograms (issue 14):
    # the leader of a warp-aggregated histogram update counts the other lanes but not itself.
    (10, "dropped warp-aggregate lane", "common.cuh", "warp_aggregated_add",
     "atomicAdd(&hist[bin], __popc(peers))",
     "atomicAdd(&hist[bin], ::hatch_emu::mutant() == 10 ? __popc(peers & (peers - 1)) : __popc(peers))"),
    # the two-stage column statistics merge a slab without rescaling the running sum.
    (11, "column merge without rescale", "loss.cuh", "lse_merge",
     "Z * exp_t(M - nm)",
     "(::hatch_emu::mutant() == 11 ? Z : Z * exp_t(M - nm))"),
    # the target-cell tiles of the pair histogram flushed to the first tile's cells.
    (12, "target tile offset dropped", "reprojection.cuh", "pair_counts_kernel",
     "atomicAdd(&out[(lo + k / w) * P + j0 + k % w], hist[k]);",
     "atomicAdd(&out[(lo + k / w) * P + (::hatch_emu::mutant() == 12 ? 0 : j0) + k % w], hist[k]);"),
    # the pair indexing of the batched grid: the chunk's scatter reads the wrong partner's pair.
    (13, "pair index off by one", "common.cuh", None,
     "  return b * pairs_per_sample(V) + a * (V - 1) - a * (a - 1) / 2 + (c - a - 1);",
     "  return b * pairs_per_sample(V) + a * (V - 1) - a * (a - 1) / 2 + (c - a - 1) +"
     " (::hatch_emu::mutant() == 13 && a > 0 ? 1 : 0);"),
    # New with the normalisation kernels (issue 17): a lane's partial sums used as the row's.
    (14, "normalisation norm not warp-summed", "normalize.cuh", "normalize_rows_kernel",
     "row_norm(warp_sum(sum_squares<T>(e + row * D, D, lane, kWarpSize)))",
     "row_norm(::hatch_emu::mutant() == 14 ? sum_squares<T>(e + row * D, D, lane, kWarpSize)"
     " : warp_sum(sum_squares<T>(e + row * D, D, lane, kWarpSize)))"),
    (15, "normalisation backward dot not warp-summed", "normalize.cuh", "normalize_backward_kernel",
     "const T dot = warp_sum(dot_part(gr, er, D, lane, kWarpSize));",
     "const T dot = ::hatch_emu::mutant() == 15 ? dot_part(gr, er, D, lane, kWarpSize)"
     " : warp_sum(dot_part(gr, er, D, lane, kWarpSize));"),
]


def _build_mutant_sources(root):
    csrc = E.copy_sources(root)
    for k, _, header, kernel, old, new in MUTANTS:
        E.mutate(csrc, header, kernel, old, new)
    return csrc


@pytest.fixture(scope="session")
def builds(tmp_path_factory):
    """The harness from the real sources (-O1) and from the mutated copy (-O0), built in parallel."""
    d = tmp_path_factory.mktemp("emu_build")
    mutant_src = _build_mutant_sources(d / "mutant")
    (d / "real").mkdir()
    (d / "mut").mkdir()
    with cf.ThreadPoolExecutor(2) as ex:
        real = ex.submit(E.build, d / "real")
        mut = ex.submit(E.build, d / "mut", mutant_src, None, "-O0")
        return {"real": real.result(), "mutant": mut.result(), "mutant_src": mutant_src, "dir": d}


@pytest.fixture(scope="session")
def harness(builds):
    return builds["real"]


# ------------------------------------------------------------------------------------ helpers
def cpu_overlap(s, gh, gw, stride):
    return torch.ops.hatch.patch_overlap(s.depth, s.K, s.cam_to_world, gh, gw, ABS_TOL, REL_TOL, stride)


def cpu_loss_grad(fn, emb, *args, grad_loss=1.0):
    e = emb.detach().clone().requires_grad_()
    loss, row_lse, nv = fn(e, *args)
    (g,) = torch.autograd.grad(loss, e, torch.tensor(grad_loss, dtype=loss.dtype))
    return loss.detach(), row_lse, nv, g


def dyadic_overlap(B, V, P, seed=0):
    """Overlap fractions that are multiples of 1/64: every row sum is exact in any order and dtype."""
    g = torch.Generator().manual_seed(seed)
    M = torch.randint(0, 3, (B, V, V, P, P), generator=g).to(F64)
    M = M * (torch.rand(B, V, V, P, P, generator=g) < 0.3)
    M = M / 64
    M[:, range(V), range(V)] = 0
    return M


def randn(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def tol(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == F64 else dict(rtol=2e-4, atol=2e-6)


def assert_loss_matches(out, cpu, emb, valid_ref=None):
    loss, row_lse, nv, g = cpu
    assert out["num_valid"].item() == nv.item()
    if valid_ref is not None:
        assert torch.equal(out["valid"].bool(), valid_ref)
    t = tol(emb.dtype)
    torch.testing.assert_close(out["loss"], loss.to(F64), **t)
    torch.testing.assert_close(out["row_lse"], row_lse, **t)
    torch.testing.assert_close(out["grad"], g.to(out["grad"].dtype), **t)


# --------------------------------------------------------------------------------- patch_overlap
# (B, V, H, W, grid_h, grid_w, stride, invalid_fraction, occluders, seed, dtype)
OVERLAP_CASES = [
    # 2385 pixels: 2 blocks per depth map; P^2 = 225 in shared memory.
    (2, 3, 45, 53, 3, 5, 1, 0.15, 2, 1, F64),
    (1, 4, 29, 31, 4, 4, 2, 0.1, 1, 2, F32),  # stride 2, float32 depth
    (1, 3, 33, 27, 5, 2, 3, 0.05, 1, 4, F64),  # stride 3, non-square grid
    # P = 100: P^2 = 10000 bins > 8192 (the global-atomics path before issue 14); a block's source
    # range (5 cell rows, 50 cells) x 100 target cells fits; 2400 pixels: several blocks.
    (1, 2, 48, 50, 10, 10, 1, 0.1, 1, 5, F64),
    # P = 256: 128 source cells per block, so 4 target-cell tiles of 64 (the tiled shared histogram).
    (1, 2, 16, 128, 8, 32, 1, 0.1, 1, 6, F64),
    (1, 2, 17, 130, 8, 32, 2, 0.1, 1, 7, F32),  # the same, stride 2, odd sizes, float32 depth
]


@pytest.mark.parametrize("B,V,H,W,gh,gw,stride,invalid,occl,seed,dtype", OVERLAP_CASES)
def test_patch_overlap_counts_exact(harness, B, V, H, W, gh, gw, stride, invalid, occl, seed, dtype):
    s = testing.room_scene(B, V, H, W, seed=seed, invalid_fraction=invalid, occluders=occl).to(dtype)
    out = E.patch_overlap(harness, s.depth, s.K, s.cam_to_world, gh, gw, ABS_TOL, REL_TOL, stride)
    M = cpu_overlap(s, gh, gw, stride)
    assert out["M"].dtype == M.dtype
    assert torch.equal(out["M"], M)  # bit for bit
    assert torch.equal(out["den"], testing.cell_pixel_counts(s.depth, gh, gw, stride).to(torch.int32)
                       .reshape(B, V, gh * gw))
    assert out["counts"].sum() > 0


@pytest.mark.slow
def test_patch_overlap_P1024_tiled(harness):
    """P = 1024 (32 x 32 cells of 2 x 2 pixels), a dense 4M-entry overlap: 16 target-cell tiles."""
    s = testing.room_scene(1, 2, 64, 64, seed=8, invalid_fraction=0.05)
    out = E.patch_overlap(harness, s.depth, s.K, s.cam_to_world, 32, 32, ABS_TOL, REL_TOL, 1)
    assert torch.equal(out["M"], cpu_overlap(s, 32, 32, 1))
    assert out["counts"].sum() > 0


def test_invalid_view_geometry_overlaps_nothing(harness):
    """pair_projections_kernel: a view the CPU op rejects (here a singular K) gets NaN projections, so
    no pixel is visible from or in it; the other pairs are unchanged. (The CUDA ops cannot raise here
    without a host synchronisation; the CPU op raises.)"""
    s = testing.room_scene(1, 3, 29, 31, seed=2, invalid_fraction=0.1)
    K = s.K.clone()
    K[0, 2] = 0
    with pytest.raises(ValueError, match="'K' is singular at sample 0, view 2"):
        torch.ops.hatch.patch_overlap(s.depth, K, s.cam_to_world, 4, 4, ABS_TOL, REL_TOL, 1)
    out = E.patch_overlap(harness, s.depth, K, s.cam_to_world, 4, 4, ABS_TOL, REL_TOL, 1)
    M = cpu_overlap(s, 4, 4, 1)
    assert M[0, 0, 2].sum() > 0 and M[0, 2, 0].sum() > 0
    assert torch.equal(out["M"][0, :2, :2], M[0, :2, :2])
    assert out["M"][0, 2].abs().sum() == 0 and out["M"][0, :, 2].abs().sum() == 0


# ---------------------------------------------------------------------------------- soft_infonce
# (B, V, P, D, tile_rows, dtype, min_overlap, seed)
LOSS_CASES = [
    (1, 3, 13, 7, None, F64, 0.05, 0),   # P < 32: most lanes of a row's warp idle; partial blocks
    (1, 2, 37, 5, 5, F32, 0.0, 1),       # 8 row tiles (online column statistics), lanes loop twice
    (2, 2, 20, 3, 7, F64, 0.1, 2),       # B = 2, 3 tiles
]


@pytest.mark.parametrize("B,V,P,D,tile,dtype,min_overlap,seed", LOSS_CASES)
def test_soft_infonce_matches_cpu(harness, monkeypatch, B, V, P, D, tile, dtype, min_overlap, seed):
    if tile:
        monkeypatch.setenv("HATCH_LOSS_TILE_ROWS", str(tile))
    ov = sparse_overlap(B, V, P, seed=seed, dtype=dtype)
    emb = randn(B, V, P, D, seed=seed + 10, dtype=dtype)
    out = E.soft_infonce(harness, emb, ov, TAU_T, TAU_P, min_overlap, grad_loss=0.7)
    cpu = cpu_loss_grad(torch.ops.hatch.soft_infonce, emb, ov, TAU_T, TAU_P, min_overlap, grad_loss=0.7)
    assert_loss_matches(out, cpu, emb, R.valid_rows(ov, min_overlap))


@pytest.mark.parametrize("dtype", [F64, F32])
def test_validity_float64_at_row_sum(harness, dtype):
    """min_overlap exactly at a row sum (row invalid: sum > min fails) and one float64 ulp below it
    (row valid). The second is the case a float32 sum against a float32 threshold gets wrong: both
    round to the same float32 there."""
    B, V, P, D = 1, 3, 11, 4
    ov = dyadic_overlap(B, V, P, seed=3)
    S = R.symmetric_overlap(ov)
    sums = S.sum(-1)
    off = ~torch.eye(V, dtype=torch.bool)
    target = sums[:, off][sums[:, off] > 0].max().item()
    emb = randn(B, V, P, D, seed=4, dtype=dtype)
    ov = ov.to(dtype)
    for m in (target, math.nextafter(target, 0.0)):
        valid_ref = R.valid_rows(ov.to(F64), m)
        at = (sums == target) & off[None, :, :, None]
        assert at.any()
        assert bool(valid_ref[at].all()) == (m < target)
        if m < target:
            assert np.float32(m) == np.float32(target)  # indistinguishable in float32
        out = E.soft_infonce(harness, emb, ov, TAU_T, TAU_P, m)
        cpu = cpu_loss_grad(torch.ops.hatch.soft_infonce, emb, ov, TAU_T, TAU_P, m)
        assert_loss_matches(out, cpu, emb, valid_ref)


# ----------------------------------------------------------------------------------- patch_align
# (B, V, H, W, gh, gw, stride, invalid, D, tile, dtype, min_overlap, seed)
ALIGN_CASES = [
    (1, 3, 29, 31, 4, 4, 2, 0.1, 5, None, F64, 0.05, 2),
    (1, 2, 37, 41, 3, 5, 1, 0.15, 6, 4, F32, 0.0, 1),   # 4 row tiles, float32
    (1, 2, 41, 47, 10, 10, 1, 0.1, 3, None, F64, 0.2, 5),  # P^2 > 8192: global atomics; P > 32
]


@pytest.mark.parametrize("B,V,H,W,gh,gw,stride,invalid,D,tile,dtype,min_overlap,seed", ALIGN_CASES)
def test_patch_align_matches_cpu(harness, monkeypatch, B, V, H, W, gh, gw, stride, invalid, D, tile,
                                 dtype, min_overlap, seed):
    if tile:
        monkeypatch.setenv("HATCH_LOSS_TILE_ROWS", str(tile))
    s = testing.room_scene(B, V, H, W, seed=seed, invalid_fraction=invalid).to(dtype)
    emb = randn(B, V, gh * gw, D, seed=seed + 20, dtype=dtype)
    args = (s.depth, s.K, s.cam_to_world, gh, gw, TAU_T, TAU_P, ABS_TOL, REL_TOL, stride, min_overlap)
    out = E.patch_align(harness, emb, *args, grad_loss=1.3)
    cpu = cpu_loss_grad(torch.ops.hatch.patch_align, emb, *args, grad_loss=1.3)
    valid_ref = R.valid_rows(cpu_overlap(s, gh, gw, stride).to(F64), min_overlap)
    assert_loss_matches(out, cpu, emb, valid_ref)
    assert out["num_valid"].item() > 0


# ------------------------------------------------------------------------------ chunked pair grid
# (B, V, chunk pairs): chunks that cross samples and a last, partial chunk.
CHUNK_CASES = [(2, 3, 4), (3, 4, 5), (1, 5, 3)]


@pytest.mark.parametrize("B,V,chunk", CHUNK_CASES)
def test_soft_infonce_chunked(harness, monkeypatch, B, V, chunk):
    monkeypatch.setenv("HATCH_LOSS_TILE_ROWS", "4")
    P, D = 11, 3
    ov = sparse_overlap(B, V, P, seed=B + V)
    emb = randn(B, V, P, D, seed=chunk)
    out = E.soft_infonce(harness, emb, ov, TAU_T, TAU_P, 0.05, grad_loss=0.9,
                         env={"HATCH_LOSS_CHUNK_PAIRS": str(chunk)})
    pairs = B * V * (V - 1) // 2
    assert out["launches"][2].item() == -(-pairs // chunk)
    cpu = cpu_loss_grad(torch.ops.hatch.soft_infonce, emb, ov, TAU_T, TAU_P, 0.05, grad_loss=0.9)
    assert_loss_matches(out, cpu, emb, R.valid_rows(ov, 0.05))


def test_patch_align_chunked(harness):
    B, V, gh, gw, D = 2, 3, 3, 4, 4
    s = testing.room_scene(B, V, 23, 29, seed=9, invalid_fraction=0.1)
    emb = randn(B, V, gh * gw, D, seed=10)
    args = (s.depth, s.K, s.cam_to_world, gh, gw, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.05)
    out = E.patch_align(harness, emb, *args, env={"HATCH_LOSS_CHUNK_PAIRS": "4"})
    assert out["launches"][2].item() == 2
    assert_loss_matches(out, cpu_loss_grad(torch.ops.hatch.patch_align, emb, *args), emb)
    assert out["num_valid"].item() > 0


@pytest.mark.parametrize("mode", ["overlap", "depth"])
def test_launch_count_independent_of_B_and_V(harness, mode):
    """The replayed driver's kernel launches (forward, backward) are the same for (B, V) = (1, 2),
    (2, 4), (4, 8): one chunk holds all the pairs, and every launch covers all of them. With one pair
    per chunk they grow with the pairs, as the plan says (loss.cuh: loss_plan)."""
    counts, per_pair = [], []
    for B, V in [(1, 2), (2, 4), (4, 8)]:
        P, D = 6, 3
        emb = randn(B, V, P, D, seed=B)
        if mode == "overlap":
            ov = sparse_overlap(B, V, P, seed=V)
            run = lambda env: E.soft_infonce(harness, emb, ov, TAU_T, TAU_P, 0.05, env=env)
        else:
            s = testing.room_scene(B, V, 9, 11, seed=V)
            run = lambda env: E.patch_align(harness, emb, s.depth, s.K, s.cam_to_world, 2, 3, TAU_T,
                                            TAU_P, ABS_TOL, REL_TOL, 1, 0.05, env=env)
        out = run({})
        assert out["launches"][2].item() == 1
        counts.append(tuple(out["launches"][:2].tolist()))
        if B == 2:
            one = run({"HATCH_LOSS_CHUNK_PAIRS": "1"})["launches"]
            per_pair.append((one[0].item(), one[1].item(), one[2].item()))
    assert counts[0] == counts[1] == counts[2], counts
    fwd, bwd, chunks = per_pair[0]
    assert chunks == 2 * 4 * 3 // 2 and (fwd, bwd) == (chunks * counts[0][0], chunks * counts[0][1])


@pytest.mark.slow
def test_soft_infonce_large_P(harness, monkeypatch):
    """P = 300: two blocks for the per-column kernels (256 threads each, the second partly idle), 38
    blocks of row warps, 3 row tiles of 128."""
    monkeypatch.setenv("HATCH_LOSS_TILE_ROWS", "128")
    B, V, P, D = 1, 2, 300, 3
    ov = sparse_overlap(B, V, P, seed=7, density=0.02)
    emb = randn(B, V, P, D, seed=8)
    out = E.soft_infonce(harness, emb, ov, TAU_T, TAU_P, 0.05)
    cpu = cpu_loss_grad(torch.ops.hatch.soft_infonce, emb, ov, TAU_T, TAU_P, 0.05)
    assert_loss_matches(out, cpu, emb, R.valid_rows(ov, 0.05))


# ------------------------------------------------------------------------------ negative controls
def _mutant_run(builds, k, fn):
    """Runs fn(exe, env) on the mutant build with mutant k; True iff the comparison failed (an
    assertion in fn, or the harness reporting a problem)."""
    try:
        fn(builds["mutant"], {"HATCH_EMU_MUTANT": str(k)})
    except (AssertionError, E.HarnessError):
        return True
    return False


def _overlap_check(exe, env):
    s = testing.room_scene(1, 3, 45, 53, seed=1, invalid_fraction=0.15, occluders=2)
    out = E.patch_overlap(exe, s.depth, s.K, s.cam_to_world, 3, 5, ABS_TOL, REL_TOL, 1, env=env)
    assert torch.equal(out["M"], cpu_overlap(s, 3, 5, 1))


def _loss_check(exe, env):
    B, V, P, D = 1, 3, 37, 5
    ov = sparse_overlap(B, V, P, seed=1)
    emb = randn(B, V, P, D, seed=2)
    out = E.soft_infonce(exe, emb, ov, TAU_T, TAU_P, 0.05, env=env)
    assert_loss_matches(out, cpu_loss_grad(torch.ops.hatch.soft_infonce, emb, ov, TAU_T, TAU_P, 0.05),
                        emb)


def _threshold_check(exe, env, dtype=F64, below=False):
    """min_overlap at the largest row sum (or one float64 ulp below it); rows of both sides of a pair
    (the row and the column kernels) sit at that sum."""
    B, V, P, D = 1, 3, 11, 4
    ov = dyadic_overlap(B, V, P, seed=3)
    sums = R.symmetric_overlap(ov).sum(-1)
    m = sums[sums > 0].max().item()
    if below:
        m = math.nextafter(m, 0.0)
    emb = randn(B, V, P, D, seed=4, dtype=dtype)
    ov = ov.to(dtype)
    out = E.soft_infonce(exe, emb, ov, TAU_T, TAU_P, m, env=env)
    assert_loss_matches(out, cpu_loss_grad(torch.ops.hatch.soft_infonce, emb, ov, TAU_T, TAU_P, m),
                        emb, R.valid_rows(ov.to(F64), m))


def _threshold_check_f32_below(exe, env):
    _threshold_check(exe, env, dtype=F32, below=True)


def _tiled_overlap_check(exe, env):
    """P = 256 (8 x 32 cells of 2 x 4 pixels): a block's 1024 pixels span 4 cell rows (128 source
    cells), so the pair histogram runs in 4 target-cell tiles of 64."""
    s = testing.room_scene(1, 2, 16, 128, seed=6, invalid_fraction=0.1)
    out = E.patch_overlap(exe, s.depth, s.K, s.cam_to_world, 8, 32, ABS_TOL, REL_TOL, 1, env=env)
    assert torch.equal(out["M"], cpu_overlap(s, 8, 32, 1))


def _chunked_loss_check(exe, env):
    """B = 2, V = 4 in chunks of 5 pairs: chunks cross samples, so g_hat gathers a view's gradient
    from two chunks and pair_index must find each partner's pair."""
    B, V, P, D = 2, 4, 9, 3
    ov = sparse_overlap(B, V, P, seed=11)
    emb = randn(B, V, P, D, seed=12)
    out = E.soft_infonce(exe, emb, ov, TAU_T, TAU_P, 0.05, env=dict(env, HATCH_LOSS_CHUNK_PAIRS="5"))
    assert_loss_matches(out, cpu_loss_grad(torch.ops.hatch.soft_infonce, emb, ov, TAU_T, TAU_P, 0.05),
                        emb)


CHECK_OF_MUTANT = {1: _overlap_check, 2: _loss_check, 3: _overlap_check, 4: _threshold_check,
                   5: _overlap_check, 6: _overlap_check, 7: _loss_check,
                   8: _threshold_check_f32_below, 9: _loss_check, 10: _overlap_check,
                   11: _loss_check, 12: _tiled_overlap_check, 13: _chunked_loss_check,
                   14: _loss_check, 15: _loss_check}


def test_mutant_build_unmutated_passes(builds):
    """The mutated copy with no mutant switched on is the real code: every check passes."""
    for check in set(CHECK_OF_MUTANT.values()):
        check(builds["mutant"], {"HATCH_EMU_MUTANT": "0"})


# What the shim itself must say for the mutants that break CUDA's rules rather than the arithmetic.
SHIM_REPORT = {6: "divergent __syncthreads", 7: "partial mask", 9: "blockDim.x = 2048"}


@pytest.mark.parametrize("k,name", sorted({(m[0], m[1]) for m in MUTANTS}))
def test_negative_control_fails(builds, k, name):
    env = {"HATCH_EMU_MUTANT": str(k)}
    if k in SHIM_REPORT:
        with pytest.raises(E.HarnessError, match=SHIM_REPORT[k]):
            CHECK_OF_MUTANT[k](builds["mutant"], env)
    else:
        assert _mutant_run(builds, k, CHECK_OF_MUTANT[k]), f"planted bug '{name}' went unnoticed"


# ------------------------------------------------------------------------------------ sanitizers
@pytest.fixture(scope="session")
def sanitizer_builds(builds):
    d = builds["dir"]
    for sub in ("tsan", "asan", "tsan_mut"):
        (d / sub).mkdir()
    with cf.ThreadPoolExecutor(2) as ex:
        tsan = ex.submit(E.build, d / "tsan", None, "thread")
        asan = ex.submit(E.build, d / "asan", None, "address")
        tsan_mut = ex.submit(E.build, d / "tsan_mut", builds["mutant_src"], "thread")
        return {"thread": tsan.result(), "address": asan.result(), "thread_mutant": tsan_mut.result()}


TSAN_ENV = {"HATCH_EMU_SCHEDULE": "free", "TSAN_OPTIONS": "halt_on_error=1 exitcode=66"}
ASAN_ENV = {"ASAN_OPTIONS": "detect_leaks=0 abort_on_error=0 exitcode=67",
            "UBSAN_OPTIONS": "print_stacktrace=1 halt_on_error=1 exitcode=68"}


def _quick_set(exe, env):
    _overlap_check(exe, env)
    s = testing.room_scene(1, 2, 48, 50, seed=5, invalid_fraction=0.1)
    out = E.patch_overlap(exe, s.depth, s.K, s.cam_to_world, 10, 10, ABS_TOL, REL_TOL, 1, env=env)
    assert torch.equal(out["M"], cpu_overlap(s, 10, 10, 1))
    B, V, P, D = 1, 2, 37, 5
    ov = sparse_overlap(B, V, P, seed=1)
    emb = randn(B, V, P, D, seed=2)
    env2 = dict(env, HATCH_LOSS_TILE_ROWS="9")
    out = E.soft_infonce(exe, emb, ov, TAU_T, TAU_P, 0.05, env=env2)
    os.environ["HATCH_LOSS_TILE_ROWS"] = "9"
    try:
        cpu = cpu_loss_grad(torch.ops.hatch.soft_infonce, emb, ov, TAU_T, TAU_P, 0.05)
    finally:
        del os.environ["HATCH_LOSS_TILE_ROWS"]
    assert_loss_matches(out, cpu, emb)
    s = testing.room_scene(1, 2, 29, 31, seed=2, invalid_fraction=0.1)
    emb = randn(1, 2, 16, 4, seed=3)
    args = (s.depth, s.K, s.cam_to_world, 4, 4, TAU_T, TAU_P, ABS_TOL, REL_TOL, 2, 0.05)
    out = E.patch_align(exe, emb, *args, env=env)
    assert_loss_matches(out, cpu_loss_grad(torch.ops.hatch.patch_align, emb, *args), emb)


@pytest.mark.slow
def test_thread_sanitizer_clean(sanitizer_builds):
    _quick_set(sanitizer_builds["thread"], TSAN_ENV)


@pytest.mark.slow
def test_thread_sanitizer_sees_removed_barrier(sanitizer_builds):
    env = dict(TSAN_ENV, HATCH_EMU_MUTANT="1")
    with pytest.raises(E.HarnessError, match="ThreadSanitizer: data race"):
        _overlap_check(sanitizer_builds["thread_mutant"], env)


@pytest.mark.slow
def test_address_and_ub_sanitizer_clean(sanitizer_builds):
    _quick_set(sanitizer_builds["address"], ASAN_ENV)
