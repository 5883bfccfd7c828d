"""The PaStA stage end to end on the tiny model (shortened), LoRA, its option checks, and its command."""
import json

import pytest
import torch

from hatch_vlm.models.loading import load_model_and_processor
from hatch_vlm.pasta.config import PastaConfig
from hatch_vlm.pasta.data import make_samples
from hatch_vlm.pasta.metrics import correspondence_metrics
from hatch_vlm.pasta.stage import run_pasta_stage


def _split(state):
    """(vision tower, everything else) of a Qwen2.5-VL state dict."""
    vis = {k: v for k, v in state.items() if k.startswith("model.visual.")}
    return vis, {k: v for k, v in state.items() if k not in vis}


@pytest.fixture(scope="module")
def short_run(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pasta_full")
    config = PastaConfig(model_dir=str(tiny_dir), output_dir=str(out), num_train=48, num_eval=16,
                         image_size=112, max_steps=40, per_device_train_batch_size=4, learning_rate=2e-3, warmup_steps=4,
                         logging_steps=10, save_steps=20, eval_seed=999)
    eval_samples = make_samples(config, config.num_eval, config.eval_seed)
    return config, eval_samples, run_pasta_stage(config, eval_samples=eval_samples)


@pytest.mark.slow
def test_short_stage_improves_correspondence(short_run):
    _, _, res = short_run
    assert res["steps"] == 40 and res["num_eval_rows"] > 100
    assert res["after_top1"] > res["before_top1"] + 0.03, res
    assert res["after_mean_rank"] < res["before_mean_rank"], res
    assert res["before_top1"] > res["chance_top1"] - 0.02          # sanity: chance is 1/16-ish


@pytest.mark.slow
def test_stage_changes_only_the_vision_tower(short_run, tiny_dir):
    _, _, res = short_run
    before, _ = load_model_and_processor(tiny_dir)
    after, _ = load_model_and_processor(res["checkpoint"])
    vis_b, llm_b = _split(before.state_dict())
    vis_a, llm_a = _split(after.state_dict())
    assert llm_b.keys() == llm_a.keys() and len(llm_b) > 10 and len(vis_b) > 10
    assert all(torch.equal(llm_b[k], llm_a[k]) for k in llm_b)       # LLM bit-identical
    assert sum(not torch.equal(vis_b[k], vis_a[k]) for k in vis_b) > len(vis_b) // 2
    assert res["llm_unchanged"] is True


@pytest.mark.slow
def test_checkpoint_reload_gives_same_metric(short_run):
    config, eval_samples, res = short_run
    model, processor = load_model_and_processor(res["checkpoint"])
    m = correspondence_metrics(model, processor, eval_samples, config.grid)
    assert m["top1"] == res["after_top1"] and m["mean_rank"] == res["after_mean_rank"]
    out = config.output_dir
    saved = json.loads(open(f"{out}/metrics.json").read())
    assert saved["after_top1"] == res["after_top1"]
    import os

    assert os.path.isfile(f"{out}/checkpoint-20/model.safetensors")  # Trainer checkpoint, safetensors
    assert os.path.getsize(f"{out}/matches.png") > 10_000
    logs = json.loads(open(f"{out}/log_history.json").read())
    assert any("loss" in e and "valid_rows" in e for e in logs)


@pytest.mark.slow
def test_lora_stage_trains_vision_only(tiny_dir, tmp_path):
    config = PastaConfig(model_dir=str(tiny_dir), output_dir=str(tmp_path), tune="lora", num_train=8,
                         num_eval=4, max_steps=3, per_device_train_batch_size=2, gradient_accumulation_steps=2, evaluate_before=False, plot=False,
                         logging_steps=1, lora_r=4)
    res = run_pasta_stage(config)
    assert res["llm_unchanged"] is True and res["steps"] == 3
    before, _ = load_model_and_processor(tiny_dir)
    after, _ = load_model_and_processor(res["checkpoint"])    # merged: a plain model directory
    sb, sa = before.state_dict(), after.state_dict()
    assert sb.keys() == sa.keys()
    changed = [k for k in sb if not torch.equal(sb[k], sa[k])]
    assert changed and all(k.startswith("model.visual.") for k in changed)


def test_config_errors(tiny_dir, tmp_path):
    for bad in ({"tune": "half"}, {"views": 1}, {"data": "imagenet"}, {"learning_rate": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            run_pasta_stage(PastaConfig(model_dir=str(tiny_dir), output_dir=str(tmp_path), **bad))


def test_pasta_command(tiny_dir, tmp_path, monkeypatch, capsys):
    """`hatch-vlm pasta`: the given options reach PastaConfig (the others keep its defaults), the metrics are
    printed as JSON, and a model is required."""
    import hatch_vlm.pasta.stage as stage
    from hatch_vlm.cli import main

    seen = []

    def fake_stage(config):
        seen.append(config)
        return {"steps": config.max_steps, "checkpoint": str(tmp_path / "final")}

    monkeypatch.setattr(stage, "run_pasta_stage", fake_stage)
    assert main(["pasta", "--model-dir", str(tiny_dir), "--output-dir", str(tmp_path), "--max-steps", "7",
                 "--learning-rate", "0.01", "--tune", "lora", "--data", "toy_room"]) == 0
    (config,) = seen
    assert config == PastaConfig(model_dir=str(tiny_dir), output_dir=str(tmp_path), max_steps=7,
                                 learning_rate=0.01, tune="lora", data="toy_room")
    assert json.loads(capsys.readouterr().out) == {"steps": 7, "checkpoint": str(tmp_path / "final")}
    with pytest.raises(SystemExit) as exit_:
        main(["pasta", "--output-dir", str(tmp_path)])
    assert exit_.value.code == 2 and "--model-dir or --tiny" in capsys.readouterr().err


@pytest.mark.parametrize("tune", ["full", "lora"])
def test_the_stage_resolves_the_family_adapter_once(tiny_dir, tmp_path, monkeypatch, tune):
    """One lookup per stage, handed down to freezing, the LLM check, the trainer's loss and the metrics
    (before: six call sites each looked it up again, per step and per batch)."""
    import hatch_vlm.pasta.cells as cells
    import hatch_vlm.pasta.stage as stage
    import hatch_vlm.pasta.trainer as trainer
    from hatch_vlm.models import adapters

    calls = []
    for mod in (cells, stage, trainer):
        monkeypatch.setattr(mod, "adapter_for_model",
                            lambda m, _f=adapters.adapter_for_model: calls.append("model") or _f(m))
    monkeypatch.setattr(cells, "adapter_for_processor",
                        lambda p, _f=adapters.adapter_for_processor: calls.append("processor") or _f(p))
    config = PastaConfig(model_dir=str(tiny_dir), output_dir=str(tmp_path), tune=tune, num_train=4, num_eval=2,
                         max_steps=2, per_device_train_batch_size=2, plot=False, lora_r=4,
                         check_llm_unchanged=True)
    res = run_pasta_stage(config)
    assert res["steps"] == 2 and "before_top1" in res and res["llm_unchanged"] is True
    assert calls == ["model"]
