"""Supervised fine-tuning with TRL's SFTTrainer on formatted rows: plain QA fine-tuning or the ActoR cold start.

Rows come from `hatch_vlm.actor.formatting` (`qa_sft_row` / `cold_start_row`): conversational prompt +
completion with the images. The loss is on the completion only. `max_length=None`: truncating a multi-image
prompt would cut image tokens ("Image features and image tokens do not match", docs/notes.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar
from collections.abc import Sequence

from hatch_vlm.utils.config import (OLD_CHECKPOINTING_NAMES, CHECKPOINTING_NAMES, ConfigError, check,
                                    check_foreign_fields, effective, trl_kwargs)
from hatch_vlm.models.compat import checkpointing_deprecations_ignored
from hatch_vlm.models.freezing import check_freeze, freeze_parts
from hatch_vlm.models.precision import upcast_trainable

# Our defaults for SFTConfig fields (the paper gives no SFT settings); every other field keeps TRL's default.
# Pinned here even where TRL's default agrees today, so that a TRL release cannot move the demo's numbers.
SFT_DEFAULTS: dict[str, Any] = {
    "max_steps": 200, "learning_rate": 2e-4, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
    "warmup_steps": 5, "lr_scheduler_type": "cosine", "weight_decay": 0.0, "logging_steps": 10, "save_steps": 500,
    "seed": 0, "bf16": False, "completion_only_loss": True, "report_to": "none", "disable_tqdm": True,
}
# SFTConfig fields the stage sets itself.
SFT_RESERVED = {
    "output_dir": "the stage's work directory",
    "dataloader_num_workers": "data.num_workers",
    "remove_unused_columns": "kept for lazily made rows, which bring their own columns",
    "max_length": "None: truncating a multi-image prompt would cut image tokens",
}
# Names of earlier hatch versions and their replacement (one name per concept: TRL's).
RENAMED = {
    "batch_size": "renamed to per_device_train_batch_size (TRL's name; per GPU)",
    "grad_accum": "renamed to gradient_accumulation_steps (TRL's name)",
    "extra": "removed: write any TRL config field directly in the section",
    **OLD_CHECKPOINTING_NAMES,
}


def derived_settings(user: dict[str, Any]) -> dict[str, Any]:
    """Defaults that depend on other settings: CPU iff no CUDA device, checkpoints iff `save_steps` is given."""
    import torch

    return {"use_cpu": not torch.cuda.is_available(), "save_strategy": "steps" if "save_steps" in user else "no"}


@dataclass
class TRLStageOptions:
    """Options of a stage on a TRL trainer: our own fields, plus in `trl` any field of the TRL config by its
    own name (one name per concept: TRL's).

    In a config section the TRL fields sit beside ours (`qa_sft: {max_steps: 60, lora: {r: 8}}`): the config
    loader gathers every key that is not ours into `trl` (`__unknown_keys_into__`) and this class checks them
    against the TRL config's fields and types. A field not given takes `DEFAULTS` (ours), else TRL's default.
    In Python: `SFTOptions(trl={"max_steps": 60})`.
    """

    __unknown_keys_into__: ClassVar[str] = "trl"
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    RESERVED: ClassVar[dict[str, str]] = {}
    RENAMED: ClassVar[dict[str, str]] = RENAMED

    lora: dict | None = None               # peft LoraConfig kwargs, e.g. {"r": 16, "target_modules": [...]}
    # full fine-tuning: parts held fixed, e.g. [embeddings] or [vision, embeddings] (models/freezing.py)
    freeze: list[str] = field(default_factory=list)
    trl: dict[str, Any] = field(default_factory=dict)   # fields of the TRL config

    @classmethod
    def config_class(cls):
        raise NotImplementedError

    def __post_init__(self):
        own = [f.name for f in fields(self) if f.name != "trl"]
        check_foreign_fields(self.config_class(), self.trl, own=own, renamed=self.RENAMED, reserved=self.RESERVED,
                             aliases=CHECKPOINTING_NAMES)
        for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps"):
            v = self.setting(name)
            check(v >= 1, name, f"must be >= 1, got {v}")
        lr = self.setting("learning_rate")
        check(lr > 0, "learning_rate", f"must be > 0, got {lr}")
        try:
            self.freeze = check_freeze(self.freeze, self.lora)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def setting(self, name: str) -> Any:
        """The value TRL config field `name` gets (before what the stage sets itself)."""
        return effective(self.config_class(), {**self.DEFAULTS, **derived_settings(self.trl)}, self.trl, name)

    def trl_config(self, **stage: Any):
        """The TRL config: our defaults, then the user's fields, then the stage's own (`stage`)."""
        cls = self.config_class()
        return cls(**trl_kwargs(cls, {**self.DEFAULTS, **derived_settings(self.trl)}, self.trl, stage))


@dataclass
class SFTOptions(TRLStageOptions):
    """Options of `run_sft`: `lora` and any SFTConfig field (see TRLStageOptions)."""

    DEFAULTS: ClassVar[dict[str, Any]] = SFT_DEFAULTS
    RESERVED: ClassVar[dict[str, str]] = SFT_RESERVED

    @classmethod
    def config_class(cls):
        from trl import SFTConfig

        return SFTConfig


def make_lora_config(lora: dict | None, model=None):
    """A peft LoraConfig from kwargs (None -> no LoRA). Default targets: the LLM's attention q/v, as the
    model's family names them (`hatch_vlm.models.adapters`: `llm_lora_targets`; without a model, Qwen's
    `["q_proj", "v_proj"]`, which in InternVL would also reach the vision tower)."""
    if lora is None:
        return None
    from peft import LoraConfig

    targets = ["q_proj", "v_proj"]
    if model is not None:
        from hatch_vlm.models.adapters import adapter_for_model

        targets = adapter_for_model(model).llm_lora_targets
    kw = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": targets, "task_type": "CAUSAL_LM"}
    kw.update(lora)
    return LoraConfig(**kw)


def _token_mean_trainer_class():
    from trl import SFTTrainer

    from hatch_vlm.utils.engines import prepare_engine
    from hatch_vlm.utils.probes import attach_probes

    class TokenMeanSFTTrainer(SFTTrainer):
        """SFTTrainer whose loss is the mean over all completion tokens of the optimizer step, on every rank.

        Qwen2.5-VL declares `accepts_loss_kwargs = False`, so `Trainer` hands `compute_loss` no
        `num_items_in_batch` and SFTTrainer falls back to each micro-batch's own token mean: DDP then averages
        per-process means (a token of a process with few completion tokens weighs more) and gradient
        accumulation averages per-micro-batch means. SFTTrainer computes the loss itself (fused LM head) and
        divides by `num_items_in_batch` when it gets one, summed over the accumulation window and, with
        `average_tokens_across_devices` (default), over processes; so the flag is set for the trainer.
        """

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = True
            prepare_engine(self)       # FSDP2 on CPU processes (utils/engines.py)
            attach_probes(self)

    return TokenMeanSFTTrainer


def run_sft(model, processor, rows: Sequence[dict] | Any, output_dir: str | Path,
            options: SFTOptions | None = None, eval_rows: Sequence[dict] | None = None,
            resume_from_checkpoint: str | None = None, num_workers: int = 0):
    """Train `model` on prompt/completion rows with TRL's SFTTrainer; returns the trainer (after training).

    Args:
        model: a Qwen2.5-VL model (e.g. from `hatch_vlm.models.loading.load_model_and_processor`).
        processor: its processor (passed as `processing_class`, so TRL never looks for one online).
        rows: formatted rows (list of dicts) or a `datasets.Dataset` of them.
        output_dir: where TRL writes logs / checkpoints.
        options: `SFTOptions` (any SFTConfig field; see TRLStageOptions).
        eval_rows: optional held-out rows for an eval loss at the end.
        num_workers: DataLoader workers making the rows (decoding lazily loaded frames) beside training.
    """
    from .formatting import lazy_dataset, rows_to_dataset

    opt = options or SFTOptions()

    def as_dataset(r):
        # a datasets.Dataset is used as it is, a list of rows becomes one, and a lazy sequence of rows
        # (formatting.LazyRows over lazily decoded samples) one whose rows are made when indexed
        if hasattr(r, "column_names"):
            return r
        return rows_to_dataset(r) if isinstance(r, (list, tuple)) else lazy_dataset(r)

    train_ds = as_dataset(rows)
    eval_ds = None if eval_rows is None else as_dataset(eval_rows)
    columns = getattr(train_ds, "column_names_of_rows", None) or train_ds.column_names
    missing = {"prompt", "completion", "images"} - set(columns)
    if missing:
        raise ValueError(f"SFT rows need columns prompt, completion, images; missing {sorted(missing)}")
    config = opt.trl_config(output_dir=str(output_dir), max_length=None, dataloader_num_workers=num_workers,
                            remove_unused_columns=not hasattr(train_ds, "column_names_of_rows"))
    if opt.lora is None:
        freeze_parts(model, opt.freeze)     # parts held fixed (models/freezing.py)
        upcast_trainable(model)     # full fine-tuning: float32 master weights (models/precision.py)
    # peft's LoRA wrap calls transformers' deprecated gradient-checkpointing names (models/compat.py).
    with checkpointing_deprecations_ignored():
        trainer = _token_mean_trainer_class()(model=model, args=config, train_dataset=train_ds,
                                              eval_dataset=eval_ds, processing_class=processor,
                                              peft_config=make_lora_config(opt.lora, model))
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer
