"""Writers and readers: our writers produce the published layouts (and read back), our JSON layout of
SPAR-Bench still reads, clear errors / counted skips for bad records, option parsing. Files shaped like
the published ones (not written by hatch) are tested in test_bench_formats.py."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hatch_vlm.data import mindcube, mmsi, spar
from hatch_vlm.data.common import DataError, split_options, write_image
from hatch_vlm.data.lazy import LazySamples
from hatch_vlm.data.questions import FAMILIES
from hatch_vlm.data.synthetic import generate
from hatch_vlm.scoring.answers import label_letter
from hatch_vlm.scoring.official import mmsi as official_mmsi

QA = ("question", "options", "answer", "answer_type")


@pytest.fixture(scope="module")
def samples():
    # Enough samples that every family (and so every answer type) shows up.
    return generate(16, views=3, size=40, seed=4)


def same(a, b, fields=QA):
    for f in fields:
        assert getattr(a, f) == getattr(b, f), f


def same_images(a, b):
    assert len(a.images) == len(b.images)
    for x, y in zip(a.images, b.images):
        np.testing.assert_array_equal(x, y)


def test_spar_bench_parquet_writes_the_published_columns(samples, tmp_path):
    f = tmp_path / "SPAR-Bench" / "data" / "test-00000-of-00001.parquet"
    spar.write_spar_bench(samples, f, row_group_size=5)
    table = pq.read_table(f)
    assert table.schema.names == ["id", "img_type", "format_type", "task", "source", "image", "question", "answer"]
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("image").type == pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    assert pq.ParquetFile(f).num_row_groups == 4
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == list(range(len(samples)))
    assert {r["img_type"] for r in rows} == {"multi_view"}                    # 3 views each
    for s, r in zip(samples, rows):
        assert r["format_type"] == ("select" if s.answer_type == "mc" else "fill")
        assert r["task"] == (spar.bench_task(s) or s.task)
        assert r["image"][0]["bytes"][:8] == b"\x89PNG\r\n\x1a\n" and len(r["image"]) == s.num_views
        if s.options:
            assert r["question"].splitlines()[-len(s.options):] == s.options   # options one per line
    # and it reads back (through the directory, as a download is pointed at)
    back, summary = spar.read_spar_bench(tmp_path / "SPAR-Bench", strict=True)
    assert isinstance(back, LazySamples) and summary.read == len(samples)
    for k, (a, b) in enumerate(zip(samples, back)):
        same(a, b)
        if spar.bench_task(a):                 # a synthetic family's stand-in task keeps its level
            assert b.category == FAMILIES[a.task].category == spar.level_of(b.task)
        assert b.meta["row"]["id"] == k and "image" not in b.meta["row"]
        same_images(a, b)


def test_spar_bench_jsonl_round_trip(samples, tmp_path):
    spar.write_spar_bench(samples, tmp_path / "bench.jsonl")
    back, summary = spar.read_spar_bench(tmp_path / "bench.jsonl", strict=True)
    assert summary.read == len(samples)
    for a, b in zip(samples, back):
        same(a, b, QA + ("task", "category", "id"))
        assert b.meta["row"]["level"] == a.category and "image" not in b.meta["row"]
        same_images(a, b)


def test_mindcube_writer_layout_and_round_trip(samples, tmp_path):
    mc = [s for s in samples if s.category in mindcube.COUNTED]
    assert mc
    root = tmp_path / "mindcube"
    path = mindcube.write_mindcube(mc, root / "raw" / "MindCube_tinybench.jsonl")
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert list(recs[0]) == ["id", "category", "type", "meta_info", "question", "images", "gt_answer"]
    for s, r in zip(mc, recs):
        assert mindcube.setting_of(r["id"]) == s.category
        for rel in r["images"]:
            assert rel.startswith(f"other_all_image/{s.category}/") and (root / rel).is_file()
    back, summary = mindcube.read_mindcube(path, strict=True)       # default root: the grandparent
    assert summary.read == len(mc)
    for a, b in zip(mc, back):
        same(a, b, QA + ("category", "task"))
        same_images(a, b)
    with pytest.raises(DataError, match="not a multiple-choice question of a MindCube setting"):
        numeric = [s for s in samples if s.answer_type == "numeric"][:1]
        mindcube.write_mindcube(numeric, tmp_path / "x" / "raw" / "y.jsonl")


def test_mmsi_round_trip(samples, tmp_path):
    choice = [s for s in samples if s.answer_type == "mc"]
    mmsi.write_mmsi(choice, tmp_path / "mmsi" / "MMSI_bench.parquet")
    back, _ = mmsi.read_mmsi(tmp_path / "mmsi", strict=True)
    assert len(back) == len(choice)
    for a, b in zip(choice, back):
        same(a, b)
        assert b.category in official_mmsi.FAMILIES and b.meta["row"]["question_type"] == b.task
        same_images(a, b)


def test_writers_take_lazy_samples(samples, tmp_path):
    spar.write_spar_bench(samples, tmp_path / "a.parquet")
    lazy, _ = spar.read_spar_bench(tmp_path / "a.parquet")
    spar.write_spar_bench(lazy, tmp_path / "b.parquet")             # stubs decode as they are written
    again, _ = spar.read_spar_bench(tmp_path / "b.parquet")
    assert [s.meta["row"] for s in again] == [s.meta["row"] for s in lazy]
    same_images(lazy[3], again[3])


def _img(tmp_path, name, value=100):
    write_image(np.full((8, 8, 3), value, np.uint8), tmp_path / name)
    return name


def test_spar_bench_json_layout_and_skips(tmp_path):
    a, b = _img(tmp_path, "a.png"), _img(tmp_path, "b.png", 200)
    recs = [
        {"id": "q0", "question": "Where is the chair from view 2?\nA. Front, Left\nB. Front, Right\nC. Back, Right",
         "image": [a, b], "task": "obj_spatial_relation_oc_mv", "answer": "C. Back, Right"},
        {"id": "q1", "question": "How far is the lamp from the camera in meters?", "image": [a],
         "task": "depth_prediction_oc", "answer": "2.5", "level": "Middle"},       # its own level wins
        {"id": "q2", "question": "Which way did the camera move? A. Left B. Right", "image": [a, b],
         "task": "camera_motion_infer"},                                  # no answer
        {"id": "q3", "question": "pick A. x B. y", "image": [a, "missing.png"], "task": "position_matching",
         "answer": "A"},                                                  # missing image file
        {"id": "q4", "question": "pick A. x B. y", "image": [a], "task": "position_matching",
         "answer": "E"},                                                  # not an option
        {"id": "q5", "question": "How did the camera move?", "image": [a, b], "task": "view_change_infer",
         "format_type": "fill", "img_type": "multi_view", "answer": "move_left:1.0"},
        {"id": "q6", "question": "Which box?", "image": [a], "task": "position_matching", "format_type": "select",
         "answer": "(B)"},                                                # select without inline options
        {"id": "q7", "question": "?", "image": [a], "task": "position_matching", "format_type": "multiple",
         "answer": "A"},                                                  # unknown format_type
    ]
    f = tmp_path / "bench.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in recs) + "\n{not json\n")
    got, summary = spar.read_spar_bench(f)
    assert [s.id for s in got] == ["q0", "q1", "q5", "q6"]
    s = list(got.stubs())
    assert s[0].options == ["A. Front, Left", "B. Front, Right", "C. Back, Right"] and s[0].answer == "C"
    assert s[0].question == "Where is the chair from view 2?" and s[0].category == "High"
    assert got[0].images[1][0, 0, 0] == 200
    assert s[1].answer_type == "numeric" and s[1].answer == "2.5" and s[1].category == "Middle"
    assert s[2].answer_type == "open" and s[2].category == "Middle" and s[2].meta["row"]["img_type"] == "multi_view"
    assert s[3].answer_type == "mc" and s[3].options == [] and s[3].answer == "B"
    assert summary.read == 4 and summary.skipped == 5
    assert summary.reasons["missing answer"] == 1 and summary.reasons["missing image file"] == 1
    assert summary.reasons["bad answer"] == 1 and summary.reasons["bad json"] == 1
    assert summary.reasons["bad format_type"] == 1
    assert any("'answer'" in e and "q2" in e for e in summary.examples)
    assert any("missing.png" in e and "q3" in e for e in summary.examples)
    with pytest.raises(DataError, match=r"q2.*missing field 'answer'"):
        spar.read_spar_bench(f, strict=True)
    with pytest.raises(DataError, match="not found"):
        spar.read_spar_bench(tmp_path / "nope.jsonl")


def test_synth_and_demo_write_the_published_layouts(tmp_path):
    from hatch_vlm.commands.data import main
    from hatch_vlm.pipeline.demo import benchmark_files

    out = tmp_path / "syn"
    assert main(["data", "synth", "--out", str(out), "--num", "2", "--size", "32", "--seed", "1",
                 "--bench-num", "12"]) == 0
    b = out / "benchmarks"
    bench, _ = spar.read_spar_bench(b / "spar_bench", strict=True)
    assert len(bench) >= 1 and all(s.category in spar.LEVELS for s in bench.stubs())
    assert (b / "spar_bench" / "data" / "test-00000-of-00001.parquet").is_file()
    mc, _ = mindcube.read_mindcube(b / "mindcube" / "raw" / "MindCube_tinybench.jsonl", strict=True)
    assert len(mc) >= 1 and (b / "mindcube" / "other_all_image").is_dir()
    mmsi.read_mmsi(b / "mmsi" / "MMSI_bench.parquet", strict=True)

    files = benchmark_files(tmp_path / "demo", {"data": {"num_eval": 4, "size": 32}})
    paths = {f["name"]: f["path"] for f in files}
    assert list(paths) == ["spar-mv", "spar-si", "cv-bench", "mindcube", "mmsi"]     # the registry's order
    assert paths["spar-mv"].endswith("benchmarks/spar_bench/data/test-00000-of-00001.parquet") == \
        (paths["spar-si"] == paths["spar-mv"])
    assert paths["cv-bench"].endswith("benchmarks/cv_bench/test_2d.parquet")
    assert paths["mindcube"].endswith("benchmarks/mindcube/raw/MindCube_tinybench.jsonl")
    assert paths["mmsi"].endswith("benchmarks/mmsi/MMSI_bench.parquet")
    from hatch_vlm.eval.run import load_benchmark

    for name, path in paths.items():
        got = load_benchmark(name, path)
        assert len(got) >= 1 and got[0].images[0].shape == (32, 32, 3)
    assert benchmark_files(tmp_path / "demo", {"data": {"num_eval": 4, "size": 32}}) == files    # kept


def test_option_parsing():
    assert split_options("Q? A. x B. y") == ("Q?", ["A. x", "B. y"])
    assert split_options("Turn A. then B. Q? A. left B. right C. back") == ("Turn A. then B. Q?", ["A. left", "B. right", "C. back"])
    assert split_options("How far is it?") == ("How far is it?", [])
    assert label_letter("C. Back, Right") == "C" and label_letter("(B)") == "B"
    assert label_letter("right", ["A. Left", "B. Right"]) == "B" and label_letter("maybe") is None
    stem, options, answer, kind = spar.parse_answer(
        "Q?\nA. a\nB. b\nYour answer can only include one of options A or B", "B", "select", "here")
    assert (stem, options, answer, kind) == ("Q?", ["A. a", "B. b"], "B", "mc")
