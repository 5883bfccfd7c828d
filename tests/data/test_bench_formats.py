"""The benchmark readers on files shaped exactly like the published ones (not written by hatch):

* SPAR-Bench: parquet with the dataset card's columns (id int64, img_type, format_type, task, source,
  image = list of {bytes, path}, question, answer; no level), built here with pyarrow from literal rows;
* MindCube-Tiny: the hand-written fixture tests/data/fixtures/benchmarks/mindcube/data/ (JSONL under
  raw/, images under other_all_image/, paths relative to the JSONL's grandparent);
* MMSI-Bench: parquet (id, images = list of raw bytes, question_type with en-dash and hyphen forms,
  question ending in "Options: A: ..., B: ...", answer, thought, difficulty, mean_normed_duration_seconds).

And the lazy decoding: nothing is decoded until a sample is indexed; a corrupt image raises only then,
naming the file, the record and the field.
"""
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import hatch_vlm.data.lazy as lazy
from hatch_vlm.data import mindcube, mmsi, spar
from hatch_vlm.data.common import DataError
from hatch_vlm.data.lazy import LazyImages, LazySamples
from hatch_vlm.scoring.official import mmsi as official_mmsi

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
MINDCUBE_DATA = FIXTURES / "mindcube" / "data"
MINDCUBE_JSONL = MINDCUBE_DATA / "raw" / "MindCube_tinybench.jsonl"

RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)


