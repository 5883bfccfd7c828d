"""CV-Bench's official rules (hatch_vlm.scoring.official.cv_bench) against replies worked out by hand from
Cambrian's extract_mcq_answer (eval/eval/coco/coco_test.py, eval/eval/omni/omni_test.py) and the dataset card's
Accuracy formula; and the reader on hand-written files in the published layouts (parquet built here from
literal rows, the JSONL + img/ tree)."""
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hatch_vlm.data.common import DataError
from hatch_vlm.data.cv_bench import read_cv_bench
from hatch_vlm.eval.run import load_benchmark, make_record, prompt_message, summarise
from hatch_vlm.scoring.official import cv_bench as cv

ADE_C4 = {"source": "ADE20K", "choices": ["1", "2", "3", "4"], "answer": "(C)"}      # gold c, its text "3"
COCO_B2 = {"source": "COCO", "choices": ["left", "right"], "answer": "(B)"}
OMNI_A2 = {"source": "Omni3D", "choices": ["lamp", "table"], "answer": "(A)"}
OMNI_C3 = {"source": "Omni3D", "choices": ["1", "2", "3"], "answer": "(C)"}         # gold text "3"
OMNI_F6 = {"source": "Omni3D", "choices": ["a1", "b2", "c3", "d4", "e5", "f6"], "answer": "(F)"}
NO_PARENS = {"source": "ADE20K", "choices": ["1", "2", "3"], "answer": "C"}         # not "(X)": never right

# (reply, row, what the official extraction gives, score) -- each worked out by hand from the rule:
# lower + strip; cut after "answer is" / "answer is:" / "answer:" (in that order, on the cut text); strip;
# rstrip "." (ADE20K, COCO) or ".:," (Omni3D); lstrip "("; rstrip ")"; first character.
TABLE = [
    ("C", ADE_C4, "c", 1),
    ("(C)", ADE_C4, "c", 1),
    ("c.", ADE_C4, "c", 1),
    ("c", ADE_C4, "c", 1),
    ("The answer is C.", ADE_C4, "c", 1),
    ("Answer: (c)", ADE_C4, "c", 1),
    ("answer is (C).", ADE_C4, "c", 1),
    ("The answer is: C", ADE_C4, ":", 0),          # "answer is" leaves ": c"; "answer is:" is then not in it
    ("C. 3", ADE_C4, "c", 1),
    ("3", ADE_C4, "3", 0),                         # option text: only the Omni3D scorer compares it
    ("B", ADE_C4, "b", 0),
    ("", ADE_C4, "", 0),
    ("   ", ADE_C4, "", 0),
    ("(D)", ADE_C4, "d", 0),
    ("C) three", ADE_C4, "c", 1),
    ("**C**", ADE_C4, "*", 0),
    ("I think C", ADE_C4, "i", 0),
    ("The correct option is (C)", ADE_C4, "t", 0),
    ("Final answer: C", ADE_C4, "c", 1),
    ("<answer>C</answer>", ADE_C4, "<", 0),        # no keyword with a colon or "is": the tag's "<"
    ("The answer is A, not C", ADE_C4, "a", 0),
    ("c, d", ADE_C4, "c", 1),
    ("(c", ADE_C4, "c", 1),
    ("c)", ADE_C4, "c", 1),
    ("C:", ADE_C4, "c", 1),
    ("B. right", COCO_B2, "b", 1),
    ("right", COCO_B2, "r", 0),                    # option text, cut to one character
    ("b", COCO_B2, "b", 1),
    ("Answer: (b)", COCO_B2, "b", 1),
    ("The answer is B.", COCO_B2, "b", 1),
    ("A", COCO_B2, "a", 0),
    ("(A) left", COCO_B2, "a", 0),
    ("The answer is (B) right.", COCO_B2, "b", 1),
    ("The answer is:b", COCO_B2, ":", 0),
    ("Answer:B", COCO_B2, "b", 1),
    ("The answer is. B", COCO_B2, ".", 0),         # ". b": the trailing-"." strip does not reach the front
    ("lamp", OMNI_A2, "l", 0),                     # a bare option text scores 0 (cut to "l")
    ("A", OMNI_A2, "a", 1),
    ("(A)", OMNI_A2, "a", 1),
    ("The answer is: A", OMNI_A2, ":", 0),
    ("a,", OMNI_A2, "a", 1),                       # Omni3D strips a trailing ","
    ("B", OMNI_A2, "b", 0),
    ("3", OMNI_C3, "3", 1),                        # Omni3D: equals the gold option's text "3"
    ("3.", OMNI_C3, "3", 1),
    ("2", OMNI_C3, "2", 0),
    ("C", OMNI_C3, "c", 1),
    ("The answer is 3", OMNI_C3, "3", 1),
    ("F", OMNI_F6, "f", 1),
    ("(f)", OMNI_F6, "f", 1),
    ("E", OMNI_F6, "e", 0),
    ("f6", OMNI_F6, "f", 1),
    ("C", NO_PARENS, "c", 0),
]


