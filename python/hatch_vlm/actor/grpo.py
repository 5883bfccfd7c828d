"""ActoR GRPO on TRL: multi-image prompts, the three verifiable rewards, optional LoRA and PaStA auxiliary loss.

`run_grpo` trains on rows from `hatch_vlm.actor.formatting.grpo_row` with
    R = lambda_act * R_act + lambda_ans * R_ans + lambda_fmt * R_fmt        (GRPOConfig.reward_weights)
TRL logs each reward as `rewards/<name>/mean` (name = action_reward, answer_reward, format_reward); after
training the log history is written to `<output_dir>/reward_log.json` and the Figure-3 style plot to
`<output_dir>/rewards.png`.

PaStA auxiliary loss: `aux_loss_fn(model, inputs) -> scalar Tensor` is called on every training micro-batch and
added as `aux_weight * aux`. `inputs` is TRL's batch (prompt/completion ids, `pixel_values`, `image_grid_thw`,
`num_images`, ...) plus, per completion, the dataset columns named in `aux_columns` (e.g. depth, K,
cam_to_world) and `group_id`: GRPO repeats each prompt `num_generations` times, and rows with the same
`group_id` hold the same prompt, so a prompt-side loss should count each group once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .generation import vision_token_ids
from .rewards import DEFAULT_SIGMA_ANG, DEFAULT_SIGMA_POS, answer_reward, format_reward, make_action_reward
from .sft import _use_cpu, make_lora_config

AuxLossFn = Callable[[Any, dict], torch.Tensor]


@dataclass
class GRPOOptions:
    """Options of `run_grpo` (ours; the paper gives no GRPO settings). Rewards are each in [0, 1]."""

    max_steps: int = 100
    learning_rate: float = 1e-5
    batch_size: int = 8                  # completions per device and step (multiple of num_generations)
    num_generations: int = 4             # G: completions per prompt
    max_completion_length: int = 256
    temperature: float = 1.0
    beta: float = 0.0                    # KL coefficient (TRL default 0)
    lambda_act: float = 1.0
    lambda_ans: float = 1.0
    lambda_fmt: float = 1.0
    sigma_pos: float = DEFAULT_SIGMA_POS   # metres, R_act position scale
    sigma_ang: float = DEFAULT_SIGMA_ANG   # degrees, R_act heading scale
    logging_steps: int = 1
    save_steps: int | None = None          # Trainer checkpoints every N steps (resume points); None: none
    seed: int = 0
    use_cpu: bool | None = None
    bf16: bool = False
    lora: dict | None = None             # peft LoraConfig kwargs; None trains all weights
    aux_weight: float = 1.0
    aux_columns: tuple[str, ...] = ()     # dataset columns handed to aux_loss_fn
    plot: bool = True
    extra: dict[str, Any] = field(default_factory=dict)   # any further GRPOConfig fields

    def __post_init__(self):
        if self.num_generations < 2:
            raise ValueError(f"GRPOOptions.num_generations must be >= 2 (advantages compare completions), "
                             f"got {self.num_generations}")
        if self.batch_size % self.num_generations:
            raise ValueError(f"GRPOOptions.batch_size ({self.batch_size}) must be a multiple of "
                             f"num_generations ({self.num_generations})")
        if self.max_steps < 1 or self.max_completion_length < 1:
            raise ValueError(f"GRPOOptions: max_steps and max_completion_length must be >= 1, got "
                             f"{self.max_steps}, {self.max_completion_length}")
        if min(self.lambda_act, self.lambda_ans, self.lambda_fmt) < 0:
            raise ValueError("GRPOOptions: reward weights lambda_* must be >= 0")


def _trainer_class():
    from trl import GRPOTrainer

    class HatchGRPOTrainer(GRPOTrainer):
        """GRPOTrainer with an optional auxiliary loss that sees chosen dataset columns."""

        def __init__(self, *args, aux_loss_fn: AuxLossFn | None = None, aux_weight: float = 1.0,
                     aux_columns: Sequence[str] = (), **kwargs):
            super().__init__(*args, **kwargs)
            self.aux_loss_fn = aux_loss_fn
            self.aux_weight = float(aux_weight)
            self.aux_columns = tuple(aux_columns)

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
            return loss + self.aux_weight * aux.to(loss.dtype) / norm

    return HatchGRPOTrainer


def reward_functions(options: GRPOOptions) -> list[Callable]:
    """[action_reward, answer_reward, format_reward], in the order of `reward_weights`."""
    return [make_action_reward(options.sigma_pos, options.sigma_ang), answer_reward, format_reward]


def run_grpo(model, processor, rows: Sequence[dict] | Any, output_dir: str | Path,
             options: GRPOOptions | None = None, aux_loss_fn: AuxLossFn | None = None,
             resume_from_checkpoint: str | None = None, num_workers: int = 0):
    """Run ActoR GRPO; returns the trainer after training (its `state.log_history` holds the rewards).

    Args:
        model: Qwen2.5-VL model (ideally after the cold start, `hatch_vlm.actor.sft.run_sft`).
        processor: its processor.
        rows: `grpo_row` dicts or a `datasets.Dataset` of them (prompt, images, answer, answer_type,
            num_views, gold_motions).
        output_dir: TRL output dir; `reward_log.json` and `rewards.png` go here.
        options: `GRPOOptions`.
        aux_loss_fn: optional PaStA loss `f(model, inputs) -> scalar Tensor` (see module doc).
        num_workers: DataLoader workers making the rows (decoding lazily loaded frames) beside training.
    """
    from trl import GRPOConfig

    from .formatting import lazy_dataset, rows_to_dataset

    opt = options or GRPOOptions()
    ds = rows if hasattr(rows, "column_names") else (
        rows_to_dataset(rows) if isinstance(rows, (list, tuple)) else lazy_dataset(rows))
    columns = getattr(ds, "column_names_of_rows", None) or ds.column_names
    missing = {"prompt", "images", "answer", "answer_type", "gold_motions"} - set(columns)
    if missing:
        raise ValueError(f"GRPO rows need the gold columns of formatting.grpo_row; missing {sorted(missing)}")
    output_dir = Path(output_dir)
    # The aux loss runs a second forward through the DDP wrapper before the backward. With
    # find_unused_parameters, DDP marks every parameter the second forward did not use (the LLM) as unused,
    # and the policy loss's backward then marks them ready a second time (a RuntimeError). Every trainable
    # parameter gets a gradient from the policy loss, so the search for unused ones is not needed.
    ddp_defaults = ({"ddp_find_unused_parameters": False}
                    if aux_loss_fn is not None and "ddp_find_unused_parameters" not in opt.extra else {})
    config = GRPOConfig(
        output_dir=str(output_dir), max_steps=opt.max_steps, learning_rate=opt.learning_rate,
        per_device_train_batch_size=opt.batch_size, num_generations=opt.num_generations,
        max_completion_length=opt.max_completion_length, temperature=opt.temperature, beta=opt.beta,
        reward_weights=[opt.lambda_act, opt.lambda_ans, opt.lambda_fmt], logging_steps=opt.logging_steps,
        seed=opt.seed, use_cpu=_use_cpu(opt.use_cpu), bf16=opt.bf16, report_to="none",
        save_strategy="steps" if opt.save_steps else "no", save_steps=opt.save_steps or 500,
        disable_tqdm=True, dataloader_num_workers=num_workers,
        generation_kwargs={"suppress_tokens": vision_token_ids(processor)}, **ddp_defaults, **opt.extra)
    trainer = _trainer_class()(
        model=model, reward_funcs=reward_functions(opt), args=config, train_dataset=ds,
        processing_class=processor, peft_config=make_lora_config(opt.lora), aux_loss_fn=aux_loss_fn,
        aux_weight=opt.aux_weight, aux_columns=opt.aux_columns)
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
