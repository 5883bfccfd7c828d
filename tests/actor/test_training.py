"""Short ActoR runs on the tiny Qwen2.5-VL: the pipeline's cold start (with the held-out check) then GRPO, GRPO
with LoRA and the auxiliary-loss hook, GRPO with the PaStA term on and off, and a quiet SFT console. The
full-size measurement is `hatch-vlm demo` (docs/design.md)."""
import json
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

import hatch_vlm.actor.grpo as grpo  # noqa: E402
from hatch_vlm.actor.formatting import cold_start_row, grpo_row  # noqa: E402
from hatch_vlm.actor.grpo import GRPOOptions, run_grpo  # noqa: E402
from hatch_vlm.actor.sft import SFTOptions, run_sft  # noqa: E402
from hatch_vlm.models.loading import load_model_and_processor  # noqa: E402
from hatch_vlm.pipeline.config import HatchConfig  # noqa: E402
from hatch_vlm.utils.config import ConfigError, from_dict  # noqa: E402

from ._samples import random_samples  # noqa: E402


def _samples(n, seed, views, size=112, tasks=None):
    try:
        from hatch_vlm.data.synthetic import SceneConfig, iter_samples
    except ImportError:
        return random_samples(n, seed=seed, views=(views,))
    scene = SceneConfig(views=views, size=size, **({"tasks": tasks} if tasks else {}))
    return list(iter_samples(n, seed=seed, config=scene))


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_cold_start_then_grpo_short(tmp_path):
    """The ActoR half of the recipe through the pipeline's own stages (the one orchestrator)."""
    from hatch_vlm.pipeline.runner import run_pipeline

    cfg = from_dict(HatchConfig, {
        "model": "tiny", "output_dir": str(tmp_path / "run"), "stages": ["actor_sft", "grpo"],
        "data": {"num_train": 24, "num_eval": 4, "size": 112, "actor_fraction": 1.0},
        "actor_sft": {"max_steps": 30, "learning_rate": 1e-2, "per_device_train_batch_size": 8, "logging_steps": 5},
        "grpo": {"max_steps": 3, "learning_rate": 1e-4, "per_device_train_batch_size": 4, "num_generations": 2,
                 "max_completion_length": 24},
        "eval": {"max_new_tokens": 24}})
    stages = run_pipeline(cfg, progress=lambda _m: None)["stages"]
    cold = stages["actor_sft"]["metrics"]
    assert cold["last_loss"] < 0.5 * cold["first_loss"], cold        # the cold start learns the target text
    held_out = {k: v for k, v in cold.items() if k.startswith("held_out_") and k != "held_out_n"}
    assert cold["held_out_n"] == 4                                     # the held-out samples, each once
    assert "held_out_format" in held_out and "held_out_format@2views" in held_out
    assert "held_out_action_partial" in held_out                       # both R_act shapes
    assert all(0.0 <= v <= 1.0 for v in held_out.values())
    g = stages["grpo"]["metrics"]
    assert g["steps"] == 3 and not any(k.startswith("pasta_loss") for k in g)     # pasta_weight 0: no term
    log = json.loads(Path(g["reward_log"]).read_text())
    steps = [e for e in log if "rewards/action_reward/mean" in e]
    assert [e["step"] for e in steps] == [1, 2, 3]
    for e in steps:
        for name in ("action", "answer", "format"):
            assert 0.0 <= e[f"rewards/{name}_reward/mean"] <= 1.0
    assert Path(g["plot"]).read_bytes()[:4] == b"\x89PNG"
    reloaded, _ = load_model_and_processor(stages["actor_sft"]["model_dir"])
    start, _ = load_model_and_processor(tmp_path / "run" / "model_init")
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in start.parameters())


def test_grpo_lora_and_aux_loss_hook(tiny_dir, tmp_path):
    model, proc = load_model_and_processor(tiny_dir)
    rows = [grpo_row(s) for s in _samples(4, 2, 2)]
    seen = []

    def aux(m, inputs):
        seen.append({k: inputs[k] for k in ("task", "group_id")})
        assert inputs["pixel_values"].shape[0] > 0 and inputs["image_grid_thw"].shape[0] == 2 * len(inputs["task"])
        lora = [p for n, p in m.named_parameters() if "lora_" in n and p.requires_grad]
        return 1.0 + 0.0 * sum(p.sum() for p in lora)

    opts = GRPOOptions(lora={"r": 2}, plot=False, trl={"max_steps": 2, "per_device_train_batch_size": 4,
                                                       "num_generations": 2, "max_completion_length": 8})
    trainer = run_grpo(model, proc, rows, tmp_path, opts, aux_loss_fn=aux, aux_columns=("task",))
    assert len(seen) == 2
    for s in seen:
        assert len(s["task"]) == 4 and all(isinstance(t, str) and t for t in s["task"])
        assert sorted(s["group_id"]) == [0, 0, 1, 1]        # two prompts, each repeated num_generations times
    log = [e for e in trainer.state.log_history if "pasta_loss" in e]
    assert log and all(e["pasta_loss"] == pytest.approx(1.0) for e in log)
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not (tmp_path / "rewards.png").exists() and (tmp_path / "reward_log.json").is_file()


