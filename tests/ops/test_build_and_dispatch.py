"""How hatch_ext is built and what a CUDA tensor meets when the CUDA kernels are not built.

* The CUDA arch list (hatch_ext/_build_config.py): "8.0;9.0;10.0;12.0+PTX" unless the user sets
  TORCH_CUDA_ARCH_LIST; the same -gencode flags as torch; setup.py applies it and records it in
  _build_info.json (setup.py is run on a copy, with setuptools.setup and the extension class stubbed).
* A CUDA build of torch without nvcc: setup.py warns and records why; the library then gets CUDA-key
  implementations that raise "hatch.<op>: hatch_ext was built without CUDA kernels (...): rebuild with a
  CUDA toolkit: ...". Tested here through the dispatcher's CUDA key (redispatch, CPU tensors), and with
  real CUDA tensors on a GPU host whose hatch_ext is a CPU-only build (skipped otherwise).
"""
from __future__ import annotations

import json
import os
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import setuptools
import torch
from torch.utils import cpp_extension

import hatch_ext
from hatch_ext import _build_config as C
from hatch_ext import _library as L
from hatch_ext import testing

ROOT = Path(__file__).resolve().parents[2]
OPS = torch.ops.hatch
TAU_T, TAU_P, ABS_TOL, REL_TOL = 0.1, 0.07, 0.05, 0.05
HINT = "rebuild with a CUDA toolkit: pip install --no-build-isolation -e . (nvcc on PATH, CUDA_HOME set)"
ALL_OPS = ["cell_similarity", "cell_similarity_backward", "patch_align", "patch_align_backward",
           "patch_overlap", "soft_infonce", "soft_infonce_backward"]


# ----------------------------------------------------------------------------------- arch list
def test_default_arch_list_covers_blackwell_and_carries_ptx():
    assert C.DEFAULT_CUDA_ARCHS == "8.0;9.0;10.0;12.0+PTX"
    assert C.cuda_arch_list({}) == C.DEFAULT_CUDA_ARCHS
    assert C.cuda_arch_list({"TORCH_CUDA_ARCH_LIST": "  "}) == C.DEFAULT_CUDA_ARCHS  # blank = unset
    archs = C.cuda_arch_list({}).split(";")
    assert {"8.0", "9.0", "10.0"} <= set(archs) and archs[-1] == "12.0+PTX"


@pytest.mark.parametrize("user", ["7.5", "8.6;8.9+PTX", "9.0a", "Hopper"])
def test_user_arch_list_is_used_as_it_is(user):
    assert C.cuda_arch_list({"TORCH_CUDA_ARCH_LIST": user}) == user


def test_gencode_flags_of_the_default():
    assert C.gencode_flags(C.DEFAULT_CUDA_ARCHS) == [
        "-gencode=arch=compute_80,code=sm_80",
        "-gencode=arch=compute_90,code=sm_90",
        "-gencode=arch=compute_100,code=sm_100",
        "-gencode=arch=compute_120,code=sm_120",
        "-gencode=arch=compute_120,code=compute_120",  # PTX: JIT-compiled on later GPUs
    ]
    assert C.gencode_flags("8.0 9.0a") == ["-gencode=arch=compute_80,code=sm_80",
                                           "-gencode=arch=compute_90a,code=sm_90a"]
    with pytest.raises(ValueError, match="unrecognised CUDA arch"):
        C.gencode_flags("sm_80")


@pytest.mark.parametrize("archs", [C.DEFAULT_CUDA_ARCHS, "7.5;8.6+PTX"])
def test_gencode_flags_match_torch(archs, monkeypatch):
    """The CI compile check (.ci/check_cuda_compiles.sh) uses our flags; setup.py hands the list to
    torch: both must name the same targets."""
    get = getattr(cpp_extension, "_get_cuda_arch_flags", None)
    if get is None:
        pytest.skip("torch.utils.cpp_extension._get_cuda_arch_flags is gone in this torch")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", archs)
    assert sorted(set(get())) == sorted(set(C.gencode_flags(archs)))


def test_ci_compile_check_uses_the_build_arch_list():
    script = (ROOT / ".ci" / "check_cuda_compiles.sh").read_text()
    assert "hatch_ext/_build_config.py --gencode" in script
    assert "compute_80,code=sm_80" not in script  # no hard-coded list of its own


