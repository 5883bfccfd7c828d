"""The single switch between the compiled PaStA ops and the naive reference.

Everything in hatch.pasta calls `patch_align` / `patch_overlap` from here, so moving from the naive
PyTorch reference to the fused kernels is one line.
"""
from __future__ import annotations

from hatch_ext import reference as _impl  # switch to `hatch_ext.ops` once its CPU kernels land

patch_align = _impl.patch_align
patch_overlap = _impl.patch_overlap
