"""`hatch-vlm rehearse` end to end on the tiny config, and its refusals."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hatch_vlm.cli import main
from hatch_vlm.utils.config import ConfigError

MODELS = Path(__file__).resolve().parents[2] / "configs" / "models"


def _config(tmp_path, stages="[pasta, qa_sft, grpo, eval]", model="tiny", extra="") -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
model: {model}
stages: {stages}
threads: 1
data: {{kind: synthetic, num_train: 16, num_eval: 4, views: 2, size: 112}}
pasta: {{max_steps: 100, per_device_train_batch_size: 4}}
qa_sft: {{max_steps: 100, per_device_train_batch_size: 4, gradient_accumulation_steps: 2}}
grpo: {{max_steps: 100, per_device_train_batch_size: 4, num_generations: 2, max_completion_length: 8}}
eval: {{synthetic: true, max_new_tokens: 8, batch_size: 2}}
{extra}""")
    return cfg


@pytest.mark.slow
def test_rehearse_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "rh"
    assert main(["rehearse", "--config", str(_config(tmp_path)), "--out", str(out), "--steps", "1",
                 "--warmup", "1", "--name", "tiny", "--budget", "6"]) == 0
    rep = json.loads((out / "rehearsal_tiny.json").read_text())
    assert [s["stage"] for s in rep["stages"]] == ["pasta", "qa_sft", "grpo", "eval"]
    for s in rep["stages"]:
        assert s["peak"]["how"] == "measured" and s["peak"]["value"] > 0
        for check in s["mirror_check"]:
            assert check.get("equal", True), check      # the trainer held exactly the predicted state
    qa = next(s for s in rep["stages"] if s["stage"] == "qa_sft")
    assert qa["micro_batches_per_step"] == 2 and qa["step_seconds"]["how"] == "extrapolated"
    assert qa["visual_tokens"] > 0 and qa["text_tokens"] > 0
    grpo = next(s for s in rep["stages"] if s["stage"] == "grpo")
    assert grpo["generation_tokens_per_s"]["value"] > 0
    pasta = rep["stages"][0]
    assert 0 < pasta["op_share"]["value"] < 1
    md = (out / "rehearsal_tiny.md").read_text()
    assert "## GPU plan: 8 × 80 GiB, ddp" in md and (out / "rehearsal_tiny_plan.png").stat().st_size > 1000
    assert set(rep["plan"]) == {"pasta", "qa_sft", "grpo", "eval"}



def test_refusals_name_the_setting(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["rehearse", "--config", str(_config(tmp_path)), "--model", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "rh")]) == 2
    assert "has no config.json" in capsys.readouterr().err
    assert main(["rehearse", "--config", str(_config(tmp_path)), "--engine", "zero4",
                 "--out", str(tmp_path / "rh")]) == 2
    assert "--engine: must be one of ddp, zero2, zero3, fsdp, got 'zero4'" in capsys.readouterr().err


def test_refuses_a_model_that_cannot_fit_even_at_two_layers(tmp_path):
    """Full fine-tuning of the real 3B at 2 layers holds ~9 GiB of model state: with a 3 GiB budget nothing is
    run (every variant is predicted over the budget first) and the stage stops with the numbers."""
    from hatch_vlm.rehearse.runner import Rehearsal, RehearseOptions

    opts = RehearseOptions(config=str(_config(tmp_path, stages="[qa_sft]")), model=str(MODELS / "Qwen2.5-VL-3B-Instruct"),
                           out=str(tmp_path / "rh"), budget_gib=3.0)
    with pytest.raises(ConfigError, match=r"qa_sft: does not fit this machine even at 2 decoder layers and "
                                          r"micro-batch 1: model state alone .* GiB > budget 3.0 GiB"):
        Rehearsal(opts, say=lambda _m: None).run()
    assert not (tmp_path / "rh" / "work").exists()            # nothing was run
