"""`hatch-vlm demo` runs from an installed wheel, outside any checkout: the demo's config is package data
(hatch_vlm/pipeline/demo.yaml), not a file of the source tree.

A fresh virtual environment with `--system-site-packages` takes torch / transformers / TRL from the system;
our wheel goes in with `--no-deps --force-reinstall`. The system site-packages also holds this checkout as an
editable install (a meta-path finder that maps `hatch_vlm` to the source tree), so the test first checks
that the venv's python imports the venv's copy (its site-packages come first on sys.path, and the editable
finder is only consulted after the path finder), then runs the quick demo from a directory outside the
checkout."""
from __future__ import annotations

import json

import pytest

from .conftest import REPO, clean_env, make_venv, run

pytestmark = pytest.mark.slow


def test_quick_demo_runs_from_the_installed_wheel(wheel, tmp_path):
    venv = tmp_path / "venv"
    bin_dir = make_venv(venv, system_site_packages=True)
    python = str(bin_dir / "python")
    run([python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], env=clean_env())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env() | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    probe = ("import hatch_vlm, hatch_ext, hatch_vlm.pipeline.demo as demo\n"
             "for m in (hatch_vlm, hatch_ext, demo): print('FILE', m.__file__)\n"
             "print('FILE', demo.resources.files('hatch_vlm.pipeline').joinpath('demo.yaml'))")
    files = [line.split(" ", 1)[1] for line in run([python, "-c", probe], cwd=elsewhere, env=env).splitlines()
             if line.startswith("FILE ")]
    assert len(files) == 4, files
    for f in files:       # the venv's copy, never the checkout's (also installed, editable, system-wide)
        assert f.startswith(str(venv)) and not f.startswith(str(REPO)), f

    out = tmp_path / "demo"
    run([str(bin_dir / "hatch-vlm"), "demo", "--quick", "--out", str(out)], cwd=elsewhere, env=env, timeout=1800)
    report = json.loads((out / "report" / "report.json").read_text())
    assert set(report["state"]["stages"]) == {"pasta", "qa_sft", "actor_sft", "grpo", "eval", "grpo_seed1"}
    assert (out / "report" / "report.md").is_file()
    used = (out / "demo_config.yaml").read_text()          # the packaged settings, shrunk by --quick
    assert "pasta_weight" in used and "per_device_train_batch_size: 4" in used
