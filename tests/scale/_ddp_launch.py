"""Run a test script on 1 process, or on 2 CPU processes (gloo) under `accelerate launch`, for the
multi-process comparisons (the launch of scale_launch.py: free port, clean environment)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from scale_launch import ROOT, accelerate_2proc, launch_env

__all__ = ["ROOT", "launch", "needs_gloo"]

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build")


def launch(script: Path, args: list[str], procs: int, timeout: float = 180) -> None:
    """Run `script args` on `procs` processes (1: plain python; 2: accelerate launch with cpu_2proc.yaml);
    fails the test with the tail of the output if it exits non-zero."""
    if procs not in (1, 2):
        raise ValueError(f"launch: procs must be 1 or 2 (cpu_2proc.yaml), got {procs}")
    cmd = [sys.executable, str(script), *args] if procs == 1 else accelerate_2proc(str(script), *args)
    r = subprocess.run(cmd, env=launch_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{script.name} on {procs} process(es) failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
