"""The HATCH pipeline end to end: the shortened demo's report, resuming after kill -9, bad configs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from hatch_vlm.pipeline.config import load_config
from hatch_vlm.utils.config import ConfigError

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}

SMALL = {
    "model": "tiny",
    "data": {"num_train": 6, "num_eval": 3, "size": 56, "actor_fraction": 1.0},
    "pasta": {"max_steps": 2, "per_device_train_batch_size": 3, "plot": False},
    "qa_sft": {"max_steps": 30, "per_device_train_batch_size": 2, "save_steps": 1, "save_total_limit": 2},
    "actor_sft": {"max_steps": 2, "per_device_train_batch_size": 2},
    "grpo": {"max_steps": 2, "per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 8,
             "plot": False},
    "eval": {"max_new_tokens": 8},
}


def _write(tmp_path, **changes) -> Path:
    cfg = json.loads(json.dumps(SMALL))
    cfg.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_demo_quick_report(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "hatch_vlm.cli", "demo", "--quick", "--out", str(out)],
                          env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the console (not a terminal here): the runner's lines only, no Trainer dict, no progress bar
    # (pipeline/console.py); the full demo prints the same lines, ~60 at most
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) <= 60, "\n".join(lines)
    stray = [x for x in lines if not x.startswith(("[", "GRPO seed", "hatch-vlm demo: "))]
    assert not stray, "\n".join(stray)
    for stage in ("pasta", "qa_sft", "actor_sft", "grpo", "grpo_seed1"):
        logged = [json.loads(x) for x in (out / "stages" / stage / "log.jsonl").read_text().splitlines()]
        assert logged and all("step" in e for e in logged), stage
    report = json.loads((out / "report" / "report.json").read_text())
    stages = report["state"]["stages"]
    # GRPO is repeated from the same cold start with a second seed; both measure held-out rewards
    assert set(stages) == {"pasta", "qa_sft", "actor_sft", "grpo", "eval", "grpo_seed1"}
    for name in ("actor_sft", "grpo", "grpo_seed1"):
        assert 0 <= stages[name]["metrics"]["held_out_format"] <= 1
    assert stages["grpo_seed1"]["model_dir"] != stages["grpo"]["model_dir"]
    pasta = stages["pasta"]["metrics"]
    assert 0 <= pasta["before_top1"] <= 1 and 0 <= pasta["after_top1"] <= 1
    assert pasta["chance_top1"] == pytest.approx(1 / 16)   # n = 4: 16 cells per view
    assert pasta["llm_unchanged"] is True
    summary = stages["eval"]["metrics"]["summary"]
    for bench in ("synthetic", "spar-mv", "mindcube", "mmsi"):
        assert summary[bench]["n"] >= 1 and 0 <= summary[bench]["Avg"] <= 100
    assert "Overall" in summary                            # all three benchmark formats were scored
    md = (out / "report" / "report.md").read_text()
    assert "HATCH 3B (paper)" in md and "## PaStA" in md and "## GRPO" in md
    assert "laid out like the paper's Table 4" in md and "SPAR-Bench-SI Avg (question-weighted" in md
    assert "| GRPO seed 1 |" in md and "held-out action after GRPO over 2 seed(s)" in md
    assert (out / "report" / "grpo_rewards.png").stat().st_size > 1000
    assert (out / "report" / "pasta_matches.png").stat().st_size > 1000
    # `hatch-vlm eval` on the final model and two benchmark files written by the demo.
    model = out / "stages" / "grpo" / "model"
    ev = subprocess.run([sys.executable, "-m", "hatch_vlm.cli", "eval", "--model", str(model), "--actor",
                         "--benchmark", "mmsi", "--data", str(out / "benchmarks" / "mmsi" / "MMSI_bench.parquet"),
                         "--benchmark", "mindcube", "--data",
                         str(out / "benchmarks" / "mindcube" / "raw" / "MindCube_tinybench.jsonl"),
                         "--limit", "3", "--max-new-tokens", "8", "--out", str(tmp_path / "ev")],
                        env=ENV, capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stderr[-3000:]
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["summary"]["mmsi"]["n"] == 3 and results["summary"]["mindcube"]["n"] <= 3
    assert "Overall" not in results["summary"]                # only two of the three benchmarks
    assert all(r["answer_type"] == "mc" for r in results["records"] if r["benchmark"] == "mmsi")
    md = (tmp_path / "ev" / "results.md").read_text()
    assert "MMSI-Bench Avg" in md and "MindCube-Tiny Avg" in md and "HATCH 3B (paper)" in md
    # Every stage's model is stored as safetensors, nothing as a pickle.
    for stage in ("pasta", "qa_sft", "actor_sft", "grpo"):
        files = {p.suffix for p in (out / "stages" / stage / "model").iterdir()}
        assert ".safetensors" in files and ".bin" not in files and ".pt" not in files


@pytest.mark.slow
def test_resume_after_kill_mid_stage(tmp_path):
    out = tmp_path / "run"
    cfg = _write(tmp_path, output_dir=str(out), stages=["pasta", "qa_sft"])
    cmd = [sys.executable, "-m", "hatch_vlm.cli", "train", "--config", str(cfg)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Kill -9 once qa_sft has written a checkpoint (it runs 30 steps, saving every step).
    work = out / "stages" / "qa_sft" / "work"
    deadline = time.time() + 600
    while time.time() < deadline and not list(work.glob("checkpoint-*")):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((out / "state.json").read_text())
    assert state["stages"]["pasta"]["done"] and "qa_sft" not in state["stages"]
    pasta_model = out / "stages" / "pasta" / "model" / "model.safetensors"
    mtime = pasta_model.stat().st_mtime_ns

    # The very same command again: pasta is skipped, qa_sft continues from its last checkpoint.
    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=1200)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "pasta: done in an earlier run, skipped" in rerun.stdout
    assert "qa_sft: resuming from" in rerun.stdout
    state = json.loads((out / "state.json").read_text())
    assert state["stages"]["qa_sft"]["done"] and state["stages"]["qa_sft"]["metrics"]["steps"] == 30
    assert pasta_model.stat().st_mtime_ns == mtime          # the finished stage was not redone

    # The resumed run ends with exactly the weights of a run that was never interrupted.
    from safetensors.torch import load_file

    ref_out = tmp_path / "uninterrupted"
    ref_cfg = _write(tmp_path, output_dir=str(ref_out), stages=["pasta", "qa_sft"])
    ref = subprocess.run([sys.executable, "-m", "hatch_vlm.cli", "train", "--config", str(ref_cfg)],
                         env=ENV, capture_output=True, text=True, timeout=1200)
    assert ref.returncode == 0, ref.stderr[-3000:]
    resumed = load_file(out / "stages" / "qa_sft" / "model" / "model.safetensors")
    straight = load_file(ref_out / "stages" / "qa_sft" / "model" / "model.safetensors")
    assert resumed.keys() == straight.keys()
    for k in straight:
        assert torch.equal(resumed[k], straight[k]), k


@pytest.mark.parametrize("change, message", [
    ({"stages": ["pasta", "dance"]}, r"stages: unknown stage\(s\) \['dance'\]"),
    ({"stages": ["grpo", "pasta"]}, r"stages: must follow the recipe's order"),
    ({"colour": "red"}, r"config: unknown key 'colour'"),
    ({"pasta": {"learning_rat": 1e-3}}, r"pasta: unknown key 'learning_rat'"),
    ({"grpo": {"num_generations": 1}}, r"config.grpo.num_generations: must be >= 2"),
    ({"actor_sft": {"optim": 7}}, r"config.actor_sft.optim: expected OptimizerNames or str, got 7"),    # a TRL field
    ({"data": {"kind": "spar", "path": "/no/such/dir"}}, r"data.path: no such directory: /no/such/dir"),
    ({"data": {"views": 9}}, r"data.views: must be 2, 3 or 4, got 9"),
    ({"data": {"num_train": "many"}}, r"config.data.num_train: expected an integer, got 'many'"),
    ({"model": "/no/model/here"}, r"model: '/no/model/here' is neither 'tiny' nor a local model directory"),
    ({"eval": {"benchmarks": [{"name": "mmsi", "path": "/no/mmsi.parquet"}]}},
     r"eval.benchmarks\[mmsi\].path: not found"),
    ({"eval": {"benchmarks": [{"name": "imagenet", "path": "."}]}}, r"must be one of"),
])
def test_bad_configs_fail_at_start(tmp_path, change, message):
    path = _write(tmp_path, output_dir=str(tmp_path / "out"), **change)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    # Through the CLI: one clear line on stderr, exit code 2, nothing run.
    proc = subprocess.run([sys.executable, "-m", "hatch_vlm.cli", "train", "--config", str(path)],
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("hatch-vlm train: bad config:") and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    ({"grpo": {"per_device_train_batch_size": 3}},
     r"config.grpo.per_device_train_batch_size: x steps_per_generation \(3 x 1, the completions of one "
     r"generation round\) must be a multiple of num_generations \(4\)"),
    ({"qa_sft": {"max_stepz": 3}}, r"config.qa_sft.max_stepz: unknown key, neither one of ours \(freeze, lora\) nor a "
                                   r"field of trl.SFTConfig; did you mean 'max_steps'"),
    ({"qa_sft": {"learning_rate": "fast"}}, r"config.qa_sft.learning_rate: expected a number, got 'fast'"),
    ({"qa_sft": {"output_dir": "/tmp/x"}}, r"config.qa_sft.output_dir: set by the stage itself"),
    ({"grpo": {"reward_weights": [1, 1, 1]}}, r"config.grpo.reward_weights: set by the stage itself "
                                              r"\(lambda_act, lambda_ans, lambda_fmt\)"),
    ({"grpo": {"pasta_weight": -1.0}}, r"config.grpo.pasta_weight: must be a finite number >= 0"),
    # one name per concept (TRL's): the names of earlier versions say what replaced them
    ({"qa_sft": {"batch_size": 2}}, r"config.qa_sft.batch_size: renamed to per_device_train_batch_size"),
    ({"grpo": {"aux_weight": 0.5}}, r"config.grpo.aux_weight: renamed to pasta_weight"),
    ({"actor_sft": {"extra": {"optim": "sgd"}}}, r"config.actor_sft.extra: removed: write any TRL config field"),
    ({"qa_sft": {"gradient_checkpointing": False}}, r"config.qa_sft.gradient_checkpointing: transformers' "
                                                    r"deprecated name: use activation_checkpointing"),
    ({"pasta": {"grad_accum": 2}}, r"config.pasta.grad_accum: renamed to gradient_accumulation_steps"),
    ({"pasta": {"batch_size": 2}}, r"config.pasta.batch_size: renamed to per_device_train_batch_size"),
    ({"pasta": {"gradient_accumulation_steps": 0}}, r"config.pasta.gradient_accumulation_steps: must be positive"),
    ({"pasta": {"tune": "half"}}, r"config.pasta.tune: must be 'full' or 'lora'"),
])
def test_bad_stage_options_name_the_key(tmp_path, change, message):
    # load_config only: test_bad_configs_fail_at_start shows the CLI turns any ConfigError into one line
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, output_dir=str(tmp_path / "out"), **change))


def test_stage_sections_take_any_trl_field(tmp_path):
    """Stage sections are typed (parsed once); SFT / GRPO sections take any field of TRL's config, by its own
    name, into the TRL config the stage builds."""
    from hatch_vlm.actor.grpo import GRPOOptions
    from hatch_vlm.actor.sft import SFTOptions
    from hatch_vlm.pipeline.config import PastaSection

    path = _write(tmp_path, output_dir=str(tmp_path / "out"),
                  qa_sft={"max_steps": 4, "optim": "sgd", "max_grad_norm": 0.5, "gradient_accumulation_steps": 2,
                          "activation_checkpointing": False, "lora": {"r": 4}},
                  grpo={"num_generations": 2, "per_device_train_batch_size": 4, "loss_type": "grpo",
                        "pasta_weight": 0.1},
                  pasta={"gradient_accumulation_steps": 3, "per_device_train_batch_size": 2})
    cfg = load_config(path)
    assert isinstance(cfg.qa_sft, SFTOptions) and isinstance(cfg.grpo, GRPOOptions)
    assert isinstance(cfg.pasta, PastaSection)
    assert cfg.qa_sft.lora == {"r": 4} and cfg.qa_sft.trl["optim"] == "sgd"
    args = cfg.qa_sft.trl_config(output_dir=str(tmp_path / "o"), max_length=None)
    assert (args.optim, args.max_grad_norm, args.gradient_accumulation_steps, args.max_steps) == ("sgd", 0.5, 2, 4)
    assert args.activation_checkpointing is False and args.gradient_checkpointing is False
    # our defaults where the section is silent (pinned, not TRL's)
    assert (args.seed, args.lr_scheduler_type.value, args.per_device_train_batch_size) == (0, "cosine", 8)
    assert cfg.grpo.pasta_weight == 0.1 and cfg.grpo.setting("loss_type") == "grpo"
    assert cfg.grpo.trl_config(output_dir=str(tmp_path / "o")).num_generations == 2
    pasta = cfg.pasta.to_pasta_config(model_dir="m", output_dir="o")
    assert (pasta.gradient_accumulation_steps, pasta.per_device_train_batch_size) == (3, 2)
    # the same options from Python, and the same checks
    assert SFTOptions(trl={"max_steps": 4}).setting("max_steps") == 4
    with pytest.raises(ConfigError, match="max_steps: must be >= 1, got 0"):
        SFTOptions(trl={"max_steps": 0})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
