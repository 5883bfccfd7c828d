"""Run a test script on 1 process, or on N CPU processes (gloo) under `accelerate launch`, for the
multi-process tests (same launch as tests/scale/test_ddp_pasta.py)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[2]
CPU_2PROC = ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: Path, args: list[str], procs: int, timeout: float = 180) -> None:
    """Run `script args` on `procs` processes (1: plain python; >1: accelerate launch with cpu_2proc.yaml on
    a free port); fails the test with the tail of the output if it exits non-zero."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "python"), os.environ.get("PYTHONPATH", "")])}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable]
    if procs > 1:
        cmd += ["-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC),
                "--num_processes", str(procs), "--main_process_port", str(free_port())]
    r = subprocess.run(cmd + [str(script), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{script.name} on {procs} process(es) failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
