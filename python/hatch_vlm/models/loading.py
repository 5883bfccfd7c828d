"""The one load path of hatch: a saved model directory (a tiny model or a real checkpoint of a supported
family: Qwen2.5-VL, Qwen3-VL, InternVL3) -> (model, processor), offline, with `from_pretrained(local_dir)`.
The family comes from the directory's config.json `model_type` (`hatch_vlm.models.adapters`).

Loading (and saving, `hatch_vlm.models.saving`) runs inside `quiet_progress`: transformers draws a bar per
`from_pretrained` ("Loading weights") and per `save_pretrained` ("Writing model shards"), several per stage
(the model, a resumed checkpoint, the saved result) and one per rank, between the bars of the long steps
(scene generation, training, evaluation) that say how far a run is.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


@contextmanager
def quiet_progress() -> Iterator[None]:
    """transformers' progress bars off inside the block (warnings and errors still print), then restored to
    what they were (a caller that disabled them keeps them disabled)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """torch dtype from a dtype, a name ("bf16", "float32", ...) or None (keep the saved dtype)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be a torch.dtype or one of {sorted(_DTYPES)} or 'auto', got {dtype!r}")
    return _DTYPES[dtype]


@contextmanager
def whole_model() -> Iterator[None]:
    """Loads inside the block give this process the whole model, also after a Trainer set up DeepSpeed
    ZeRO-3 in it. transformers would otherwise partition a new model over the ranks as it is built
    (`deepspeed.zero.Init`, a collective): rank 0 re-loading the saved model alone to evaluate it then waits
    for ranks that have moved on, and the job hangs. The stages load before their Trainer partitions."""
    try:
        from transformers.integrations import deepspeed as hf_ds
    except ImportError:
        yield
        return
    saved = hf_ds._hf_deepspeed_config_weak_ref
    hf_ds._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = saved


def load_model_and_processor(model_dir: str | Path, dtype: torch.dtype | str | None = None,
                             device: str | torch.device | None = None, min_pixels: int | None = None,
                             max_pixels: int | None = None):
    """Load a model of a supported family and its torchvision-free processor from a local directory.

    Args:
        model_dir: directory written by `save_pretrained` (e.g. by `hatch_vlm.models.tiny.build_tiny_model`,
            a PaStA checkpoint, or a downloaded Qwen/Qwen2.5-VL-3B-Instruct, Qwen/Qwen3-VL-*-Instruct or
            OpenGVLab/InternVL3-*-hf snapshot); its config.json `model_type` picks the adapter (a ValueError
            naming the supported ones otherwise).
        dtype: weights dtype (torch dtype or "bf16"/"fp32"/...); None keeps the saved dtype.
        device: where to put the model (None: stay on CPU).
        min_pixels, max_pixels: override the processor's resized-image area bounds.

    Returns:
        (model in eval mode, processor).
    """
    from .adapters import adapter_for_dir

    model_dir = Path(model_dir)
    adapter = adapter_for_dir(model_dir)        # FileNotFoundError without config.json
    dt = resolve_dtype(dtype)
    kwargs = {"dtype": dt} if dt is not None else {"dtype": "auto"}
    with quiet_progress(), whole_model():
        model = adapter.load_model(model_dir, **kwargs)
    if device is not None:
        model = model.to(device)
    model.eval()
    processor = adapter.load_processor(model_dir, min_pixels=min_pixels, max_pixels=max_pixels)
    return model, processor


def restore_weights(model, checkpoint: str | Path | None):
    """Loads the weights of a Trainer `checkpoint-N` directory into `model` (in place) before a resumed
    `trainer.train(resume_from_checkpoint=...)`.

    Why: transformers 5 saves Qwen2.5-VL checkpoints under the original key names (`visual.*`,
    `model.layers.*`) and `Trainer._load_from_checkpoint` loads them non-strictly without the key
    mapping, so on its own a resume silently keeps the stage's *starting* weights. `from_pretrained`
    applies the mapping. LoRA checkpoints (adapter files only) are left to the Trainer/peft path.
    """
    if checkpoint is None:
        return model
    checkpoint = Path(checkpoint)
    if (checkpoint / "adapter_model.safetensors").exists() or not (checkpoint / "config.json").exists():
        return model
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    first = next(target.parameters())
    # whole_model(): under ZeRO-3, once an earlier stage's Trainer has set DeepSpeed up in this process (and
    # while its arguments are not yet garbage-collected: a weak reference), from_pretrained would build the
    # checkpoint's model partitioned (parameters of shape [0]) and the resume failed with size mismatches --
    # now and then, as the collector decided (tests/scale/test_engine_resume.py)
    with quiet_progress(), whole_model():
        saved = type(target).from_pretrained(checkpoint, dtype=first.dtype)
    target.load_state_dict(saved.state_dict(), strict=True)
    return model


def load_processor(model_dir: str | Path, min_pixels: int | None = None, max_pixels: int | None = None):
    """The processor of a saved model directory (tokenizer files + image-processor config), of the family
    its config.json names (`hatch_vlm.models.adapters.adapter_for_dir`; a directory with processor files
    but no config.json is read as Qwen2.5-VL's, as before there were adapters).

    min_pixels / max_pixels override the saved image-size bounds (e.g. to feed a 3B model small images).
    """
    from .adapters import adapter_for_dir, adapter_for_family

    adapter = (adapter_for_dir(model_dir) if (Path(model_dir) / "config.json").is_file()
               else adapter_for_family("qwen2.5-vl"))
    return adapter.load_processor(model_dir, min_pixels=min_pixels, max_pixels=max_pixels)
