"""Our package installs beside pypa's Hatch (the packaging tool, PyPI `hatch`: top-level package `hatch`,
command `hatch`) without either overwriting the other, whichever is installed first.

Each order gets a fresh virtual environment with neither package. Our wheel goes in with `--no-deps`: the
collision this guards against is between the two distributions' files (package directories and console
scripts), and `hatch-vlm --help` / `import hatch_vlm` need only numpy, so the test does not have to copy torch
and the training stack into two environments. Needs PyPI (or a mirror) for pypa's hatch."""
from __future__ import annotations

import pytest

from .conftest import clean_env, make_venv, run

pytestmark = pytest.mark.slow


def _install_pypa_hatch(bin_dir):
    run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "hatch"], env=clean_env())


def _install_ours(bin_dir, wheel):
    run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], env=clean_env())


@pytest.mark.parametrize("first", ["pypa-hatch", "hatch-vlm"])
def test_both_work_in_one_environment(first, wheel, tmp_path):
    bin_dir = make_venv(tmp_path / "venv")
    run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "numpy"], env=clean_env())
    steps = [lambda: _install_pypa_hatch(bin_dir), lambda: _install_ours(bin_dir, wheel)]
    for step in steps if first == "pypa-hatch" else steps[::-1]:
        step()
    env = clean_env()
    cwd = tmp_path  # not the checkout: nothing may be imported from the source tree

    # pypa's Hatch: its command and its package are its own.
    assert "Hatch, version" in run([str(bin_dir / "hatch"), "--version"], cwd=cwd, env=env)
    # Ours: the command, `python -m`, and the package.
    for cmd in ([str(bin_dir / "hatch-vlm"), "--help"], [str(bin_dir / "python"), "-m", "hatch_vlm", "--help"]):
        out = run(cmd, cwd=cwd, env=env)
        assert "usage: hatch-vlm" in out and "demo" in out and "train" in out
    probe = ("import hatch, hatch.cli, hatchling, hatch_vlm, hatch_vlm.cli, sys; "
             "print(hatch.__file__); print(hatch_vlm.__file__); print(hatch_vlm.__version__)")
    hatch_file, ours_file, version = run([str(bin_dir / "python"), "-c", probe], cwd=cwd, env=env).split()[:3]
    venv = str(tmp_path / "venv")
    assert hatch_file.startswith(venv) and hatch_file.endswith("hatch/__init__.py"), hatch_file
    assert ours_file.startswith(venv) and ours_file.endswith("hatch_vlm/__init__.py"), ours_file
    assert version.count(".") == 2
    # Neither distribution claims a file of the other.
    listing = run([str(bin_dir / "python"), "-m", "pip", "show", "-f", "hatch-vlm"], env=env)
    assert "hatch/__init__.py" not in listing.replace("hatch_vlm/", "").replace("hatch_ext/", "")
    assert "bin/hatch\n" not in listing and "/hatch\n" not in listing