def _encoded(rgb, fmt="JPEG", size=(16, 24)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((*size, 3), rgb, np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def _close(img, rgb, tol=6):
    return img.shape[2] == 3 and np.abs(img.reshape(-1, 3).mean(0) - np.array(rgb)).max() <= tol


@pytest.fixture
def decodes(monkeypatch):
    """Counts image decodes (every decode of the benchmark readers goes through lazy.read_image)."""
    calls = []
    real = lazy.read_image

    def counting(src):
        calls.append(src)
        return real(src)

    monkeypatch.setattr(lazy, "read_image", counting)
    return calls


# --------------------------------------------------------------------------------------------------
# SPAR-Bench
# --------------------------------------------------------------------------------------------------
SPAR_SCHEMA = pa.schema([
    ("id", pa.int64()), ("img_type", pa.string()), ("format_type", pa.string()), ("task", pa.string()),
    ("source", pa.string()), ("image", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
    ("question", pa.string()), ("answer", pa.string()),
])


def _imgs(*rgbs):
    return [{"bytes": _encoded(c), "path": f"frame_{k}.jpg"} for k, c in enumerate(rgbs)]


def spar_rows():
    """Rows as the published parquet holds them (columns and value styles of the dataset card)."""
    return [
        {"id": 101, "img_type": "multi_view", "format_type": "select", "task": "obj_spatial_relation_oo_mv",
         "source": "scannet", "image": _imgs(RED, GREEN),
         "question": "Where is the towel (red bbox) relative to the chair (blue bbox)?\n"
                     "A. left, above, closer\nB. right, below, farther\nC. left, below, closer\n"
                     "D. right, above, farther\nYour answer can only include one of options A, B, C or D",
         "answer": "C"},
        {"id": 102, "img_type": "single_view", "format_type": "fill", "task": "depth_prediction_oc",
         "source": "scannetpp", "image": _imgs(BLUE),
         "question": "How far is the lamp (red point) from the camera, in meters?", "answer": "2.3"},
        {"id": 103, "img_type": "multi_view", "format_type": "fill", "task": "view_change_infer",
         "source": "scannet", "image": _imgs(RED, BLUE),
         "question": "How did the camera move and turn from image 1 to image 2?",
         "answer": "move_right:0.5,rotate_left:30"},
        {"id": 104, "img_type": "multi_view", "format_type": "select", "task": "camera_motion_infer",
         "source": "structured3d", "image": _imgs(RED, GREEN, BLUE),
         "question": "Which of the boxes drawn in image 3 is where the camera of image 1 stands?",   # no options
         "answer": "B"},
        {"id": 105, "img_type": "multi_view", "format_type": "select", "task": "distance_infer_center_oo_mv",
         "source": "scannet", "image": _imgs(GREEN, BLUE),
         "question": "Which object is closest to the centre of the room? A. the sofa B. the bed C. the desk",
         "answer": "A"},
        {"id": 106, "img_type": "multi_view", "format_type": "fill", "task": "distance_prediction_oo_mv",
         "source": "scannet", "image": _imgs(RED, GREEN, BLUE),
         "question": "What is the distance between the bed (red point) and the desk (blue point) in meters?",
         "answer": "1.75"},
        {"id": 107, "img_type": "single_view", "format_type": "select", "task": "spatial_imagination_oc",
         "source": "scannetpp", "image": _imgs(GREEN),
         "question": "If you turned around, what would be on your left?\nA. the window\nB. the door",
         "answer": "B"},
        {"id": 108, "img_type": "multi_view", "format_type": "select", "task": "position_matching",
         "source": "scannet", "image": _imgs(RED, GREEN), "question": "Which box? A. [1, 2, 3, 4] B. [5, 6, 7, 8]",
         "answer": None},                                                             # skipped: no answer
        {"id": 109, "img_type": "single_view", "format_type": "select", "task": "obj_spatial_relation_oo",
         "source": "scannet", "image": _imgs(RED), "question": "Left or right? A. left B. right",
         "answer": "E"},                                                              # skipped: not an option
        {"id": 110, "img_type": "multi_view", "format_type": "fill", "task": "depth_prediction_oo_mv",
         "source": "scannet", "image": [{"bytes": b"not an image at all", "path": "broken.jpg"},
                                        {"bytes": _encoded(GREEN), "path": "ok.jpg"}],
         "question": "How far is the lamp from the camera of image 2, in meters?", "answer": "1.2"},
        {"id": 111, "img_type": "single_view", "format_type": "fill", "task": "depth_prediction_oo",
         "source": "scannet", "image": [], "question": "How far?", "answer": "3"},  # skipped: no image
    ]


@pytest.fixture
def spar_root(tmp_path):
    """A SPAR-Bench download: <root>/data/test-00000-of-00001.parquet, 4 rows per row group."""
    f = tmp_path / "SPAR-Bench" / "data" / "test-00000-of-00001.parquet"
    f.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(spar_rows(), schema=SPAR_SCHEMA), f, row_group_size=4)
    return tmp_path / "SPAR-Bench"


def by_id(samples):
    return {s.id: s for s in samples.stubs()}


def test_spar_bench_published_parquet(spar_root):
    samples, summary = spar.read_spar_bench(spar_root)
    assert isinstance(samples, LazySamples)
    assert summary.read == 8 and summary.skipped == 3
    assert summary.reasons == {"missing answer": 1, "bad answer": 1, "bad image": 1}
    assert any("(id 108)" in e and "'answer'" in e for e in summary.examples)
    s = by_id(samples)
    assert list(s) == ["101", "102", "103", "104", "105", "106", "107", "110"]
    # answer types come from format_type
    assert [s[i].answer_type for i in s] == ["mc", "numeric", "open", "mc", "mc", "numeric", "mc", "numeric"]
    # select with options one per line; SPAR's instruction line is not part of option D
    assert s["101"].options == ["A. left, above, closer", "B. right, below, farther", "C. left, below, closer",
                                "D. right, above, farther"]
    assert s["101"].question == "Where is the towel (red bbox) relative to the chair (blue bbox)?"
    assert s["101"].answer == "C"
    # select without inline options is still multiple choice (format_type decides)
    assert s["104"].answer_type == "mc" and s["104"].options == [] and s["104"].answer == "B"
    assert s["104"].question.startswith("Which of the boxes")
    assert s["105"].options == ["A. the sofa", "B. the bed", "C. the desk"] and s["105"].answer == "A"
    # fill: a number is numeric, view_change_infer's motion string is open (kept verbatim)
    assert s["102"].answer == "2.3" and s["106"].answer == "1.75"
    assert s["103"].answer == "move_right:0.5,rotate_left:30" and s["103"].options == []
    # the official levels by task (no level column)
    assert {i: s[i].category for i in s} == {"101": "High", "102": "Low", "103": "Middle", "104": "Middle",
                                            "105": "High", "106": "Low", "107": "High", "110": "Low"}
    assert [s[i].num_views for i in s] == [2, 1, 2, 3, 2, 3, 1, 2]
    assert {x.source for x in s.values()} == {"spar_bench"}


def test_spar_bench_row_as_shipped(spar_root):
    samples, _ = spar.read_spar_bench(spar_root)
    rows = {r["id"]: r for r in spar_rows()}
    for stub in samples.stubs():
        row = stub.meta["row"]
        want = {k: v for k, v in rows[row["id"]].items() if k != "image"}
        assert row == want                                        # every column but the images, as shipped
        assert type(row["id"]) is int                             # plain Python, JSON-able
        json.dumps(row)
    assert samples.stub(0).meta["row"]["img_type"] == "multi_view"


def test_spar_bench_level_lists():
    low = ["depth_prediction_oc", "depth_prediction_oo", "distance_prediction_oc", "distance_prediction_oo",
           "depth_prediction_oc_mv", "depth_prediction_oo_mv", "distance_prediction_oc_mv",
           "distance_prediction_oo_mv"]
    middle = ["view_change_infer", "position_matching", "camera_motion_infer"]
    high = ["obj_spatial_relation_oo", "obj_spatial_relation_oc_mv", "obj_spatial_relation_oo_mv",
            "spatial_imagination_oc", "spatial_imagination_oo", "spatial_imagination_oc_mv",
            "spatial_imagination_oo_mv", "distance_infer_center_oo", "distance_infer_center_oo_mv"]
    assert len(low + middle + high) == 20
    assert [spar.level_of(t) for t in low] == ["Low"] * 8
    assert [spar.level_of(t) for t in middle] == ["Middle"] * 3
    assert [spar.level_of(t) for t in high] == ["High"] * 9
    assert spar.level_of("something_else") == ""


def test_spar_bench_lazy_decoding(spar_root, decodes):
    samples, _ = spar.read_spar_bench(spar_root)
    assert decodes == []                                          # reading decodes nothing
    head = samples[:3]
    assert isinstance(head, LazySamples) and len(head) == 3
    mv = samples.where(lambda x: x.meta["row"]["img_type"] == "multi_view")
    assert [x.id for x in mv.stubs()] == ["101", "103", "104", "105", "106", "110"]
    assert [x.id for x in samples if x.num_views >= 2] == ["101", "103", "104", "105", "106", "110"]
    assert isinstance(samples.stub(0).images, LazyImages) and samples.num_views(3) == 3
    assert decodes == []                                          # nor do slicing, filtering, iterating
    first = samples[0]
    assert len(decodes) == 2 and isinstance(first.images, list)
    assert _close(first.images[0], RED) and _close(first.images[1], GREEN)
    assert first.meta["row"]["id"] == 101


def test_spar_bench_corrupt_image_raises_only_when_indexed(spar_root):
    samples, summary = spar.read_spar_bench(spar_root, strict=False)
    k = [x.id for x in samples.stubs()].index("110")
    stub = samples.stub(k)                                        # no error: nothing decoded yet
    assert stub.num_views == 2 and _close(stub.images[1], GREEN)  # the good view decodes on its own
    for i in range(len(samples)):
        if i != k:
            samples[i]                                            # every other record decodes fine
    with pytest.raises(DataError) as e:
        samples[k]
    msg = str(e.value)
    assert "test-00000-of-00001.parquet" in msg and "record 9" in msg and "(id 110)" in msg
    assert "field 'image'[0]" in msg and "cannot decode" in msg


def test_spar_bench_reads_one_row_group_at_a_time(spar_root):
    samples, _ = spar.read_spar_bench(spar_root)
    source = samples.stub(0).images.ref.source
    assert source.groups_read == 0
    samples[0], samples[1], samples[2]                            # rows 0-3 are row group 0
    assert source.groups_read == 1
    samples[4]                                                    # id 105: row 4, group 1
    assert source.groups_read == 2
    samples[3]                                                    # id 104: back to group 0
    assert source.groups_read == 3


def test_spar_bench_stubs_hold_no_image_bytes(tmp_path):
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(2)]
    blobs = []
    for im in noise:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        blobs.append(buf.getvalue())
    rows = [{"id": n, "img_type": "multi_view", "format_type": "fill", "task": "depth_prediction_oc_mv",
             "source": "scannet", "image": [{"bytes": b, "path": f"{n}_{k}.png"} for k, b in enumerate(blobs)],
             "question": "How far?", "answer": "1.0"} for n in range(10)]
    f = tmp_path / "data" / "test-00000-of-00001.parquet"
    f.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=SPAR_SCHEMA), f, row_group_size=3)
    samples, _ = spar.read_spar_bench(tmp_path)
    image_bytes = 10 * sum(len(b) for b in blobs)                 # ~250 KB of PNG
    assert len(pickle.dumps(samples)) < image_bytes / 10
    back = pickle.loads(pickle.dumps(samples))                    # pickles (e.g. into workers) and still decodes
    np.testing.assert_array_equal(back[7].images[1], np.asarray(noise[1]))


