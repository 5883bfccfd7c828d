"""A short cold-start SFT run (`hatch_vlm.actor.sft.run_sft`, TRL's SFTTrainer) on the tiny model, run by
tests/scale/test_ddp_sft.py once as 1 process and once under `accelerate launch` with 2 (same global batch
per step: sequential sampling, batch B on 1 process vs B/2 per rank on 2).

    python tests/scale/sft_run.py --model-dir TINY --output-dir OUT --batch-size 4 --global-batch 4 --steps 3

Writes OUT/rank{R}.json (this rank's `log_history` and the completion tokens it trained on per micro-step,
before any cross-rank sum) and, on rank 0, OUT/start.safetensors and OUT/final.safetensors.
The teacher completions differ in length, so the ranks hold different numbers of loss tokens: the loss is the
mean over all loss tokens of the global batch only if the token count is summed over ranks
(`average_tokens_across_devices`, transformers' default; `--per-rank-mean` turns it off, the negative control).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from trl import SFTTrainer

from hatch_vlm.actor.formatting import cold_start_row
from hatch_vlm.actor.sft import SFTOptions, run_sft
from hatch_vlm.data.synthetic import generate
from hatch_vlm.models.loading import load_model_and_processor

from _ddp_weights import save_rank_outputs, save_weights


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--batch-size", type=int, required=True, help="rows per process and step")
    p.add_argument("--global-batch", type=int, required=True, help="rows per step, all processes")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--grad-accum", type=int, default=1, help="micro-steps per optimizer step")
    p.add_argument("--optim", default="sgd", help="TrainingArguments.optim (sgd: weights compare gradients)")
    p.add_argument("--learning-rate", type=float, default=0.5)
    p.add_argument("--per-rank-mean", action="store_true",
                   help="negative control: average_tokens_across_devices=False (a mean of per-rank means)")
    a = p.parse_args()

    torch.set_num_threads(1)
    local_tokens: list[int] = []
    items: list[float | None] = []
    original = SFTTrainer.compute_loss

    def recording(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        local_tokens.append(int((inputs["labels"][..., 1:] != -100).sum()))
        items.append(None if num_items_in_batch is None else float(num_items_in_batch))
        return original(self, model, inputs, return_outputs, num_items_in_batch)

    SFTTrainer.compute_loss = recording      # run_sft builds a plain SFTTrainer

    model, processor = load_model_and_processor(a.model_dir)
    rows = [cold_start_row(s) for s in generate(a.global_batch * a.steps, views=2, size=56, seed=0)]
    out = Path(a.output_dir)
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        save_weights(model, out / "start.safetensors")
    opt = SFTOptions(trl={"max_steps": a.steps, "learning_rate": a.learning_rate,
                          "per_device_train_batch_size": a.batch_size, "warmup_steps": 0,
                          "gradient_accumulation_steps": a.grad_accum, "lr_scheduler_type": "constant",
                          "logging_steps": 1, "seed": 0, "optim": a.optim, "train_sampling_strategy": "sequential",
                          "average_tokens_across_devices": not a.per_rank_mean})
    trainer = run_sft(model, processor, rows, out, opt)
    save_rank_outputs(trainer, out, local_tokens=local_tokens, num_items_in_batch=items)


if __name__ == "__main__":
    main()
    from hatch_vlm.utils.distributed import shutdown

    shutdown()       # leave the process group together (a rank exiting early can abort in teardown)
