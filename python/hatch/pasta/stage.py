"""The PaStA stage of HATCH: align the vision encoder's cell embeddings across views, LLM frozen.

    from hatch.pasta.stage import PastaConfig, run_pasta_stage
    metrics = run_pasta_stage(PastaConfig(model_dir="tiny", output_dir="runs/pasta"))

Built on transformers' `Trainer` (gradient accumulation, checkpoints in safetensors, logging, bf16 autocast
where the GPU supports it). Trainable: the whole vision tower (`tune="full"`, patch embedding, blocks and
merger) or LoRA adapters on its linear layers (`tune="lora"`, merged back into the weights at the end);
every LLM parameter is frozen, so the LLM weights leave the stage bit-identical. The loss is
`hatch_ext.ops.patch_align` on the cell embeddings of `hatch.pasta.cells` (via `hatch.pasta.loss`).

Outputs in `output_dir`: `final/` (a plain model + processor directory, loadable with
`hatch.models.loading.load_model_and_processor`), `checkpoint-N/` (Trainer checkpoints every
`save_steps`), `metrics.json`, `log_history.json` and `matches.png` (predicted vs geometric matches).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from transformers import Trainer, TrainerCallback, TrainingArguments

from hatch.data.record import Sample
from hatch.models.loading import load_model_and_processor
from hatch_ext.ops import ABS_TOL, GRID, MIN_OVERLAP, REL_TOL, STRIDE, TAU_P, TAU_T

from .cells import cell_embeddings_from_pixels, core_model, processor_inputs
from .loss import patch_align
from .metrics import correspondence_metrics, geometry_tensors

# Linear layers of the vision tower that LoRA adapts (blocks' attention + MLP, and the merger's MLP).
VISION_LORA_TARGETS = r".*visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate_proj|up_proj|down_proj))|merger\.mlp\.(0|2))"


@dataclass
class PastaConfig:
    """Options of the PaStA stage (defaults: ours; the paper gives no hyper-parameters)."""

    model_dir: str                       # a saved Qwen2.5-VL directory (tiny or real)
    output_dir: str
    # data: "auto" (hatch.data.synthetic when available, else toy rooms), "synthetic" or "toy_room";
    # run_pasta_stage also accepts explicit train/eval sample lists.
    data: str = "auto"
    num_train: int = 256
    num_eval: int = 32
    views: int = 2
    image_size: int = 112
    train_seed: int = 0
    eval_seed: int = 12345               # held-out scenes: a seed never used for training
    # loss (DESIGN.md)
    grid: int = GRID
    tau_t: float = TAU_T
    tau_p: float = TAU_P
    abs_tol: float = ABS_TOL
    rel_tol: float = REL_TOL
    stride: int = STRIDE
    min_overlap: float = MIN_OVERLAP
    # what trains
    tune: str = "full"                   # "full" | "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: str = VISION_LORA_TARGETS
    # optimisation
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    lr_scheduler_type: str = "cosine"
    batch_size: int = 8
    grad_accum: int = 1
    max_steps: int = 300
    max_seconds: float | None = None     # stop training after this much wall-clock (None: no limit)
    max_grad_norm: float = 1.0
    bf16: str | bool = "auto"            # "auto": bf16 autocast iff a bf16-capable GPU is used
    device: str | None = None            # None: CUDA when available, else CPU
    # bookkeeping
    logging_steps: int = 10
    save_steps: int = 0                  # Trainer checkpoints every N steps (0: only the final model)
    save_total_limit: int | None = 2
    eval_batch_size: int = 8
    evaluate_before: bool = True
    plot: bool = True
    seed: int = 0
    extra_training_args: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.tune not in ("full", "lora"):
            raise ValueError(f"PastaConfig.tune must be 'full' or 'lora', got {self.tune!r}")
        if self.data not in ("auto", "synthetic", "toy_room"):
            raise ValueError(f"PastaConfig.data must be 'auto', 'synthetic' or 'toy_room', got {self.data!r}")
        for name in ("num_train", "num_eval", "batch_size", "grad_accum", "max_steps", "grid", "stride"):
            if getattr(self, name) < (0 if name in ("num_train", "num_eval") else 1):
                raise ValueError(f"PastaConfig.{name} must be positive, got {getattr(self, name)}")
        if self.views < 2:
            raise ValueError(f"PastaConfig.views must be >= 2 (PaStA aligns across views), got {self.views}")
        if not self.learning_rate > 0:
            raise ValueError(f"PastaConfig.learning_rate must be > 0, got {self.learning_rate}")


# ------------------------------------------------------------------------------------------- data
def make_samples(config: PastaConfig, num: int, seed: int) -> list[Sample]:
    """Scenes for the stage from the configured source."""
    source = config.data
    if source in ("auto", "synthetic"):
        try:
            from hatch.data import synthetic  # noqa: F401
        except ImportError:
            if source == "synthetic":
                raise
            source = "toy_room"
        else:
            source = "synthetic"
    if source == "synthetic":
        return _synthetic_samples(config, num, seed)
    from .scenes import textured_room_samples

    return textured_room_samples(num, views=config.views, size=config.image_size, seed=seed)


def _synthetic_samples(config: PastaConfig, num: int, seed: int) -> list[Sample]:
    from hatch.data import synthetic

    raise NotImplementedError("hatch.data.synthetic is not wired in yet")  # replaced when it lands


class PastaCollator:
    """Samples -> {pixel_values, image_grid_thw, depth, K, cam_to_world} (all views, sample-major)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, samples: Sequence[Sample]) -> dict[str, Tensor]:
        batch = processor_inputs(self.processor, samples)
        batch["depth"], batch["K"], batch["cam_to_world"] = geometry_tensors(samples)
        return batch