@pytest.mark.parametrize("reply,row,extracted,expected", TABLE)
def test_official_extraction_and_score(reply, row, extracted, expected):
    assert cv.extract(reply, row) == extracted
    assert cv.score(reply, row) == expected


def test_the_table_is_big_enough_and_scores_never_raise():
    assert len(TABLE) >= 40
    for bad in (None, 3, ["C"]):
        assert cv.score(bad, ADE_C4) == 0.0
    assert cv.score("C", {"source": "Omni3D", "answer": "(C)", "choices": None}) == 1.0
    assert cv.score("3", {"source": "Omni3D", "answer": "(C)", "choices": None}) == 0.0


def test_overall_is_the_mean_of_2d_and_3d_with_2d_the_mean_of_two_source_accuracies():
    # ADE20K 3 of 4, COCO 0 of 2, Omni3D 2 of 4 (hand-counted)
    pairs = ([(ADE_C4, s) for s in (1, 1, 1, 0)] + [(COCO_B2, s) for s in (0, 0)]
             + [(OMNI_A2, s) for s in (1, 0, 1, 0)] + [({"source": "elsewhere"}, 1)])
    agg = cv.aggregate(pairs)
    assert agg["sources"] == {"ADE20K": 75.0, "COCO": 0.0, "Omni3D": 50.0}
    assert agg["categories"] == {"2D": 37.5, "3D": 50.0}         # 2D = (75 + 0) / 2, not the row mean 3/6 = 50
    assert agg["Avg"] == pytest.approx(43.75)                      # (37.5 + 50) / 2
    assert agg["per_question"] == 50.0 and agg["n"] == 10         # lmms-eval's flat formula: 5 of 10
    assert agg["also"] == {cv.FLAT_NAME: 50.0}
    # 2D needs both of its sources; the overall needs both halves
    part = cv.aggregate([(ADE_C4, 1), (OMNI_A2, 0)])
    assert part["categories"] == {"2D": None, "3D": 0.0} and part["Avg"] is None


# ------------------------------------------------------------------------------------------ the reader
def _png(seed, size=(40, 30)):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _row(idx, type_, task, source, choices, answer, question="How many chairs are in the image?"):
    name = f"img/{type_}/{task.lower()}/{source.lower()}_{idx}.png"
    row = {"idx": idx, "type": type_, "task": task, "image": {"bytes": _png(idx), "path": name},
           "question": question, "choices": choices, "answer": answer,
           "prompt": question + " Select from the following choices.\n"
                     + "\n".join(f"({'ABCDEF'[k]}) {c}" for k, c in enumerate(choices)),
           "filename": name, "source": source, "source_dataset": source, "source_filename": f"{idx}.jpg",
           "target_class": None}
    if source == "COCO":
        row["target_size"] = 100
    if source == "Omni3D":
        row["bbox"] = [[1.0, 2.0, 3.0, 4.0]]
    return row


ROWS_2D = [_row(0, "2D", "Count", "ADE20K", ["0", "1", "2", "3", "4", "5"], "(F)"),
           _row(1, "2D", "Count", "ADE20K", ["1", "2", "3"], "(C)"),
           _row(2, "2D", "Relation", "ADE20K", ["left", "right"], "(A)",
                "Considering the relative positions of the lamp and the bed, where is the lamp?"),
           _row(3, "2D", "Count", "COCO", ["1", "2", "3", "4", "5"], "(E)"),
           _row(4, "2D", "Count", "COCO", ["0", "1", "2", "3"], "(D)"),
           _row(5, "2D", "Relation", "COCO", ["above", "below"], "(B)", "Where is the cup relative to the table?")]
ROWS_3D = [_row(6, "3D", "Depth", "Omni3D", ["lamp", "table"], "(A)", "Which is closer to the camera?"),
           _row(7, "3D", "Distance", "Omni3D", ["chair", "sofa"], "(B)", "Which is closer to the bed?")]


def _write(rows, path):
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture
def download(tmp_path):
    _write(ROWS_2D, tmp_path / "test_2d.parquet")
    _write(ROWS_3D, tmp_path / "test_3d.parquet")
    return tmp_path


def test_reads_both_parquets_every_source_task_and_answer_letter(download):
    samples = load_benchmark("cv-bench", download)
    assert len(samples) == 8
    assert [s.answer for s in samples] == list("FCAEDBAB")
    assert [len(s.options) for s in samples] == [6, 3, 2, 5, 4, 2, 2, 2]
    assert {s.meta["row"]["source"] for s in samples} == {"ADE20K", "COCO", "Omni3D"}
    assert {s.task for s in samples} == {"Count", "Relation", "Depth", "Distance"}
    assert [s.category for s in samples] == ["2D"] * 6 + ["3D"] * 2
    assert samples[6].options == ["A. lamp", "B. table"] and samples[6].id == "3D_6"
    assert samples[0].num_views == 1 and samples[0].images[0].shape == (30, 40, 3)
    text = prompt_message(samples.stub(1), "cv-bench", actor=False)["content"][-1]["text"]
    assert text == ROWS_2D[1]["prompt"] + "\nAnswer with the option's letter from the given choices directly."


