"""SPAR-Bench (evaluation): reader and writer, and the question/answer parsing the benchmark readers share.
SPAR-7M-RGBD (training) lives in `hatch_vlm.data.spar7m`.

SPAR-Bench as published (dataset card of jasonzhango/SPAR-Bench): parquet files ``data/test-*.parquet``
(split test, ~7.2k rows) with the columns ``id`` (int64), ``img_type`` (single_view / multi_view),
``format_type`` (fill / select), ``task`` (20 task names), ``source``, ``image`` (a list of
{bytes, path}, 1-3 images), ``question`` and ``answer``; no level column. Also read: our JSON / JSONL
layout (records with ``question``, ``image`` (paths relative to the file's directory or `image_root`),
``task``, ``answer``, optional ``id``, ``level``, ``format_type``, ``img_type``).

Per record:

* ``answer_type`` from ``format_type``: select -> "mc" (also when the question lists no options: then the
  answer must be a letter), fill -> "numeric" when the answer is a number, else "open" (e.g.
  view_change_infer's "move_right:0.5,rotate_left:30"). Without ``format_type``: inline options -> "mc",
  a number -> "numeric", else "open".
* ``category``: the record's own ``level`` when it has one, else the official level of its task
  (fudan-zvg/spar lmms-eval/lmms_eval/tasks/sparbench/utils.py): Low = depth_prediction_oc/oo and
  distance_prediction_oc/oo (and their _mv forms); Middle = view_change_infer, position_matching,
  camera_motion_infer; High = obj_spatial_relation_*, spatial_imagination_*, distance_infer_center_oo[_mv].
  A task in none of them gets "" (no level).
* ``meta["row"]``: the record as it ships, without its ``image`` column (what the official scorer reads).

    read_spar_bench(path, strict=False, image_root=None) -> (LazySamples, ReadSummary)
    write_spar_bench(samples, path) -> Path     (.parquet: the published columns; .jsonl / .json: ours)
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from ..scoring.answers import label_letter
from ..scoring.official import spar_bench as official
from .common import DataError, RecordError, encode_png, join_options, require, split_options, write_image
from .lazy import LazySamples, read_bench_records
from .record import Sample
from .spar7m.records import strip_trailer

# format_type (SPAR's answer folder) -> answer type; fill is "numeric" when the answer is a number.
FORMAT_TYPES = {"select": "mc", "fill": None, "sentence": "open", "judge": "open"}
TYPE_OF = {"mc": "select", "numeric": "fill", "open": "fill"}      # what the writer puts in format_type


def _scene_name(sample: Sample, index: int) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", sample.id or f"sample_{index:06d}")


def _is_number(s) -> bool:
    try:
        float(str(s).strip())
        return True
    except ValueError:
        return False


def parse_answer(question_text: str, answer: str, kind: str | None, at: str, need_options: bool = True):
    """(stem, options, answer, answer_type) of a question's text and its gold answer.

    `kind` is the record's format_type / answer folder ("select", "fill", "sentence", "judge") or None
    (inferred: inline options -> mc, a number -> numeric, else open). A multiple-choice answer becomes its
    letter; with options it must be one of theirs; without options it must be a letter, and is accepted
    only if not `need_options`. SPAR's instruction line after the options ("Your answer can only include
    one of options A, B, C or D") is not part of the last option."""
    if kind is not None and kind not in FORMAT_TYPES:
        raise RecordError(f"{at}: field 'format_type': {kind!r} is not one of {'/'.join(FORMAT_TYPES)}",
                          "bad format_type")
    text = strip_trailer(question_text)
    stem, options = split_options(text)
    if kind is None:
        answer_type = "mc" if options else "numeric" if _is_number(answer) else "open"
    else:
        answer_type = FORMAT_TYPES[kind] or ("numeric" if _is_number(answer) else "open")
    if answer_type != "mc":
        return question_text.strip(), [], answer, answer_type
    if options:
        letter = label_letter(answer, options)
        if letter is None or letter not in [o[0] for o in options]:
            raise RecordError(f"{at}: field 'answer': {answer!r} is not one of the options' letters "
                              f"{[o[0] for o in options]}", "bad answer")
        return stem, options, letter, "mc"
    if need_options:
        raise RecordError(f"{at}: field 'question': a multiple-choice record with no options ('A. ...')",
                          "no options")
    letter = label_letter(answer)
    if letter is None:
        raise RecordError(f"{at}: field 'answer': {answer!r} is not an option letter (select record)",
                          "bad answer")
    return text.strip(), [], letter, "mc"


