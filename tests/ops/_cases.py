"""Shared by the op test files (tests/ops/test_<op>.py): the devices every test runs on, how a result
is compared on each, and the bad geometry that patch_overlap and patch_align refuse alike.

Each op's file is written once and runs on every available device (as pytorch/extension-cpp's tests):
"cpu" always, "cuda" when there is a GPU and hatch_ext was built with its CUDA kernels, otherwise a
skip with the reason (so CI on CPU lists the CUDA half as skipped). The `device` fixture
(tests/ops/conftest.py) takes its values from DEVICES.

Tolerances: on the CPU every test keeps its own; on CUDA a tolerance is never tighter than the one
stated for CUDA results (cuda_tol: loss values and gradients within float rounding; the overlap within
one pixel per (view pair, cell row), hatch_ext.testing.assert_overlap_within_one_pixel, because nvcc
contracts the float64 projection into FMAs where the CPU compiler does not).
"""
from __future__ import annotations

import math

import pytest
import torch

import hatch_ext
from hatch_ext import testing


def cuda_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine (CI has none); run scripts/gpu_check.sh on a GPU host"
    if not hatch_ext.has_cuda_kernels():
        return ("hatch_ext was built without its CUDA kernels (needs a CUDA toolkit and a CUDA build of "
                "torch); rebuild with `pip install --no-build-isolation -e .` on a GPU host")
    return None


requires_cuda_kernels = pytest.mark.skipif(cuda_skip_reason() is not None, reason=cuda_skip_reason() or "")

DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda_kernels, id="cuda")]


def is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def other_device(device) -> str:
    """A second device to mix with `device`: "meta" beside the CPU (no GPU needed), the CPU beside CUDA."""
    return "cpu" if is_cuda(device) else "meta"


# (rtol, atol) of a CUDA result in this dtype against the float64 reference or the CPU kernel.
CUDA_TOL = {torch.float64: (1e-9, 1e-11), torch.float32: (1e-3, 2e-5)}


def cuda_tol(device, dtype, rtol: float, atol: float) -> tuple[float, float]:
    """(rtol, atol) for a result on `device`: the test's own on the CPU, never tighter than CUDA_TOL[dtype]
    on CUDA (dtypes without a stated CUDA tolerance keep the test's own)."""
    if not is_cuda(device) or dtype not in CUDA_TOL:
        return rtol, atol
    r, a = CUDA_TOL[dtype]
    return max(rtol, r), max(atol, a)


def assert_overlap_close(M, expected, depth, grid_h, grid_w, stride=1, rtol=0.0, atol=0.0):
    """patch_overlap's result M against `expected` (e.g. the reference): within (rtol, atol) when M was
    computed on the CPU, within one pixel per (view pair, cell row) when on CUDA (module docstring)."""
    if is_cuda(M.device):
        testing.assert_overlap_within_one_pixel(M, expected, depth, grid_h, grid_w, stride)
    else:
        torch.testing.assert_close(M, expected.to(M.device), rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------- bad geometry
# What both geometry ops (patch_overlap, patch_align) refuse with the same message on every device
# (csrc/common/checks.cpp; on CUDA checked on the host outside graph capture, csrc/cuda/reprojection.cuh).
BAD_GEOMETRY = {
    "singular K": r"'K' is singular at sample 0, view 1",
    "non-finite pose": r"'cam_to_world' has non-finite",
}


def bad_geometry(scene: testing.Scene, bad: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, cam_to_world) of `scene` broken as BAD_GEOMETRY[bad] says."""
    K, T = scene.K.clone(), scene.cam_to_world.clone()
    if bad == "singular K":
        K[0, 1] = 0.0
    else:
        T[0, 0, 0, 3] = math.nan
    return K, T
