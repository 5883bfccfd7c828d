"""The PaStA stage of HATCH: align the vision encoder's cell embeddings across views, LLM frozen.

    from hatch_vlm.pasta.stage import PastaConfig, run_pasta_stage
    metrics = run_pasta_stage(PastaConfig(model_dir="tiny", output_dir="runs/pasta"))

Built on transformers' `Trainer` (gradient accumulation, checkpoints in safetensors, logging, bf16 autocast
where the GPU supports it). Trainable: the whole vision tower (`tune="full"`, patch embedding, blocks and
merger) or LoRA adapters on its linear layers (`tune="lora"`, merged back into the weights at the end);
every LLM parameter is frozen, so the LLM weights leave the stage bit-identical. The loss is
`hatch_ext.ops.patch_align` on the cell embeddings of `hatch_vlm.pasta.cells` (via `hatch_vlm.pasta.loss`).

Outputs in `output_dir`: `final/` (a plain model + processor directory, loadable with
`hatch_vlm.models.loading.load_model_and_processor`), `checkpoint-N/` (Trainer checkpoints every
`save_steps`), `metrics.json`, `log_history.json` and `matches.png` (predicted vs geometric matches).

Measured (tiny model, 2 CPU cores shared with other jobs, load average ~8): 

    python -m hatch_vlm.pasta.stage --tiny --output-dir runs/pasta --num-train 512 --max-steps 400 --max-seconds 300

trained 212 steps (batch 8, two 112 px views, n = 4) in 301 s and raised the top-1 correspondence accuracy
on 32 held-out synthetic scenes (708 valid rows) from 22.5 % to 43.4 % (mean rank 5.14 -> 2.99; chance
6.25 %, rank 8.5).
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

from hatch_vlm.data.record import Sample
from hatch_vlm.models.loading import load_model_and_processor, restore_weights
from hatch_vlm.models.saving import gather_full_state, write_trained_model
from hatch_vlm.utils.distributed import is_main
from hatch_ext.ops import ABS_TOL, GRID, MIN_OVERLAP, REL_TOL, STRIDE, TAU_P, TAU_T

from .cells import cell_embeddings_from_pixels, core_model, processor_inputs
from .loss import patch_align
from .metrics import correspondence_metrics, geometry_groups, geometry_tensors

# Linear layers of the vision tower that LoRA adapts (blocks' attention + MLP, and the merger's MLP).
VISION_LORA_TARGETS = r".*visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate_proj|up_proj|down_proj))|merger\.mlp\.(0|2))"


@dataclass
class PastaConfig:
    """Options of the PaStA stage (defaults: ours; the paper gives no hyper-parameters)."""

    model_dir: str                       # a saved Qwen2.5-VL directory (tiny or real)
    output_dir: str
    # data: "auto" (hatch_vlm.data.synthetic when available, else toy rooms), "synthetic" or "toy_room";
    # run_pasta_stage also accepts explicit train/eval sample lists.
    data: str = "auto"
    num_train: int = 256
    num_eval: int = 32
    views: int = 2
    image_size: int = 112
    train_seed: int = 0
    eval_seed: int = 12345               # held-out scenes: a seed never used for training
    # question families of hatch_vlm.data.synthetic to draw layouts from (None: the "near" ones, whose views
    # overlap; the rotation / around / among layouts share little or nothing between views)
    synthetic_tasks: tuple[str, ...] | None = None
    # loss (docs/design.md)
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
    num_workers: int = 0                 # DataLoader workers (decoding real frames overlaps training)
    min_pixels: int | None = None        # image-token budget (None: the checkpoint's own bounds)
    max_pixels: int | None = None
    # bookkeeping
    logging_steps: int = 10
    save_steps: int = 0                  # Trainer checkpoints every N steps (0: only the final model)
    save_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None   # a checkpoint-N directory of an earlier run (or None)
    eval_batch_size: int = 8
    # Compare every LLM weight before/after (a full copy of the LLM in memory). None: only for models
    # whose LLM has < 50M parameters (the tiny one); the frozen weights are not in the optimizer anyway.
    check_llm_unchanged: bool | None = None
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
        for name in ("learning_rate", "tau_t", "tau_p"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PastaConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("abs_tol", "rel_tol", "min_overlap", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"PastaConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"PastaConfig.max_seconds must be > 0 or None, got {self.max_seconds}")
        if self.bf16 not in ("auto", True, False):
            raise ValueError(f"PastaConfig.bf16 must be 'auto', True or False, got {self.bf16!r}")



# ------------------------------------------------------------------------------------------- data
def make_samples(config: PastaConfig, num: int, seed: int) -> list[Sample]:
    """Scenes for the stage from the configured source."""
    source = config.data
    if source in ("auto", "synthetic"):
        try:
            from hatch_vlm.data import synthetic  # noqa: F401
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


def near_tasks() -> tuple[str, ...]:
    """Question families whose camera layout ("near") guarantees overlapping views."""
    from hatch_vlm.data import questions

    return tuple(t for t, fam in questions.FAMILIES.items() if fam.mode == "near")


def _synthetic_samples(config: PastaConfig, num: int, seed: int) -> list[Sample]:
    from tqdm.auto import tqdm

    from hatch_vlm.data.synthetic import SceneConfig, iter_samples

    tasks = tuple(config.synthetic_tasks) if config.synthetic_tasks else near_tasks()
    scene_cfg = SceneConfig(views=config.views, size=config.image_size, tasks=tasks)
    return list(tqdm(iter_samples(num, seed=seed, config=scene_cfg), total=num,
                     desc=f"synthetic scenes (seed {seed})", leave=False))


class PastaCollator:
    """Samples -> {pixel_values, image_grid_thw, depth, K, cam_to_world} (all views, sample-major).

    When the samples differ in view count or depth size, `depth` / `K` / `cam_to_world` are replaced by
    `geometry_groups`: one {"samples", "depth", "K", "cam_to_world"} per group (see `geometry_groups`) and
    `num_views` [B]; the loss is then the mean over the valid rows of all groups."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, samples: Sequence[Sample]) -> dict[str, Tensor]:
        samples = list(samples)
        batch = processor_inputs(self.processor, samples)
        groups = geometry_groups(samples)
        if len(groups) == 1:
            batch["depth"], batch["K"], batch["cam_to_world"] = geometry_tensors(samples)
            return batch
        batch["num_views"] = torch.tensor([s.num_views for s in samples])
        batch["geometry_groups"] = []
        for idx in groups:
            d, K, T = geometry_tensors([samples[k] for k in idx])
            batch["geometry_groups"].append({"samples": torch.tensor(idx), "depth": d, "K": K, "cam_to_world": T})
        return batch


