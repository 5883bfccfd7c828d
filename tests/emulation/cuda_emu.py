"""Build and run the CPU emulation of the CUDA kernels (harness.cpp + csrc/cuda/device/*.cuh under
the shim of csrc/cuda/device/compat.cuh), and mutate copies of the device code for negative controls.

The harness is a plain g++ executable (no ATen), so it can also be built with ThreadSanitizer or
AddressSanitizer + UBSan. Inputs and outputs travel as raw files in a scratch directory.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).resolve().parent / "harness.cpp"
CXX = os.environ.get("CXX", "g++")

SANITIZERS = {
    None: [],
    "thread": ["-fsanitize=thread"],
    "address": ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                "-fno-omit-frame-pointer"],
}


def copy_sources(dst: Path) -> Path:
    """A copy of the sources the harness compiles (csrc/common, csrc/cuda/device) under dst/csrc."""
    for sub in ("common", "cuda/device"):
        shutil.copytree(REPO / "csrc" / sub, dst / "csrc" / sub)
    return dst / "csrc"


def mutate(csrc: Path, header: str, kernel: str | None, old: str, new: str, count: int = 1) -> None:
    """Replace `old` by `new` inside one kernel's marked region (HATCH-EMULATION-KERNEL-BEGIN/END) of
    csrc/cuda/device/<header>; fails unless `old` occurs exactly `count` times there."""
    path = csrc / "cuda" / "device" / header
    text = path.read_text()
    if kernel is None:  # host-side launch configuration: the whole header, `old` must be unique
        i, j = 0, len(text)
    else:
        begin = f"// HATCH-EMULATION-KERNEL-BEGIN {kernel}\n"
        end = f"// HATCH-EMULATION-KERNEL-END {kernel}\n"
        i, j = text.index(begin), text.index(end)
    region = text[i:j]
    assert region.count(old) == count, (kernel, old, region.count(old))
    path.write_text(text[:i] + region.replace(old, new) + text[j:])


def build(out_dir: Path, csrc: Path | None = None, sanitizer: str | None = None,
          opt: str = "-O1") -> Path:
    csrc = csrc or REPO / "csrc"
    exe = out_dir / f"harness{'_' + sanitizer if sanitizer else ''}"
    cmd = [CXX, "-std=c++20", opt, "-g" if sanitizer else "-g0", "-pthread", f"-I{csrc}",
           str(HARNESS), "-o", str(exe), *SANITIZERS[sanitizer]]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


class HarnessError(RuntimeError):
    pass


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().cpu().numpy()


def _dtype_name(dt: torch.dtype) -> str:
    return {torch.float32: "float32", torch.float64: "float64"}[dt]


def run(exe: Path, op: str, params: dict, arrays: dict, outputs: dict, env: dict | None = None,
        timeout: float = 300) -> dict:
    """Runs `exe op dir` with params.txt and the input arrays written to a scratch dir; returns the
    outputs {name: (dtype, shape)} as tensors. Raises HarnessError with the harness's stderr on a
    nonzero exit (shim reports, sanitizer findings, launch errors)."""
    with tempfile.TemporaryDirectory(prefix="hatch_emu_") as d:
        d = Path(d)
        (d / "params.txt").write_text("".join(f"{k} {v!r}\n" if isinstance(v, float) else f"{k} {v}\n"
                                              for k, v in params.items()))
        for name, t in arrays.items():
            _np(t).tofile(d / f"{name}.bin")
        full_env = dict(os.environ)
        full_env.update(env or {})
        r = subprocess.run([str(exe), op, str(d)], capture_output=True, text=True, env=full_env,
                           timeout=timeout)
        if r.returncode != 0:
            raise HarnessError(f"harness exited {r.returncode}:\n{r.stderr[-6000:]}")
        res = {}
        for name, (dt, shape) in outputs.items():
            a = np.fromfile(d / f"{name}.bin", dtype=dt)
            res[name] = torch.from_numpy(a.reshape(shape).copy())
        res["stderr"] = r.stderr
        return res


def patch_overlap(exe, depth, K, cam_to_world, grid_h, grid_w, abs_tol=0.05, rel_tol=0.02,
                  stride=1, env=None):
    B, V, H, W = depth.shape
    P = grid_h * grid_w
    params = dict(B=B, V=V, H=H, W=W, grid_h=grid_h, grid_w=grid_w, stride=stride,
                  abs_tol=float(abs_tol), rel_tol=float(rel_tol), in_dtype=_dtype_name(depth.dtype))
    npdt = np.float64 if depth.dtype == torch.float64 else np.float32
    out = run(exe, "overlap", params,
              {"depth": depth, "K": K.to(torch.float64), "T": cam_to_world.to(torch.float64)},
              {"M": (npdt, (B, V, V, P, P)), "den": (np.int32, (B, V, P)),
               "counts": (np.int32, (B, V, V, P, P))}, env=env)
    return out


def _loss_outputs(emb):
    B, V, P, D = emb.shape
    acc = np.float64 if emb.dtype == torch.float64 else np.float32
    return {"loss": (np.float64, ()), "row_lse": (acc, (B, V, V, P)), "num_valid": (np.int64, ()),
            "valid": (np.uint8, (B, V, V, P)), "grad": (acc, (B, V, P, D)),
            "launches": (np.int64, (3,))}  # kernel launches of forward, backward; chunks


def soft_infonce(exe, emb, overlap, tau_t, tau_p, min_overlap, grad_loss=1.0, env=None):
    B, V, P, D = emb.shape
    params = dict(mode="overlap", B=B, V=V, P=P, D=D, tau_t=float(tau_t), tau_p=float(tau_p),
                  min_overlap=float(min_overlap), grad_loss=float(grad_loss),
                  in_dtype=_dtype_name(overlap.dtype), emb_dtype=_dtype_name(emb.dtype))
    return run(exe, "loss", params, {"emb": emb, "overlap": overlap}, _loss_outputs(emb), env=env)


def patch_align(exe, emb, depth, K, cam_to_world, grid_h, grid_w, tau_t, tau_p, abs_tol, rel_tol,
                stride, min_overlap, grad_loss=1.0, env=None):
    B, V, P, D = emb.shape
    _, _, H, W = depth.shape
    params = dict(mode="depth", B=B, V=V, P=P, D=D, H=H, W=W, grid_h=grid_h, grid_w=grid_w,
                  stride=stride, abs_tol=float(abs_tol), rel_tol=float(rel_tol), tau_t=float(tau_t),
                  tau_p=float(tau_p), min_overlap=float(min_overlap), grad_loss=float(grad_loss),
                  in_dtype=_dtype_name(depth.dtype), emb_dtype=_dtype_name(emb.dtype))
    return run(exe, "loss", params,
               {"emb": emb, "depth": depth, "K": K.to(torch.float64),
                "T": cam_to_world.to(torch.float64)}, _loss_outputs(emb), env=env)
