"""SPAR-Bench (evaluation): reader and writer, and the question/answer parsing the benchmark readers share.
SPAR-7M-RGBD (training) lives in `hatch.data.spar7m`.

SPAR-Bench: JSONL / JSON / parquet records with ``question`` (options inline or one per line),
``image`` (a path or bytes, or a list of them), ``task``, ``answer``; optional ``id`` and ``level``
(Low / Middle / High; otherwise derived from the task name).

    read_spar_bench(path, strict=False) -> (list[Sample], ReadSummary)
    write_spar_bench(samples, path) -> Path
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .common import (DataError, ReadSummary, RecordError, encode_png, extract_letter, handle, join_options,
                     read_image, require, split_options, where,
                     write_image)
from .record import Sample

TYPE_OF = {"mc": "select", "numeric": "fill", "open": "sentence"}
ANSWER_TYPE = {v: k for k, v in TYPE_OF.items()}


def _scene_name(sample: Sample, index: int) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", sample.id or f"sample_{index:06d}")
    return name


def parse_answer(question_text: str, answer: str, kind: str, at: str):
    """(stem, options, answer, answer_type) from a question's text and its gold answer."""
    stem, options = split_options(question_text)
    answer_type = ANSWER_TYPE.get(kind)
    if answer_type is None:
        answer_type = "mc" if options else "numeric" if _is_number(answer) else "open"
    if answer_type == "mc":
        if not options:
            raise RecordError(f"{at}: field 'question': a multiple-choice record with no options "
                              f"('A. ...')", "no options")
        letter = extract_letter(answer, options)
        if letter is None or letter not in [o[0] for o in options]:
            raise RecordError(f"{at}: field 'answer': {answer!r} is not one of the options' letters",
                              "bad answer")
        return stem, options, letter, "mc"
    if answer_type == "numeric":
        if not _is_number(answer):
            raise RecordError(f"{at}: field 'answer': {answer!r} is not a number", "bad answer")
        return join_options(stem, options), [], answer, "numeric"
    return join_options(stem, options), [], answer, "open"


def _is_number(s) -> bool:
    try:
        float(str(s).strip())
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------------
# SPAR-Bench
# --------------------------------------------------------------------------------------------------
# Level of SPAR-Bench tasks (by name fragments) when a record does not carry one.
LEVEL_RULES = [
    ("depth", "Low"), ("distance", "Low"), ("position_matching", "Middle"), ("matching", "Middle"),
    ("view_change", "Middle"), ("camera_motion", "Middle"), ("motion", "Middle"),
    ("spatial_imagination", "High"), ("relation", "High"), ("navigation", "High"),
    ("object_position", "High"), ("imagination", "High"),
]
LEVELS = ("Low", "Middle", "High")


def level_of(task: str) -> str:
    t = task.lower()
    for frag, level in LEVEL_RULES:
        if frag in t:
            return level
    return ""


def _load_records(path: Path):
    """(file, index, record) of a .jsonl / .json / .parquet file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for n, rec in enumerate(pq.read_table(path).to_pylist()):
            yield n, rec
    elif path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        yield from enumerate(data)
    else:
        for n, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    yield n, RecordError(f"{where(path, n)}: not valid JSON ({e})", "bad json")


def _bench_files(path: Path, exts=(".jsonl", ".json", ".parquet")) -> list[Path]:
    if not path.exists():
        raise DataError(f"benchmark file or directory not found: {path}")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix in exts)
    if not files:
        raise DataError(f"no {'/'.join(exts)} files under {path}")
    return files


def read_bench_records(path, source: str, parse, exts=(".jsonl", ".json", ".parquet"),
                       strict: bool = False, image_root=None):
    """The loop every benchmark reader shares: each record of each file under `path` goes through
    `parse(rec, at, base, f, n) -> Sample` (`at` names file and record for errors, `base` is the image
    root: `image_root` or the file's directory). A RecordError from a record becomes a counted skip, or a
    DataError with `strict`. Returns (samples, summary)."""
    summary = ReadSummary(source)
    samples = []
    for f in _bench_files(Path(path), exts):
        base = Path(image_root) if image_root else f.parent
        for n, rec in _load_records(f):
            try:
                if isinstance(rec, RecordError):
                    raise rec
                at = where(f, n, rec.get("id") if isinstance(rec, dict) else None)
                samples.append(parse(rec, at, base, f, n))
                summary.read += 1
            except RecordError as e:
                handle(e, summary, strict)
    return samples, summary.log()


def load_images_field(value, base: Path, at: str, name: str = "image") -> list[np.ndarray]:
    """Decode an image field: a path / bytes / {"bytes"|"path"} dict, or a list of them."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise RecordError(f"{at}: field {name!r}: empty", f"bad {name}")
    out = []
    for k, it in enumerate(items):
        if isinstance(it, dict):
            it = it.get("bytes") or it.get("path")
        try:
            if isinstance(it, (bytes, bytearray)):
                out.append(read_image(it))
            elif isinstance(it, str):
                p = Path(it) if Path(it).is_absolute() else base / it
                if not p.exists():
                    raise RecordError(f"{at}: field {name!r}[{k}]: file not found: {p}", f"missing {name} file")
                out.append(read_image(p))
            else:
                raise RecordError(f"{at}: field {name!r}[{k}]: expected a path or bytes, got "
                                  f"{type(it).__name__}", f"bad {name}")
        except RecordError:
            raise
        except Exception as e:  # PIL's decode errors have many types
            raise RecordError(f"{at}: field {name!r}[{k}]: cannot decode image ({e})", f"bad {name}") from e
    return out


def read_spar_bench(path, strict: bool = False, image_root=None):
    """Read SPAR-Bench records from a file or a directory of them (see module doc).

    Image paths are relative to `image_root` (default: the records file's directory). Returns
    (samples, summary); `category` is the level (Low / Middle / High)."""

    def parse(rec, at, base, f, n) -> Sample:
        question = require(rec, "question", at, str)
        task = require(rec, "task", at, str)
        answer = str(require(rec, "answer", at)).strip()
        imgs = load_images_field(require(rec, "image", at), base, at)
        stem, options, answer, atype = parse_answer(question, answer, None, at)
        level = str(rec.get("level") or level_of(task))
        return Sample(images=imgs, question=stem, options=options, answer=answer, answer_type=atype,
                      task=task, category=level, source="spar_bench", id=str(rec.get("id", f"{f.stem}_{n}")))

    return read_bench_records(path, f"SPAR-Bench {path}", parse, strict=strict, image_root=image_root)


def write_spar_bench(samples, path, embed_images: bool = False, append: bool = False) -> Path:
    """Write samples as a SPAR-Bench JSONL file; images go to `<path stem>_images/` next to it (or are
    embedded as PNG bytes in a .parquet file when `embed_images` / the path ends in .parquet)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recs = []
    for n, s in enumerate(samples):
        rec = {"id": s.id or f"sample_{n}", "question": join_options(s.question, s.options), "task": s.task,
               "answer": s.answer, "level": s.category}
        if embed_images or path.suffix == ".parquet":
            rec["image"] = [encode_png(im) for im in s.images]
        else:
            rels = []
            for v, im in enumerate(s.images):
                rel = f"{path.stem}_images/{_scene_name(s, n)}_{v}.png"
                write_image(im, path.parent / rel)
                rels.append(rel)
            rec["image"] = rels
        recs.append(rec)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(recs), path)
    else:
        with open(path, "a" if append else "w") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in recs))
    return path
