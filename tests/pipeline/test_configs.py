"""The shipped configs load and pass every check (the GPU recipe with its paths pointed at stand-ins)."""
from pathlib import Path

import yaml

from hatch.pipeline.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_demo_config_is_valid():
    cfg = load_config(CONFIGS / "demo.yaml")
    assert cfg.stages == ["pasta", "qa_sft", "actor_sft", "grpo", "eval"] and cfg.model == "tiny"


def test_gpu_recipe_config_is_valid(tmp_path):
    raw = yaml.safe_load((CONFIGS / "qwen25vl_3b_spar.yaml").read_text())
    for name in ("model", "spar", "bench"):
        (tmp_path / name).mkdir()
    raw["model"] = str(tmp_path / "model")
    raw["data"]["path"] = str(tmp_path / "spar")
    for b in raw["eval"]["benchmarks"]:
        b["path"] = str(tmp_path / "bench")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    assert cfg.data.kind == "spar" and len(cfg.eval.benchmarks) == 3 and cfg.data.actor_fraction == 0.1
