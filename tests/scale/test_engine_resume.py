"""Checkpoints save and resume under each sharded engine (DeepSpeed ZeRO-2, ZeRO-3, FSDP2 on CPU), at the
pipeline level: `hatch-vlm train` under `accelerate launch --config_file configs/accelerate/cpu_2proc_<engine>.yaml`
(2 CPU processes, gloo) with the PaStA, QA SFT and GRPO stages (GRPO with the PaStA term, so that it trains
the tiny model although it never earns a reward; ZeRO-2: QA SFT only), 4 steps each, a checkpoint every 2.

An uninterrupted launch runs first. Its run directory is then put back to what a launch stopped right after
each stage's checkpoint-2 leaves behind (later checkpoints, the stage models and the stages' entries in
state.json removed, the step logs cut after step 2; a real kill under DDP: test_ddp_pipeline.py), and the same
command runs again: every stage resumes from its checkpoint-2, trains steps 3 and 4 exactly once each (counted
in the stage's log), and ends with the weights of the uninterrupted launch (TOLERANCE). Both launches are
checked for one writer: every worker but global rank 0 runs with umask 077 (tests/scale/rank_umask), so a
file it creates has mode 0600; the only such files allowed are each rank's own part of a checkpoint (its RNG
state, DeepSpeed's per-rank optimizer / parameter shards)."""
import json
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from scale_launch import ROOT, accelerate_2proc, launch_env, needs_gloo, skip_without_deepspeed

pytestmark = [pytest.mark.slow, needs_gloo]
# the stages each engine runs: ZeRO-2 saves and loads through the same DeepSpeed checkpoint code as ZeRO-3 (which
# shards more), so it runs one stage only (a launch costs ~12 s of start-up here: CI time)
ENGINES = {"zero2": ("qa_sft",), "zero3": ("pasta", "qa_sft", "grpo"), "fsdp": ("pasta", "qa_sft", "grpo")}
STEPS, CKPT = 4, 2
# resumed vs uninterrupted, same engine, same 2 processes: the same arithmetic in the same order, so equal but
# for what a reload in float32 may round (measured: see docs/multi_gpu.md)
TOLERANCE = 1e-6
TRAIN = {"max_steps": STEPS, "per_device_train_batch_size": 2, "save_steps": CKPT, "logging_steps": 1}
CONFIG = {
    "model": "tiny", "threads": 1,
    "data": {"num_train": 8, "num_eval": 2, "size": 56},
    "pasta": {**TRAIN, "plot": False, "evaluate_before": False},
    "qa_sft": dict(TRAIN),
    "grpo": {**TRAIN, "num_generations": 2, "max_completion_length": 8, "plot": False, "pasta_weight": 1.0},
    "eval": {"max_new_tokens": 8},          # GRPO's held-out rewards at the end
}
# files a rank other than 0 writes by design: its own share of a checkpoint
PER_RANK = ("rng_state_", "zero_pp_rank_")


