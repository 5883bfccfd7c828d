"""Supervised fine-tuning with TRL's SFTTrainer on formatted rows: plain QA fine-tuning or the ActoR cold start.

Rows come from `hatch_vlm.actor.formatting` (`qa_sft_row` / `cold_start_row`): conversational prompt +
completion with the images. The loss is on the completion only. `max_length=None`: truncating a multi-image
prompt would cut image tokens ("Image features and image tokens do not match", docs/notes.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


@dataclass
class SFTOptions:
    """Options of `run_sft` (ours; the paper gives no SFT settings for the cold start)."""

    max_steps: int = 200
    learning_rate: float = 2e-4
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 5
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.0
    logging_steps: int = 10
    save_steps: int | None = None          # None: no intermediate checkpoints
    seed: int = 0
    use_cpu: bool | None = None            # None: CPU iff no CUDA device
    bf16: bool = False
    lora: dict | None = None               # peft LoraConfig kwargs, e.g. {"r": 16, "target_modules": [...]}
    extra: dict[str, Any] = field(default_factory=dict)   # any further SFTConfig fields

    def __post_init__(self):
        if self.max_steps < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(f"SFTOptions: need max_steps >= 1, batch_size >= 1, learning_rate > 0; got "
                             f"{self.max_steps}, {self.batch_size}, {self.learning_rate}")


def _use_cpu(flag: bool | None) -> bool:
    import torch

    return (not torch.cuda.is_available()) if flag is None else flag


def make_lora_config(lora: dict | None):
    """A peft LoraConfig from kwargs (None -> no LoRA). Default targets: the LLM's attention q/v."""
    if lora is None:
        return None
    from peft import LoraConfig

    kw = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
          "task_type": "CAUSAL_LM"}
    kw.update(lora)
    return LoraConfig(**kw)


def _token_mean_trainer_class():
    from trl import SFTTrainer

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
        options: `SFTOptions`.
        eval_rows: optional held-out rows for an eval loss at the end.
        num_workers: DataLoader workers making the rows (decoding lazily loaded frames) beside training.
    """
    from trl import SFTConfig, SFTTrainer

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
    config = SFTConfig(
        output_dir=str(output_dir), max_steps=opt.max_steps, learning_rate=opt.learning_rate,
        per_device_train_batch_size=opt.batch_size, gradient_accumulation_steps=opt.gradient_accumulation_steps,
        warmup_steps=opt.warmup_steps, lr_scheduler_type=opt.lr_scheduler_type, weight_decay=opt.weight_decay,
        logging_steps=opt.logging_steps, save_strategy="no" if opt.save_steps is None else "steps",
        save_steps=opt.save_steps or 500, seed=opt.seed, use_cpu=_use_cpu(opt.use_cpu), bf16=opt.bf16,
        max_length=None, completion_only_loss=True, report_to="none", disable_tqdm=True,
        dataloader_num_workers=num_workers, remove_unused_columns=not hasattr(train_ds, "column_names_of_rows"),
        **opt.extra)
    trainer = _token_mean_trainer_class()(model=model, args=config, train_dataset=train_ds, eval_dataset=eval_ds,
                                          processing_class=processor, peft_config=make_lora_config(opt.lora))
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer
