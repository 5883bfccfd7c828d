"""One wheel of this checkout per test session, built as a user would (`pip wheel .`, against the torch that
is installed: `--no-build-isolation`), for the tests that install it into fresh virtual environments."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None, timeout: int = 900) -> str:
    """Runs a command; on failure the assertion shows its output (what a user would have seen)."""
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} exited {p.returncode}\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p.stdout + p.stderr


def clean_env() -> dict:
    """The environment without anything that points Python at this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def make_venv(path: Path, system_site_packages: bool = False) -> Path:
    """A fresh virtual environment; returns its bin/ directory."""
    cmd = [sys.executable, "-m", "venv", str(path)]
    if system_site_packages:
        cmd.insert(3, "--system-site-packages")
    run(cmd)
    return path / "bin"


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # HATCH_NO_CUDA: the CPU kernels are what these tests need; a CUDA build would only cost time.
    env = clean_env() | {"HATCH_NO_CUDA": "1", "MAX_JOBS": "2"}
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", str(out),
         str(REPO)], env=env, timeout=1800)
    wheels = sorted(out.glob("hatch_vlm-*.whl"))
    assert len(wheels) == 1, f"expected one hatch_vlm wheel in {out}, found {[w.name for w in out.iterdir()]}"
    return wheels[0]
