"""MMSI-Bench parquet: reader returning `Sample`s, and a writer.

A row (InternRobotics/MMSI-Bench README): ``id``, ``images`` (a list of encoded images, raw bytes, 2-10),
``question_type`` (11 values, e.g. "Positional Relationship (Cam.–Obj.)" with an en dash; hyphen forms
occur too), ``question`` (ending in "Options: A: ..., B: ..., C: ..., D: ..."; "A. ..." is read as
well), ``answer`` (a letter), ``thought``, and ``difficulty``, ``mean_normed_duration_seconds``. The
category is the question type's family: Positional, Attribute, Motion or MSR (multi-step reasoning), the
four averages of the benchmark (`hatch_vlm.scoring.official.mmsi.family`, beside the official grouping).
``meta["row"]`` is the row without ``images``; images are decoded only when a sample is asked for
(hatch_vlm.data.lazy).

    read_mmsi(path, strict=False) -> (LazySamples, ReadSummary)
    write_mmsi(samples, path) -> Path
"""
from __future__ import annotations

from pathlib import Path

from ..scoring.official.mmsi import family
from .common import DataError, encode_png, join_options, require
from .lazy import read_bench_records
from .record import Sample
from .spar import parse_answer


# Question type written for each synthetic task (MMSI-Bench's naming style).
TYPE_OF_TASK = {
    "object_position": "Positional Relationship (Cam.-Obj.)",
    "cross_view_matching": "Positional Relationship (Obj.-Obj.)",
    "mindcube_among": "Positional Relationship (Obj.-Obj.)",
    "mindcube_around": "Positional Relationship (Cam.-Cam.)",
    "mindcube_rotation": "Positional Relationship (Cam.-Obj.)",
    "object_distance": "Attribute (Meas.)",
    "object_depth": "Attribute (Meas.)",
    "camera_motion": "Motion (Cam.)",
}


def read_mmsi(path, strict: bool = False):
    """Read MMSI-Bench rows from a parquet file or a directory of them."""

    def parse(rec, at, f, n) -> Sample:
        rid = require(rec, "id", at)
        qtype = require(rec, "question_type", at, str)
        question = require(rec, "question", at, str)
        answer = str(require(rec, "answer", at)).strip()
        stem, options, answer, atype = parse_answer(question, answer, "select", at)
        return Sample(images=[], question=stem, options=options, answer=answer, answer_type=atype,
                      task=qtype, category=family(qtype), source="mmsi", id=str(rid))

    return read_bench_records(path, f"MMSI-Bench {path}", parse, "images", exts=(".parquet",), strict=strict)


def write_mmsi(samples, path, row_group_size: int = 64) -> Path:
    """Write multiple-choice samples as an MMSI-Bench parquet file (images PNG-encoded). A sample's
    question_type is its task's (TYPE_OF_TASK) or, for read-back MMSI samples, the task itself."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, s in enumerate(samples):
        if s.answer_type != "mc":
            raise DataError(f"write_mmsi: sample {n} (id {s.id!r}) is not multiple choice; MMSI-Bench is MC only")
        qtype = TYPE_OF_TASK.get(s.task, s.task)
        rows.append({"id": s.id or str(n), "images": [encode_png(im) for im in s.images],
                     "question_type": qtype, "question": join_options(s.question, s.options, " "),
                     "answer": s.answer})
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path
