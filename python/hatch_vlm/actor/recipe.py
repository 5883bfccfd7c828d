"""The ActoR recipe end to end: cold-start SFT, a held-out format check (greedy), then GRPO with the reward log
and plot. Used by the pipeline, by tests (short settings) and from the command line on the tiny model:

    python -m hatch_vlm.actor.recipe --model-dir runs/tiny --out runs/actor --train 200 --held-out 32 \
        --sft-steps 300 --grpo-steps 30

Writes `<out>/cold_start/` (the cold-started model + processor), `<out>/grpo/reward_log.json`,
`<out>/grpo/rewards.png` and `<out>/summary.json` (held-out rewards before / after the cold start, GRPO
reward means of the first and last steps, timings).
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from ..data.record import Sample
from .formatting import cold_start_row, grpo_row
from .generation import evaluate_rewards, generate_completions
from .grpo import GRPOOptions, reward_fifths, run_grpo
from .sft import SFTOptions, run_sft

log = logging.getLogger(__name__)


def held_out_rewards(model, processor, samples: Sequence[Sample], max_new_tokens: int,
                     batch_size: int = 8) -> dict[str, float]:
    """Mean format / answer / action rewards of greedy completions on `samples`, overall and per view count
    (keys "format@2views", ...: more views mean more pair blocks, so the format is harder). Under a
    multi-process launch every rank must call it (the samples are split across ranks)."""
    from ..utils import distributed as dist

    rows = [grpo_row(s) for s in samples]
    # Under a multi-process launch each rank generates for its share of the samples.
    comps = dist.gather_list(generate_completions(model, processor, dist.shard(rows),
                                                  max_new_tokens=max_new_tokens, batch_size=batch_size),
                             len(rows))
    result = evaluate_rewards(comps, rows)
    for v in sorted({r["num_views"] for r in rows}):
        idx = [k for k, r in enumerate(rows) if r["num_views"] == v]
        sub = evaluate_rewards([comps[k] for k in idx], [rows[k] for k in idx])
        result[f"format@{v}views"] = sub["format"]
    return result


def run_recipe(model, processor, train: Sequence[Sample], held_out: Sequence[Sample], out_dir: str | Path,
               sft: SFTOptions | None = None, grpo: GRPOOptions | None = None, cold_start_fraction: float = 1.0,
               eval_max_new_tokens: int = 256, aux_loss_fn=None) -> dict:
    """Cold start on `cold_start_fraction` of `train`, check the format on `held_out`, then GRPO on `train`.

    The paper cold-starts on ~10% of the data; with the tiny random model the whole set is needed to learn
    the format, hence the default 1.0. Returns the summary dict (also written to `<out_dir>/summary.json`).
    """
    if not 0 < cold_start_fraction <= 1:
        raise ValueError(f"cold_start_fraction must be in (0, 1], got {cold_start_fraction}")
    if not train or not held_out:
        raise ValueError(f"need training and held-out samples, got {len(train)} and {len(held_out)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sft, grpo = sft or SFTOptions(), grpo or GRPOOptions()
    summary: dict = {"train": len(train), "held_out": len(held_out), "sft": asdict(sft), "grpo": asdict(grpo)}

    n_cold = max(1, round(cold_start_fraction * len(train)))
    t = time.time()
    trainer = run_sft(model, processor, [cold_start_row(s) for s in train[:n_cold]], out_dir / "sft", sft)
    model = trainer.model
    summary["sft_seconds"] = time.time() - t
    summary["sft_loss"] = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    model.save_pretrained(out_dir / "cold_start")
    processor.save_pretrained(out_dir / "cold_start")

    t = time.time()
    summary["held_out_after_cold_start"] = held_out_rewards(model, processor, held_out, eval_max_new_tokens)
    summary["eval_seconds"] = time.time() - t
    log.info("held-out rewards after the cold start: %s", summary["held_out_after_cold_start"])

    t = time.time()
    gtrainer = run_grpo(model, processor, [grpo_row(s) for s in train], out_dir / "grpo", grpo,
                        aux_loss_fn=aux_loss_fn)
    summary["grpo_seconds"] = time.time() - t
    summary["grpo_steps"] = gtrainer.state.global_step
    for name, (first, last) in reward_fifths(gtrainer.state.log_history).items():
        summary[f"grpo_{name}_first_fifth"], summary[f"grpo_{name}_last_fifth"] = first, last
    summary["reward_log"] = str(out_dir / "grpo" / "reward_log.json")
    summary["plot"] = str(out_dir / "grpo" / "rewards.png") if grpo.plot else None
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def _synthetic(num: int, seed: int, views: int, size: int) -> list[Sample]:
    try:
        from ..data.synthetic import generate
    except ImportError as exc:  # the generator lives in hatch_vlm.data.synthetic
        raise SystemExit(f"hatch_vlm.data.synthetic is not available ({exc}); pass samples to run_recipe") from exc
    return generate(num, views=views, size=size, seed=seed)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="ActoR cold start + GRPO on synthetic samples")
    p.add_argument("--model-dir", required=True, help="saved Qwen2.5-VL directory (e.g. the tiny model)")
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=200)
    p.add_argument("--held-out", type=int, default=32)
    p.add_argument("--views", default="2", help="views per sample, or a comma list (e.g. 2,3) split evenly")
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sft-steps", type=int, default=300)
    p.add_argument("--sft-lr", type=float, default=1e-2)
    p.add_argument("--grpo-steps", type=int, default=30)
    p.add_argument("--grpo-lr", type=float, default=1e-4)
    p.add_argument("--max-completion-length", type=int, default=96)
    p.add_argument("--temperature", type=float, default=1.0, help="GRPO sampling temperature")
    p.add_argument("--lora-r", type=int, default=0, help="LoRA rank for GRPO (0: full fine-tuning)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is much faster than 2 on a busy 2-core machine)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    from ..models.loading import load_model_and_processor

    model, processor = load_model_and_processor(a.model_dir)
    try:
        views = [int(v) for v in str(a.views).split(",")]
    except ValueError:
        raise SystemExit(f"--views: expected an integer or a comma list like 2,3, got {a.views!r}") from None
    # Seeds: training streams seed + k, held-out streams seed + 1000 + k (disjoint).
    train = [s for k, v in enumerate(views) for s in _synthetic(a.train // len(views), a.seed + k, v, a.size)]
    held = [s for k, v in enumerate(views)
            for s in _synthetic(a.held_out // len(views), a.seed + 1000 + k, v, a.size)]
    random.Random(a.seed).shuffle(train)
    summary = run_recipe(
        model, processor, train, held, a.out, SFTOptions(max_steps=a.sft_steps, learning_rate=a.sft_lr),
        GRPOOptions(max_steps=a.grpo_steps, learning_rate=a.grpo_lr, max_completion_length=a.max_completion_length,
                    temperature=a.temperature, lora={"r": a.lora_r} if a.lora_r else None),
        eval_max_new_tokens=a.max_completion_length)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("sft", "grpo", "sft_loss")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
