"""Model adapters: one class per supported family holding everything model-specific (docs/adapters.md).

    adapter = adapter_for_dir(model_dir)        # from config.json's model_type
    adapter = adapter_for_model(model)          # a loaded (possibly wrapped) model
    adapter = adapter_for_processor(processor)  # a hatch processor
    adapter = adapter_for_family("qwen3-vl")    # by the name users write

Supported: Qwen2.5-VL (`qwen2_5_vl`, the paper's base), Qwen3-VL (`qwen3_vl`), InternVL3 (`internvl`).
"""
from __future__ import annotations

import json
from pathlib import Path

from .base import ModelAdapter, TokenGrid, unwrap_model
from .internvl import InternVLAdapter
from .qwen import Qwen3VLAdapter, Qwen25VLAdapter

ADAPTERS: tuple[ModelAdapter, ...] = (Qwen25VLAdapter(), Qwen3VLAdapter(), InternVLAdapter())
_BY_MODEL_TYPE = {mt: a for a in ADAPTERS for mt in a.model_types}
_BY_FAMILY = {a.family: a for a in ADAPTERS}
# Other spellings of the family names (config files, the command line).
_FAMILY_ALIASES = {"qwen2_5_vl": "qwen2.5-vl", "qwen2.5vl": "qwen2.5-vl", "qwen25-vl": "qwen2.5-vl",
                   "qwen3_vl": "qwen3-vl", "qwen3vl": "qwen3-vl", "internvl": "internvl3", "internvl-3": "internvl3"}

__all__ = ["ADAPTERS", "FAMILIES", "ModelAdapter", "TokenGrid", "adapter_for_dir", "adapter_for_family",
           "adapter_for_model", "adapter_for_model_type", "adapter_for_processor", "unwrap_model"]

FAMILIES: tuple[str, ...] = tuple(a.family for a in ADAPTERS)


def _supported() -> str:
    return ", ".join(f"{a.family} (model_type {'/'.join(a.model_types)})" for a in ADAPTERS)


def adapter_for_model_type(model_type: str | None, where: str = "") -> ModelAdapter:
    """The adapter of a config.json `model_type`; a ValueError naming the supported ones otherwise."""
    if model_type not in _BY_MODEL_TYPE:
        raise ValueError(f"unsupported model_type {model_type!r}{where}: hatch supports {_supported()}")
    return _BY_MODEL_TYPE[model_type]


def adapter_for_dir(model_dir: str | Path) -> ModelAdapter:
    """The adapter of a saved model directory, from its config.json `model_type`."""
    cfg_path = Path(model_dir) / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"model_dir={str(model_dir)!r} has no config.json: expected a directory saved with "
                                "save_pretrained (build one with hatch_vlm.models.tiny.build_tiny_model)")
    model_type = json.loads(cfg_path.read_text()).get("model_type")
    return adapter_for_model_type(model_type, where=f" in {cfg_path}")


def adapter_for_model(model) -> ModelAdapter:
    """The adapter of a loaded model (through DDP / DeepSpeed / peft wrappers)."""
    inner = unwrap_model(model)
    config = getattr(inner, "config", None)
    return adapter_for_model_type(getattr(config, "model_type", None), where=f" ({type(inner).__name__})")


def adapter_for_processor(processor) -> ModelAdapter:
    """The adapter of a hatch processor (`hatch_vlm.models.processor`); a bare tokenizer or another
    processor gets Qwen2.5-VL's (the behaviour before adapters)."""
    from ..processor import HatchInternVLProcessor, HatchQwen3VLProcessor

    if isinstance(processor, HatchInternVLProcessor):
        return _BY_MODEL_TYPE["internvl"]
    if isinstance(processor, HatchQwen3VLProcessor):
        return _BY_MODEL_TYPE["qwen3_vl"]
    return _BY_MODEL_TYPE["qwen2_5_vl"]


def adapter_for_family(family: str) -> ModelAdapter:
    """The adapter of a family name ("qwen2.5-vl", "qwen3-vl", "internvl3"; a few spellings accepted)."""
    key = str(family).strip().lower()
    key = _FAMILY_ALIASES.get(key, key)
    if key not in _BY_FAMILY:
        raise ValueError(f"unknown model family {family!r}: hatch supports {', '.join(FAMILIES)}")
    return _BY_FAMILY[key]