def test_spar_bench_path_only_images_and_image_root(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "a.jpg").write_bytes(_encoded(BLUE))
    row = {"id": 1, "img_type": "single_view", "format_type": "fill", "task": "depth_prediction_oc",
           "source": "scannet", "image": [{"bytes": None, "path": "frames/a.jpg"}], "question": "How far?",
           "answer": "2"}
    f = tmp_path / "test.parquet"
    pq.write_table(pa.Table.from_pylist([row], schema=SPAR_SCHEMA), f)
    samples, _ = spar.read_spar_bench(f)
    assert _close(samples[0].images[0], BLUE)                     # relative to the file's directory
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(f, other / "test.parquet")
    moved, _ = spar.read_spar_bench(other / "test.parquet")
    with pytest.raises(DataError, match=r"\(id 1\).*'image'\[0\].*not found"):
        moved[0]
    rooted, _ = spar.read_spar_bench(other / "test.parquet", image_root=tmp_path)
    assert _close(rooted[0].images[0], BLUE)


# --------------------------------------------------------------------------------------------------
# MindCube-Tiny
# --------------------------------------------------------------------------------------------------
def _fixture_lines():
    return [json.loads(line) for line in MINDCUBE_JSONL.read_text().splitlines() if line.strip()]


def test_mindcube_fixture_grandparent_root():
    samples, summary = mindcube.read_mindcube(MINDCUBE_JSONL)
    assert summary.read == 6 and summary.skipped == 2
    assert summary.reasons == {"missing gt_answer": 1, "missing images file": 1}
    assert any("among_group695_q1_1" in e and "back_041.jpg" in e for e in summary.examples)
    got = list(samples.stubs())
    assert [s.id for s in got] == ["among_group693_q1_5_2", "aroundnew_group012_q1_1", "rotation_group005_q1_2",
                                   "translation_group002_q2_1", "rotation_among_group007_q1_3", "group900_q1_1"]
    # the setting by precedence around > rotation > translation > among; none named -> "other"
    assert [s.category for s in got] == ["among", "around", "rotation", "translation", "rotation", "other"]
    assert [s.task for s in got][:4] == ["mindcube_among", "mindcube_around", "mindcube_rotation",
                                         "mindcube_translation"]
    assert [s.answer for s in got] == ["B", "A", "C", "D", "A", "B"]
    assert all(s.answer_type == "mc" for s in got)
    assert got[0].options == ["A. Left", "B. Right", "C. Behind", "D. In front"]
    assert got[0].question.endswith("where is the sofa relative to the backpack?")
    assert [s.num_views for s in got] == [2, 2, 3, 2, 1, 2]
    # images resolve against data/, the JSONL's grandparent
    first = samples[0]
    assert _close(first.images[0], RED) and _close(first.images[1], GREEN)
    assert _close(samples[2].images[2], (120, 120, 120)) and _close(samples[3].images[1], (10, 10, 10))
    # a directory of JSONL files (data/raw/) works the same
    again, _ = mindcube.read_mindcube(MINDCUBE_DATA / "raw")
    assert len(again) == 6