def test_build_config_runs_as_a_script():
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "TORCH_CUDA_ARCH_LIST"}
    out = subprocess.run([sys.executable, str(ROOT / "hatch_ext" / "_build_config.py"), "--gencode"],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == C.gencode_flags(C.DEFAULT_CUDA_ARCHS)


# ----------------------------------------------------------------------- CUDA or not, at build time
def test_cuda_decision():
    assert C.cuda_decision("12.8", "/usr/local/cuda/bin/nvcc", {}) == (True, None)
    cuda, why = C.cuda_decision(None, "/usr/local/cuda/bin/nvcc", {})
    assert not cuda and "CPU-only" in why
    cuda, why = C.cuda_decision("12.8", None, {})
    assert not cuda and "no nvcc" in why and "12.8" in why
    assert C.cuda_decision("12.8", "nvcc", {"HATCH_NO_CUDA": "1"})[0] is False
    assert C.cuda_decision(None, None, {"HATCH_FORCE_CUDA": "1"}) == (True, None)
    banner = C.no_nvcc_warning(why)
    assert "WARNING" in banner and why in banner and C.REBUILD_HINT in banner


def test_find_nvcc(tmp_path):
    (tmp_path / "bin").mkdir()
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.write_text("")
    assert C.find_nvcc({"CUDA_HOME": str(tmp_path)}, which=lambda _: None) == str(nvcc)
    assert C.find_nvcc({"CUDA_HOME": str(tmp_path / "none")}, which=lambda _: "/p/nvcc") == "/p/nvcc"
    assert C.find_nvcc({}, which=lambda _: None) is None


def _run_setup(tmp_path, monkeypatch, *, torch_cuda, nvcc, env):
    """Runs a copy of setup.py (in tmp_path: it writes tmp_path/hatch_ext/_build_info.json) with
    setuptools.setup and the extension classes stubbed, torch.version.cuda = torch_cuda and nvcc
    present or not. Returns (the recorded build info, the extension class name, TORCH_CUDA_ARCH_LIST
    as setup.py left it)."""
    (tmp_path / "hatch_ext").mkdir()
    shutil.copy(ROOT / "setup.py", tmp_path / "setup.py")
    shutil.copy(ROOT / "hatch_ext" / "_build_config.py", tmp_path / "hatch_ext" / "_build_config.py")
    bindir = tmp_path / "cuda" / "bin"
    bindir.mkdir(parents=True)
    if nvcc:
        (bindir / "nvcc").write_text("#!/bin/sh\n")
        (bindir / "nvcc").chmod(0o755)
    for var in ("TORCH_CUDA_ARCH_LIST", "HATCH_NO_CUDA", "HATCH_FORCE_CUDA", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
    monkeypatch.setenv("PATH", str(bindir))  # no other nvcc
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.version, "cuda", torch_cuda)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(tmp_path / "cuda") if nvcc else None)
    made = {}

    def ext(kind):
        def make(name, sources, **kwargs):
            made.update(kind=kind, name=name)
            return kind
        return make

    monkeypatch.setattr(cpp_extension, "CUDAExtension", ext("CUDAExtension"))
    monkeypatch.setattr(cpp_extension, "CppExtension", ext("CppExtension"))
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: None)
    monkeypatch.chdir(ROOT)  # sources() globs csrc/ relative to the working directory
    runpy.run_path(str(tmp_path / "setup.py"), run_name="__main__")
    info = json.loads((tmp_path / "hatch_ext" / "_build_info.json").read_text())
    return info, made["kind"], os.environ.get("TORCH_CUDA_ARCH_LIST")


def test_setup_builds_for_the_default_arch_list(tmp_path, monkeypatch):
    info, kind, env_archs = _run_setup(tmp_path, monkeypatch, torch_cuda="12.8", nvcc=True, env={})
    assert kind == "CUDAExtension" and info["with_cuda"] is True
    assert info["cuda_archs"] == "8.0;9.0;10.0;12.0+PTX" == env_archs


def test_setup_keeps_the_users_arch_list(tmp_path, monkeypatch):
    info, kind, env_archs = _run_setup(tmp_path, monkeypatch, torch_cuda="12.8", nvcc=True,
                                       env={"TORCH_CUDA_ARCH_LIST": "8.6+PTX"})
    assert kind == "CUDAExtension" and info["cuda_archs"] == "8.6+PTX" == env_archs


def test_setup_warns_for_a_cuda_torch_without_nvcc(tmp_path, monkeypatch, capsys):
    info, kind, _ = _run_setup(tmp_path, monkeypatch, torch_cuda="12.8", nvcc=False, env={})
    err = capsys.readouterr().err
    assert kind == "CppExtension" and info["with_cuda"] is False and info["cuda_archs"] is None
    assert "WARNING" in err and "WITHOUT its CUDA kernels" in err and "no nvcc" in err and HINT in err
    assert "no nvcc" in info["no_cuda_reason"]


def test_setup_is_quiet_for_a_cpu_torch(tmp_path, monkeypatch, capsys):
    info, kind, _ = _run_setup(tmp_path, monkeypatch, torch_cuda=None, nvcc=True, env={})
    assert kind == "CppExtension" and info["with_cuda"] is False
    assert "WARNING" not in capsys.readouterr().err
    assert "CPU-only" in info["no_cuda_reason"]


