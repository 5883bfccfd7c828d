"""Readers and writers: synthetic round trips, hand-written fixtures in the real formats, and clear
errors / counted skips for bad records."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hatch.data import mindcube, mmsi, spar
from hatch.data.common import DataError, encode_png, extract_letter, split_options, write_image
from hatch.data.synthetic import generate

FIELDS = ("question", "options", "answer", "answer_type", "task", "category")


@pytest.fixture(scope="module")
def samples():
    # Enough samples that every family (and so every answer type) shows up.
    return generate(16, views=3, size=40, seed=4)


def same_qa(a, b, fields=FIELDS):
    for f in fields:
        assert getattr(a, f) == getattr(b, f), f


def test_spar_bench_round_trip_jsonl_and_parquet(samples, tmp_path):
    for name in ("bench.jsonl", "bench.parquet"):
        spar.write_spar_bench(samples, tmp_path / name)
        back, summary = spar.read_spar_bench(tmp_path / name, strict=True)
        assert summary.read == len(samples)
        for a, b in zip(samples, back):
            same_qa(a, b)
            for x, y in zip(a.images, b.images):
                np.testing.assert_array_equal(x, y)


def test_mindcube_and_mmsi_round_trip(samples, tmp_path):
    mc = [s for s in samples if s.category in mindcube.COUNTED]
    assert mc
    mindcube.write_mindcube(mc, tmp_path / "mc.jsonl")
    back, _ = mindcube.read_mindcube(tmp_path / "mc.jsonl", strict=True)
    for a, b in zip(mc, back):
        same_qa(a, b)
        np.testing.assert_array_equal(a.images[1], b.images[1])
    choice = [s for s in samples if s.answer_type == "mc"]
    mmsi.write_mmsi(choice, tmp_path / "m.parquet")
    back, _ = mmsi.read_mmsi(tmp_path / "m.parquet", strict=True)
    assert len(back) == len(choice)
    for a, b in zip(choice, back):
        same_qa(a, b, ("question", "options", "answer", "answer_type"))
        assert b.category in mmsi.CATEGORIES


def _img(tmp_path, name, value=100):
    write_image(np.full((8, 8, 3), value, np.uint8), tmp_path / name)
    return name


def test_spar_bench_fixture_and_skips(tmp_path):
    a, b = _img(tmp_path, "a.png"), _img(tmp_path, "b.png", 200)
    recs = [
        {"id": "q0", "question": "Where is the chair from view 2?\nA. Front, Left\nB. Front, Right\nC. Back, Right",
         "image": [a, b], "task": "obj_spatial_relation_oc_mv", "answer": "C. Back, Right"},
        {"id": "q1", "question": "How far is the lamp from the camera in meters?", "image": [a],
         "task": "depth_prediction_oc", "answer": "2.5", "level": "Low"},
        {"id": "q2", "question": "Which way did the camera move? A. Left B. Right", "image": [a, b],
         "task": "camera_motion_infer"},                                  # no answer
        {"id": "q3", "question": "pick A. x B. y", "image": [a, "missing.png"], "task": "view_change_infer",
         "answer": "A"},                                                  # missing image file
        {"id": "q4", "question": "pick A. x B. y", "image": [a], "task": "view_change_infer",
         "answer": "E"},                                                  # not an option
    ]
    f = tmp_path / "bench.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in recs) + "\n{not json\n")
    got, summary = spar.read_spar_bench(f)
    assert [s.id for s in got] == ["q0", "q1"]
    assert got[0].options == ["A. Front, Left", "B. Front, Right", "C. Back, Right"] and got[0].answer == "C"
    assert got[0].question == "Where is the chair from view 2?" and got[0].category == "High"
    assert got[0].images[1][0, 0, 0] == 200
    assert got[1].answer_type == "numeric" and got[1].answer == "2.5" and got[1].category == "Low"
    assert summary.read == 2 and summary.skipped == 4
    assert summary.reasons["missing answer"] == 1 and summary.reasons["missing image file"] == 1
    assert summary.reasons["bad answer"] == 1 and summary.reasons["bad json"] == 1
    assert any("'answer'" in e and "q2" in e for e in summary.examples)
    with pytest.raises(DataError, match=r"q2.*missing field 'answer'"):
        spar.read_spar_bench(f, strict=True)
    with pytest.raises(DataError, match="not found"):
        spar.read_spar_bench(tmp_path / "nope.jsonl")


def test_mindcube_fixture(tmp_path):
    a = _img(tmp_path, "other_all_image/among/1.png")
    recs = [
        {"id": "among_group693_q1_5_2", "question": "From view 2, what is behind the sofa? A. Table B. Lamp C. Plant",
         "gt_answer": "B", "images": [a, a]},
        {"id": "rotation_group1_q2", "question": "Which way? A. Left B. Right", "gt_answer": "(A)", "images": [a]},
        {"id": "group5_q1", "question": "Which way? A. Left B. Right", "gt_answer": "A", "images": [a]},
        {"id": "around_group2_q1", "question": "No options here", "gt_answer": "A", "images": [a]},
    ]
    f = tmp_path / "MindCube_tinybench.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in recs))
    got, summary = mindcube.read_mindcube(f)
    assert [(s.category, s.answer) for s in got] == [("among", "B"), ("rotation", "A")]
    assert got[0].options == ["A. Table", "B. Lamp", "C. Plant"] and got[0].question == "From view 2, what is behind the sofa?"
    assert summary.reasons["unknown setting"] == 1 and summary.reasons["no options"] == 1


def test_mmsi_fixture(tmp_path):
    png = encode_png(np.zeros((6, 6, 3), np.uint8))
    rows = [
        {"id": 0, "images": [png, png], "question_type": "Motion (Cam.)",
         "question": "How did the camera move? Options: A: Left, B: Right, C: Forward", "answer": "C"},
        {"id": 1, "images": [png], "question_type": "MSR", "question": "Q? A. x B. y", "answer": "B"},
        {"id": 2, "images": [b"not an image"], "question_type": "MSR", "question": "Q? A. x B. y", "answer": "A"},
    ]
    f = tmp_path / "MMSI_Bench.parquet"
    pq.write_table(pa.Table.from_pylist(rows), f)
    got, summary = mmsi.read_mmsi(f)
    assert [s.category for s in got] == ["Motion", "MSR"] and got[0].answer == "C"
    assert got[0].options == ["A. Left", "B. Right", "C. Forward"]
    assert summary.skipped == 1 and "images" in summary.examples[0] and "id 2" in summary.examples[0]


def test_option_parsing():
    assert split_options("Q? A. x B. y") == ("Q?", ["A. x", "B. y"])
    assert split_options("Turn A. then B. Q? A. left B. right C. back") == ("Turn A. then B. Q?", ["A. left", "B. right", "C. back"])
    assert split_options("How far is it?") == ("How far is it?", [])
    assert extract_letter("C. Back, Right") == "C" and extract_letter("(B)") == "B"
    assert extract_letter("right", ["A. Left", "B. Right"]) == "B" and extract_letter("maybe") is None
