"""A short GRPO run (`hatch_vlm.actor.grpo.run_grpo`) on the tiny model, run by tests/scale/test_ddp_grpo.py once as
1 process and once under `accelerate launch` with 2 (same global batch per step: batch B on 1 process vs
B/2 per rank on 2; TRL's RepeatSampler draws the same global prompt order for both, from `seed`).

    python tests/scale/grpo_run.py --model-dir TINY --output-dir OUT --batch-size 8 --steps 2

Writes OUT/rank{R}.json (this rank's `log_history`, the completions it sampled, by global row, and with
`--aux` its valid PaStA rows per micro-step) and, on rank 0, OUT/start.safetensors and
OUT/final.safetensors (the weights before and after).

`--aux global|per-rank` adds the PaStA auxiliary loss (weight 0.1) on scenes whose views overlap:
`global` is `hatch_vlm.pasta.objective.pasta_aux_loss` (the mean over the global batch's valid rows), `per-rank`
the negative control (each rank's own mean over its valid rows, which DDP then averages).

Three things are changed for the test only; TRL's own batch split, reward gather, group advantages, loss and
its normalisation stay as they are:

* Generation is made independent of how the rows are split over processes. TRL samples all of a process's
  rows in one `generate` call from that process's RNG, so 1 and 2 processes draw different completions.
  Here each row is generated alone (no batch padding either) under a seed made of (seed, global step,
  global row), where the global row of local row k is `process_index * local_rows + k`: TRL's own
  `_generate_and_score_completions` gathers the rewards of all processes in process order and slices
  advantages[process_index * n : (process_index + 1) * n] back, so that is the row's place in the global
  batch. `--local-row-seeds` (the negative control) seeds with the local row k instead, as a per-rank
  RNG would: rank 1 then draws other completions than the 1-process run does for the same rows.
* R_fmt is replaced by a dense test reward (distinct characters / characters of the completion): the
  random tiny model never writes a parseable ActoR completion, so the real rewards are all 0, every
  group's advantages 0, and nothing would train.
* An EOS logit bias in generation (EOS_BIAS) ends completions at random lengths, so the ranks hold different
  numbers of completion tokens, which is what the loss normalisation must get right.

The optimizer defaults to SGD: the weights' change is then lr x the gradient, so comparing the weights
compares the gradients (Adam would hide a constant factor and magnify rounding in near-zero entries).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

import hatch_vlm.actor.grpo as grpo
from hatch_vlm.actor.formatting import grpo_row
from hatch_vlm.actor.rewards import completion_text
from hatch_vlm.data.synthetic import generate
from hatch_vlm.models.loading import load_model_and_processor

from _ddp_weights import save_rank_outputs, save_weights


EOS_BIAS = 5.5      # logit bias: P(EOS) ~ e^5.5 / (vocab + e^5.5) ~ 0.2 per token for the random tiny model


def dense_test_reward(prompts=None, completions=None, **kwargs) -> list[float]:
    """Distinct characters / characters: differs between random completions, deterministic per text."""
    out = []
    for c in completions or []:
        text = completion_text(c) or ""
        out.append(len(set(text)) / max(len(text), 1))
    return out


def _split_rows(multimodal_fields: dict, images: list | None, n: int) -> list[dict]:
    """Per-row views of TRL's batched processor outputs for Qwen2.5-VL prompts: `image_grid_thw` [I, 3]
    (images of all rows, row-major), `pixel_values` [sum_i t*h*w, C] (their patches in the same order) and
    the per-token `mm_token_type_ids` (one list per row)."""
    unknown = set(multimodal_fields) - {"pixel_values", "image_grid_thw", "mm_token_type_ids"}
    if unknown:
        raise KeyError(f"grpo_run: cannot split multimodal fields {sorted(unknown)} per row")
    rows = [{} for _ in range(n)]
    if "image_grid_thw" in multimodal_fields:
        grid = torch.as_tensor(np.asarray(multimodal_fields["image_grid_thw"]))
        grids = torch.split(grid, [len(imgs or []) for imgs in images])
        pixels = torch.as_tensor(np.asarray(multimodal_fields["pixel_values"]))
        patches = torch.split(pixels, [int(g.prod(-1).sum()) for g in grids])
        for row, p, g in zip(rows, patches, grids):
            row.update(pixel_values=p, image_grid_thw=g)
    if "mm_token_type_ids" in multimodal_fields:
        types = multimodal_fields["mm_token_type_ids"]
        if len(types) != n:
            raise ValueError(f"grpo_run: mm_token_type_ids has {len(types)} rows, expected {n}")
        for row, t in zip(rows, types):
            row["mm_token_type_ids"] = [list(t)]          # TRL left-pads a list of per-row lists
    return rows


def trainer_class_with_row_seeds(seed: int, local_row_seeds: bool, record: list):
    base = grpo._trainer_class()

    class RowSeededGRPOTrainer(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # a bias on EOS makes the random model end its completions at random lengths, so the processes
            # hold different numbers of completion tokens (what the loss normalisation must get right)
            self.generation_config.sequence_bias = {(int(e),): EOS_BIAS for e in self.eos_token_ids}

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations,
                                  has_tool_images=False):
            n = len(prompt_ids)
            offset = 0 if local_row_seeds else self.accelerator.process_index * n
            step = self.state.global_step
            completions, logprobs = [], []
            for k, fields in enumerate(_split_rows(multimodal_fields, images, n)):
                row = offset + k
                # fork_rng: the draw for this row leaves the process's RNG as it was
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed * 1_000_003 + step * 10_007 + row)
                    ids, lps = super()._generate_single_turn(
                        [prompt_ids[k]], None if images is None else [images[k]], fields, num_generations,
                        has_tool_images)
                completions += ids
                logprobs.append(lps)
                record.append({"step": step, "row": row, "completion": list(ids[0])})
            return completions, None if all(lp is None for lp in logprobs) else sum(logprobs, [])

    return lambda: RowSeededGRPOTrainer


AUX_WEIGHT = 0.1


def geometry_rows(num: int, size: int, seed: int) -> list[dict]:
    """grpo_row of synthetic scenes whose views overlap (PaStA's "near" tasks), plus depth, K, cam_to_world."""
    from hatch_vlm.data.synthetic import SceneConfig, iter_samples
    from hatch_vlm.pasta.data import near_tasks

    cfg = SceneConfig(views=2, size=size, tasks=near_tasks())
    return [{**grpo_row(s), "depth": np.asarray(s.depth, np.float32).tolist(), "K": np.asarray(s.K).tolist(),
             "cam_to_world": np.asarray(s.cam_to_world).tolist()} for s in iter_samples(num, seed=seed, config=cfg)]


def make_aux_loss(per_rank_mean: bool, valid_rows: list):
    """aux_loss_fn for run_grpo: `hatch_vlm.pasta.objective.pasta_aux_loss` on the batch's prompts (every completion's
    row: each prompt counts num_generations times, which leaves a mean over rows unchanged). Records this
    rank's valid rows per micro-step (before the cross-rank sum). `per_rank_mean` (the negative control):
    each rank's own mean over its valid rows instead of the global batch's."""
    import hatch_vlm.pasta.objective as objective

    original = objective.global_mean_loss

    def recording(loss, num_valid):
        valid_rows.append(int(num_valid))
        return (loss, num_valid) if per_rank_mean else original(loss, num_valid)

    objective.global_mean_loss = recording     # pasta_aux_loss looks the name up at call time

    def aux(model, inputs):
        batch = {"pixel_values": inputs["pixel_values"], "image_grid_thw": inputs["image_grid_thw"],
                 "depth": torch.tensor(np.asarray(inputs["depth"]), dtype=torch.float32),
                 "K": torch.tensor(np.asarray(inputs["K"]), dtype=torch.float64),
                 "cam_to_world": torch.tensor(np.asarray(inputs["cam_to_world"]), dtype=torch.float64)}
        return objective.pasta_aux_loss(model, batch, AUX_WEIGHT)

    return aux


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--batch-size", type=int, required=True, help="completions per process and step")
    p.add_argument("--global-batch", type=int, required=True, help="completions per step, all processes")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--max-completion-length", type=int, default=8)
    p.add_argument("--loss-type", default=None, help="GRPOConfig.loss_type (default: TRL's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=56)
    p.add_argument("--aux", choices=("none", "global", "per-rank"), default="none",
                   help="PaStA auxiliary loss (weight AUX_WEIGHT): global: hatch_vlm.pasta.objective.pasta_aux_loss "
                        "(mean over the global batch's valid rows); per-rank: each rank's own mean")
    p.add_argument("--optim", default="sgd", help="TrainingArguments.optim (sgd: the weights' change is "
                   "lr x the gradient, so comparing weights compares gradients; Adam would hide a constant "
                   "factor and amplify rounding in near-zero gradient entries)")
    p.add_argument("--learning-rate", type=float, default=1.0)
    p.add_argument("--lora-r", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
    p.add_argument("--local-row-seeds", action="store_true",
                   help="negative control: seed generation by the local row (as a per-rank RNG would)")
    a = p.parse_args()

    torch.set_num_threads(1)
    record: list[dict] = []
    valid_rows: list[int] = []
    grpo._trainer_class = trainer_class_with_row_seeds(a.seed, a.local_row_seeds, record)
    real = grpo.reward_functions
    grpo.reward_functions = lambda opt: [*real(opt)[:2], dense_test_reward]

    model, processor = load_model_and_processor(a.model_dir)
    prompts = a.global_batch // a.num_generations * a.steps        # unique prompts the run consumes
    if a.aux == "none":
        rows = [grpo_row(s) for s in generate(prompts, views=2, size=a.image_size, seed=a.seed)]
    else:
        rows = geometry_rows(prompts, a.image_size, a.seed)
    extra = {"optim": a.optim, **({"loss_type": a.loss_type} if a.loss_type else {})}
    opt = grpo.GRPOOptions(plot=False, lora={"r": a.lora_r} if a.lora_r else None, trl={
        "max_steps": a.steps, "learning_rate": a.learning_rate, "per_device_train_batch_size": a.batch_size,
        "num_generations": a.num_generations, "max_completion_length": a.max_completion_length, "seed": a.seed,
        **extra})
    out = Path(a.output_dir)
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        save_weights(model, out / "start.safetensors")
    trainer = grpo.run_grpo(model, processor, rows, out, opt,
                            aux_loss_fn=None if a.aux == "none" else make_aux_loss(a.aux == "per-rank", valid_rows),
                            aux_columns=() if a.aux == "none" else ("depth", "K", "cam_to_world"))

    save_rank_outputs(trainer, out, completions=record, aux_valid_rows=valid_rows)


if __name__ == "__main__":
    main()
    from hatch_vlm.utils.distributed import shutdown

    shutdown()       # leave the process group together (a rank exiting early can abort in teardown)
