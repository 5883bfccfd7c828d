"""`hatch-vlm eval` end to end on benchmark files in their published formats: official and ActoR-aware
scores side by side, the paper-style table, and a killed run that resumes to the same results."""
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hatch_vlm.eval.run import load_benchmark, make_record, prompt_message

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
ACTOR = "<action>{from:0,to:1,action:[{turn left: 30 deg}{move forward: 1.2 m}]}</action><answer>{}</answer>"


def _png(seed: int, size=(64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_benchmarks(root):
    """SPAR-Bench (published parquet columns), MindCube-Tiny (data/raw JSONL, images under data/), MMSI parquet."""
    spar = root / "SPAR-Bench" / "data"
    spar.mkdir(parents=True)
    rows = [
        {"id": 1, "img_type": "multi_view", "format_type": "fill", "task": "depth_prediction_oc_mv", "source": "scannet",
         "question": "The red point in image 1 is 1.2 m deep. How deep is the blue point in image 2? The unit is meter.",
         "answer": "2.5"},
        {"id": 2, "img_type": "multi_view", "format_type": "fill", "task": "distance_infer_center_oo_mv",
         "source": "scannet", "question": "Which object is closer to the red point, measured in meters?", "answer": "1.5"},
        {"id": 3, "img_type": "multi_view", "format_type": "select", "task": "obj_spatial_relation_oo_mv",
         "source": "scannet", "question": "Where is the chair relative to the table?\nA. left\nB. right\nC. behind\nD. front",
         "answer": "C"},
        {"id": 4, "img_type": "multi_view", "format_type": "fill", "task": "view_change_infer", "source": "scannet",
         "question": "How did the camera move from image 1 to image 2?", "answer": "move_right:0.5,rotate_left:30"},
        {"id": 5, "img_type": "single_view", "format_type": "fill", "task": "depth_prediction_oc", "source": "scannet",
         "question": "How deep is the red point?", "answer": "2.0"},
    ]
    for r in rows:
        n = 1 if r["img_type"] == "single_view" else 2
        r["image"] = [{"bytes": _png(10 * r["id"] + k), "path": f"{r['id']}_{k}.png"} for k in range(n)]
    pq.write_table(pa.Table.from_pylist(rows), spar / "test-00000-of-00001.parquet")

    mc = root / "MindCube" / "data"
    (mc / "raw").mkdir(parents=True)
    recs = []
    for k, rid in enumerate(["among_group693_q1_5_2", "aroundnew_group003_q2_1", "rotation_group002_qfirst_5",
                             "translation_group000_q1"]):
        paths = []
        for v in range(2):
            rel = f"other_all_image/{rid.split('_')[0]}/scene_{k}/view_{v}.png"
            (mc / rel).parent.mkdir(parents=True, exist_ok=True)
            (mc / rel).write_bytes(_png(100 + 10 * k + v))
            paths.append(rel)
        recs.append({"id": rid, "category": ["self"], "type": "", "meta_info": [], "images": paths,
                     "question": "From view 2, what is behind the sofa? A. Table B. Lamp C. Plant D. Door",
                     "gt_answer": "BCAD"[k]})
    (mc / "raw" / "MindCube_tinybench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))

    mm = root / "MMSI"
    mm.mkdir()
    qtypes = ["Positional Relationship (Cam.–Obj.)", "Attribute (Meas.)", "Motion (Cam.)", "MSR"]
    mrows = [{"id": k, "images": [_png(200 + 10 * k + v) for v in range(2)], "question_type": qt,
              "question": "Where is the lamp from the second camera? Options: A: left, B: right, C: front, D: back",
              "answer": "ABCD"[k], "thought": "", "difficulty": "easy", "mean_normed_duration_seconds": 1.0}
             for k, qt in enumerate(qtypes)]
    pq.write_table(pa.Table.from_pylist(mrows), mm / "MMSI_bench.parquet")
    return {"spar-mv": root / "SPAR-Bench", "mindcube": mc / "raw" / "MindCube_tinybench.jsonl",
            "mmsi": mm / "MMSI_bench.parquet"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_benchmarks(tmp_path_factory.mktemp("bench"))


def test_published_formats_load_with_their_image_roots(files):
    spar = load_benchmark("spar-mv", files["spar-mv"])
    assert len(spar) == 4                                        # the multi_view rows only
    mc = load_benchmark("mindcube", files["mindcube"])           # image paths start at data/, the grandparent
    assert len(mc) == 4 and mc[0].num_views == 2 and mc[0].images[0].shape == (48, 64, 3)
    assert len(load_benchmark("mmsi", files["mmsi"])) == 4


def test_official_and_answer_span_scores_side_by_side(files):
    spar = load_benchmark("spar-mv", files["spar-mv"])
    by_task = {spar[i].meta["row"]["task"]: (i, spar[i]) for i in range(len(spar))}
    # a first-number task: the official rule reads the "0" of "from:0" in the action block; the span is right
    i, s = by_task["distance_infer_center_oo_mv"]
    r = make_record("spar-mv", i, s, ACTOR.replace("{}", "1.5"), actor=True)
    assert r.official == 0.0 and r.answer_span == 1.0 and r.score == 1.0
    # a last-number (_mv) task: both read 2.5
    i, s = by_task["depth_prediction_oc_mv"]
    r = make_record("spar-mv", i, s, ACTOR.replace("{}", "2.5"), actor=True)
    assert r.official == 1.0 and r.answer_span == 1.0
    # select: the official rule compares the first character; the action block starts with "<"
    i, s = by_task["obj_spatial_relation_oo_mv"]
    r = make_record("spar-mv", i, s, ACTOR.replace("{}", "C. behind"), actor=True)
    assert (r.official, r.answer_span) == (0.0, 1.0)
    assert make_record("spar-mv", i, s, "C", actor=False).score == 1.0           # non-ActoR: the official rule
    # view_change_infer's own metric (the error is divided by the prediction: 0.1 / 0.4 passes 6 of 10)
    i, s = by_task["view_change_infer"]
    assert make_record("spar-mv", i, s, "move_right:0.4,rotate_left:30", actor=False).score == pytest.approx(0.92)
    mmsi = load_benchmark("mmsi", files["mmsi"])
    r = make_record("mmsi", 0, mmsi[0], ACTOR.replace("{}", "A"), actor=True)
    assert r.answer_span == 1.0 and r.category == "Pos"
    prompt = prompt_message(mmsi[0], "mmsi", actor=False)["content"][-1]["text"]
    assert "``" in prompt                                       # MMSI's official post-prompt asks for ``X``


def _eval_cmd(tiny_dir, files, out):
    cmd = [sys.executable, "-m", "hatch_vlm.cli", "eval", "--model", str(tiny_dir), "--out", str(out), "--actor",
           "--batch-size", "1", "--max-new-tokens", "6"]
    for name, path in files.items():
        cmd += ["--benchmark", name, "--data", str(path)]
    return cmd


def _run_whole(tiny_dir, files, out) -> dict:
    proc = subprocess.run(_eval_cmd(tiny_dir, files, out), env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def _kill_and_resume(tiny_dir, files, cut, killed_in: str, finished: str, questions: int) -> dict:
    """Kill an eval (SIGKILL) once `killed_in`'s completion log has 3 lines, run the same command again: nothing
    is generated twice (`finished`'s log untouched, each of `killed_in`'s questions once); the resumed results."""
    p = subprocess.Popen(_eval_cmd(tiny_dir, files, cut), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = cut / "completions" / f"{killed_in}.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (cut / "results.json").exists()
    before = (cut / "completions" / f"{finished}.jsonl").read_text()
    resumed = _run_whole(tiny_dir, files, cut)
    assert (cut / "completions" / f"{finished}.jsonl").read_text() == before
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip().startswith("{\"index")]
    assert sorted(x["index"] for x in lines) == list(range(questions))
    return resumed


@pytest.mark.slow
def test_killed_eval_resumes_to_the_same_results(tiny_dir, files, tmp_path):
    whole = tmp_path / "whole"
    results = _run_whole(tiny_dir, files, whole)
    assert results["table_uses"] == "answer_span" and results["decoding"]["repetition_penalty"] == 1.0
    assert {"spar-mv", "mindcube", "mmsi", "Overall"} <= set(results["summary"])
    md = (whole / "results.md").read_text()
    assert "HATCH 3B (paper)" in md and "official rule, raw reply" in md
    resumed = _kill_and_resume(tiny_dir, files, tmp_path / "cut", "mindcube", "spar-mv", 4)
    assert resumed == results


def write_single_image_benchmarks(root):
    """SPAR-Bench's single_view rows (the published parquet) and CV-Bench's two parquet files."""
    spar = root / "SPAR-Bench" / "data"
    spar.mkdir(parents=True)
    rows = [{"id": k, "img_type": "single_view", "format_type": ft, "task": t, "source": "scannet",
             "image": [{"bytes": _png(300 + k), "path": f"{k}.png"}], "question": q, "answer": a}
            for k, (t, ft, q, a) in enumerate([
                ("depth_prediction_oc", "fill", "How deep is the red point?", "2.0"),
                ("distance_prediction_oo", "fill", "How far apart are the sofa and the bed?", "1.2"),
                ("spatial_imagination_oc", "select", "Standing at the door, where is the bed?\nA. left\nB. right", "A"),
                ("obj_spatial_relation_oo", "select", "Where is the cup?\nA. left\nB. right", "B")])]
    pq.write_table(pa.Table.from_pylist(rows), spar / "test-00000-of-00001.parquet")
    cv = root / "CV-Bench"
    cv.mkdir()
    for name, kind, sources in (("test_2d.parquet", "2D", ("ADE20K", "COCO", "ADE20K")), ("test_3d.parquet", "3D", ("Omni3D",) * 3)):
        cv_rows = [{"idx": 10 * len(kind) + k, "type": kind, "task": "Count" if kind == "2D" else "Depth",
                    "image": {"bytes": _png(400 + k + 10 * len(name)), "path": f"img/{kind}/{k}.png"},
                    "question": "How many chairs?", "choices": ["1", "2", "3"], "answer": "(B)",
                    "prompt": "How many chairs? Select from the following choices.\n(A) 1\n(B) 2\n(C) 3",
                    "filename": f"img/{kind}/{k}.png", "source": src} for k, src in enumerate(sources)]
        pq.write_table(pa.Table.from_pylist(cv_rows), cv / name)
    return {"spar-si": root / "SPAR-Bench", "cv-bench": cv}


@pytest.mark.slow
def test_killed_single_image_eval_resumes_to_the_same_results(tiny_dir, tmp_path):
    files = write_single_image_benchmarks(tmp_path / "bench")
    whole = tmp_path / "whole"
    results = _run_whole(tiny_dir, files, whole)
    assert {"spar-si", "cv-bench"} <= set(results["summary"])
    assert "Table 4" in (whole / "results.md").read_text()
    resumed = _kill_and_resume(tiny_dir, files, tmp_path / "cut", "cv-bench", "spar-si", 6)
    assert resumed == results
