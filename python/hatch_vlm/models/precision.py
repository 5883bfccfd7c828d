"""Which dtype each part of a model trains in.

A real checkpoint is stored in bfloat16. Loaded as it is, its frozen parts can stay there (half the memory
of float32), but its *trained* parameters must not: AdamW's update at a fine-tuning learning rate (~1e-5 per
step) is below half a bfloat16 ulp of a typical weight (|w| ~ 0.02: ulp 1.2e-4), so most updates would round
away and the weights would not move. The trained parameters are therefore held in float32 (master weights;
the forward runs under bf16 autocast when the stage uses bf16), and the saved model is cast back to the
checkpoint's dtype (`checkpoint_dtype`), so every stage's output keeps the input's dtype.
"""
from __future__ import annotations

import torch

HALF = (torch.bfloat16, torch.float16)


def declared_dtype(config) -> torch.dtype | None:
    """The dtype a checkpoint's config declares: its own `dtype` (`torch_dtype` in older files, read into
    `dtype` by transformers), else its language model's (`text_config`): Qwen3-VL's official config.json names
    it there only, and read from the top level alone it would be missing (a bf16 checkpoint then handled as
    float32: twice the memory, and no bf16 autocast on a CPU). None when nothing is declared."""
    for cfg in (config, getattr(config, "text_config", None)):
        if cfg is None:
            continue
        # `dtype` (a config.json's older `torch_dtype` key is read into it); the `torch_dtype` attribute is a
        # deprecated alias of it that logs a warning on the console
        name = getattr(cfg, "dtype", None)
        if isinstance(name, torch.dtype):
            return name
        if isinstance(name, str) and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
    return None


def checkpoint_dtype(model) -> torch.dtype:
    """The dtype the model's checkpoint declares (`declared_dtype`), else that of its first parameter."""
    from .adapters.base import unwrap_model

    return declared_dtype(unwrap_model(model).config) or next(model.parameters()).dtype


def upcast_trainable(model) -> int:
    """Trainable half-precision parameters -> float32, in place; returns how many parameters changed."""
    changed = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype in HALF:
            p.data = p.data.float()
            changed += p.numel()
    return changed


def cast_to_checkpoint_dtype(model) -> None:
    """Every floating parameter and buffer back to the checkpoint's dtype (before saving a trained model)."""
    dtype = checkpoint_dtype(model)
    for p in model.parameters():
        if p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): bf16 autocast is then fast here."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