# --------------------------------------------------------------------------------------------------
# SPAR-Bench
# --------------------------------------------------------------------------------------------------
# The official task lists (hatch_vlm.scoring.official.spar_bench, transcribed from SPAR-Bench's code).
LEVELS = official.CATEGORIES
LOW_TASKS = official.LEVEL_TASKS["Low"]
MIDDLE_TASKS = official.LEVEL_TASKS["Middle"]
HIGH_TASKS = official.LEVEL_TASKS["High"]
TASKS = LOW_TASKS + MIDDLE_TASKS + HIGH_TASKS          # the 20 tasks of SPAR-Bench
_HIGH_PREFIXES = ("obj_spatial_relation_", "spatial_imagination_")

# The SPAR-Bench task standing in for a synthetic question family (hatch_vlm.data.questions), as
# (single-view, multi-view) task names; used by the writer so that stand-ins look like the real thing.
TASK_OF_FAMILY = {
    "camera_motion": ("camera_motion_infer", "camera_motion_infer"),
    "cross_view_matching": ("position_matching", "position_matching"),
    "object_position": ("obj_spatial_relation_oc", "obj_spatial_relation_oc_mv"),
    "object_depth": ("depth_prediction_oc", "depth_prediction_oc_mv"),
    "object_distance": ("distance_prediction_oo", "distance_prediction_oo_mv"),
}


def level_of(task: str) -> str:
    """The SPAR-Bench level a reader records for a task: Low / Middle / High, or "" for a task of none.

    The official lists, read leniently (case and spaces ignored; any obj_spatial_relation_* /
    spatial_imagination_* is High), because it labels records of every origin; the scorer's
    `official.category(row)` is the strict official lookup and is what the results table uses."""
    t = str(task).strip().lower()
    if t in LOW_TASKS:
        return "Low"
    if t in MIDDLE_TASKS:
        return "Middle"
    if t in HIGH_TASKS or t.startswith(_HIGH_PREFIXES):
        return "High"
    return ""


def bench_task(sample: Sample) -> str | None:
    """The SPAR-Bench task of a sample: its own task when that is one of SPAR-Bench's (or of the
    obj_spatial_relation_* / spatial_imagination_* families), the stand-in task of a synthetic family, or
    None (e.g. the MindCube families, which SPAR-Bench has no task for)."""
    if sample.task in TASKS or sample.task.startswith(_HIGH_PREFIXES):
        return sample.task
    pair = TASK_OF_FAMILY.get(sample.task)
    if pair is None:
        return None
    return pair[1] if sample.num_views >= 2 else pair[0]


