"""What trains in the PaStA stage and how: freezing / vision-only LoRA (`freeze_for_pasta`, `llm_state` for
the bit-identity check), the `Trainer` subclass (`PastaTrainer`), its time-aware cosine schedule and
callbacks (`TimeBudget`, `FirstStepClock`), and the bf16 choice (`use_bf16`)."""
from __future__ import annotations

import math
import time

import torch
from torch import Tensor
from transformers import Trainer, TrainerCallback

from hatch_vlm.models.adapters import adapter_for_model
from hatch_vlm.models.compat import checkpointing_deprecations_ignored
from hatch_vlm.models.precision import checkpoint_dtype, cpu_bf16_supported, upcast_trainable
from hatch_vlm.models.saving import QuietSaveMixin
from hatch_vlm.utils.distributed import global_mean_loss
from hatch_vlm.utils.engines import prepare_engine
from hatch_vlm.utils.probes import attach_probes

from .config import PastaConfig
from .objective import pasta_loss


def pasta_lora_targets(model, config: PastaConfig, adapter=None) -> str | list[str]:
    """The LoRA targets of the stage: `config.lora_targets` when the user set them, else the family's
    vision-tower targets (`hatch_vlm.models.adapters`: `vision_lora_targets`)."""
    if config.lora_targets is not None:
        return config.lora_targets
    return (adapter or adapter_for_model(model)).vision_lora_targets


def freeze_for_pasta(model, config: PastaConfig, adapter=None):
    """Freeze everything but the vision tower (full: the family's `vision_parameters`) or wrap it with
    vision-only LoRA; returns the model to train. `adapter`: the model's, when the caller resolved it."""
    adapter = adapter or adapter_for_model(model)
    for p in model.parameters():
        p.requires_grad_(False)
    if config.tune == "full":
        for p in adapter.vision_parameters(model):
            p.requires_grad_(True)
        upcast_trainable(model)          # float32 master weights (models/precision.py)
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=pasta_lora_targets(model, config, adapter), bias="none")
    with checkpointing_deprecations_ignored():      # peft reads transformers' deprecated checkpointing names
        model = get_peft_model(model, lora)
    bad = [n for n, p in model.named_parameters() if p.requires_grad and not adapter.is_vision_parameter_name(n)]
    if bad:
        raise RuntimeError(f"LoRA targets reach outside the vision tower: {bad[:3]}")
    return model


def llm_state(model, adapter=None) -> dict[str, Tensor]:
    """Copies of every parameter outside the vision tower (the frozen part), for bit-identity checks."""
    visual = {id(p) for p in (adapter or adapter_for_model(model)).vision_parameters(model)}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {n: p.detach().clone() for n, p in base.named_parameters() if id(p) not in visual}


def use_bf16(config: PastaConfig, device: torch.device, model=None) -> bool:
    """Whether the stage trains under bf16 autocast: `config.bf16`, where "auto" means a bf16-capable GPU, or
    a CPU that computes bf16 natively (AVX512-BF16 / AMX) when the checkpoint is stored in bf16 (a real one;
    the tiny float32 models stay in float32 there)."""
    if config.bf16 != "auto":
        return bool(config.bf16)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return (device.type == "cpu" and model is not None and checkpoint_dtype(model) == torch.bfloat16
            and cpu_bf16_supported())


class PastaTrainer(QuietSaveMixin, Trainer):
    """`Trainer` whose loss is the PaStA loss of the batch's cell embeddings (checkpoints saved without
    their own progress bar, see `QuietSaveMixin`)."""

    def __init__(self, *args, pasta_config: PastaConfig, adapter=None, **kwargs):
        super().__init__(*args, **kwargs)
        # the model's family adapter, resolved once by the stage (None: looked up per step)
        self.adapter = adapter
        # The loss is a mean over one micro-batch's valid rows, taken over all processes (see
        # `global_mean_loss`): let Trainer divide it by the accumulation steps, as it does for models without
        # loss kwargs. So with gradient accumulation, each micro-step's global mean counts equally (the same
        # as a 1-process run with the same accumulation), not each valid row of the whole optimizer step.
        self.model_accepts_loss_kwargs = False
        self.pasta_config = pasta_config
        self._valid_rows: list[float] = []
        prepare_engine(self)       # FSDP2 on CPU processes (utils/engines.py)
        attach_probes(self)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """With a time budget and the cosine schedule, decay over whichever runs out first, steps or
        seconds, so the learning rate has come down when the budget stops training."""
        c = self.pasta_config
        if self.lr_scheduler is None and c.max_seconds is not None and c.lr_scheduler_type == "cosine":
            optimizer = optimizer or self.optimizer
            self.lr_scheduler = time_aware_cosine(optimizer, c.warmup_steps, num_training_steps, c.max_seconds)
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # accelerate applies bf16 autocast by wrapping model.forward; the PaStA loss reaches the vision tower
        # without it (cells.py), so the stage enters the same autocast itself (without this, `bf16` was a no-op)
        with self.accelerator.autocast():
            loss, num_valid = pasta_loss(model, inputs, self.pasta_config, return_num_valid=True,
                                         adapter=self.adapter)
        loss, num_valid = global_mean_loss(loss, num_valid)
        self._valid_rows.append(float(num_valid))
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._valid_rows:
            logs["valid_rows"] = sum(self._valid_rows) / len(self._valid_rows)
            self._valid_rows = []
        super().log(logs, start_time)


def time_aware_cosine(optimizer, warmup_steps: int, max_steps: int, max_seconds: float):
    """LambdaLR: linear warm-up, then cosine decay over progress = max(step / max_steps,
    elapsed / max_seconds), the clock starting at the first step."""
    start: list[float] = []

    def factor(step: int) -> float:
        if not start:
            start.append(time.perf_counter())
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = max((step - warmup_steps) / max(1, max_steps - warmup_steps),
                       (time.perf_counter() - start[0]) / max_seconds)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TimeBudget(TrainerCallback):
    """Stops training once `seconds` of wall-clock have passed since training began."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.seconds is not None and time.perf_counter() - self.start >= self.seconds:
            control.should_training_stop = True
            control.should_save = True
        return control


class FirstStepClock(TrainerCallback):
    """Records when the first optimizer step finished (`unix`): how long a run takes to start training
    (loading, data selection, the first batches' decoding), reported as `first_step_unix` in the metrics."""

    def __init__(self):
        self.unix: float | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.unix is None:
            self.unix = time.time()
        return control
