"""`hatch-vlm train` on a SPAR-7M tree in the real layout: every stage on lazily decoded records of mixed view
counts, one image-token budget everywhere, and a wrong depth unit refused at start."""
import json

import pytest

from hatch_vlm.pipeline.config import load_config
from hatch_vlm.pipeline.runner import run_pipeline, spar_data
from hatch_vlm.utils.config import ConfigError

from tests.data._spar_tree import write_tree

# 3-view and 2-view multi-view records, a single-view task (filtered out by tasks: [multi_view])
COUNTS = {("scannet", "depth_prediction_oo_mv", "select"): 12, ("scannet", "depth_prediction_oo_mv", "fill"): 8,
          ("scannet", "position_matching", "select"): 10, ("scannet", "depth_prediction_oc", "select"): 10}
MAX_PIXELS = 112 * 112


def _config(tmp_path, root, **data):
    cfg = {"model": {"path": "tiny", "max_pixels": MAX_PIXELS}, "output_dir": str(tmp_path / "run"),
           "data": {"kind": "spar", "path": str(root), "tasks": ["multi_view"], "answer_types": ["mc", "numeric"],
                    "num_train": 8, "num_eval": 3, "index_cache": str(tmp_path / "cache"), "num_workers": 1,
                    "actor_fraction": 1.0, **data},
           "pasta": {"max_steps": 2, "per_device_train_batch_size": 4, "plot": False},
           "qa_sft": {"max_steps": 2, "per_device_train_batch_size": 2},
           "actor_sft": {"max_steps": 2, "per_device_train_batch_size": 2},
           "grpo": {"max_steps": 1, "per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 8,
                    "plot": False, "pasta_weight": 0.1},     # the PaStA term on mixed view counts
           "eval": {"max_new_tokens": 8, "batch_size": 2}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return load_config(path)


@pytest.mark.slow
def test_every_stage_runs_on_a_spar_tree_with_one_token_budget(tmp_path, monkeypatch):
    import hatch_vlm.models.loading as loading
    import hatch_vlm.pasta.stage as stage

    root = write_tree(tmp_path / "spar", COUNTS)
    seen = []
    real = loading.load_model_and_processor

    def spy(*args, **kwargs):
        seen.append(kwargs.get("max_pixels"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "load_model_and_processor", spy)
    monkeypatch.setattr(stage, "load_model_and_processor", spy)
    state = run_pipeline(_config(tmp_path, root))
    stages = state["stages"]
    assert set(stages) == {"pasta", "qa_sft", "actor_sft", "grpo", "eval"}
    assert stages["pasta"]["metrics"]["num_eval_rows"] > 0          # real geometry gave valid PaStA rows
    assert stages["pasta"]["metrics"]["steps"] == 2
    # every model load of every stage used the configured budget, and so did every saved processor
    assert len(seen) >= 5 and set(seen) == {MAX_PIXELS}
    for name in ("pasta", "qa_sft", "actor_sft", "grpo"):
        cfg = json.loads((tmp_path / "run" / "stages" / name / "model" / "processor_config.json").read_text())
        assert cfg["image_processor"]["size"]["longest_edge"] == MAX_PIXELS, name   # the saved max_pixels
    assert stages["grpo"]["metrics"]["pasta_loss_first"] > 0     # the GRPO PaStA term ran (2- and 3-view prompts)
    summary = stages["eval"]["metrics"]["summary"]
    assert summary["synthetic"]["n"] == 3                              # the held-out SPAR records


def test_a_wrong_depth_unit_stops_the_run_at_start(tmp_path):
    root = write_tree(tmp_path / "spar", COUNTS, depth_mm=2)          # "2 mm": depth stored in metres
    cfg = _config(tmp_path, root)
    with pytest.raises(ConfigError, match=r"data.depth_scale: \d+ of \d+ checked depth maps of source 'scannet'"):
        spar_data(cfg.data)
    # with the right unit the same tree is selected, decoded and in metres
    train, held_out = spar_data(_config(tmp_path, root, depth_scale={"scannet": 1.0}).data)
    assert len(train) == 8 and len(held_out) == 3 and train[0].depth.max() == pytest.approx(2.0)


def test_strict_data_stops_at_the_first_bad_record(tmp_path):
    import json as _json

    root = write_tree(tmp_path / "spar", COUNTS)
    f = root / "scannet/qa_jsonl/train/position_matching/select/select_10.jsonl"
    lines = f.read_text().splitlines()
    rec = _json.loads(lines[0])
    rec["image"][1] = "scene0000_00/image_color/404.jpg"
    lines[0] = _json.dumps(rec)
    f.write_text("\n".join(lines) + "\n")
    train, held_out = spar_data(_config(tmp_path, root).data)          # skipped and counted
    assert len(train) == 8 and len(held_out) == 3
    with pytest.raises(ConfigError, match=r"select_10.jsonl line 1 .*file not found"):
        spar_data(_config(tmp_path, root, strict=True).data)