def read_spar_bench(path, strict: bool = False, image_root=None):
    """Read SPAR-Bench from a file or a directory (e.g. the download with data/test-*.parquet); see the
    module doc. Image paths (JSON layout, or path-only parquet items) are relative to `image_root`
    (default: the records file's directory). Returns (LazySamples, summary)."""

    def parse(rec, at, f, n) -> Sample:
        question = require(rec, "question", at, str)
        task = require(rec, "task", at, str)
        answer = str(require(rec, "answer", at)).strip()
        kind = rec.get("format_type")
        if kind is not None and not isinstance(kind, str):
            raise RecordError(f"{at}: field 'format_type' should be str, got {type(kind).__name__}",
                              "bad format_type")
        stem, options, answer, atype = parse_answer(question, answer, kind.strip().lower() if kind else None,
                                                    at, need_options=False)
        level = rec.get("level")
        rid = rec.get("id")
        return Sample(images=[], question=stem, options=options, answer=answer, answer_type=atype, task=task,
                      category=str(level) if level else level_of(task), source="spar_bench",
                      id=str(rid) if rid not in (None, "") else f"{f.stem}_{n}")

    return read_bench_records(path, f"SPAR-Bench {path}", parse, "image", strict=strict, image_root=image_root)


def _parquet_schema():
    import pyarrow as pa

    return pa.schema([("id", pa.int64()), ("img_type", pa.string()), ("format_type", pa.string()),
                      ("task", pa.string()), ("source", pa.string()),
                      ("image", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
                      ("question", pa.string()), ("answer", pa.string())])


def write_spar_bench(samples, path, append: bool = False, row_group_size: int = 64) -> Path:
    """Write samples as SPAR-Bench.

    * ``.parquet``: the published columns (id int64, img_type from the view count, format_type, task,
      source, image as a list of {bytes: PNG, path}, question with its options one per line, answer).
      There is no level column: the level comes back from the task, so a synthetic family is written as
      its SPAR-Bench stand-in task (TASK_OF_FAMILY). Ids are the samples' own when all are integers, else
      0..N-1 (the original id is kept in each image's ``path``). Row groups of `row_group_size` rows.
    * ``.jsonl`` / ``.json``: our JSON layout (id, question, task, answer, level, format_type, img_type,
      image paths under ``<path stem>_images/``); tasks are written as they are.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = samples if isinstance(samples, Sequence) else list(samples)
    if path.suffix == ".parquet":
        return _write_parquet(samples, path, row_group_size)
    recs = []
    for n, s in enumerate(samples):
        rels = []
        for v, im in enumerate(s.images):
            rel = f"{path.stem}_images/{_scene_name(s, n)}_{v}.png"
            write_image(im, path.parent / rel)
            rels.append(rel)
        recs.append({"id": s.id or f"sample_{n}", "img_type": "multi_view" if s.num_views >= 2 else "single_view",
                     "format_type": TYPE_OF[s.answer_type], "task": s.task, "image": rels,
                     "question": join_options(s.question, s.options), "answer": s.answer, "level": s.category})
    if path.suffix == ".json":
        old = json.loads(path.read_text()) if append and path.exists() else []
        path.write_text(json.dumps(old + recs, indent=1))
    else:
        with open(path, "a" if append else "w") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _write_parquet(samples: Sequence[Sample], path: Path, row_group_size: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    int_ids = all(str(s.id).lstrip("-").isdigit() for s in samples) and len({s.id for s in samples}) == len(samples)
    schema = _parquet_schema()
    with pq.ParquetWriter(path, schema) as writer:
        rows = []
        for n, s in enumerate(samples):
            row = s.meta.get("row") if isinstance(s.meta.get("row"), dict) else {}
            scene = _scene_name(s, n)
            rows.append({
                "id": int(s.id) if int_ids else n,
                "img_type": "multi_view" if s.num_views >= 2 else "single_view",
                "format_type": TYPE_OF[s.answer_type],
                "task": bench_task(s) or s.task,
                "source": str(row.get("source") or s.source),
                "image": [{"bytes": encode_png(im), "path": f"{scene}_{v}.png"} for v, im in enumerate(s.images)],
                "question": join_options(s.question, s.options),
                "answer": str(s.answer),
            })
            if len(rows) >= row_group_size:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows = []
        if rows or not samples:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    return path


__all__ = ["read_spar_bench", "write_spar_bench", "parse_answer", "level_of", "bench_task", "LazySamples",
           "DataError", "TASKS", "LEVELS"]