def test_mindcube_row_as_shipped():
    samples, _ = mindcube.read_mindcube(MINDCUBE_JSONL)
    want = {r["id"]: {k: v for k, v in r.items() if k != "images"} for r in _fixture_lines()}
    for s in samples.stubs():
        assert s.meta["row"] == want[s.id]
        assert "images" not in s.meta["row"]
    assert samples.stub(0).meta["row"]["meta_info"] == [["backpack", "sofa", "lamp"], ["front", "left"]]


def test_mindcube_image_root_override(tmp_path):
    jsonl = tmp_path / "copied" / "MindCube_tinybench.jsonl"
    jsonl.parent.mkdir()
    shutil.copy(MINDCUBE_JSONL, jsonl)
    none, summary = mindcube.read_mindcube(jsonl)                 # tmp_path has no other_all_image/
    assert len(none) == 0 and summary.reasons["missing images file"] == 7
    samples, summary = mindcube.read_mindcube(jsonl, image_root=MINDCUBE_DATA)
    assert len(samples) == 6 and summary.skipped == 2
    assert _close(samples[1].images[0], BLUE)


def test_mindcube_lazy_and_corrupt_image(tmp_path, decodes):
    data = tmp_path / "data"
    shutil.copytree(MINDCUBE_DATA, data)
    (data / "other_all_image" / "rotation" / "room_005" / "view_1.jpg").write_bytes(b"\xff\xd8 truncated")
    samples, summary = mindcube.read_mindcube(data / "raw" / "MindCube_tinybench.jsonl")
    assert len(samples) == 6 and summary.skipped == 2             # the corrupt file exists: read fine
    assert decodes == []
    assert [s.num_views for s in samples] == [2, 2, 3, 2, 1, 2] and decodes == []
    samples[0], samples[1]
    assert len(decodes) == 4
    with pytest.raises(DataError) as e:
        samples[2]
    msg = str(e.value)
    assert "MindCube_tinybench.jsonl record 2" in msg and "rotation_group005_q1_2" in msg
    assert "field 'images'[1]" in msg and "cannot decode" in msg
    samples[3]                                                    # the next record is unaffected


