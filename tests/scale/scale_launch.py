"""Launching multi-process test runs: a free port, a clean environment (no inherited rank variables,
offline hub, one thread per process on the 2-core CI machine), a script on 1 process or on 2 CPU processes
(gloo) under `accelerate launch` with the shipped cpu_2proc.yaml."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[2]
CPU_2PROC = ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "python"), os.environ.get("PYTHONPATH", "")])}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def accelerate_2proc(*args: str, config: Path = CPU_2PROC) -> list[str]:
    """The command prefix of a 2-process CPU launch with a shipped accelerate config (DDP by default)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
            "--num_processes", "2", "--main_process_port", str(free_port()), *args]


needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build")

NO_DS = "deepspeed is not installed (.ci/run installs it: DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed)"


def skip_without_deepspeed(engine: str) -> None:
    """Skips the calling test, naming how CI installs it, when `engine` is a DeepSpeed ZeRO one and deepspeed
    does not import."""
    if not engine.startswith("zero"):
        return
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        pytest.skip(NO_DS)


def node_cmd(k: int, port: int, *args: str, multi_gpu: bool = True) -> list[str]:
    """Node k of a simulated 2-node job on this host (1 process per node, localhost as node 0)."""
    return [sys.executable, "-m", "accelerate.commands.launch", *(["--multi_gpu"] if multi_gpu else []),
            "--num_machines", "2", "--machine_rank", str(k), "--num_processes", "2", "--main_process_ip",
            "127.0.0.1", "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no", *args]


def launch(script: Path, args: list[str], procs: int, timeout: float = 180, config: Path = CPU_2PROC,
           nodes: bool = False) -> None:
    """Run `script args` on `procs` processes (1: plain python; 2: accelerate launch with `config`,
    cpu_2proc.yaml unless given, or with `nodes` as 2 simulated nodes of 1 process each); fails the test with
    the tail of the output if it exits non-zero."""
    if procs not in (1, 2) or (nodes and procs != 2):
        raise ValueError(f"launch: procs must be 1 or 2 (cpu_2proc.yaml, or 2 nodes), got {procs}")
    # DeepSpeed's CPU accelerator compiles one small C++ op on first use: once, inside the checkout
    env = {**launch_env(), "TORCH_EXTENSIONS_DIR": str(ROOT / "build" / "torch_extensions")}
    if nodes:
        port = free_port()
        runs = [subprocess.Popen(node_cmd(k, port, str(script), *args), env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for k in (0, 1)]
        outs = [p.communicate(timeout=timeout)[0] for p in runs]
        assert [p.returncode for p in runs] == [0, 0], f"{script.name} on 2 nodes failed:\n" + "\n".join(
            o[-4000:] for o in outs)
        return
    cmd = [sys.executable, str(script), *args] if procs == 1 else accelerate_2proc(str(script), *args, config=config)
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{script.name} on {procs} process(es) failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"


def run_ranks(script: Path, out: Path, model_dir, procs: int, steps: int, global_batch: int,
              *extra: str, grad_accum: int = 1, config: Path = CPU_2PROC, timeout: float = 180,
              nodes: bool = False) -> list[dict]:
    """A comparison script (pasta_run.py, sft_run.py, grpo_run.py: same flags) on `procs` processes with the
    same global batch per optimizer step (global_batch / (procs × grad_accum) rows per process and
    micro-step; `nodes`: the 2 processes as 2 simulated nodes); returns each rank's OUT/rank{R}.json."""
    per_micro = global_batch // (procs * grad_accum)
    assert per_micro * procs * grad_accum == global_batch, (global_batch, procs, grad_accum)
    accum = ["--grad-accum", str(grad_accum)] if grad_accum > 1 else []
    launch(script, ["--model-dir", str(model_dir), "--output-dir", str(out), "--steps", str(steps),
                    "--global-batch", str(global_batch), "--batch-size", str(per_micro), *accum, *extra],
           procs, timeout=timeout, config=config, nodes=nodes)
    return [json.loads((out / f"rank{k}.json").read_text()) for k in range(procs)]
