"""PaStA raises cross-view correspondence accuracy on held-out synthetic scenes for every model family's tiny
build (Qwen2.5-VL: tests/pasta/test_stage.py), through the stage itself (`run_pasta_stage`)."""
import pytest

from hatch_vlm.models.tiny import build_tiny_model
from hatch_vlm.pasta.config import PastaConfig
from hatch_vlm.pasta.stage import run_pasta_stage


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen3-vl", "internvl3"])
def test_pasta_improves_held_out_correspondence(family, tmp_path):
    model_dir = build_tiny_model(tmp_path / "tiny", seed=0, family=family)
    res = run_pasta_stage(PastaConfig(
        model_dir=str(model_dir), output_dir=str(tmp_path / "pasta"), data="synthetic", num_train=48, num_eval=16,
        image_size=112, max_steps=60, per_device_train_batch_size=4, learning_rate=2e-3, warmup_steps=4,
        logging_steps=20, eval_seed=999, plot=False))
    assert res["llm_unchanged"] is True and res["num_eval_rows"] > 100
    assert res["after_top1"] > res["before_top1"] + 0.03, res
    assert res["after_mean_rank"] < res["before_mean_rank"], res
