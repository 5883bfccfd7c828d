"""results.md's Table 4 (single-image ability): our row beside the paper's, each SPAR-Bench-SI average named,
and the change against a baseline run; the registry's stand-ins of both single-image benchmarks."""
import json

import pytest

from hatch_vlm.eval.run import write_results
from hatch_vlm.eval.table import markdown_table_si

OURS = {"spar-si": {"Low": 52.5, "High": 62.5, "Avg": 57.5, "also": {"Avg (question-weighted)": 56.0}, "n": 10},
        "cv-bench": {"2D": 50.0, "3D": 40.0, "Avg": 45.0, "also": {"flat": 47.0}, "n": 8}}
BASE = {"spar-si": {"Low": 50.0, "High": 65.0, "Avg": 57.5, "also": {"Avg (question-weighted)": 57.0}},
        "cv-bench": {"2D": 50.0, "3D": 30.0, "Avg": 40.0}}


def _line(md: str, start: str) -> list[str]:
    line = next(x for x in md.splitlines() if x.startswith(f"| {start}"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_table4_rows_and_the_delta_against_a_baseline():
    md = markdown_table_si({"ours": OURS}, baseline=("base", BASE))
    assert "SPAR-Bench-SI Avg (task mean, official)" in md and "SPAR-Bench-SI Avg (question-weighted, as the paper)" in md
    assert _line(md, "ours |") == ["ours", "52.5", "62.5", "57.5", "56.0", "50.0", "40.0", "45.0"]
    # the paper's SI Avg is question-weighted: it has no task-mean value
    assert _line(md, "Qwen2.5-VL-3B (paper)") == ["Qwen2.5-VL-3B (paper)", "16.0", "32.5", "–", "23.9", "69.3",
                                                   "72.2", "70.7"]
    assert _line(md, "HATCH 3B (paper)")[1:] == ["41.1", "49.7", "–", "45.2", "70.5", "78.4", "74.5"]
    assert _line(md, "ours − base")[1:] == ["+2.5", "-2.5", "+0.0", "-1.0", "+0.0", "+10.0", "+5.0"]


def test_results_md_gets_table4_only_for_single_image_benchmarks(tmp_path, monkeypatch):
    import hatch_vlm.eval.run as run

    base = tmp_path / "base.json"
    base.write_text(json.dumps({"model": "Qwen2.5-VL-3B", "summary": BASE}))
    monkeypatch.setattr(run, "summarise", lambda records, column="score": OURS)
    write_results(tmp_path / "a", "ours", [], baseline=base)
    md = (tmp_path / "a" / "results.md").read_text()
    assert "Table 4" in md and "ours − baseline (Qwen2.5-VL-3B)" in md
    assert "MindCube" not in md                              # no Table 1 without a multi-image benchmark
    assert "flat 47.0" in md                                 # the other named score, beside the official one
    with pytest.raises(FileNotFoundError, match="--baseline"):
        write_results(tmp_path / "b", "ours", [], baseline=tmp_path / "missing.json")


def test_stand_ins_of_the_single_image_benchmarks_from_synthetic_samples(tmp_path):
    from hatch_vlm.data.synthetic import SceneConfig, iter_samples
    from hatch_vlm.eval.benchmarks import write_stand_ins
    from hatch_vlm.eval.run import load_benchmark

    samples = list(iter_samples(40, seed=5, config=SceneConfig(views=2, size=56)))
    files = {f["name"]: f["path"] for f in write_stand_ins(samples, tmp_path)}
    assert {"spar-mv", "spar-si", "cv-bench"} <= set(files)
    assert files["spar-si"] == files["spar-mv"]                  # one SPAR-Bench file holds both splits
    si = load_benchmark("spar-si", files["spar-si"])
    mv = load_benchmark("spar-mv", files["spar-mv"])
    assert len(si) and all(s.num_views == 1 for s in si) and all(s.num_views == 2 for s in mv)
    assert {s.meta["row"]["task"] for s in si} <= {"depth_prediction_oc", "spatial_imagination_oc"}
    cvb = load_benchmark("cv-bench", files["cv-bench"])
    assert len(cvb) and all(s.num_views == 1 for s in cvb)
    assert [s.meta["row"]["source"] for s in cvb][:3] == ["ADE20K", "COCO", "Omni3D"]