def test_reads_the_older_single_parquet_and_one_file(tmp_path):
    _write(ROWS_2D + ROWS_3D, tmp_path / "test.parquet")
    assert len(load_benchmark("cv-bench", tmp_path)) == 8
    _write(ROWS_3D, tmp_path / "only3d.parquet")
    assert [s.answer for s in load_benchmark("cv-bench", tmp_path / "only3d.parquet")] == ["A", "B"]


def test_reads_the_jsonl_files_with_the_img_tree_and_prefers_parquet(tmp_path):
    for name, rows in (("test_2d.jsonl", ROWS_2D), ("test_3d.jsonl", ROWS_3D)):
        lines = []
        for r in rows:
            (tmp_path / r["filename"]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / r["filename"]).write_bytes(r["image"]["bytes"])
            lines.append(json.dumps({k: v for k, v in r.items() if k != "image"}))
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    samples = load_benchmark("cv-bench", tmp_path)
    assert len(samples) == 8 and samples[7].images[0].shape == (30, 40, 3)
    assert [s.answer for s in samples] == list("FCAEDBAB")
    _write(ROWS_3D, tmp_path / "test_3d.parquet")       # parquet and JSONL hold the same rows: parquet only
    assert len(load_benchmark("cv-bench", tmp_path)) == 2


def test_bad_rows_are_skipped_and_named(tmp_path):
    bad = [dict(ROWS_2D[2], idx=20, answer="(C)"),                  # 2 choices: (C) is none of them
           dict(ROWS_2D[2], idx=21, source="ScanNet"),              # not a source the official score knows
           dict(ROWS_2D[2], idx=22, choices=["only one"], answer="(A)")]
    _write(ROWS_2D + bad, tmp_path / "test_2d.parquet")
    samples, summary = read_cv_bench(tmp_path)
    assert len(samples) == 6 and summary.skipped == 3
    assert {"bad answer", "bad source", "bad choices"} == set(summary.reasons)
    with pytest.raises(DataError, match="field 'answer'"):
        read_cv_bench(tmp_path, strict=True)
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="holds none of test_2d.parquet"):
        read_cv_bench(tmp_path / "other")
    with pytest.raises(DataError, match="does not exist"):
        read_cv_bench(tmp_path / "not_there")


def test_scores_per_record_and_the_official_overall_through_the_evaluation(download):
    samples = load_benchmark("cv-bench", download)
    # ADE20K: F right, C wrong, A right (2/3); COCO: E wrong, D wrong ("c."), B right (1/3); Omni3D: "lamp"
    # for gold A scores 0, "(B)" right (1/2)
    replies = ["F", "B", "(A)", "A", "c.", "Answer: B", "lamp", "(B)"]
    actor = [f"<action>{{from:0,to:0,action:[]}}</action><answer>{r}</answer>" for r in replies]
    plain = [make_record("cv-bench", i, s, r, actor=False) for i, (s, r) in enumerate(zip(samples, replies))]
    assert [r.official for r in plain] == [1, 0, 1, 0, 0, 1, 0, 1]
    acted = [make_record("cv-bench", i, s, r, actor=True) for i, (s, r) in enumerate(zip(samples, actor))]
    # the raw ActoR reply starts with "<" -- except where the span holds "Answer: B": the official cut after the
    # last "answer:" leaves "b</answer>", read as "b"
    assert [r.official for r in acted] == [0, 0, 0, 0, 0, 1, 0, 0]
    assert [r.answer_span for r in acted] == [1, 0, 1, 0, 0, 1, 0, 1]
    row = summarise(plain)["cv-bench"]
    assert row["2D"] == pytest.approx(50.0)                 # (2/3 + 1/3) / 2
    assert row["3D"] == pytest.approx(50.0) and row["Avg"] == pytest.approx(50.0)
    # without COCO's right answer: ADE20K 2 of 3, COCO 0 of 2 -> 2D = (2/3 + 0) / 2 = 33.3, not the 2D row
    # mean 2/5 = 40; overall (33.3 + 50) / 2; lmms-eval's flat accuracy 3 of 7
    row = summarise(plain[:5] + plain[6:])["cv-bench"]
    assert row["2D"] == pytest.approx(100 / 3)
    assert row["Avg"] == pytest.approx((100 / 3 + 50) / 2)
    assert row["also"][cv.FLAT_NAME] == pytest.approx(100 * 3 / 7) == row["per_question"]
