"""One stage of one model variant, in its own process, exactly as `hatch-vlm train` runs it.

    python -m hatch_vlm.rehearse.worker SPEC.json RESULT.json

SPEC (written by hatch_vlm.rehearse.runner): the rehearsal's config (the user's, with the stage's steps,
micro-batch and output directory set), the stage, the model directory of the variant, the device, and
`max_rss_gib`: a watchdog thread ends the process with exit code `OVER_BUDGET` when its resident set passes
that, before the machine runs out (the runner then tries a smaller variant); on a GPU, a CUDA out-of-memory
error ends it with the same code. A fresh process per variant
gives each its own peak.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

OVER_BUDGET = 75


def _watchdog(limit_bytes: int, result_path: Path) -> None:
    from . import memory

    def watch():
        while True:
            rss = memory.rss_bytes()
            if rss > limit_bytes:
                result_path.write_text(json.dumps({"over_budget": True, "rss_bytes": rss,
                                                   "limit_bytes": limit_bytes}))
                os._exit(OVER_BUDGET)
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True, name="rss-watchdog").start()


def loader_rate(run, model_dir: Path, cfg, samples: int = 4) -> float | None:
    """Samples per second one DataLoader worker makes: decode a sample (frames, depth, markers) and resize /
    normalise its images with the model's processor, as the collators do."""
    from hatch_vlm.models.adapters import adapter_for_dir

    if not len(run.train):
        return None
    processor = adapter_for_dir(model_dir).load_processor(model_dir, **cfg.model.pixels)
    start = time.perf_counter()
    for i in range(samples):
        s = run.train[i % len(run.train)]
        processor.image_processor(images=list(s.images))
    return samples / (time.perf_counter() - start)


def run_spec(spec: dict) -> dict:
    import torch

    from hatch_vlm.pipeline.config import HatchConfig
    from hatch_vlm.pipeline.runner import STAGE_FUNCS, Run
    from hatch_vlm.utils.config import from_dict
    from hatch_vlm.utils.probes import trainer_probe

    from . import memory
    from .probe import StageProbe

    start_rss = memory.rss_bytes()
    replaced = []
    if spec.get("device", "cpu") == "cpu" and spec.get("cpu_costs", True):
        from .cpu_costs import apply

        replaced = apply()
    cfg = from_dict(HatchConfig, spec["config"], where="config")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Run(cfg)
    run.measure_only = True
    stage, model_dir = spec["stage"], Path(spec["model_dir"])
    t = time.perf_counter()
    _ = run.train, run.held_out
    select_seconds = time.perf_counter() - t
    rate = loader_rate(run, model_dir, cfg) if stage != "eval" else None
    probe = StageProbe(device=spec.get("device", "cpu"), profile_last=bool(spec.get("profile")),
                       warmup=int(spec.get("warmup", 0)), long_step_s=spec.get("long_step_s"))
    memory.reset_peak(probe.device)
    t = time.perf_counter()
    with trainer_probe(probe):
        result = STAGE_FUNCS[stage](run, model_dir, Path(cfg.output_dir) / "stages" / stage)
    stage_seconds = time.perf_counter() - t
    after_peak = memory.peak_bytes(probe.device)
    return {
        "stage": stage, "model_dir": str(model_dir), "start_rss": start_rss,
        # what the peak holds before any tensor of the stage: the process's libraries on a CPU (a resident set),
        # nothing on CUDA (max_memory_allocated counts tensors only)
        "peak_baseline": start_rss if probe.device == "cpu" else 0, "select_seconds": select_seconds,
        "stage_seconds": stage_seconds, "loader_samples_per_s": rate,
        "load_peak": probe.load_peak, "after_peak": after_peak, "baseline_rss": probe.baseline_rss,
        "steps": [vars(s) for s in probe.steps], "predicted": probe.predicted, "measured": probe.measured,
        "visual_tokens": _mean(probe.visual_tokens), "text_tokens": _mean(probe.text_tokens),
        "samples_counted": len(probe.visual_tokens), "threads": torch.get_num_threads(),
        "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str, bool))},
        "bf16": result.metrics.get("bf16"), "cut_short": probe.cut_short, "cpu_costs_replaced": replaced,
    }


def _mean(xs) -> float | None:
    return sum(xs) / len(xs) if xs else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    spec = json.loads(spec_path.read_text())
    if spec.get("max_rss_gib"):
        _watchdog(int(spec["max_rss_gib"] * 1024 ** 3), result_path)
    import torch

    try:
        out = run_spec(spec)
    except torch.OutOfMemoryError as e:
        # a GPU's memory ran out (the resident-set watchdog guards a CPU's): over the budget, as the watchdog
        # reports it, so the runner tries a smaller variant instead of ending the rehearsal
        result_path.write_text(json.dumps({"over_budget": True, "device": spec.get("device"),
                                           "error": str(e)[:500]}))
        return OVER_BUDGET
    tmp = result_path.with_suffix(".partial")
    tmp.write_text(json.dumps(out, indent=1, default=str))
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
