"""Loads the compiled library `hatch_ext._C` (which registers `torch.ops.hatch.*`), after checking that
it was built against the torch that is imported now: a mismatch would otherwise surface as an obscure
undefined-symbol error or, worse, a crash."""
from __future__ import annotations

import importlib
import json
from functools import lru_cache
from pathlib import Path

import torch

_HERE = Path(__file__).resolve().parent
_REBUILD = "rebuild it with `pip install --no-build-isolation -e .` in the hatch checkout"


@lru_cache(maxsize=None)
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