# ------------------------------------------------------------------------------------------- loss
def pasta_loss(model, batch: dict[str, Tensor], config: PastaConfig | None = None,
               return_num_valid: bool = False):
    """The PaStA loss of a collated batch (see `PastaCollator`), differentiable in the vision tower.

    The cell embeddings are cast to float32 for the loss (tiny [B, V, P, D]; keeps bf16 runs exact).
    """
    c = config or PastaConfig(model_dir="", output_dir="")
    depth = batch["depth"]
    emb = cell_embeddings_from_pixels(model, batch["pixel_values"], batch["image_grid_thw"], depth.shape[1],
                                      c.grid, c.grid)
    dev = emb.device
    return patch_align(emb.float(), depth.to(dev), batch["K"].to(dev), batch["cam_to_world"].to(dev),
                       c.grid, c.grid, c.tau_t, c.tau_p, c.abs_tol, c.rel_tol, c.stride, c.min_overlap,
                       return_num_valid=return_num_valid)


def pasta_aux_loss(model, batch: dict[str, Tensor], weight: float, config: PastaConfig | None = None) -> Tensor:
    """λ_pasta · PaStA loss, the auxiliary term for the SFT / GRPO stages (paper default λ = 0).

    `batch` holds `pixel_values` and `image_grid_thw` of all the batch's images (sample-major, as the
    processor returns them for the prompts) and the geometry `depth` [B, V, Hd, Wd], `K`, `cam_to_world`.
    With weight 0 nothing is computed and a zero scalar (no graph) is returned.
    """
    if weight == 0:
        return torch.zeros((), device=batch["pixel_values"].device)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"pasta_aux_loss: weight must be a finite number >= 0, got {weight}")
    missing = [k for k in ("pixel_values", "image_grid_thw", "depth", "K", "cam_to_world") if k not in batch]
    if missing:
        raise KeyError(f"pasta_aux_loss: batch lacks {missing} (needs the images' processor outputs and "
                       "the samples' depth, K, cam_to_world)")
    return weight * pasta_loss(model, batch, config)


# ------------------------------------------------------------------------------------- trainable
def freeze_for_pasta(model, config: PastaConfig):
    """Freeze everything but the vision tower (full) or wrap it with vision-only LoRA; returns the model
    to train."""
    for p in model.parameters():
        p.requires_grad_(False)
    if config.tune == "full":
        for p in core_model(model).visual.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_targets, bias="none")
    model = get_peft_model(model, lora)
    bad = [n for n, p in model.named_parameters() if p.requires_grad and ".visual." not in n]
    if bad:
        raise RuntimeError(f"LoRA targets reach outside the vision tower: {bad[:3]}")
    return model


def llm_state(model) -> dict[str, Tensor]:
    """Copies of every parameter outside the vision tower (the frozen part), for bit-identity checks."""
    core = core_model(model)
    visual = {id(p) for p in core.visual.parameters()}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {n: p.detach().clone() for n, p in base.named_parameters() if id(p) not in visual}