def _launch(cfg: Path, engine: str) -> subprocess.CompletedProcess:
    env = launch_env()
    env["PYTHONPATH"] = f"{ROOT / 'tests' / 'scale' / 'rank_umask'}:{env['PYTHONPATH']}"
    env["TORCH_EXTENSIONS_DIR"] = str(ROOT / "build" / "torch_extensions")
    config = ROOT / "configs" / "accelerate" / f"cpu_2proc_{engine}.yaml"
    r = subprocess.run(accelerate_2proc("-m", "hatch_vlm.cli", "train", "--config", str(cfg), config=config),
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    return r


def _not_rank0(out: Path) -> list[str]:
    """Files under `out` created by a rank other than 0 (mode 0600 under its umask 077) that are not its own
    share of a checkpoint."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                  and not stat.S_IMODE(p.stat().st_mode) & 0o077 and not p.name.startswith(PER_RANK))


def _steps(log: Path) -> list[int]:
    """The training steps a stage logged (logging_steps 1: one line per step, the summary line left out)."""
    return [d["step"] for d in map(json.loads, log.read_text().splitlines()) if "loss" in d]


def _final_weights(out: Path, stages) -> dict[str, dict[str, torch.Tensor]]:
    return {s: load_file(out / "stages" / s / "model" / "model.safetensors") for s in stages}


def _back_to_checkpoint(out: Path, stages) -> None:
    """The run directory as a launch stopped right after every stage's checkpoint-CKPT leaves it."""
    for s in stages:
        d = out / "stages" / s
        shutil.rmtree(d / "model")
        for p in (d / "work").iterdir():
            if p.name.startswith("checkpoint-") and int(p.name.split("-")[1]) > CKPT:
                shutil.rmtree(p)
        for leftover in ("final", "metrics.json", "log_history.json"):        # the PaStA stage's end
            p = d / "work" / leftover
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        log = d / "log.jsonl"
        log.write_text("".join(line + "\n" for line in log.read_text().splitlines()
                               if json.loads(line)["step"] <= CKPT and "train_runtime" not in line))
    state = json.loads((out / "state.json").read_text())
    (out / "state.json").write_text(json.dumps({"stages": {}, **{k: v for k, v in state.items()
                                                                 if k not in ("stages", "final_model")}}))


@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_stopped_launch_resumes_to_the_same_weights(engine, tmp_path):
    skip_without_deepspeed(engine)
    out = tmp_path / "run"
    cfg = tmp_path / "run.yaml"
    stages = ENGINES[engine]
    cfg.write_text(yaml.safe_dump({**CONFIG, "stages": list(stages), "output_dir": str(out)}))
    t0 = time.time()
    first = _launch(cfg, engine)
    t1 = time.time()
    assert _not_rank0(out) == []
    assert all(_steps(out / "stages" / s / "log.jsonl") == [1, 2, 3, 4] for s in stages)
    straight = _final_weights(out, stages)
    start = load_file(out / "model_init" / "model.safetensors")
    ckpt = {s: load_file(out / "stages" / s / "work" / f"checkpoint-{CKPT}" / "model.safetensors") for s in stages}

    _back_to_checkpoint(out, stages)
    again = _launch(cfg, engine)
    t2 = time.time()
    for s in stages:
        assert f"{s}: resuming from {out / 'stages' / s / 'work' / f'checkpoint-{CKPT}'}" in again.stdout
        # nothing lost, nothing repeated: steps 1-2 from the first launch, 3-4 once from the second
        assert _steps(out / "stages" / s / "log.jsonl") == [1, 2, 3, 4], s
    state = json.loads((out / "state.json").read_text())
    assert [state["stages"][s]["metrics"]["steps"] for s in stages] == [STEPS] * len(stages)
    assert _not_rank0(out) == []
    head = f"[1/{len(stages)}] {stages[0]}: running"
    assert first.stdout.count(head) == again.stdout.count(head) == 1           # rank 0 alone reports

    resumed = _final_weights(out, stages)
    report = []
    for s in stages:
        trained = [k for k in straight[s] if (straight[s][k] - ckpt[s][k]).abs().max().item() > 0]
        assert trained, f"{s}: nothing changed after the checkpoint"
        moved = max((straight[s][k] - start[k]).abs().max().item() for k in start)
        diff = max((resumed[s][k] - straight[s][k]).abs().max().item() for k in straight[s])
        report.append(f"{s} {diff:.1e} (moved {moved:.1e})")
        assert resumed[s].keys() == straight[s].keys()
        assert diff <= TOLERANCE, (s, diff)
    print(f"{engine}: resumed vs uninterrupted, max weight difference {', '.join(report)}; "
          f"launches {t1 - t0:.0f} s + {t2 - t1:.0f} s")
    if engine == "zero2":
        # the same run stopped again, resumed by one process without DeepSpeed: the Trainer would go on with a
        # fresh optimizer state without a word; hatch refuses before the stage trains
        _back_to_checkpoint(out, stages)
        r = subprocess.run([sys.executable, "-m", "hatch_vlm.cli", "train", "--config", str(cfg)], env=launch_env(),
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
        ckpt_dir = out / "stages" / "qa_sft" / "work" / f"checkpoint-{CKPT}"
        assert (f"qa_sft: {ckpt_dir} was written under DeepSpeed ZeRO-1/2 on 2 processes and this launch runs "
                "DDP: its optimizer state would not be restored") in r.stderr
        assert "qa_sft" not in json.loads((out / "state.json").read_text())["stages"]


def _fake_checkpoint(path: Path, *files: str) -> Path:
    for f in ("trainer_state.json", "model.safetensors", *files):
        (path / f).parent.mkdir(parents=True, exist_ok=True)
        (path / f).write_text("{}")
    return path


@pytest.mark.parametrize("files, written", [
    (("optimizer.pt", "rng_state.pth"), ("DDP", 1)),
    (("optimizer.pt", "rng_state_0.pth", "rng_state_1.pth"), ("DDP", 2)),
    (("optimizer.bin", "pytorch_model_fsdp.bin", "rng_state_0.pth", "rng_state_1.pth"), ("FSDP", 2)),
    (("global_step2/mp_rank_00_model_states.pt", "global_step2/zero_pp_rank_0_mp_rank_00_optim_states.pt",
      "global_step2/zero_pp_rank_1_mp_rank_00_optim_states.pt"), ("DeepSpeed ZeRO-1/2", 2)),
    (tuple(f"global_step2/zero_pp_rank_{r}_mp_rank_00_{k}_states.pt" for r in (0, 1) for k in ("model", "optim")),
     ("DeepSpeed ZeRO-3", 2)),
])
def test_a_checkpoint_resumes_only_under_the_engine_that_wrote_it(files, written, tmp_path):
    """The files each engine wrote in the launches above say which engine and how many processes; resuming
    under another engine, or DeepSpeed's per-rank shards on another number of processes, is refused."""
    from hatch_vlm.utils.checkpoints import check_resumable, checkpoint_engine, launched_engine
    from hatch_vlm.utils.config import ConfigError

    ckpt = _fake_checkpoint(tmp_path / "checkpoint-2", *files)
    assert checkpoint_engine(ckpt) == written
    engine, procs = written
    launched = {"DDP": {}, "FSDP": {"ACCELERATE_USE_FSDP": "true"},
                "DeepSpeed ZeRO-1/2": {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"},
                "DeepSpeed ZeRO-3": {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}}
    for other, env in launched.items():
        if other == engine:
            check_resumable(ckpt, launched_engine(env), procs, "qa_sft")
            if engine.startswith("DeepSpeed"):
                with pytest.raises(ConfigError, match=f"on {procs} processes .one optimizer shard per rank. and "
                                                      "this launch has 4"):
                    check_resumable(ckpt, launched_engine(env), 4, "qa_sft")
            else:
                check_resumable(ckpt, launched_engine(env), 4, "qa_sft")        # full state dicts: any count
        else:
            with pytest.raises(ConfigError, match=f"was written under {engine}.* and this launch runs "
                                                  f"{launched_engine(env)}: its optimizer state would not"):
                check_resumable(ckpt, launched_engine(env), procs, "qa_sft")
