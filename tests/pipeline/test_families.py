"""The whole recipe (every stage, the tiny sizes) on each model family's tiny build (docs/adapters.md)."""
import json

import pytest

from hatch_vlm.pipeline.config import HatchConfig
from hatch_vlm.pipeline.runner import run_pipeline


def _config(out, family: str) -> HatchConfig:
    return HatchConfig(
        model={"path": "tiny", "family": family}, output_dir=str(out), threads=1,
        data={"num_train": 4, "num_eval": 2, "size": 64, "actor_fraction": 1.0},
        pasta={"max_steps": 2, "per_device_train_batch_size": 2, "plot": False},
        qa_sft={"max_steps": 1, "per_device_train_batch_size": 2},
        actor_sft={"max_steps": 1, "per_device_train_batch_size": 2},
        grpo={"max_steps": 1, "per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 4,
              "plot": False},
        eval={"max_new_tokens": 4, "batch_size": 2})


@pytest.mark.slow
@pytest.mark.parametrize("family,model_type", [("qwen3-vl", "qwen3_vl"), ("internvl3", "internvl")])
def test_every_stage_runs_on_the_family(tmp_path, family, model_type):
    state = run_pipeline(_config(tmp_path / "run", family))
    assert set(state["stages"]) == {"pasta", "qa_sft", "actor_sft", "grpo", "eval"}
    assert json.loads((tmp_path / "run" / "model_init" / "config.json").read_text())["model_type"] == model_type
    final = json.loads((tmp_path / "run" / "stages" / "grpo" / "model" / "config.json").read_text())
    assert final["model_type"] == model_type
    pasta = state["stages"]["pasta"]["metrics"]
    assert pasta["llm_unchanged"] is True and pasta["steps"] == 2
    assert state["stages"]["eval"]["metrics"]["summary"]["synthetic"]["n"] == 2


def test_a_family_that_disagrees_with_the_checkpoint_is_refused(tmp_path):
    from hatch_vlm.models.tiny import build_tiny_model
    from hatch_vlm.utils.config import ConfigError

    path = build_tiny_model(tmp_path / "tiny")
    with pytest.raises(ConfigError, match="model.family: is 'qwen3-vl' but .* holds a qwen2.5-vl model"):
        HatchConfig(model={"path": str(path), "family": "qwen3-vl"})
    with pytest.raises(ConfigError, match="model.family: unknown model family 'llava'"):
        HatchConfig(model={"path": "tiny", "family": "llava"})


def test_grpo_pasta_term_on_internvl_is_refused_with_the_reason(tmp_path):
    from hatch_vlm.utils.config import ConfigError

    cfg = _config(tmp_path / "run", "internvl3")
    cfg.stages = ["grpo"]
    cfg.grpo.pasta_weight = 0.1
    with pytest.raises(ConfigError, match="grpo.pasta_weight: .* an internvl3 batch has none"):
        run_pipeline(cfg)