# ------------------------------------------------------------------------------------------- loss
def pasta_loss(model, batch: dict[str, Tensor], config: PastaConfig | None = None,
               return_num_valid: bool = False):
    """The PaStA loss of a collated batch (see `PastaCollator`), differentiable in the vision tower.

    The cell embeddings are cast to float32 for the loss (tiny [B, V, P, D]; keeps bf16 runs exact).
    """
    c = config or PastaConfig(model_dir="", output_dir="")
    if "geometry_groups" in batch:
        return _grouped_pasta_loss(model, batch, c, return_num_valid)
    depth = batch["depth"]
    emb = _cell_embeddings(model, batch["pixel_values"], batch["image_grid_thw"], depth.shape[1], c.grid)
    return _align(emb, depth, batch["K"], batch["cam_to_world"], c, return_num_valid)


def _align(emb: Tensor, depth: Tensor, K: Tensor, T: Tensor, c: PastaConfig, return_num_valid: bool):
    dev = emb.device
    # Outside autocast: under bf16 mixed precision the similarity would otherwise be formed in bf16.
    with torch.autocast(device_type=dev.type, enabled=False):
        return patch_align(emb.float(), depth.to(dev), K.to(dev), T.to(dev), c.grid, c.grid, c.tau_t, c.tau_p,
                           c.abs_tol, c.rel_tol, c.stride, c.min_overlap, return_num_valid=return_num_valid)


