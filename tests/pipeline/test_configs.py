"""The shipped configs load and pass every check (the GPU recipe with its paths pointed at stand-ins)."""
from pathlib import Path

import yaml

from hatch_vlm.pipeline.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_demo_config_is_valid():
    cfg = load_config(CONFIGS / "demo.yaml")
    assert cfg.stages == ["pasta", "qa_sft", "actor_sft", "grpo", "eval"] and cfg.model.path == "tiny"


def test_gpu_recipe_config_is_valid(tmp_path):
    raw = yaml.safe_load((CONFIGS / "qwen25vl_3b_spar.yaml").read_text())
    for name in ("model", "spar/scannet/qa_jsonl/train", "bench"):
        (tmp_path / name).mkdir(parents=True)
    raw["model"]["path"] = str(tmp_path / "model")
    raw["data"]["path"] = str(tmp_path / "spar")
    for b in raw["eval"]["benchmarks"]:
        b["path"] = str(tmp_path / "bench")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    assert cfg.data.kind == "spar" and len(cfg.eval.benchmarks) == 3 and cfg.data.actor_fraction == 0.1
    # the paper's 10k multi-view samples, and a stated image-token budget
    assert cfg.data.num_train == 10_000 and cfg.data.tasks == ["multi_view"]
    assert cfg.model.max_pixels == 128 * 28 * 28 and cfg.model.pixels["max_pixels"] == cfg.model.max_pixels
