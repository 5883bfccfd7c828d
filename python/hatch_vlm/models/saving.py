"""Saving a model that a Trainer trained, whatever engine distributed it.

Under DDP (or one process) every rank holds the whole model and the main process can save it as it is.
Under FSDP and DeepSpeed ZeRO-3 each rank holds a shard of the parameters: saving rank 0's module would
write shards (or empty placeholders); the full state dict must be gathered first, by every rank.
"""
from __future__ import annotations

import os
from typing import Any

from .loading import quiet_progress


class QuietSaveMixin:
    """Mix into a `Trainer` subclass (before the Trainer: `class T(QuietSaveMixin, Trainer)`): its model saves
    (every `save_steps` checkpoint, the final save) run inside `quiet_progress`, so they draw no "Writing
    model shards" bar inside the training bar."""

    def save_model(self, *args, **kwargs):
        with quiet_progress():
            return super().save_model(*args, **kwargs)


def is_sharded(accelerator) -> bool:
    """True when the parameters are split across ranks (FSDP, or DeepSpeed with ZeRO stage 3)."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return True
    if kind == DistributedType.DEEPSPEED:
        plugin = accelerator.state.deepspeed_plugin
        return plugin is not None and int(plugin.zero_stage) == 3
    return False


def launched_sharded() -> str | None:
    """The sharding engine `accelerate launch` was told to use ("FSDP" or "DeepSpeed ZeRO-3"), or None.

    Read from the environment the launcher sets, so a run can refuse what it cannot save before training.
    """
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "FSDP"
    if (os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
            and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"):
        return "DeepSpeed ZeRO-3"
    return None


def gather_full_state(trainer) -> dict[str, Any] | None:
    """The full state dict of `trainer`'s model when it is sharded (on the main process; other ranks get
    whatever accelerate returns there), else None (the module itself can be saved).

    A collective: every rank must call it. LoRA under a sharded engine is refused (merging adapters into
    gathered weights is not implemented): train LoRA under DDP or ZeRO-2, or save the adapters themselves.
    """
    accelerator = trainer.accelerator
    if not is_sharded(accelerator):
        return None
    if hasattr(accelerator.unwrap_model(trainer.model), "merge_and_unload"):
        raise NotImplementedError(
            f"saving a merged LoRA model under {accelerator.distributed_type.value} (sharded parameters) is not "
            "supported; use DDP or DeepSpeed ZeRO-2 for LoRA runs")
    return accelerator.get_state_dict(trainer.model_wrapped)


def write_trained_model(trainer, path, full_state: dict[str, Any] | None):
    """Main process: saves `trainer`'s model to `path` (safetensors), LoRA adapters merged, from
    `full_state` when `gather_full_state` returned one (sharded engines); returns the model object saved
    (under sharding, a shard: load `path` for the whole model)."""
    from .precision import cast_to_checkpoint_dtype, checkpoint_dtype

    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    # trained parameters were held in float32 (models/precision.py): the output keeps the checkpoint's dtype
    cast_to_checkpoint_dtype(model)
    if full_state is not None:
        dtype = checkpoint_dtype(model)
        full_state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in full_state.items()}
        # A gathered state holds a tied weight twice, as two separate tensors (lm_head.weight beside
        # embed_tokens.weight), and save_pretrained dedupes by shared storage only: the model written under
        # ZeRO-3 / FSDP carried a second copy of the embeddings that DDP's does not (seen in
        # tests/scale/test_engine_resume.py). Drop the tied copy, as an unsharded save does.
        for target, source in (getattr(model, "all_tied_weights_keys", None) or {}).items():
            if target in full_state and source in full_state and full_state[target].equal(full_state[source]):
                del full_state[target]
    with quiet_progress():
        model.save_pretrained(path, safe_serialization=True,
                              **({"state_dict": full_state} if full_state is not None else {}))
    return model