def _grouped_pasta_loss(model, batch: dict, c: PastaConfig, return_num_valid: bool):
    """The mean over the valid rows of every (view count, depth size) group of a mixed batch: one vision
    forward for all images, one `patch_align` per group, sums and counts combined."""
    cells = _cell_embeddings(model, batch["pixel_values"], batch["image_grid_thw"], 1, c.grid)[:, 0]
    starts = torch.cumsum(batch["num_views"].cpu(), 0) - batch["num_views"].cpu()     # first image per sample
    total, count = None, 0
    for g in batch["geometry_groups"]:
        V = g["depth"].shape[1]
        rows = (starts[g["samples"].cpu()][:, None] + torch.arange(V)).reshape(-1).to(cells.device)
        emb = cells[rows].reshape(len(g["samples"]), V, *cells.shape[1:])
        loss, n = _align(emb, g["depth"], g["K"], g["cam_to_world"], c, True)
        part = loss * n                                   # this group's sum over its valid rows
        total = part if total is None else total + part
        count = count + n
    loss = total / max(float(count), 1.0)
    return (loss, count) if return_num_valid else loss


def _unwrap(model):
    """The model inside distributed wrappers (DDP's and DeepSpeed's engine keep it in `.module`)."""
    while isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel) or (
            type(model).__name__ == "DeepSpeedEngine"):
        model = model.module
    return model


def _cell_embeddings(model, pixel_values: Tensor, image_grid_thw: Tensor, views: int, grid: int) -> Tensor:
    """Cell embeddings [B, V, P, D] (see `cell_embeddings_from_pixels`), through the model's own call when
    training is distributed.

    DDP syncs gradients only for a forward that went through its wrapper, DeepSpeed's engine likewise, and
    FSDP gathers sharded parameters in hooks of the modules' calls. The embeddings are not the model's
    `forward`, so for this one call the inner model's `forward` is shadowed by an instance attribute that
    computes them, and the outermost module (the wrapper, or the FSDP root) is called.
    """
    import torch.distributed as dist

    inner = _unwrap(model)
    if inner is model and not (dist.is_available() and dist.is_initialized()):
        return cell_embeddings_from_pixels(model, pixel_values, image_grid_thw, views, grid, grid)

    def embed(pixel_values, image_grid_thw):
        return cell_embeddings_from_pixels(inner, pixel_values, image_grid_thw, views, grid, grid)

    # Someone may have installed an instance `forward` already (TRL's GRPOTrainer does, for its fused LM
    # head): put it back afterwards rather than deleting ours.
    shadowed = inner.__dict__.get("forward")
    inner.forward = embed
    try:
        return model(pixel_values=pixel_values, image_grid_thw=image_grid_thw)
    finally:
        if shadowed is None:
            del inner.forward
        else:
            inner.forward = shadowed


def pasta_aux_loss(model, batch: dict[str, Tensor], weight: float, config: PastaConfig | None = None) -> Tensor:
    """λ_pasta · PaStA loss, the auxiliary term for the SFT / GRPO stages (paper default λ = 0).

    `batch` holds `pixel_values` and `image_grid_thw` of all the batch's images (sample-major, as the
    processor returns them for the prompts) and the geometry `depth` [B, V, Hd, Wd], `K`, `cam_to_world`.
    With weight 0 nothing is computed and a zero scalar (no graph) is returned. Under a multi-process
    launch it is a collective (see `global_mean_loss`): every rank must call it in the same step.
    """
    if weight == 0:
        return torch.zeros((), device=batch["pixel_values"].device)
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"pasta_aux_loss: weight must be a finite number >= 0, got {weight}")
    missing = [k for k in ("pixel_values", "image_grid_thw", "depth", "K", "cam_to_world") if k not in batch]
    if "geometry_groups" in batch:
        missing = [k for k in ("pixel_values", "image_grid_thw", "num_views") if k not in batch]
    if missing:
        raise KeyError(f"pasta_aux_loss: batch lacks {missing} (needs the images' processor outputs and "
                       "the samples' depth, K, cam_to_world)")
    loss, num_valid = pasta_loss(model, batch, config, return_num_valid=True)
    # Under several processes: the mean over the valid rows of the global batch (every rank calls this in
    # the same micro-step, as the SFT / GRPO trainers' compute_loss does).
    loss, _ = global_mean_loss(loss, num_valid)
    return weight * loss