def test_mindcube_strict_names_the_record():
    with pytest.raises(DataError, match=r"among_group694_q1_1.*missing field 'gt_answer'"):
        mindcube.read_mindcube(MINDCUBE_JSONL, strict=True)


def test_mindcube_setting_precedence():
    assert mindcube.setting_of("aroundnew_group003_q2_1") == "around"
    assert mindcube.setting_of("among_rotation_x") == "rotation"
    assert mindcube.setting_of("among_translation_x") == "translation"
    assert mindcube.setting_of("around_rotation_x") == "around"
    assert mindcube.setting_of("AMONG_group1") == "among"
    assert mindcube.setting_of("group1") == ""


# --------------------------------------------------------------------------------------------------
# MMSI-Bench
# --------------------------------------------------------------------------------------------------
def mmsi_rows():
    png = [_encoded(c, "PNG") for c in (RED, GREEN, BLUE)]
    base = {"thought": "Compare the two views.", "difficulty": "medium", "mean_normed_duration_seconds": 0.42}
    return [
        {"id": 0, "images": png[:2], "question_type": "Positional Relationship (Cam.–Obj.)",
         "question": "Where is the chair relative to the camera of image 2? "
                     "Options: A: Left, B: Right, C: Front, D: Behind",
         "answer": "B", **base},
        {"id": 1, "images": png[:2], "question_type": "Positional Relationship (Obj.-Obj.)",        # hyphen
         "question": "Where is the lamp relative to the bed? Options: A: Above, B: Below, C: Left, D: Right",
         "answer": "A", **base, "difficulty": "easy"},
        {"id": 2, "images": png, "question_type": "Attribute (Meas.)",
         "question": "How long is the table? Options: A: 1.2 m, B: 2.5 m, C: 3.1 m, D: 4.0 m", "answer": "C",
         **base},
        {"id": 3, "images": png[1:], "question_type": "Motion (Cam.)",
         "question": "How did the camera move? Options: A: Forward, B: Backward, C: Left, D: Right", "answer": "D",
         **base, "mean_normed_duration_seconds": 1.5},
        {"id": 4, "images": png, "question_type": "MSR",
         "question": "After turning right, what is ahead? Options: A: Door, B: Window, C: Sofa, D: TV", "answer": "A",
         **base, "difficulty": "hard"},
        {"id": 5, "images": [b"\x89PNG broken", png[0]], "question_type": "Attribute (Appr.)",
         "question": "Which colour is the cup? Options: A: Red, B: Green, C: Blue, D: White", "answer": "A", **base},
        {"id": 6, "images": png[:2], "question_type": "Motion (Obj.)",
         "question": "Where did the ball go? Options: A: Left, B: Right, C: Up, D: Down", "answer": "E",
         **base},                                                                                  # skipped
        {"id": 7, "images": None, "question_type": "MSR",
         "question": "Q? Options: A: x, B: y, C: z, D: w", "answer": "A", **base},                 # skipped
    ]


