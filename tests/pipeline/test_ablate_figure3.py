"""`hatch-vlm ablate`'s Figure 3: GRPO's action and answer reward curves, HATCH against w/o PaStA, from each seed's
reward log; the smoothed across-seed mean worked out by hand."""
import json

import pytest

from hatch_vlm.actor.plot import CURVES, mean_curve
from hatch_vlm.pipeline import ablate


def test_mean_curve_at_common_steps_then_smoothed():
    a = ([1, 2, 3], [0.0, 0.5, 1.0])
    b = ([1, 2, 3, 4], [0.2, 0.5, 0.0, 0.9])            # step 4 is not logged by every run: left out
    steps, values = mean_curve([a, b], smooth=2)
    assert steps == [1, 2, 3]
    assert values == pytest.approx([0.1, 0.3, 0.5])      # means 0.1, 0.5, 0.5; trailing mean over 2 points
    assert mean_curve([], 3) == ([], [])


def _log(values):
    return [{"step": k + 1, CURVES["action"]: v, CURVES["answer"]: 1 - v} for k, v in enumerate(values)]


def _seed_dir(out, seed, chains, with_logs=True):
    stages = {}
    for name, chain in chains.items():
        for key, stage in chain:
            metrics = {}
            if stage == "grpo" and with_logs:
                path = out / f"seed{seed}" / "stages" / key / "work" / "reward_log.json"
                path.parent.mkdir(parents=True)
                path.write_text(json.dumps(_log([0.1 * seed, 0.2, 0.3 + len(name) / 100])))
                metrics["reward_log"] = str(path)
            if stage == "eval":
                metrics["summary"] = {"synthetic": {"Avg": 50.0}}
            stages[key] = {"done": True, "model_dir": None, "metrics": metrics}
    (out / f"seed{seed}").mkdir(parents=True, exist_ok=True)
    (out / f"seed{seed}" / "state.json").write_text(json.dumps({"stages": stages}))


def test_ablation_writes_figure3_from_the_grpo_logs_of_full_and_no_pasta(tmp_path):
    from hatch_vlm.pipeline.config import HatchConfig

    chains = ablate.plan(HatchConfig())
    for seed in (0, 1):
        _seed_dir(tmp_path, seed, chains)
    logs = ablate.reward_logs(tmp_path, chains, [0, 1])
    assert set(logs) == {"full", "no_pasta"} and set(logs["full"]) == {"seed 0", "seed 1"}
    assert logs["no_pasta"]["seed 1"][0][CURVES["action"]] == pytest.approx(0.1)
    ablate.write_ablation(tmp_path, chains, [0, 1])
    assert (tmp_path / "ablation_rewards.png").stat().st_size > 1000
    assert "![rewards](ablation_rewards.png)" in (tmp_path / "ablation.md").read_text()


def test_no_figure3_without_the_logs(tmp_path):
    from hatch_vlm.pipeline.config import HatchConfig

    chains = ablate.plan(HatchConfig())
    _seed_dir(tmp_path, 0, chains, with_logs=False)
    ablate.write_ablation(tmp_path, chains, [0])
    assert not (tmp_path / "ablation_rewards.png").exists()
    assert "ablation_rewards" not in (tmp_path / "ablation.md").read_text()