# ----------------------------------------------------------------- CUDA tensors, CPU-only library
def _has_real_cuda_kernels() -> bool:
    return hatch_ext.has_cuda_kernels()


cpu_only_build = pytest.mark.skipif(
    _has_real_cuda_kernels(), reason="hatch_ext is built with its CUDA kernels: nothing to replace")


def _args(op: str, device="cpu"):
    """Small valid arguments of every hatch op."""
    s = testing.room_scene(1, 2, 9, 11, seed=0)
    d, K, T = s.depth.to(device), s.K.to(device), s.cam_to_world.to(device)
    emb = torch.randn(1, 2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    emb = emb.to(device)
    M = torch.zeros(1, 2, 2, 4, 4, dtype=torch.float64, device=device)
    lse = torch.zeros(1, 2, 2, 4, dtype=torch.float64, device=device)
    nv = torch.ones((), dtype=torch.long, device=device)
    g = torch.ones((), dtype=torch.float64, device=device)
    geo = (2, 2, ABS_TOL, REL_TOL, 1)
    loss = (TAU_T, TAU_P, 0.0)
    return {
        "patch_overlap": (d, K, T, *geo),
        "cell_similarity": (emb,),
        "cell_similarity_backward": (torch.ones(1, 2, 2, 4, 4, dtype=torch.float64, device=device), emb),
        "soft_infonce": (emb, M, *loss),
        "soft_infonce_backward": (g, emb, M, lse, nv, *loss),
        "patch_align": (emb, d, K, T, 2, 2, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1, 0.0),
        "patch_align_backward": (g, emb, d, K, T, lse, nv, 2, 2, TAU_T, TAU_P, ABS_TOL, REL_TOL, 1,
                                 0.0),
    }[op]


def test_op_list_is_complete():
    assert L.hatch_op_names() == ["hatch::" + op for op in ALL_OPS]


@cpu_only_build
def test_every_op_has_a_cuda_implementation():
    for op in L.hatch_op_names():
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), op
    assert L.register_missing_cuda_kernels() == []  # idempotent: nothing left to register


@cpu_only_build
@pytest.mark.parametrize("op", ALL_OPS)
def test_cuda_key_of_a_cpu_only_build_raises_a_clear_error(op):
    """Dispatches to the CUDA key (with CPU tensors: no GPU needed); the old library had no CUDA
    kernel there and raised the dispatcher's "Could not run 'hatch::...' with arguments from the
    'CUDA' backend"."""
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
    with pytest.raises(RuntimeError) as info:
        getattr(OPS, op).default.redispatch(keys, *_args(op))
    msg = str(info.value)
    assert msg.startswith(f"hatch.{op}: hatch_ext was built without CUDA kernels (")
    assert msg.endswith(HINT)
    assert "Could not run" not in msg
    # The CPU kernels are untouched.
    getattr(OPS, op)(*_args(op))


def test_missing_kernel_message_names_op_and_reason(monkeypatch):
    monkeypatch.setattr(L, "build_info", lambda: {"torch": "2.13.0+cu128", "with_cuda": False,
                                                  "no_cuda_reason": "no nvcc was found at build time"})
    assert L.missing_cuda_kernel_message("hatch::patch_align") == (
        "hatch.patch_align: hatch_ext was built without CUDA kernels (no nvcc was found at build "
        f"time): {HINT}")
    monkeypatch.setattr(L, "build_info", lambda: {"torch": "2.13.0+cpu", "with_cuda": False})
    assert "2.13.0+cpu, a CPU-only build" in L.missing_cuda_kernel_message("hatch::patch_overlap")
    with pytest.raises(RuntimeError, match=r"^hatch\.soft_infonce: hatch_ext was built without"):
        L.missing_cuda_kernel("hatch::soft_infonce")(1, 2, tau=3)
    assert HINT == C.REBUILD_HINT  # one wording for setup.py's warning and the runtime error


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
@cpu_only_build
@pytest.mark.parametrize("op", ALL_OPS)
def test_cuda_tensors_on_a_cpu_only_build(op):
    """On a GPU host with a CPU-only hatch_ext: real CUDA tensors, through autograd where the op has
    it, get the clear error (not the dispatcher's generic one)."""
    args = list(_args(op, "cuda"))
    if op in ("cell_similarity", "soft_infonce", "patch_align"):  # emb first: through autograd
        args[0].requires_grad_()
    with pytest.raises(RuntimeError, match=rf"^hatch\.{op}: hatch_ext was built without CUDA"):
        getattr(OPS, op)(*args)
    with pytest.raises(RuntimeError, match="rebuild with a CUDA toolkit"):
        hatch_ext.cell_similarity(torch.ones(1, 2, 3, 4, device="cuda"))
