"""ActoR GRPO on TRL: multi-image prompts, the three verifiable rewards, optional LoRA and PaStA auxiliary loss.

`run_grpo` trains on rows from `hatch_vlm.actor.formatting.grpo_row` with
    R = lambda_act * R_act + lambda_ans * R_ans + lambda_fmt * R_fmt        (GRPOConfig.reward_weights)
R_act's shape is `GRPOOptions.action_reward` ("partial" by default, or "product"; rewards.py, docs/design.md).
Other reward functions can replace the three (`run_grpo(..., reward_funcs=, reward_weights=)`): the
known-optimum test trains on a reward of the text alone that way (tests/actor/test_grpo_optimum.py).
TRL logs each reward as `rewards/<name>/mean` (name = action_reward, answer_reward, format_reward); after
training the log history is written to `<output_dir>/reward_log.json` and the Figure-3 style plot to
`<output_dir>/rewards.png`.

PaStA auxiliary loss: `aux_loss_fn(model, inputs) -> scalar Tensor` is called on every training micro-batch and
added to TRL's loss (scaled for gradient accumulation as TRL's own); its value is logged as `pasta_loss`.
`inputs` is TRL's batch (prompt/completion ids, `pixel_values`, `image_grid_thw`, `num_images`, ...) plus, per
completion, the dataset columns named in `aux_columns` (default: `PASTA_COLUMNS`, the geometry that
`formatting.grpo_row(sample, geometry=True)` adds) and `group_id`: GRPO repeats each prompt `num_generations`
times, and rows with the same `group_id` hold the same prompt. `prompt_geometry_batch` turns such inputs into
the batch `hatch_vlm.pasta` losses take, each prompt once. The pipeline wires it with `grpo.pasta_weight`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from collections.abc import Callable, Sequence

import numpy as np
import torch

from hatch_vlm.utils.config import check
from hatch_vlm.models.compat import checkpointing_deprecations_ignored
from hatch_vlm.models.freezing import freeze_parts
from hatch_vlm.models.precision import upcast_trainable

from .generation import vision_token_ids
from .rewards import ACTION_REWARD_SHAPES, DEFAULT_ACTION_REWARD, answer_reward, format_reward, make_action_reward
from .sft import RENAMED, TRLStageOptions, make_lora_config

AuxLossFn = Callable[[Any, dict], torch.Tensor]


# Our defaults for GRPOConfig fields (the paper gives no GRPO settings); every other field keeps TRL's
# default. Pinned even where TRL agrees today, so that a TRL release cannot move the demo's numbers.
GRPO_DEFAULTS: dict[str, Any] = {
    "max_steps": 100, "learning_rate": 1e-5,
    "per_device_train_batch_size": 8,    # completions per device and step (a multiple of num_generations)
    "num_generations": 4,                # G: completions per prompt
    "max_completion_length": 256, "temperature": 1.0,
    "beta": 0.0,                         # KL coefficient
    "logging_steps": 1, "save_steps": 500, "seed": 0, "bf16": False, "report_to": "none", "disable_tqdm": True,
}
GRPO_RESERVED = {
    "output_dir": "the stage's work directory",
    "dataloader_num_workers": "data.num_workers",
    "reward_weights": "lambda_act, lambda_ans, lambda_fmt",
}
# Dataset columns the PaStA term needs (formatting.grpo_row(sample, geometry=True)).
PASTA_COLUMNS = ("depth", "K", "cam_to_world")


@dataclass
class GRPOOptions(TRLStageOptions):
    """Options of `run_grpo`: ours below, plus any GRPOConfig field (see TRLStageOptions). Rewards are each
    in [0, 1] and combined as lambda_act * R_act + lambda_ans * R_ans + lambda_fmt * R_fmt."""

    DEFAULTS: ClassVar[dict[str, Any]] = GRPO_DEFAULTS
    RESERVED: ClassVar[dict[str, str]] = GRPO_RESERVED
    RENAMED: ClassVar[dict[str, str]] = {
        **RENAMED, "aux_weight": "renamed to pasta_weight (0: off)",
        "aux_columns": "removed: the PaStA term takes the geometry columns (grpo.PASTA_COLUMNS)"}

    lambda_act: float = 1.0
    lambda_ans: float = 1.0
    lambda_fmt: float = 1.0
    # R_act's shape (rewards.py, docs/design.md): "partial" (mean of per-error credits 1 / (1 + err / scale))
    # or "product" (exp(-pos_err / sigma_pos) * exp(-ang_err / sigma_ang), the original)
    action_reward: str = DEFAULT_ACTION_REWARD
    # R_act's scales, metres and degrees; None: the shape's own (partial: 1.0 m, 60 deg; product: 0.5 m, 30 deg)
    sigma_pos: float | None = None
    sigma_ang: float | None = None
    # λ of the PaStA auxiliary term on the prompts' images (0: off); its loss settings (grid, temperatures,
    # tolerances) are the pasta section's
    pasta_weight: float = 0.0
    plot: bool = True

    @classmethod
    def config_class(cls):
        from trl import GRPOConfig

        return GRPOConfig

    def __post_init__(self):
        super().__post_init__()
        check(not (self.pasta_weight and "vision" in self.freeze), "freeze",
              f"[vision] with pasta_weight {self.pasta_weight}: the PaStA term trains only the vision tower, "
              "which would then be frozen (set pasta_weight: 0 or drop vision)")
        g, b = self.setting("num_generations"), self.setting("per_device_train_batch_size")
        check(g >= 2, "num_generations", f"must be >= 2 (advantages compare completions), got {g}")
        # TRL's rule: a generation round (per_device_train_batch_size x steps_per_generation completions per
        # process; steps_per_generation defaults to gradient_accumulation_steps) holds whole prompt groups.
        # A micro-batch smaller than a group is how a big model's GRPO fits a small GPU.
        spg = self.setting("steps_per_generation") or self.setting("gradient_accumulation_steps")
        check((b * spg) % g == 0, "per_device_train_batch_size",
              f"x steps_per_generation ({b} x {spg}, the completions of one generation round) must be a multiple "
              f"of num_generations ({g})")
        m = self.setting("max_completion_length")
        check(m >= 1, "max_completion_length", f"must be >= 1, got {m}")
        for name in ("lambda_act", "lambda_ans", "lambda_fmt", "pasta_weight"):
            v = getattr(self, name)
            check(math.isfinite(v) and v >= 0, name, f"must be a finite number >= 0, got {v}")
        check(self.action_reward in ACTION_REWARD_SHAPES, "action_reward",
              f"must be one of {', '.join(repr(x) for x in ACTION_REWARD_SHAPES)}, got {self.action_reward!r}")
        for name in ("sigma_pos", "sigma_ang"):
            v = getattr(self, name)
            check(v is None or (isinstance(v, (int, float)) and math.isfinite(v) and v > 0), name,
                  f"must be a finite number > 0 (or unset: the shape's default), got {v!r}")


def _trainer_class():
    from trl import GRPOTrainer

    from hatch_vlm.utils.engines import prepare_engine
    from hatch_vlm.utils.probes import attach_probes

    class HatchGRPOTrainer(GRPOTrainer):
        """GRPOTrainer with an optional auxiliary loss that sees chosen dataset columns."""

        def __init__(self, *args, aux_loss_fn: AuxLossFn | None = None, aux_columns: Sequence[str] = (),
                     **kwargs):
            super().__init__(*args, **kwargs)
            self.aux_loss_fn = aux_loss_fn
            self.aux_columns = tuple(aux_columns)
            prepare_engine(self)       # FSDP2 on CPU processes (utils/engines.py)
            attach_probes(self)

        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            if self.aux_loss_fn is not None:
                # Per-completion lists survive TRL's shuffle / split of the generation batch (docs/notes.md).
                for name in self.aux_columns:
                    output[name] = [x.get(name) for x in inputs]
                output["group_id"] = [k // self.num_generations for k in range(len(inputs))]
            return output

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if self.aux_loss_fn is None:
                return loss
            with self.accelerator.autocast():      # the term bypasses model.forward, where accelerate's autocast is
                aux = self.aux_loss_fn(model, inputs)
            if not isinstance(aux, torch.Tensor) or aux.dim() != 0:
                raise TypeError(f"aux_loss_fn must return a scalar tensor, got "
                                f"{type(aux).__name__}{'' if not isinstance(aux, torch.Tensor) else tuple(aux.shape)}")
            mode = "train" if self.model.training else "eval"
            # The logged value is the mean over ranks (every rank calls compute_loss in lockstep, so the
            # gather is collective); with one process it is this process's value.
            self._metrics[mode]["pasta_loss"].append(
                self.accelerator.gather(aux.detach().float().reshape(1)).mean().item())
            # TRL scales its loss for gradient accumulation itself; scale the aux term the same way.
            norm = self.current_gradient_accumulation_steps if mode == "train" else 1.0
            return loss + aux.to(loss.dtype) / norm

    return HatchGRPOTrainer


def prompt_geometry_batch(inputs: dict) -> dict:
    """The PaStA batch of a GRPO micro-batch, each prompt once: `pixel_values` and `image_grid_thw` of its
    images and its geometry `depth`, `K`, `cam_to_world` (`PASTA_COLUMNS`), as `hatch_vlm.pasta`'s collator
    makes them (`num_views` + `geometry_groups` when view counts or depth sizes differ).

    GRPO repeats each prompt for its `num_generations` completions (same `group_id`); counting a prompt once
    per completion would only repeat the same vision forward. Needs `num_images` (TRL adds it for image
    prompts) to find each row's images in `pixel_values` / `image_grid_thw`."""
    groups = list(inputs["group_id"])
    keep = [k for k, g in enumerate(groups) if g not in groups[:k]]       # the first completion per prompt
    num_images = [int(n) for n in inputs["num_images"]]
    grid = inputs["image_grid_thw"]
    patches = grid.prod(-1).tolist()                 # pixel_values rows per image (raster over the images)
    first_image = [sum(num_images[:k]) for k in range(len(num_images))]
    first_patch = [0]
    for n in patches:
        first_patch.append(first_patch[-1] + n)
    images = [i for k in keep for i in range(first_image[k], first_image[k] + num_images[k])]
    pixel_values = torch.cat([inputs["pixel_values"][first_patch[i]:first_patch[i + 1]] for i in images])
    batch = {"pixel_values": pixel_values, "image_grid_thw": grid[images]}
    depth = [torch.as_tensor(np.asarray(inputs["depth"][k]), dtype=torch.float32) for k in keep]
    K = [torch.as_tensor(np.asarray(inputs["K"][k]), dtype=torch.float64) for k in keep]
    T = [torch.as_tensor(np.asarray(inputs["cam_to_world"][k]), dtype=torch.float64) for k in keep]
    shapes: dict[tuple, list[int]] = {}
    for j, d in enumerate(depth):
        shapes.setdefault(tuple(d.shape), []).append(j)
    if len(shapes) == 1:
        batch.update(depth=torch.stack(depth), K=torch.stack(K), cam_to_world=torch.stack(T))
        return batch
    batch["num_views"] = torch.tensor([num_images[k] for k in keep])
    batch["geometry_groups"] = [{"samples": torch.tensor(idx), "depth": torch.stack([depth[j] for j in idx]),
                                 "K": torch.stack([K[j] for j in idx]),
                                 "cam_to_world": torch.stack([T[j] for j in idx])} for idx in shapes.values()]
    return batch