@pytest.fixture
def mmsi_file(tmp_path):
    f = tmp_path / "MMSI_bench.parquet"
    pq.write_table(pa.Table.from_pylist(mmsi_rows()), f, row_group_size=3)
    return f


def test_mmsi_published_parquet(mmsi_file, decodes):
    samples, summary = mmsi.read_mmsi(mmsi_file)
    assert summary.read == 6 and summary.skipped == 2
    assert summary.reasons == {"bad answer": 1, "missing images": 1}
    got = list(samples.stubs())
    # en dash and hyphen forms of a question type map to the same family
    assert [s.category for s in got] == ["Positional", "Positional", "Attribute", "Motion", "MSR", "Attribute"]
    assert got[0].task == "Positional Relationship (Cam.–Obj.)"
    assert got[2].options == ["A. 1.2 m", "B. 2.5 m", "C. 3.1 m", "D. 4.0 m"] and got[2].answer == "C"
    assert [s.num_views for s in got] == [2, 2, 3, 2, 3, 2]
    rows = {r["id"]: r for r in mmsi_rows()}
    for s in got:
        row = s.meta["row"]
        assert row == {k: v for k, v in rows[row["id"]].items() if k != "images"}
        assert isinstance(row["mean_normed_duration_seconds"], float) and "thought" in row
    assert decodes == []
    assert _close(samples[2].images[2], BLUE, tol=0)
    with pytest.raises(DataError, match=r"MMSI_bench.parquet record 5 \(id 5\): field 'images'\[0\]: cannot decode"):
        samples[5]


def test_mmsi_question_types_both_dashes():
    for dash in ("–", "-"):
        for pair in ("Cam.{}Cam.", "Obj.{}Obj.", "Reg.{}Reg.", "Cam.{}Obj.", "Obj.{}Reg.", "Cam.{}Reg."):
            assert official_mmsi.family(f"Positional Relationship ({pair.format(dash)})") == "Positional"
    assert official_mmsi.family("Attribute (Meas.)") == official_mmsi.family("Attribute (Appr.)") == "Attribute"
    assert official_mmsi.family("Motion (Cam.)") == official_mmsi.family("Motion (Obj.)") == "Motion"
    assert official_mmsi.family("MSR") == "MSR"
