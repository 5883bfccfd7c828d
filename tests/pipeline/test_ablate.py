"""`hatch-vlm ablate`: each shared stage runs once, a rerun runs nothing, the table's mean ± std."""
import json
import math

import pytest

from hatch_vlm.pipeline import ablate, runner
from hatch_vlm.utils.config import ConfigError

from tests.pipeline._tiny_recipe import TINY


@pytest.fixture
def counted(monkeypatch):
    """Every stage call, as (stage key, stage): the key is the stage's directory name."""
    calls = []
    for name, fn in list(runner.STAGE_FUNCS.items()):
        def wrapped(run, model_dir, stage_dir, fn=fn, name=name):
            calls.append((stage_dir.name, name, run.cfg.eval.actor))
            return fn(run, model_dir, stage_dir)

        monkeypatch.setitem(runner.STAGE_FUNCS, name, wrapped)
    return calls


@pytest.mark.slow
def test_shared_stages_run_once_and_a_rerun_runs_nothing(tmp_path, counted):
    out = tmp_path / "abl"
    table = ablate.run_ablation(TINY, out, seeds=[3])
    keys = [k for k, _, _ in counted]
    assert len(keys) == len(set(keys)), f"a stage ran twice: {keys}"
    # 7 distinct training prefixes + one evaluation per variant (10 + 4 without sharing)
    assert sorted(keys) == sorted([
        "pasta", "pasta+qa_sft", "pasta+qa_sft+actor_sft", "pasta+qa_sft+actor_sft+grpo",
        "pasta+qa_sft+actor_sft+grpo+eval", "pasta+qa_sft+eval",
        "qa_sft", "qa_sft+actor_sft", "qa_sft+actor_sft+grpo", "qa_sft+actor_sft+grpo+eval", "qa_sft+eval"])
    # the variants without ActoR are evaluated with plain QA prompts
    actor_eval = {k: actor for k, stage, actor in counted if stage == "eval"}
    assert actor_eval == {"pasta+qa_sft+actor_sft+grpo+eval": True, "qa_sft+actor_sft+grpo+eval": True,
                          "pasta+qa_sft+eval": False, "qa_sft+eval": False}
    seed_cfg = json.loads((out / "seed3" / "config.json").read_text())
    assert seed_cfg["seed"] == 3 and seed_cfg["pasta"]["seed"] == 3 and seed_cfg["grpo"]["trl"]["seed"] == 3
    assert set(table) == {"full", "no_pasta", "no_actor", "qa_only"}
    assert all(0 <= table[v]["synthetic"]["mean"] <= 100 for v in table)
    md = (out / "ablation.md").read_text()
    for title in ("HATCH (full)", "w/o PaStA", "w/o ActoR", "QA fine-tuning only"):
        assert title in md
    assert "| 53.6 |" in md and "| 51.5 |" in md           # the paper's SPAR-Bench-MV averages beside ours
    assert "pasta+qa_sft" in md                            # named as shared
    assert (out / "ablation.png").stat().st_size > 1000
    assert (out / "ablation_rewards.png").stat().st_size > 1000      # Figure 3: full against w/o PaStA

    counted.clear()
    again = ablate.run_ablation(TINY, out, seeds=[3])
    assert counted == [] and again == table
    with pytest.raises(ConfigError, match="other variants or seeds"):
        ablate.run_ablation(TINY, out, seeds=[3, 4])


def _state(path, summaries: dict):
    path.mkdir(parents=True)
    stages = {key: {"done": True, "model_dir": None, "metrics": {"summary": s}} for key, s in summaries.items()}
    (path / "state.json").write_text(json.dumps({"stages": stages}))


def test_table_mean_and_sample_std_over_seeds(tmp_path):
    chains = {"full": ablate.stage_keys(["qa_sft", "grpo", "eval"]), "qa_only": ablate.stage_keys(["qa_sft", "eval"])}
    _state(tmp_path / "seed0", {"qa_sft+grpo+eval": {"spar-mv": {"Avg": 40.0}, "mmsi": {"Avg": 20.0}},
                                "qa_sft+eval": {"spar-mv": {"Avg": 30.0}, "mmsi": {"Avg": 10.0}}})
    _state(tmp_path / "seed1", {"qa_sft+grpo+eval": {"spar-mv": {"Avg": 50.0}, "mmsi": {"Avg": 20.0}},
                                "qa_sft+eval": {"spar-mv": {"Avg": 30.0}, "mmsi": {"Avg": float("nan")}}})
    table = ablate.write_ablation(tmp_path, chains, [0, 1])
    assert table["full"]["spar-mv"]["mean"] == 45.0
    assert table["full"]["spar-mv"]["std"] == pytest.approx(math.sqrt(50.0))      # sample std of 40, 50
    assert table["full"]["mmsi"]["std"] == 0.0
    # a score that is not a number (no question counted) is left out, not averaged in
    assert table["qa_only"]["mmsi"] == {"mean": 10.0, "std": None, "n_seeds": 1, "per_seed": [10.0, None]}
    md = (tmp_path / "ablation.md").read_text()
    assert "| 45.0 ± 7.1 |" in md and "qa_sft" in md
    assert json.loads((tmp_path / "ablation_table.json").read_text())["chains"]["full"][-1] == "qa_sft+grpo+eval"


def test_plan_refuses_a_config_without_eval_or_qa_and_drops_duplicates():
    from hatch_vlm.pipeline.config import HatchConfig

    with pytest.raises(ConfigError, match="must include eval"):
        ablate.plan(HatchConfig(stages=["pasta", "qa_sft"]))
    with pytest.raises(ConfigError, match="include qa_sft"):
        ablate.plan(HatchConfig(stages=["pasta", "eval"]))
    # without ActoR stages, w/o ActoR = full and QA only = w/o PaStA: each computed once
    assert list(ablate.plan(HatchConfig(stages=["pasta", "qa_sft", "eval"]))) == ["full", "no_pasta"]


def test_cli_ablate_help_and_bad_seeds(capsys):
    from hatch_vlm.cli import main

    with pytest.raises(SystemExit):
        main(["ablate", "--help"])
    assert "--seeds" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="given twice"):
        ablate.run_ablation(TINY, "/nonexistent/never", seeds=[1, 1])
