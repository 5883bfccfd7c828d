"""A short PaStA stage on the tiny model, run by tests/scale/test_ddp_pasta.py once as 1 process and once
under `accelerate launch` with 2 (same global batch per step: sequential sampling, batch B on 1 process vs
B/2 per rank on 2).

    python tests/scale/pasta_run.py --model-dir TINY --output-dir OUT --batch-size 4 --steps 3

Writes OUT/final/ (rank 0) and OUT/rank{R}.json: the valid-row counts this rank saw per micro-step
(before the cross-rank all-reduce), to check that the ranks' counts differ.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import hatch_vlm.pasta.stage as stage
import hatch_vlm.pasta.trainer as pasta_trainer
from hatch_vlm.models.saving import is_sharded
from hatch_vlm.pasta.config import PastaConfig


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--batch-size", type=int, required=True, help="per process")
    p.add_argument("--global-batch", type=int, required=True)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--grad-accum", type=int, default=1, help="micro-steps per optimizer step")
    p.add_argument("--per-rank-mean", action="store_true",
                   help="negative control: skip the cross-rank mean (each rank's own mean, DDP-averaged)")
    a = p.parse_args()

    local_counts: list[int] = []
    original = pasta_trainer.global_mean_loss

    def recording(loss, num_valid):
        local_counts.append(int(num_valid))
        return (loss, num_valid) if a.per_rank_mean else original(loss, num_valid)

    pasta_trainer.global_mean_loss = recording     # PastaTrainer.compute_loss looks the name up at call time
    sharded: list[bool] = []
    gather = stage.gather_full_state

    def recording_gather(trainer):          # did the final save gather sharded parameters (FSDP, ZeRO-3)?
        sharded.append(is_sharded(trainer.accelerator))
        return gather(trainer)

    stage.gather_full_state = recording_gather     # run_pasta_stage looks the name up at call time
    config = PastaConfig(
        model_dir=a.model_dir, output_dir=a.output_dir, num_train=a.global_batch * a.steps, num_eval=2,
        image_size=112, max_steps=a.steps, per_device_train_batch_size=a.batch_size, gradient_accumulation_steps=a.grad_accum,
        learning_rate=1e-3, warmup_steps=0, lr_scheduler_type="constant", logging_steps=1, evaluate_before=False,
        plot=False, check_llm_unchanged=False, eval_batch_size=2, seed=0,
        extra_training_args={"train_sampling_strategy": "sequential"})
    res = stage.run_pasta_stage(config)
    rank = int(os.environ.get("RANK", "0"))
    Path(a.output_dir, f"rank{rank}.json").write_text(json.dumps({"local_counts": local_counts, "sharded": sharded, **{
        k: v for k, v in res.items() if isinstance(v, (int, float, str, bool)) or v is None}}))


if __name__ == "__main__":
    main()
    from hatch_vlm.utils.distributed import shutdown

    shutdown()       # leave the process group together (a rank exiting early can abort in teardown)
