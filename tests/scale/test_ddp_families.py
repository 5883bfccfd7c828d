"""Every stage of the recipe under `accelerate launch` with 2 CPU processes, on the tiny Qwen3-VL and
InternVL3 builds (the Qwen2.5-VL launch: test_ddp_pipeline.py)."""
import json
import subprocess

import pytest
import yaml

from scale_launch import ROOT, accelerate_2proc, launch_env, needs_gloo

pytestmark = [pytest.mark.slow, needs_gloo]

STAGES = ("pasta", "qa_sft", "actor_sft", "grpo", "eval")


@pytest.mark.parametrize("family", ["qwen3-vl", "internvl3"])
def test_every_stage_runs_on_two_processes(tmp_path, family):
    out = tmp_path / "run"
    cfg = {"model": {"path": "tiny", "family": family}, "threads": 1, "output_dir": str(out),
           "data": {"num_train": 4, "num_eval": 3, "size": 64, "actor_fraction": 1.0},
           "pasta": {"max_steps": 2, "per_device_train_batch_size": 2, "plot": False},
           "qa_sft": {"max_steps": 2, "per_device_train_batch_size": 2},
           "actor_sft": {"max_steps": 2, "per_device_train_batch_size": 2},
           "grpo": {"max_steps": 2, "per_device_train_batch_size": 2, "num_generations": 2,
                    "max_completion_length": 6, "plot": False},
           "eval": {"max_new_tokens": 6, "batch_size": 2}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run(accelerate_2proc("-m", "hatch_vlm.cli", "train", "--config", str(path)), env=launch_env(),
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    assert "2 processes: every rank trains" in r.stdout
    state = json.loads((out / "state.json").read_text())
    assert all(state["stages"][s]["done"] for s in STAGES)
    assert state["stages"]["pasta"]["metrics"]["llm_unchanged"] is True
    # every held-out question answered once, split across the ranks and gathered in order
    records = json.loads((out / "stages" / "eval" / "results.json").read_text())["records"]
    assert len(records) == 3 and len({r["id"] for r in records}) == 3