# ---------------------------------------------------------------------------------------- trainer
class PastaTrainer(Trainer):
    """`Trainer` whose loss is the PaStA loss of the batch's cell embeddings."""

    def __init__(self, *args, pasta_config: PastaConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.pasta_config = pasta_config
        self._valid_rows: list[float] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, num_valid = pasta_loss(model, inputs, self.pasta_config, return_num_valid=True)
        self._valid_rows.append(float(num_valid))
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._valid_rows:
            logs["valid_rows"] = sum(self._valid_rows) / len(self._valid_rows)
            self._valid_rows = []
        super().log(logs, start_time)


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


def _use_bf16(config: PastaConfig, device: torch.device) -> bool:
    if config.bf16 == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return bool(config.bf16)


def run_pasta_stage(config: PastaConfig, train_samples: Sequence[Sample] | None = None,
                    eval_samples: Sequence[Sample] | None = None) -> dict:
    """Run the PaStA stage; returns metrics before/after on the held-out samples.

    Returns a dict with `before_*` / `after_*` correspondence metrics (top1, mean_rank), `chance_top1`,
    `chance_rank`, `num_eval_rows`, `train_seconds`, `steps`, `train_loss`, `llm_unchanged` (bool),
    and `checkpoint` (the final model directory, as a string).
    """
    config.validate()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = _use_bf16(config, device)

    torch.manual_seed(config.seed)
    model, processor = load_model_and_processor(config.model_dir, dtype=torch.float32, device=device)
    if train_samples is None:
        train_samples = make_samples(config, config.num_train, config.train_seed)
    if eval_samples is None:
        eval_samples = make_samples(config, config.num_eval, config.eval_seed)
    if not train_samples or not eval_samples:
        raise ValueError("the PaStA stage needs training and held-out samples "
                         f"(got {len(train_samples)} and {len(eval_samples)})")

    def evaluate(m) -> dict:
        return correspondence_metrics(m, processor, eval_samples, config.grid, config.eval_batch_size,
                                      config.abs_tol, config.rel_tol, config.stride, config.min_overlap)

    results: dict = {}
    if config.evaluate_before:
        before = evaluate(model)
        results.update({f"before_{k}": before[k] for k in ("top1", "mean_rank")})

    frozen = llm_state(model)
    model = freeze_for_pasta(model, config)
    args = TrainingArguments(
        output_dir=str(out), max_steps=config.max_steps, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_scheduler_type, max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps, save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500, save_total_limit=config.save_total_limit, report_to="none",
        remove_unused_columns=False, dataloader_num_workers=0, bf16=bf16, use_cpu=device.type == "cpu",
        seed=config.seed, disable_tqdm=False, **config.extra_training_args)
    trainer = PastaTrainer(model=model, args=args, train_dataset=list(train_samples),
                           data_collator=PastaCollator(processor), processing_class=processor,
                           callbacks=[TimeBudget(config.max_seconds)], pasta_config=config)
    start = time.perf_counter()
    train_out = trainer.train()
    train_seconds = time.perf_counter() - start

    if config.tune == "lora":
        model = trainer.model.merge_and_unload()
    else:
        model = trainer.model
    model.eval()
    after_state = llm_state(model)
    llm_unchanged = after_state.keys() == frozen.keys() and all(
        torch.equal(after_state[k], frozen[k]) for k in frozen)

    final = out / "final"
    model.save_pretrained(final)
    processor.save_pretrained(final)
    after = evaluate(model)
    results.update({f"after_{k}": after[k] for k in ("top1", "mean_rank")})
    results.update({"chance_top1": after["chance_top1"], "chance_rank": after["chance_rank"],
                    "num_eval_rows": after["num_rows"], "train_seconds": train_seconds,
                    "steps": trainer.state.global_step, "train_loss": float(train_out.training_loss),
                    "llm_unchanged": llm_unchanged, "bf16": bf16, "checkpoint": str(final)})
    (out / "metrics.json").write_text(json.dumps({**results, "config": asdict(config)}, indent=2))
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2))
    if config.plot:
        from .plot import plot_matches

        plot_matches(model, processor, eval_samples[0], config.grid, out / "matches.png",
                     abs_tol=config.abs_tol, rel_tol=config.rel_tol, stride=config.stride)
    return results
