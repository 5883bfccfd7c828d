"""Short end-to-end ActoR runs on the tiny Qwen2.5-VL: cold start -> held-out format check -> GRPO (with the
reward log and plot), and GRPO with LoRA and the auxiliary-loss hook. The full-size measurement (format
reward >= 0.9 after the cold start, 30+ GRPO steps) is `python -m hatch_vlm.actor.recipe` (see the report)."""
import json

import pytest
import torch

pytest.importorskip("trl")

from hatch_vlm.actor.formatting import grpo_row  # noqa: E402
from hatch_vlm.actor.grpo import GRPOOptions, run_grpo  # noqa: E402
from hatch_vlm.actor.recipe import run_recipe  # noqa: E402
from hatch_vlm.actor.sft import SFTOptions  # noqa: E402
from hatch_vlm.models.loading import load_model_and_processor  # noqa: E402

from ._samples import random_samples  # noqa: E402


def _samples(n, seed, views):
    try:
        from hatch_vlm.data.synthetic import generate
    except ImportError:
        return random_samples(n, seed=seed, views=(views,))
    return generate(n, views=views, size=112, seed=seed)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_cold_start_then_grpo_short(tiny_dir, tmp_path):
    model, proc = load_model_and_processor(tiny_dir)
    train, held = _samples(24, 0, 2), _samples(4, 1, 2)
    summary = run_recipe(model, proc, train, held, tmp_path,
                         SFTOptions(max_steps=30, learning_rate=1e-2, batch_size=8, logging_steps=5),
                         GRPOOptions(max_steps=3, learning_rate=1e-4, batch_size=4, num_generations=2,
                                     max_completion_length=24),
                         eval_max_new_tokens=24)
    losses = [loss for _, loss in summary["sft_loss"]]
    assert losses[-1] < 0.5 * losses[0], losses                # the cold start learns the target text
    for v in summary["held_out_after_cold_start"].values():
        assert 0.0 <= v <= 1.0
    assert summary["grpo_steps"] == 3
    log = json.loads((tmp_path / "grpo" / "reward_log.json").read_text())
    steps = [e for e in log if "rewards/action_reward/mean" in e]
    assert [e["step"] for e in steps] == [1, 2, 3]
    for e in steps:
        for name in ("action", "answer", "format"):
            assert 0.0 <= e[f"rewards/{name}_reward/mean"] <= 1.0
    assert (tmp_path / "grpo" / "rewards.png").read_bytes()[:4] == b"\x89PNG"
    reloaded, _ = load_model_and_processor(tmp_path / "cold_start")
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in model.parameters())


def test_grpo_lora_and_aux_loss_hook(tiny_dir, tmp_path):
    model, proc = load_model_and_processor(tiny_dir)
    rows = [grpo_row(s) for s in _samples(4, 2, 2)]
    seen = []

    def aux(m, inputs):
        seen.append({k: inputs[k] for k in ("task", "group_id")})
        assert inputs["pixel_values"].shape[0] > 0 and inputs["image_grid_thw"].shape[0] == 2 * len(inputs["task"])
        lora = [p for n, p in m.named_parameters() if "lora_" in n and p.requires_grad]
        return 1.0 + 0.0 * sum(p.sum() for p in lora)

    trainer = run_grpo(model, proc, rows, tmp_path, GRPOOptions(
        max_steps=2, batch_size=4, num_generations=2, max_completion_length=8, lora={"r": 2},
        aux_columns=("task",), aux_weight=0.5, plot=False), aux_loss_fn=aux)
    assert len(seen) == 2
    for s in seen:
        assert len(s["task"]) == 4 and all(isinstance(t, str) and t for t in s["task"])
        assert sorted(s["group_id"]) == [0, 0, 1, 1]        # two prompts, each repeated num_generations times
    log = [e for e in trainer.state.log_history if "pasta_loss" in e]
    assert log and all(e["pasta_loss"] == pytest.approx(1.0) for e in log)
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not (tmp_path / "rewards.png").exists() and (tmp_path / "reward_log.json").is_file()


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="multiple of num_generations"):
        GRPOOptions(batch_size=6, num_generations=4)
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        GRPOOptions(num_generations=1, batch_size=2)
    with pytest.raises(ValueError, match="max_steps"):
        SFTOptions(max_steps=0)
