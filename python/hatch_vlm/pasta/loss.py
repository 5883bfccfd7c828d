"""The single switch between the compiled PaStA ops and the naive reference.

Everything in hatch_vlm.pasta calls `patch_align` / `patch_overlap` from here, so moving from the naive
PyTorch reference to the fused kernels is one line.
"""
from __future__ import annotations

from hatch_ext import ops as _impl  # the fused kernels; `hatch_ext.reference` is the naive twin

patch_align = _impl.patch_align
patch_overlap = _impl.patch_overlap
