"""`hatch-vlm demo`: the whole HATCH recipe on this machine, from nothing: synthetic data, the tiny
Qwen2.5-VL built offline, PaStA -> QA fine-tuning -> ActoR cold start -> GRPO -> evaluation (held-out
synthetic scenes and the five benchmark formats written from synthetic data: the report's Table 1 and
Table 4), then a report.

The settings live in the package's own demo.yaml (beside this module, shipped as package data so that an
installed wheel runs the demo too; the same format `hatch-vlm train --config` takes); `--quick` shrinks
every stage for tests (QUICK).
"""
from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

import yaml

from hatch_vlm.utils.io import atomic_write_text

from hatch_vlm.utils.config import ConfigError

from .config import HatchConfig, load_config
from .report import write_report
from .runner import run_chain, run_pipeline, start_run

# `--quick`: merged over demo.yaml's sections, key by key.
QUICK = {
    "data": {"num_train": 8, "num_eval": 4, "size": 56, "actor_fraction": 1.0},
    "pasta": {"max_steps": 3, "per_device_train_batch_size": 4, "plot": True},
    "qa_sft": {"max_steps": 2, "per_device_train_batch_size": 4},
    "actor_sft": {"max_steps": 3, "per_device_train_batch_size": 4},
    "grpo": {"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 16},
    "eval": {"max_new_tokens": 16, "limit": 4},
}


# GRPO runs once per seed from the same cold-start model: the report states the seeds' spread (the stage
# "grpo" is seed 0, the one the evaluation uses; "grpo_seed<s>" the others). `--quick`: two seeds.
GRPO_SEEDS = (0, 1, 2)
QUICK_GRPO_SEEDS = (0, 1)


def demo_yaml() -> str:
    """The text of the packaged demo config."""
    return resources.files("hatch_vlm.pipeline").joinpath("demo.yaml").read_text()


def demo_config(out: str | Path, quick: bool = False, family: str | None = None) -> dict:
    """The demo's config mapping; `family`: the tiny model's family (hatch_vlm.models.adapters; None: the
    paper's Qwen2.5-VL)."""
    base = yaml.safe_load(demo_yaml())
    if family is not None:
        base["model"] = {"path": "tiny", "family": family}
    if quick:
        for key, values in QUICK.items():
            base[key] = {**base.get(key, {}), **values}
    base["output_dir"] = str(out)
    return base


def benchmark_files(out: Path, cfg: dict) -> list[dict]:
    """Writes every published benchmark's format (the registry's stand-ins: hatch_vlm.eval.benchmarks,
    `write_stand_ins`) from held-out synthetic samples (seeds disjoint from the training data), laid out as the
    real downloads are, so the real readers, the official scorers and both paper tables are exercised end to end:

        benchmarks/spar_bench/data/test-00000-of-00001.parquet     SPAR-Bench: its multi_view rows (spar-mv) and
                                                                    single_view rows (spar-si, one view cut out)
        benchmarks/cv_bench/test_2d.parquet                         CV-Bench (single views, sources in turn)
        benchmarks/mindcube/raw/MindCube_tinybench.jsonl            MindCube-Tiny (images under mindcube/)
        benchmarks/mmsi/MMSI_bench.parquet                          MMSI-Bench
    """
    from hatch_vlm.data.synthetic import SceneConfig, iter_samples
    from hatch_vlm.eval.benchmarks import write_stand_ins

    d = cfg["data"]
    bench_dir = out / "benchmarks"
    marker = bench_dir / "DONE"
    listing = bench_dir / "files.json"
    if marker.exists() and listing.exists():
        files = json.loads(listing.read_text())
        if all(Path(f["path"]).exists() for f in files):
            return files
    n = d.get("num_eval", 16)
    samples = list(iter_samples(3 * n, seed=d.get("seed", 0) + 777, start=0,
                                config=SceneConfig(views=d.get("views", 2), size=d.get("size", 112))))
    files = write_stand_ins(samples, bench_dir)
    atomic_write_text(listing, json.dumps(files))
    atomic_write_text(marker, "")
    return files


def run_demo(out: str | Path = "runs/demo", quick: bool = False, family: str | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    raw = demo_config(out, quick, family)
    raw.setdefault("eval", {})["benchmarks"] = benchmark_files(out, raw)
    config_path = out / "demo_config.yaml"
    text = yaml.safe_dump(raw, sort_keys=False)
    if not config_path.exists():
        atomic_write_text(config_path, text)
    elif config_path.read_text() != text:
        raise ConfigError(f"{out} holds a demo run with other settings (--quick or --model differ from "
                          f"{config_path}); use another --out or delete it")
    cfg: HatchConfig = load_config(config_path)
    start = time.time()
    state = run_pipeline(cfg)
    repeat_grpo(cfg, Path(state["stages"]["actor_sft"]["model_dir"]),
                [s for s in (QUICK_GRPO_SEEDS if quick else GRPO_SEEDS) if s != cfg.grpo.setting("seed")])
    report = write_report(out)
    print(f"hatch-vlm demo: all stages done in {time.time() - start:.0f}s")
    return report


def repeat_grpo(cfg: HatchConfig, cold_start: Path, seeds: list[int]) -> None:
    """GRPO again from the cold-start model with each of `seeds` (stages "grpo_seed<s>", resumable like the
    others); each measures its held-out rewards as the "grpo" stage does."""
    from dataclasses import replace

    run, _, say = start_run(cfg)
    for seed in seeds:
        seeded = replace(cfg, grpo=replace(cfg.grpo, trl={**cfg.grpo.trl, "seed": seed}))
        run_chain(run.with_config(seeded), [(f"grpo_seed{seed}", "grpo")], cold_start, say,
                  title=f"GRPO seed {seed} ")
