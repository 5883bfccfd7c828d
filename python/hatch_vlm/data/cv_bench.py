"""CV-Bench (nyu-visionx/CV-Bench) as published: reader returning `Sample`s, and a writer (stand-ins).

The download (dataset card): ``test_2d.parquet`` + ``test_3d.parquet`` (the ``default`` config is both), older
copies a single ``test.parquet``; beside them ``test_2d.jsonl`` / ``test_3d.jsonl`` with the images as PNG files
under ``img/`` (``img/2D/...``, ``img/3D/...``). Columns: ``idx`` (int), ``type`` (2D / 3D), ``task`` (Count,
Relation, Depth, Distance), ``image`` (parquet: one ``{bytes, path}``), ``question``, ``choices`` (2-6
strings), ``answer`` ("(C)"), ``prompt`` (the question with its "(A) ..." choices: what the official code
sends), ``filename`` (the image file, relative to the dataset directory), ``source`` (ADE20K, COCO, Omni3D),
``source_dataset``, ``source_filename``, ``target_class``, ``target_size`` (COCO), ``bbox`` (Omni3D).

Which files a directory gives: the two parquet files (either alone when only one is there), else
``test.parquet``, else the JSONL files; never parquet and JSONL together (they hold the same rows).
JSONL images: ``filename`` relative to the JSONL's directory (or `image_root`).

Per record: ``answer_type`` "mc", ``options`` "A. <choice>", ``answer`` the letter, ``task`` the row's task,
``category`` 2D / 3D from the source (the official score's split), ``meta["row"]`` the record without its image.

    read_cv_bench(path, strict=False, image_root=None) -> (LazySamples, ReadSummary)
    write_cv_bench(samples, path) -> Path      (the published parquet columns)
"""
from __future__ import annotations

from pathlib import Path

from ..scoring.official import cv_bench as official
from .common import DataError, ReadSummary, RecordError, encode_png, require
from .lazy import LazySamples, read_bench_records
from .record import Sample

LETTERS = "ABCDEF"
PARQUET_FILES = ("test_2d.parquet", "test_3d.parquet")
OLD_PARQUET = "test.parquet"
JSONL_FILES = ("test_2d.jsonl", "test_3d.jsonl")
TYPE_OF_SOURCE = {"ADE20K": "2D", "COCO": "2D", "Omni3D": "3D"}


def cv_bench_files(path: Path) -> list[Path]:
    """The files of a CV-Bench download (see the module doc), or [path] for a file."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"CV-Bench: {path} does not exist")
    for names in (PARQUET_FILES, (OLD_PARQUET,), JSONL_FILES):
        found = [path / n for n in names if (path / n).is_file()]
        if found:
            return found
    raise DataError(f"CV-Bench: {path} holds none of {', '.join(PARQUET_FILES + (OLD_PARQUET,) + JSONL_FILES)} "
                    "(the files of the nyu-visionx/CV-Bench download)")


def _choices(rec: dict, at: str) -> list[str]:
    choices = require(rec, "choices", at, list)
    if not 2 <= len(choices) <= len(LETTERS) or not all(isinstance(c, str) for c in choices):
        raise RecordError(f"{at}: field 'choices': expected 2-{len(LETTERS)} strings, got {choices!r}", "bad choices")
    return choices


def _parse(rec: dict, at: str, f: Path, n: int) -> Sample:
    choices = _choices(rec, at)
    require(rec, "prompt", at, str)
    question = require(rec, "question", at, str)
    answer = require(rec, "answer", at, str)
    letter = official.gold_letter(rec)
    if letter is None or LETTERS.find(letter.upper()) not in range(len(choices)):
        raise RecordError(f"{at}: field 'answer': {answer!r} is not one of '(A)'..'({LETTERS[len(choices) - 1]})'",
                          "bad answer")
    source = require(rec, "source", at, str)
    if official.category(rec) is None:
        raise RecordError(f"{at}: field 'source': {source!r} is not one of {list(official.SOURCES)} (the official "
                          "score is per source)", "bad source")
    rid = rec.get("idx")
    return Sample(images=[], question=question.strip(),
                  options=[f"{LETTERS[k]}. {c}" for k, c in enumerate(choices)], answer=letter.upper(),
                  answer_type="mc", task=str(rec.get("task") or ""), category=official.category(rec),
                  source="cv_bench", id=f"{rec.get('type') or official.category(rec)}_{rid if rid is not None else n}")


def read_cv_bench(path, strict: bool = False, image_root=None):
    """Read CV-Bench from its download directory or one of its files; see the module doc."""
    stubs: list[Sample] = []
    summary = ReadSummary(f"CV-Bench {path}")
    for f in cv_bench_files(Path(path)):
        field = "image" if f.suffix == ".parquet" else "filename"
        samples, part = read_bench_records(f, f"CV-Bench {f}", _parse, field, exts=(".parquet", ".jsonl"),
                                           strict=strict, image_root=image_root)
        stubs += [samples.stub(i) for i in range(len(samples))]
        summary.read += part.read
        summary.skipped += part.skipped
        summary.reasons.update(part.reasons)
        summary.examples += part.examples[:10 - len(summary.examples)]
    return LazySamples(stubs), summary


def _prompt(question: str, choices: list[str]) -> str:
    # the Count rows' published form; the other tasks word it differently, which no scorer reads
    return question + " Select from the following choices.\n" + "\n".join(
        f"({LETTERS[k]}) {c}" for k, c in enumerate(choices))


def write_cv_bench(samples, path, sources=official.SOURCES) -> Path:
    """Write single-image multiple-choice samples as a CV-Bench parquet file (the published columns). Sample k
    gets the source ``sources[k % len(sources)]`` (a stand-in has none of its own: this spreads the rows over
    the official score's parts) and the type of that source."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, s in enumerate(samples):
        if s.answer_type != "mc" or s.num_views != 1 or not 2 <= len(s.options) <= len(LETTERS):
            raise DataError(f"write_cv_bench: sample {k} (id {s.id!r}) is not a single-image question with 2-6 "
                            f"options (views {s.num_views}, options {len(s.options)})")
        choices = [o.split(". ", 1)[1] if ". " in o else o for o in s.options]
        source = sources[k % len(sources)]
        name = f"img/{TYPE_OF_SOURCE[source]}/{s.task or 'task'}/{k}.png"
        rows.append({"idx": k, "type": TYPE_OF_SOURCE[source], "task": s.task, "image": {
            "bytes": encode_png(s.images[0]), "path": name}, "question": s.question, "choices": choices,
            "answer": f"({s.answer})", "prompt": _prompt(s.question, choices), "filename": name, "source": source,
            "source_dataset": source, "source_filename": s.id})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path
