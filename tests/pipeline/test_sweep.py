"""`hatch-vlm sweep`: shared stages run once per seed, a rerun runs nothing, the table's mean ± std worked out by
hand, and every refusal before anything runs."""
import json
import math

import pytest

from hatch_vlm.pipeline import runner, sweep
from hatch_vlm.pipeline.runner import StageResult
from hatch_vlm.utils.config import ConfigError

from tests.pipeline._tiny_recipe import TINY


def _fake_stages(monkeypatch, calls):
    """Stages that only record themselves; eval's Avg = 10 * grpo max_steps + the run's seed (by hand below)."""
    def make(name):
        def stage(run, model_dir, stage_dir):
            calls.append((run.out.name, stage_dir.name))
            if name != "eval":
                return StageResult(None, {})
            avg = 10.0 * run.cfg.grpo.setting("max_steps") + run.cfg.seed
            return StageResult(None, {"summary": {"synthetic": {"Avg": avg}}})
        return stage

    for name in list(runner.STAGE_FUNCS):
        monkeypatch.setitem(runner.STAGE_FUNCS, name, make(name))


@pytest.fixture
def raw(tmp_path):
    model = tmp_path / "model"          # stages are fakes: any directory stands for the model
    model.mkdir()
    return {**TINY, "model": str(model)}


def test_shared_stages_once_rerun_nothing_and_the_table(tmp_path, raw, monkeypatch):
    calls = []
    _fake_stages(monkeypatch, calls)
    setting = sweep.parse_set("grpo.max_steps=2,3")
    out = tmp_path / "sw"
    table = sweep.run_sweep(raw, setting, out, seeds=[0, 1], progress=lambda _m: None)
    for seed in ("seed0", "seed1"):
        keys = [k for s, k in calls if s == seed]
        # pasta, qa_sft and the cold start once (shared); GRPO and eval once per value
        assert keys == ["pasta", "pasta+qa_sft", "pasta+qa_sft+actor_sft",
                        "pasta+qa_sft+actor_sft+grpo@grpo.max_steps=2", "pasta+qa_sft+actor_sft+grpo+eval@grpo.max_steps=2",
                        "pasta+qa_sft+actor_sft+grpo@grpo.max_steps=3", "pasta+qa_sft+actor_sft+grpo+eval@grpo.max_steps=3"]
    # Avg per seed: max_steps 2 -> 20, 21; 3 -> 30, 31: means 20.5 / 30.5, sample std sqrt(0.5)
    assert table["grpo.max_steps=2"]["synthetic"]["mean"] == 20.5
    assert table["grpo.max_steps=3"]["synthetic"]["std"] == pytest.approx(math.sqrt(0.5))
    md = (out / "sweep.md").read_text()
    assert "| 2 | 20.5 ± 0.7 |" in md and "| 3 | 30.5 ± 0.7 |" in md
    assert "Stages shared by every value (each ran once per seed): pasta, pasta+qa_sft, pasta+qa_sft+actor_sft." in md
    assert (out / "sweep.png").stat().st_size > 1000
    saved = json.loads((out / "sweep_table.json").read_text())
    assert saved["values"] == [2, 3] and saved["shared"] == ["pasta", "pasta+qa_sft", "pasta+qa_sft+actor_sft"]

    calls.clear()
    assert sweep.run_sweep(raw, setting, out, seeds=[0, 1], progress=lambda _m: None) == table
    assert calls == []                                        # a rerun runs nothing
    with pytest.raises(ConfigError, match="holds a sweep of grpo.max_steps"):
        sweep.run_sweep(raw, sweep.parse_set("grpo.max_steps=2,4"), out, seeds=[0, 1])


def test_which_stages_a_key_touches(raw):
    from hatch_vlm.pipeline.config import STAGES

    stages = list(STAGES)
    assert sweep.first_touched(stages, "pasta.grid") == 0           # nothing shared: PaStA is the first stage
    assert sweep.first_touched(stages, "eval.limit") == 4
    assert sweep.first_touched(stages, "eval.max_new_tokens") == 2  # the cold start's held-out measure reads it
    assert sweep.first_touched(stages, "data.num_train") == 0
    with pytest.raises(ConfigError, match="touches no stage"):
        sweep.first_touched(["qa_sft", "eval"], "grpo.learning_rate")


def test_refusals_come_before_anything_runs(tmp_path, raw, monkeypatch):
    calls = []
    _fake_stages(monkeypatch, calls)
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=r"pasta\.gird: no such config key; did you mean 'pasta\.grid'"):
        sweep.run_sweep(raw, sweep.parse_set("pasta.gird=2,4"), out)
    with pytest.raises(ConfigError, match=r"--set pasta\.grid=0: config\.pasta"):
        sweep.run_sweep(raw, sweep.parse_set("pasta.grid=4,0"), out)        # the second value fails the checks
    with pytest.raises(ConfigError, match="use --seeds"):
        sweep.run_sweep(raw, sweep.parse_set("grpo.seed=1,2"), out)
    with pytest.raises(ConfigError, match="changes the initial model"):
        sweep.run_sweep(raw, sweep.parse_set("model.max_pixels=1000,2000"), out)
    for bad in ("pasta.grid", "pasta.grid=4", "pasta.grid=4,4", "=1,2"):
        with pytest.raises(ConfigError, match="--set"):
            sweep.parse_set(bad)
    assert calls == [] and not out.exists()
    assert sweep.parse_set("grpo.learning_rate=1e-5,3.0e-5").values == (1e-5, 3e-5)


def test_cli_sweep_help_and_a_bad_key(capsys):
    from hatch_vlm.cli import main

    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    assert "--set" in capsys.readouterr().out
    assert main(["sweep", "--set", "pasta.gird=2,4", "--out", "/nonexistent/never"]) == 2
    assert "did you mean 'pasta.grid'" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_model_sweep_shares_stages(tmp_path, monkeypatch):
    """The real stages on the tiny model: the cold start and before run once, GRPO and eval per value."""
    calls = []
    for name, fn in list(runner.STAGE_FUNCS.items()):
        def wrapped(run, model_dir, stage_dir, fn=fn):
            calls.append(stage_dir.name)
            return fn(run, model_dir, stage_dir)

        monkeypatch.setitem(runner.STAGE_FUNCS, name, wrapped)
    out = tmp_path / "sw"
    sweep.run_sweep(TINY, sweep.parse_set("grpo.learning_rate=1e-5,1e-4"), out, seeds=[0])
    assert len(calls) == len(set(calls)) == 3 + 2 * 2
    assert calls[:3] == ["pasta", "pasta+qa_sft", "pasta+qa_sft+actor_sft"]
    assert (out / "sweep.md").exists() and (out / "sweep.png").exists()
    calls.clear()
    sweep.run_sweep(TINY, sweep.parse_set("grpo.learning_rate=1e-5,1e-4"), out, seeds=[0])
    assert calls == []
