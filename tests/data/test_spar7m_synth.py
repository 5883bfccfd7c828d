"""`hatch-vlm data synth` writes the real SPAR-7M-RGBD layout, which the real reader (and selection) load."""
import json

import numpy as np
import pytest

from hatch_vlm.data.spar7m import read_spar_rgbd, select_records
from hatch_vlm.data.spar7m.writer import write_spar_rgbd
from hatch_vlm.data.synthetic import generate


@pytest.fixture(scope="module")
def samples():
    return generate(12, views=3, size=40, seed=4)       # every answer type shows up


def test_written_tree_has_the_real_layout(samples, tmp_path):
    files = write_spar_rgbd(samples, tmp_path / "spar")
    src = tmp_path / "spar" / "synthetic"
    for f in files:
        rel = f.relative_to(src / "qa_jsonl" / "train").parts          # task, kind, <kind>_<N>.jsonl
        lines = f.read_text().splitlines()
        assert len(rel) == 3 and rel[1] in ("fill", "select", "sentence") and rel[2] == f"{rel[1]}_{len(lines)}.jsonl"
        rec = json.loads(lines[0])
        assert rec["type"] == rel[0]
        assert all((src / "images" / p).is_file() for p in rec["image"] + rec["depth"])   # relative to <source>/images
        human = rec["conversations"][0]["value"]
        assert human.startswith("<image>\n" * len(rec["image"]))
        if rel[1] == "select":
            assert human.splitlines()[-1].startswith("Your answer can only include one of options A")
    scene = src / "images" / samples[0].id
    assert (scene / "intrinsic" / "intrinsic_depth.txt").is_file() and (scene / "pose" / "0.txt").is_file()


def test_synthetic_tree_reads_back(samples, tmp_path):
    write_spar_rgbd(samples, tmp_path / "spar")
    for root in (tmp_path / "spar", tmp_path / "spar" / "synthetic"):     # spar/ or spar/<source>/
        back, summary = read_spar_rgbd(root, split="train", strict=True)
        assert summary.read == len(samples) and summary.skipped == 0
    got = {s.id: s for s in back}
    for a in samples:
        b = got[a.id]
        for f in ("question", "options", "answer", "answer_type", "task"):
            assert getattr(a, f) == getattr(b, f), f
        for x, y in zip(a.images, b.images):
            assert np.abs(x.astype(int) - y.astype(int)).mean() < 6          # JPEG, as SPAR ships its frames
        ok = np.isfinite(a.depth) & (a.depth > 0) & (a.depth <= 65.535)
        assert np.abs(a.depth[ok] - b.depth[ok]).max() <= 0.0005 + 1e-6      # 1 mm quantisation
        np.testing.assert_allclose(a.K, b.K, atol=1e-12)
        np.testing.assert_allclose(a.cam_to_world, b.cam_to_world, atol=1e-9)


def test_cli_synth_refuses_to_mix_into_an_existing_tree(tmp_path, capsys):
    from hatch_vlm.commands.data import main

    out = tmp_path / "syn"
    assert main(["data", "synth", "--out", str(out), "--num", "2", "--size", "32", "--bench-num", "0"]) == 0
    sel = select_records(out, num_train=1, num_eval=1, cache_dir=None, progress=False)
    assert len(sel.train) == 1 and len(sel.held_out) == 1
    assert main(["data", "synth", "--out", str(out), "--num", "2", "--size", "32", "--bench-num", "0"]) == 2
    assert "exists already" in capsys.readouterr().err


def test_bad_pose_is_named(samples, tmp_path):
    from hatch_vlm.data.common import DataError

    write_spar_rgbd(samples[:1], tmp_path)
    p = tmp_path / "synthetic/images" / samples[0].id / "pose/0.txt"
    p.write_text("1 0 0 0\n0 1 0 0\n0 0 -1 0\n0 0 0 1\n")          # a reflection
    with pytest.raises(DataError, match=r"pose of view 0.*reflection"):
        read_spar_rgbd(tmp_path, strict=True)


def test_synth_in_several_processes_writes_the_same_tree(tmp_path):
    """`--workers 2` renders in forked processes (a fresh command has not imported torch): every file is the
    same as one process writes; a process that has imported torch refuses to fork, naming the setting."""
    import subprocess
    import sys

    from hatch_vlm.data.synthetic import iter_samples

    trees = []
    for w in (1, 2):
        out = tmp_path / f"w{w}"
        proc = subprocess.run([sys.executable, "-m", "hatch_vlm", "data", "synth", "--out", str(out), "--num", "5",
                               "--size", "48", "--bench-num", "3", "--workers", str(w)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        trees.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert trees[0].keys() == trees[1].keys() and len(trees[0]) > 10
    assert trees[0] == trees[1]
    import torch  # noqa: F401  (this test process has it: forking is refused)

    with pytest.raises(ValueError, match="workers > 1: this process has imported torch"):
        list(iter_samples(3, size=32, workers=2))
