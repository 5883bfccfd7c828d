"""The shipped configs load and pass every check (the GPU recipe with its paths pointed at stand-ins)."""
from pathlib import Path

import yaml

from hatch_vlm.pipeline.config import load_config
from hatch_vlm.pipeline.demo import QUICK, demo_config, demo_yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_demo_config_is_packaged_and_valid(tmp_path):
    # one source of truth: the package's demo.yaml (configs/ holds no copy to drift from it)
    assert not (CONFIGS / "demo.yaml").exists()
    path = tmp_path / "demo.yaml"
    path.write_text(demo_yaml())
    cfg = load_config(path)
    assert cfg.stages == ["pasta", "qa_sft", "actor_sft", "grpo", "eval"] and cfg.model.path == "tiny"
    # the settings the demo's reported numbers come from (a change here moves them)
    assert (cfg.threads, cfg.data.num_train, cfg.data.num_eval, cfg.data.size) == (1, 800, 32, 112)
    assert (cfg.pasta.max_steps, cfg.pasta.max_seconds, cfg.pasta.per_device_train_batch_size) == (1000, 900, 8)
    assert (cfg.qa_sft.setting("max_steps"), cfg.qa_sft.setting("learning_rate")) == (60, 5e-3)
    assert (cfg.actor_sft.setting("max_steps"), cfg.actor_sft.setting("learning_rate")) == (1000, 1e-2)
    assert (cfg.grpo.setting("max_steps"), cfg.grpo.setting("num_generations"), cfg.grpo.pasta_weight) == (60, 4, 0)
    for quick in (False, True):
        raw = demo_config(tmp_path / "out", quick)
        (tmp_path / "d.yaml").write_text(yaml.safe_dump(raw))
        load_config(tmp_path / "d.yaml")
    assert set(QUICK) <= set(yaml.safe_load(demo_yaml()))


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