def _grpo_vision_grads(tiny_dir, out, pasta_weight, monkeypatch):
    """2 GRPO steps on overlapping views with the pipeline's PaStA wiring (`grpo.pasta_weight`); returns the
    trainer and the vision tower's gradient norm after each micro-step's backward."""
    from hatch_vlm.pasta.data import near_tasks
    from hatch_vlm.pipeline.runner import pasta_term

    norms = []
    base = grpo._trainer_class()

    class Recording(base):
        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            grads = [p.grad for n, p in model.named_parameters() if ".visual." in f".{n}" and p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) if grads else 0.0)
            return loss

    monkeypatch.setattr(grpo, "_trainer_class", lambda: Recording)
    cfg = from_dict(HatchConfig, {"grpo": {"pasta_weight": pasta_weight, "max_steps": 2,
                                           "per_device_train_batch_size": 4, "num_generations": 2,
                                           "max_completion_length": 8, "plot": False}})
    model, proc = load_model_and_processor(tiny_dir)
    rows = [grpo_row(s, geometry=True) for s in _samples(4, 3, 2, tasks=near_tasks())]
    aux = pasta_term(cfg) if pasta_weight > 0 else None
    trainer = run_grpo(model, proc, rows, out, cfg.grpo, aux_loss_fn=aux)
    return trainer, norms


def test_grpo_pasta_term_reaches_the_vision_tower(tiny_dir, tmp_path, monkeypatch):
    # The random tiny model earns no reward, so every group's advantages are 0 and the policy loss has zero
    # gradient: whatever reaches the vision tower comes from the PaStA term.
    on, on_norms = _grpo_vision_grads(tiny_dir, tmp_path / "on", 0.5, monkeypatch)
    logged = [e["pasta_loss"] for e in on.state.log_history if "pasta_loss" in e]
    assert len(logged) == 2 and all(v > 0 for v in logged), logged          # λ × the PaStA loss, logged
    assert len(on_norms) == 2 and all(n > 0 for n in on_norms), on_norms
    off, off_norms = _grpo_vision_grads(tiny_dir, tmp_path / "off", 0.0, monkeypatch)
    assert not any("pasta_loss" in e for e in off.state.log_history)
    assert off_norms == [0.0, 0.0]
    rewards = [e["reward"] for e in off.state.log_history if "reward" in e]
    assert rewards and all(r == 0 for r in rewards)       # (what makes the policy gradient 0 here)


def test_prompt_geometry_batch_takes_each_prompt_once_and_groups_view_counts():
    from hatch_vlm.actor.grpo import prompt_geometry_batch

    # rows: prompt 0 (2 views) twice, prompt 1 (3 views) twice; images of 4 and 6 patches
    grid = torch.tensor([[1, 2, 2], [1, 2, 2], [1, 2, 2], [1, 2, 2], [1, 2, 3], [1, 2, 3], [1, 2, 3],
                         [1, 2, 3], [1, 2, 3], [1, 2, 3]])
    pixels = torch.arange(int(grid.prod(-1).sum()), dtype=torch.float32)[:, None]
    depth = [torch.ones(2, 4, 4), torch.ones(2, 4, 4), torch.ones(3, 4, 4), torch.ones(3, 4, 4)]
    inputs = {"group_id": [0, 0, 1, 1], "num_images": [2, 2, 3, 3], "image_grid_thw": grid, "pixel_values": pixels,
              "depth": [d.numpy() for d in depth], "K": [torch.eye(3).expand(len(d), 3, 3).numpy() for d in depth],
              "cam_to_world": [torch.eye(4).expand(len(d), 4, 4).numpy() for d in depth]}
    b = prompt_geometry_batch(inputs)
    assert b["image_grid_thw"].tolist() == grid[[0, 1, 4, 5, 6]].tolist()
    assert b["pixel_values"][:, 0].tolist() == list(range(0, 8)) + list(range(16, 34))
    assert b["num_views"].tolist() == [2, 3]
    assert [g["samples"].tolist() for g in b["geometry_groups"]] == [[0], [1]]
    assert b["geometry_groups"][1]["depth"].shape == (1, 3, 4, 4)


def test_sft_prints_no_deprecation_warning_of_ours(tiny_dir, tmp_path):
    """transformers warned (FutureWarning) on every TRL config: TRL defaults the deprecated
    `gradient_checkpointing` to True. We pass the setting as `activation_checkpointing` (still on)."""
    model, proc = load_model_and_processor(tiny_dir)
    rows = [cold_start_row(s) for s in _samples(2, 0, 2, size=56)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opts = SFTOptions(trl={"max_steps": 1, "per_device_train_batch_size": 2})
        trainer = run_sft(model, proc, rows, tmp_path, opts)
    assert trainer.args.activation_checkpointing is True          # behaviour unchanged: TRL's default, on
    # origin: our code, or the libraries we hand our arguments to
    ours = [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))
            and any(part in w.filename for part in ("hatch_vlm", "transformers", "trl", "peft"))]
    assert not ours, [f"{w.category.__name__} {w.filename}:{w.lineno}: {w.message}" for w in ours]


def test_bad_options_are_clear_errors():
    with pytest.raises(ConfigError, match=r"per_device_train_batch_size: x steps_per_generation \(6 x 1, the "
                                          r"completions of one generation round\) must be a multiple of num_generations"):
        GRPOOptions(trl={"per_device_train_batch_size": 6, "num_generations": 4})
    with pytest.raises(ConfigError, match=r"\(2 x 3, .*\) must be a multiple of num_generations \(4\)"):
        GRPOOptions(trl={"per_device_train_batch_size": 2, "steps_per_generation": 3, "num_generations": 4})
    # a micro-batch smaller than a prompt group, whole groups per generation round: TRL's rule, accepted
    assert GRPOOptions(trl={"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4,
                            "num_generations": 8}).setting("per_device_train_batch_size") == 2
    with pytest.raises(ConfigError, match="num_generations: must be >= 2"):
        GRPOOptions(trl={"num_generations": 1, "per_device_train_batch_size": 2})
    with pytest.raises(ConfigError, match="max_steps: must be >= 1"):
        SFTOptions(trl={"max_steps": 0})
    with pytest.raises(ConfigError, match="max_stepz: unknown key"):
        SFTOptions(trl={"max_stepz": 3})
