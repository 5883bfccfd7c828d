"""SPAR-Bench-SI: the single-view rows of the published SPAR-Bench parquet (built here from literal rows), every
single-view task scored with the official per-row rules, and both averages (the official task mean and the
question-weighted mean the paper's Table 4 fits), worked out by hand."""
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hatch_vlm.eval.run import load_benchmark, make_record, prompt_message, summarise
from hatch_vlm.scoring.official import spar_bench_si as si


def _png(seed):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


# (task, format_type, question, gold, reply, score by hand)
ROWS = [
    ("depth_prediction_oc", "fill", "How deep is the red point?", "2.0", "about 2.0 m", 1.0),
    ("depth_prediction_oc", "fill", "How deep is the blue point?", "2.0", "3.5 m, not 2.0", 0.0),  # FIRST number
    ("depth_prediction_oo", "fill", "How far behind the chair is the table?", "1.5", "1.5", 1.0),
    ("distance_prediction_oc", "fill", "How far is the lamp from the camera?", "3", "no idea", 0.0),   # no number
    # |2.44 - 2| / 2 = 0.22 <= 1 - θ for θ = 0.50 .. 0.75 (6 of 10 thresholds)
    ("distance_prediction_oo", "fill", "How far apart are the sofa and the bed?", "2", "2.44 meters", 0.6),
    ("obj_spatial_relation_oo", "select", "Where is the cup?\nA. left\nB. right", "B", "B", 1.0),
    ("spatial_imagination_oc", "select", "Standing at the door, where is the bed?\nA. left\nB. right", "A",
     "(A)", 0.0),                                                            # first character "(" (exact_match)
    ("spatial_imagination_oc", "select", "Standing at the bed, where is the door?\nA. left\nB. right", "A",
     "a", 1.0),
    ("spatial_imagination_oo", "select", "Facing the sofa, where is the lamp?\nA. behind\nB. left\nC. left",
     "C", "C. left", 1.0),
    ("distance_infer_center_oo", "select", "Which is closer to the bed?\nA. lamp\nB. chair", "A",
     "The answer is A", 0.0),
]


@pytest.fixture
def spar_dir(tmp_path):
    data = tmp_path / "SPAR-Bench" / "data"
    data.mkdir(parents=True)
    rows = [{"id": k, "img_type": "single_view", "format_type": ft, "task": t, "source": "scannet",
             "image": [{"bytes": _png(k), "path": f"{k}.png"}], "question": q, "answer": a}
            for k, (t, ft, q, a, _, _) in enumerate(ROWS)]
    rows.append({"id": 99, "img_type": "multi_view", "format_type": "fill", "task": "depth_prediction_oc_mv",
                 "source": "scannet", "image": [{"bytes": _png(99), "path": "a.png"}, {"bytes": _png(98), "path": "b.png"}],
                 "question": "How deep is the point in image 2?", "answer": "1.0"})
    pq.write_table(pa.Table.from_pylist(rows), data / "test-00000-of-00001.parquet")
    return tmp_path / "SPAR-Bench"


def test_single_view_rows_of_every_si_task_scored_and_averaged(spar_dir):
    samples = load_benchmark("spar-si", spar_dir)
    assert len(samples) == len(ROWS)                                     # the multi_view row is not SI
    assert {s.meta["row"]["task"] for s in samples} == set(si.TASKS)
    assert load_benchmark("spar-mv", spar_dir)[0].meta["row"]["id"] == 99    # and SI rows are not MV
    records = [make_record("spar-si", i, s, ROWS[i][4], actor=False) for i, s in enumerate(samples)]
    assert [r.score for r in records] == [row[5] for row in ROWS]
    assert [r.category for r in records] == ["Low"] * 5 + ["High"] * 5
    row = summarise(records)["spar-si"]
    # task means: Low 0.5, 1, 0, 0.6 -> 52.5; High 1, 0.5, 1, 0 -> 62.5; Avg = 4.6 / 8 tasks = 57.5
    assert row["Low"] == pytest.approx(52.5) and row["High"] == pytest.approx(62.5)
    assert row["Avg"] == pytest.approx(57.5)
    # the paper's Table 4 Avg: over questions, 5.6 / 10 = 56.0
    assert row["also"][si.WEIGHTED_NAME] == pytest.approx(56.0) == row["per_question"]
    assert row["n"] == 10


def test_official_prompts_and_an_actor_reply(spar_dir):
    samples = load_benchmark("spar-si", spar_dir)
    fill = prompt_message(samples.stub(0), "spar-si", actor=False)["content"][-1]["text"]
    assert fill.endswith("\nPlease answer the question using a single word or phrase.")
    select = prompt_message(samples.stub(5), "spar-si", actor=False)["content"][-1]["text"]
    assert select.endswith("\n\nAnswer with the option's letter from the given choices directly.")
    reply = "<action>{from:0,to:0,action:[]}</action><answer>2.0</answer>"
    r = make_record("spar-si", 0, samples.stub(0), reply, actor=True)
    assert (r.official, r.answer_span) == (0.0, 1.0)       # the raw reply's first number is the "0" of from:0


def test_aggregate_leaves_out_tasks_that_are_not_single_view():
    pairs = [({"task": "depth_prediction_oc"}, 1.0), ({"task": "depth_prediction_oc_mv"}, 0.0),
             ({"task": "view_change_infer"}, 0.0), ({"task": "spatial_imagination_oo"}, 0.0)]
    agg = si.aggregate(pairs)
    assert agg["n"] == 2 and agg["categories"] == {"Low": 100.0, "High": 0.0} and agg["Avg"] == 50.0