def reward_functions(options: GRPOOptions) -> list[Callable]:
    """[action_reward, answer_reward, format_reward], in the order of `reward_weights`; the action reward of
    `options.action_reward`'s shape and scales."""
    return [make_action_reward(options.sigma_pos, options.sigma_ang, options.action_reward), answer_reward,
            format_reward]


def run_grpo(model, processor, rows: Sequence[dict] | Any, output_dir: str | Path,
             options: GRPOOptions | None = None, aux_loss_fn: AuxLossFn | None = None,
             resume_from_checkpoint: str | None = None, num_workers: int = 0,
             aux_columns: Sequence[str] = PASTA_COLUMNS, reward_funcs: Sequence[Callable] | None = None,
             reward_weights: Sequence[float] | None = None):
    """Run ActoR GRPO; returns the trainer after training (its `state.log_history` holds the rewards).

    Args:
        model: Qwen2.5-VL model (ideally after the cold start, `hatch_vlm.actor.sft.run_sft`).
        processor: its processor.
        rows: `grpo_row` dicts or a `datasets.Dataset` of them (prompt, images, answer, answer_type,
            num_views, gold_motions).
        output_dir: TRL output dir; `reward_log.json` and `rewards.png` go here.
        options: `GRPOOptions` (any GRPOConfig field; see TRLStageOptions).
        aux_loss_fn: optional auxiliary term `f(model, inputs) -> scalar Tensor`, its weight included (see
            the module doc; the pipeline passes the PaStA term when `pasta_weight` > 0).
        aux_columns: the dataset columns `aux_loss_fn` sees in `inputs`.
        num_workers: DataLoader workers making the rows (decoding lazily loaded frames) beside training.
        reward_funcs: other reward functions (TRL's convention, `rewards.py`) instead of ActoR's three, e.g. a
            task with a known optimum (tests/actor/test_grpo_optimum.py); the rows then need only a `prompt`
            (images optional) and whatever columns those functions read.
        reward_weights: their weights (default 1 each); only with `reward_funcs` (ActoR's are the lambdas).
    """
    from .formatting import lazy_dataset, rows_to_dataset

    opt = options or GRPOOptions()
    ds = rows if hasattr(rows, "column_names") else (
        rows_to_dataset(rows) if isinstance(rows, (list, tuple)) else lazy_dataset(rows))
    columns = getattr(ds, "column_names_of_rows", None) or ds.column_names
    if reward_funcs is None:
        if reward_weights is not None:
            raise ValueError("reward_weights needs reward_funcs (ActoR's rewards take lambda_act/ans/fmt)")
        missing = {"prompt", "images", "answer", "answer_type", "gold_motions"} - set(columns)
        if missing:
            raise ValueError(f"GRPO rows need the gold columns of formatting.grpo_row; missing {sorted(missing)}")
        funcs = reward_functions(opt)
        weights = [opt.lambda_act, opt.lambda_ans, opt.lambda_fmt]
    else:
        funcs = list(reward_funcs)
        weights = [1.0] * len(funcs) if reward_weights is None else [float(w) for w in reward_weights]
        if not funcs or len(weights) != len(funcs):
            raise ValueError(f"reward_funcs: need at least one, and one weight each; got {len(funcs)} functions, "
                             f"{len(weights)} weights")
        if "prompt" not in columns:
            raise ValueError("GRPO rows need a prompt column")
    output_dir = Path(output_dir)
    stage: dict[str, Any] = {"output_dir": str(output_dir), "dataloader_num_workers": num_workers,
                             "reward_weights": weights}
    # The aux loss runs a second forward through the DDP wrapper before the backward. With
    # find_unused_parameters, DDP marks every parameter the second forward did not use (the LLM) as unused,
    # and the policy loss's backward then marks them ready a second time (a RuntimeError). Every trainable
    # parameter gets a gradient from the policy loss, so the search for unused ones is not needed.
    if aux_loss_fn is not None and "ddp_find_unused_parameters" not in opt.trl:
        stage["ddp_find_unused_parameters"] = False
    # Never sample an image token: it would break the feature/token count of the next forward (docs/notes.md).
    gen = dict(opt.trl.get("generation_kwargs") or {})
    gen["suppress_tokens"] = [*(gen.get("suppress_tokens") or []), *vision_token_ids(processor)]
    stage["generation_kwargs"] = gen
    # TRL's generation and peft's LoRA wrap call transformers' deprecated gradient-checkpointing names
    # (models/compat.py): the filter hides only those.
    if opt.lora is None:
        freeze_parts(model, opt.freeze)     # parts held fixed (models/freezing.py)
        upcast_trainable(model)     # full fine-tuning: float32 master weights (models/precision.py)
    with checkpointing_deprecations_ignored():
        trainer = _trainer_class()(
            model=model, reward_funcs=funcs, args=opt.trl_config(**stage), train_dataset=ds,
            processing_class=processor, peft_config=make_lora_config(opt.lora, model), aux_loss_fn=aux_loss_fn,
            aux_columns=aux_columns)
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    if trainer.accelerator.is_main_process:     # the log is already aggregated over ranks (TRL gathers)
        write_reward_log(trainer.state.log_history, output_dir / "reward_log.json")
        if opt.plot:
            from .plot import plot_rewards

            plot_rewards(trainer.state.log_history, output_dir / "rewards.png")
    trainer.accelerator.wait_for_everyone()
    return trainer


def reward_fifths(log_history: list[dict]) -> dict[str, tuple[float | None, float | None]]:
    """{reward name: (mean of its first fifth of logged steps, mean of its last fifth)} for the action,
    answer and format rewards (None, None when nothing was logged)."""
    logs = [e for e in log_history if "rewards/format_reward/mean" in e]
    result = {}
    for name in ("action", "answer", "format"):
        vals = [e[f"rewards/{name}_reward/mean"] for e in logs]
        k = max(1, len(vals) // 5)
        result[name] = (sum(vals[:k]) / k, sum(vals[-k:]) / k) if vals else (None, None)
    return result


def write_reward_log(log_history: list[dict], path: str | Path) -> Path:
    """Write the trainer's per-step log (rewards, loss, lengths...) as JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(log_history, indent=1, default=float))
    return path