def global_mean_loss(loss: Tensor, num_valid: Tensor | int) -> tuple[Tensor, Tensor | int]:
    """Turn this process's mean over its valid rows into its share of the mean over ALL processes' rows.

    `loss` = local_sum / max(local_count, 1) as `patch_align(..., return_num_valid=True)` returns it, and
    `num_valid` = local_count. Under torch.distributed (initialized, world size W > 1) the counts are
    all-reduced (SUM) and the loss becomes local_sum / max(global_count, 1) * W: DDP, FSDP and DeepSpeed
    average gradients over the W ranks, so the averaged gradient is that of global_sum / global_count, the
    gradient of a 1-process run on the whole global batch, even when ranks hold different numbers of valid
    rows (a mean of per-rank means would weight a rank's rows by 1 / its own count). Averaging the returned
    loss over ranks (as Trainer does for the logged `loss`) gives the global mean too.

    Returns (loss, count): with one process, the inputs unchanged; otherwise the rescaled loss and the
    global valid-row count (a tensor). The count carries no gradient; every rank must call this (a
    collective), in the same order.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return loss, num_valid
    world = dist.get_world_size()
    local = torch.as_tensor(num_valid, device=loss.device).to(torch.float64)
    # gloo and NCCL both reduce float64; a count < 2^53 is exact.
    total = local.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    local_sum = loss * local.to(loss.dtype)      # 0 (with a graph, zero gradient) when no local row is valid
    scale = world / total.clamp_min(1.0)
    return local_sum * scale.to(loss.dtype), total.to(torch.int64)


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
        # The loss is a mean over one micro-batch's valid rows, taken over all processes (see
        # `global_mean_loss`): let Trainer divide it by the accumulation steps, as it does for models without
        # loss kwargs. So with gradient accumulation, each micro-step's global mean counts equally (the same
        # as a 1-process run with the same accumulation), not each valid row of the whole optimizer step.
        self.model_accepts_loss_kwargs = False
        self.pasta_config = pasta_config
        self._valid_rows: list[float] = []

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
        loss, num_valid = pasta_loss(model, inputs, self.pasta_config, return_num_valid=True)
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


def _use_bf16(config: PastaConfig, device: torch.device) -> bool:
    if config.bf16 == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return bool(config.bf16)


def run_pasta_stage(config: PastaConfig, train_samples: Sequence[Sample] | None = None,
                    eval_samples: Sequence[Sample] | None = None) -> dict:
    """Run the PaStA stage; returns metrics before/after on the held-out samples.

    Returns a dict with `before_*` / `after_*` correspondence metrics (top1, mean_rank), `chance_top1`,
    `chance_rank`, `num_eval_rows`, `train_seconds`, `steps`, `train_loss`, `llm_unchanged` (bool; None
    when not checked, see `check_llm_unchanged`),
    and `checkpoint` (the final model directory, as a string).
    """
    config.validate()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = _use_bf16(config, device)

    torch.manual_seed(config.seed)
    model, processor = load_model_and_processor(config.model_dir, dtype=torch.float32, device=device,
                                                min_pixels=config.min_pixels, max_pixels=config.max_pixels)
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
    # Under a multi-process launch only rank 0 evaluates.
    if config.evaluate_before and is_main():
        before = evaluate(model)
        results.update({f"before_{k}": before[k] for k in ("top1", "mean_rank")})

    # A resumed run continues from the checkpoint's weights (the "before" metrics stay those of the
    # stage's starting model); see restore_weights for why the Trainer alone would not restore them.
    restore_weights(model, config.resume_from_checkpoint)
    check_llm = config.check_llm_unchanged
    if check_llm is None:
        visual = sum(p.numel() for p in core_model(model).visual.parameters())
        check_llm = sum(p.numel() for p in model.parameters()) - visual < 50_000_000
    frozen = llm_state(model) if check_llm else None
    model = freeze_for_pasta(model, config)
    args = TrainingArguments(
        output_dir=str(out), max_steps=config.max_steps, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_scheduler_type, max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps, save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500, save_total_limit=config.save_total_limit, report_to="none",
        remove_unused_columns=False, dataloader_num_workers=config.num_workers, bf16=bf16, use_cpu=device.type == "cpu",
        seed=config.seed, disable_tqdm=False, **config.extra_training_args)
    clock = FirstStepClock()
    # A list, or a lazily decoding dataset (hatch_vlm.data.spar7m.SparSamples): each rank's sampler picks its
    # indices and only those records are read.
    trainer = PastaTrainer(model=model, args=args, train_dataset=train_samples,
                           data_collator=PastaCollator(processor), processing_class=processor,
                           callbacks=[TimeBudget(config.max_seconds), clock], pasta_config=config)
    start = time.perf_counter()
    train_out = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    train_seconds = time.perf_counter() - start

    final = out / "final"
    accelerator = trainer.accelerator
    # Under FSDP / ZeRO-3 the parameters are sharded: gather them (every rank) before rank 0 saves.
    full_state = gather_full_state(trainer)
    if not accelerator.is_main_process:
        # Multi-process launch: only rank 0 saves, evaluates and writes (the others would race on the
        # same files); the others wait so that `final/` exists when they return.
        accelerator.wait_for_everyone()
        return {"steps": trainer.state.global_step, "train_loss": float(train_out.training_loss),
                "train_seconds": train_seconds, "llm_unchanged": None, "checkpoint": str(final)}
    model = write_trained_model(trainer, final, full_state)
    if full_state is not None:
        # the in-memory model is a shard: evaluate (and check) the saved, whole one
        model, _ = load_model_and_processor(final, dtype=torch.float32, device=device,
                                            min_pixels=config.min_pixels, max_pixels=config.max_pixels)
    processor.save_pretrained(final)
    model.eval()
    llm_unchanged = None
    if frozen is not None:
        after_state = llm_state(model)
        llm_unchanged = after_state.keys() == frozen.keys() and all(
            torch.equal(after_state[k], frozen[k].to(after_state[k].device)) for k in frozen)
        del frozen, after_state
    after = evaluate(model)
    results.update({f"after_{k}": after[k] for k in ("top1", "mean_rank")})
    results.update({"chance_top1": after["chance_top1"], "chance_rank": after["chance_rank"],
                    "num_eval_rows": after["num_rows"], "train_seconds": train_seconds,
                    "steps": trainer.state.global_step, "train_loss": float(train_out.training_loss),
                    "llm_unchanged": llm_unchanged, "bf16": bf16, "first_step_unix": clock.unix,
                    "checkpoint": str(final)})
    (out / "metrics.json").write_text(json.dumps({**results, "config": asdict(config)}, indent=2))
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2))
    if config.plot:
        from .plot import plot_matches

        plot_matches(model, processor, eval_samples[0], config.grid, out / "matches.png",
                     abs_tol=config.abs_tol, rel_tol=config.rel_tol, stride=config.stride)
    accelerator.wait_for_everyone()
    return results


# -------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> dict:
    """`python -m hatch_vlm.pasta.stage --tiny --output-dir runs/pasta --max-seconds 300`: run the stage
    (on a freshly built tiny model with --tiny) and print the metrics as JSON."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m hatch_vlm.pasta.stage", description=main.__doc__)
    p.add_argument("--model-dir", help="saved Qwen2.5-VL directory (or use --tiny)")
    p.add_argument("--tiny", action="store_true", help="build the tiny model into OUTPUT_DIR/tiny first")
    p.add_argument("--output-dir", required=True)
    for name, kind in (("num_train", int), ("num_eval", int), ("image_size", int), ("views", int),
                       ("max_steps", int), ("batch_size", int), ("grad_accum", int), ("grid", int),
                       ("learning_rate", float), ("max_seconds", float), ("save_steps", int),
                       ("stride", int)):
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    p.add_argument("--tune", choices=("full", "lora"), default=None)
    p.add_argument("--data", choices=("auto", "synthetic", "toy_room"), default=None)
    a = p.parse_args(argv)
    if not a.tiny and not a.model_dir:
        p.error("give --model-dir or --tiny")
    from hatch_vlm.utils.distributed import init_distributed, on_main, shutdown

    init_distributed()          # no-op without a launcher
    model_dir = a.model_dir
    if a.tiny:
        from hatch_vlm.models.tiny import build_tiny_model

        # one rank builds it, the others wait for it
        model_dir = on_main(lambda: str(build_tiny_model(Path(a.output_dir) / "tiny")))
    overrides = {k: v for k, v in vars(a).items()
                 if v is not None and k not in ("model_dir", "tiny", "output_dir")}
    results = run_pasta_stage(PastaConfig(model_dir=model_dir, output_dir=a.output_dir, **overrides))
    if is_main():
        print(json.dumps(results, indent=2))
    shutdown()          # under `accelerate launch`: leave the process group cleanly
    return results


if __name__ == "__main__":
    main()
