"""Loads the compiled library `hatch_ext._C` (which registers `torch.ops.hatch.*`), after checking that
it was built against the torch that is imported now: a mismatch would otherwise surface as an obscure
undefined-symbol error or, worse, a crash."""
from __future__ import annotations

import importlib
import json
from functools import cache
from pathlib import Path

import torch

_HERE = Path(__file__).resolve().parent
_REBUILD = "rebuild it with `pip install --no-build-isolation -e .` in the hatch checkout"


@cache
def build_info() -> dict:
    """What the library was built against: {"torch", "cuda", "cuda_archs", "with_cuda", "python"}."""
    path = _HERE / "_build_info.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def _base_version(v: str) -> str:
    return v.split("+")[0]


def load() -> None:
    info = build_info()
    built = info.get("torch")
    if built is not None and built != torch.__version__:
        raise ImportError(
            f"hatch_ext was built against torch {built} but torch {torch.__version__} is imported; "
            f"the compiled ops would not load (ABI mismatch): {_REBUILD}."
        )
    try:
        importlib.import_module("hatch_ext._C")
    except ImportError as e:
        raise ImportError(f"hatch_ext: the compiled ops library could not be loaded ({e}); {_REBUILD}.") from e


def has_cuda_kernels() -> bool:
    """True when the library holds the CUDA kernels (built with a CUDA toolkit and a CUDA torch)."""
    return bool(build_info().get("with_cuda"))


# ------------------------------------------------------------- CUDA tensors on a library without CUDA
_CUDA_HINT = ("rebuild with a CUDA toolkit: pip install --no-build-isolation -e . "
              "(nvcc on PATH, CUDA_HOME set)")  # as hatch_ext/_build_config.py's REBUILD_HINT
_missing_cuda_lib = None  # the torch.library.Library holding the raising CUDA implementations


def hatch_op_names() -> list[str]:
    """Every op of the `hatch` namespace ("hatch::patch_overlap", ...), from the dispatcher."""
    return sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("hatch::"))


def _no_cuda_reason() -> str:
    info = build_info()
    reason = info.get("no_cuda_reason")
    if reason:
        return reason
    if info.get("torch") and "+cpu" in info["torch"]:
        return f"it was built against torch {info['torch']}, a CPU-only build"
    return "it was built without a CUDA toolkit or against a CPU-only torch"


def missing_cuda_kernel_message(op: str) -> str:
    """The error a CUDA call of `op` gets when the library has no CUDA kernels."""
    name = op.replace("::", ".")
    return f"{name}: hatch_ext was built without CUDA kernels ({_no_cuda_reason()}): {_CUDA_HINT}"


def missing_cuda_kernel(op: str):
    def kernel(*args, **kwargs):
        raise RuntimeError(missing_cuda_kernel_message(op))

    kernel.__name__ = f"{op.split('::')[-1]}_cuda_missing"
    return kernel


def register_missing_cuda_kernels() -> list[str]:
    """Registers, for every hatch op that has no CUDA kernel, a CUDA implementation that raises
    "hatch.<op>: hatch_ext was built without CUDA kernels (...): rebuild with a CUDA toolkit: ..."
    instead of the dispatcher's generic "Could not run 'hatch::<op>' with arguments from the 'CUDA'
    backend". Decided by the dispatcher, not by _build_info.json, so it can never shadow a real
    kernel. Returns the ops it registered (none when the CUDA kernels are built)."""
    global _missing_cuda_lib
    missing = [op for op in hatch_op_names()
               if not torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")]
    if not missing:
        return []
    if _missing_cuda_lib is None:
        _missing_cuda_lib = torch.library.Library("hatch", "IMPL")
    for op in missing:
        _missing_cuda_lib.impl(op.split("::", 1)[1], missing_cuda_kernel(op), "CUDA")
    return missing
