"""hatch_ext: the compiled PaStA ops of hatch, as `torch.ops.hatch.*`.

Importing this package loads the library (C++ kernels, plus CUDA kernels when built with CUDA) and
registers autograd and fake-tensor support, so the ops work in training and under `torch.compile`.

    hatch_ext.ops        documented Python functions (patch_overlap, cell_similarity, soft_infonce,
                         patch_align)
    hatch_ext.reference  the naive, vectorised PyTorch version of the same math (tests, benchmarks)
    hatch_ext.scenes     exact-depth toy rooms (depth, K, poses) for examples, tests and benchmarks
    hatch_ext.testing    test helpers (re-exports the scenes)
"""
from ._library import build_info, has_cuda_kernels, load as _load
from ._library import register_missing_cuda_kernels as _register_missing_cuda_kernels

_load()
_register_missing_cuda_kernels()  # CPU-only build: CUDA tensors get "rebuild with a CUDA toolkit"

from . import _registration  # noqa: E402,F401  (registers fakes and autograd)
from . import ops, reference  # noqa: E402
from .ops import cell_similarity, patch_align, patch_overlap, soft_infonce  # noqa: E402

__all__ = [
    "build_info",
    "cell_similarity",
    "has_cuda_kernels",
    "ops",
    "patch_align",
    "patch_overlap",
    "reference",
    "soft_infonce",
]
