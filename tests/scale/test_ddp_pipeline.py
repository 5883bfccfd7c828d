"""`hatch-vlm train` under `accelerate launch` with 2 CPU processes (gloo): every stage runs, only rank 0
writes the run directory, evaluation is split across the ranks; when one process dies mid-stage the launch
stops, and the next launch skips the finished stages and resumes the interrupted one from its last
checkpoint, ending with the weights of a launch that was never interrupted."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from scale_launch import ROOT, accelerate_2proc, launch_env, needs_gloo

pytestmark = [pytest.mark.slow, needs_gloo]

CONFIG = {
    "model": "tiny", "threads": 1,
    "data": {"num_train": 8, "num_eval": 5, "size": 56, "actor_fraction": 1.0},
    "pasta": {"max_steps": 4, "per_device_train_batch_size": 2, "plot": False},
    # long enough to be killed in the middle; a checkpoint every 2 steps
    "qa_sft": {"max_steps": 40, "per_device_train_batch_size": 2, "save_steps": 2, "save_total_limit": 2},
    "actor_sft": {"max_steps": 2, "per_device_train_batch_size": 2},
    "grpo": {"max_steps": 2, "per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 8,
             "plot": False},
    "eval": {"max_new_tokens": 8},
}
CONFIG_STAGES = ("pasta", "qa_sft", "actor_sft", "grpo", "eval")


def _config(tmp_path: Path, name: str) -> tuple[Path, Path]:
    out = tmp_path / name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "output_dir": str(out)}))
    return path, out


def _train_cmd(cfg: Path) -> list[str]:
    return accelerate_2proc("-m", "hatch_vlm.cli", "train", "--config", str(cfg))


def _workers(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of the worker processes that torchrun (inside `accelerate launch`) started."""
    found = {}
    for pid in map(int, Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()):
        env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes().decode(
            errors="replace").split("\0") if "=" in kv)
        if "RANK" in env:
            found[int(env["RANK"])] = pid
    return found


def _weights(out: Path, stage: str) -> dict[str, torch.Tensor]:
    return load_file(out / "stages" / stage / "model" / "model.safetensors")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 2-process launch of every stage."""
    tmp = tmp_path_factory.mktemp("ddp_pipeline")
    cfg, out = _config(tmp, "straight")
    r = subprocess.run(_train_cmd(cfg), env=launch_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    return out, r.stdout


def test_every_stage_runs_on_two_processes(straight):
    out, stdout = straight
    assert "2 processes: every rank trains" in stdout
    state = json.loads((out / "state.json").read_text())
    assert all(state["stages"][s]["done"] for s in CONFIG_STAGES)
    assert state["stages"]["qa_sft"]["metrics"]["steps"] == 40
    assert state["stages"]["pasta"]["metrics"]["llm_unchanged"] is True
    # every held-out question answered exactly once, split across the ranks and gathered in order
    records = json.loads((out / "stages" / "eval" / "results.json").read_text())["records"]
    assert [r["id"] for r in records] == [f"synth_s0_{k:06d}" for k in range(8, 13)]
    # rank 0 alone wrote: each progress line once, no leftover temporary directories
    assert stdout.count("[1/5] pasta: running") == 1
    assert not [p for p in out.rglob("*.partial")]


def test_a_dead_process_leaves_a_checkpoint_the_next_launch_resumes(straight, tmp_path):
    cfg, out = _config(tmp_path, "killed")
    proc = subprocess.Popen(_train_cmd(cfg), env=launch_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        work = out / "stages" / "qa_sft" / "work"
        deadline = time.time() + 300
        while time.time() < deadline and not (work / "checkpoint-4" / "trainer_state.json").exists():
            assert proc.poll() is None, proc.stdout.read()[-4000:]
            time.sleep(0.1)
        workers = _workers(proc.pid)
        assert sorted(workers) == [0, 1], workers
        os.kill(workers[1], signal.SIGKILL)                 # one process dies mid-stage ...
        log = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, log[-3000:]                # ... and the launch stops
    state = json.loads((out / "state.json").read_text())
    assert state["stages"]["pasta"]["done"] and "qa_sft" not in state["stages"]
    pasta_mtime = (out / "stages" / "pasta" / "model" / "model.safetensors").stat().st_mtime_ns

    rerun = subprocess.run(_train_cmd(cfg), env=launch_env(), cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-6000:]
    assert "pasta: done in an earlier run, skipped" in rerun.stdout
    assert "qa_sft: resuming from" in rerun.stdout
    state = json.loads((out / "state.json").read_text())
    assert all(state["stages"][s]["done"] for s in CONFIG_STAGES)
    assert (out / "stages" / "pasta" / "model" / "model.safetensors").stat().st_mtime_ns == pasta_mtime
    # the resumed stage ends where the uninterrupted launch ended
    straight_out, _ = straight
    for stage in ("qa_sft", "grpo"):
        resumed, ref = _weights(out, stage), _weights(straight_out, stage)
        assert resumed.keys() == ref.keys()
        for k in ref:
            torch.testing.assert_close(resumed[k], ref[k], atol=1e-6, rtol=0,
                                       msg=lambda m, k=k, stage=stage: f"{stage} {k}: {m}")



def test_a_config_error_on_rank_0_stops_every_rank_with_one_line(straight, tmp_path):
    """The run directory of `straight` holds another config: rank 0 finds out while preparing the run and
    every rank stops with the message (exit 2, no traceback) instead of waiting in a collective."""
    out, _ = straight
    changed = {**CONFIG, "output_dir": str(out), "pasta": {**CONFIG["pasta"], "max_steps": 5}}
    cfg = tmp_path / "changed.yaml"
    cfg.write_text(yaml.safe_dump(changed))
    r = subprocess.run(_train_cmd(cfg), env=launch_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "hatch-vlm train: bad config: output_dir" in r.stderr and "different config (changed: pasta)" in r.stderr
    # rank 1 says "the main process (rank 0) failed: ConfigError: ..." unless torchrun stopped it first
    # no worker printed a traceback (the launcher itself reports the failed workers with one of its own)
    # (workers' lines are prefixed with "[rankN]:")
    assert not [line for line in r.stderr.splitlines() if 'File "' in line and "/hatch/" in line]


def test_hatch_eval_splits_the_questions_across_processes(straight, tmp_path):
    """`hatch-vlm eval` under 2 processes: each rank answers half, rank 0 writes the same records (same greedy
    completions, same order) as a 1-process `hatch-vlm eval`."""
    import sys

    from hatch_vlm.data import spar
    from hatch_vlm.data.synthetic import SceneConfig, iter_samples

    out, _ = straight
    bench = tmp_path / "spar_bench.jsonl"
    spar.write_spar_bench(list(iter_samples(5, seed=777, config=SceneConfig(views=2, size=56))), bench)
    args = ["--model", str(out / "stages" / "grpo" / "model"), "--actor", "--benchmark", "spar-mv", "--data",
            str(bench), "--max-new-tokens", "8"]
    one = subprocess.run([sys.executable, "-m", "hatch_vlm.cli", "eval", *args, "--out", str(tmp_path / "one")],
                         env=launch_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(accelerate_2proc("-m", "hatch_vlm.cli", "eval", *args, "--out", str(tmp_path / "two")),
                         env=launch_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-6000:]
    r1, r2 = (json.loads((tmp_path / k / "results.json").read_text()) for k in ("one", "two"))
    assert len(r1["records"]) == 5 and r2["records"] == r1["records"]
    assert two.stdout.count("hatch-vlm eval: 5 ") == 1                   # rank 0 alone reports
