"""Shared pieces of the dataset readers and writers: errors, the skip summary, option parsing, image
and depth file I/O. (The letter of a gold answer is read by `hatch_vlm.scoring.answers.label_letter`,
beside the rule that reads a model's reply.)

Readers never drop a record silently: a malformed record is either an error (``strict=True``) or is
skipped and counted in a :class:`ReadSummary` (returned with the samples and logged), with the reason
naming the file, the record and the field.
"""
from __future__ import annotations

import io
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("hatch_vlm.data")

LETTERS = "ABCDEFGH"


class DataError(ValueError):
    """A dataset file or record is missing or malformed (the message names file, record and field)."""


@dataclass
class ReadSummary:
    """What a reader did: records read, records skipped and why (a few examples kept)."""
    source: str
    read: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def skip(self, message: str, kind: str) -> None:
        self.skipped += 1
        self.reasons[kind] += 1
        if len(self.examples) < 10:
            self.examples.append(message)
        log.warning("%s: skipped a record: %s", self.source, message)

    def __str__(self) -> str:
        why = ", ".join(f"{k}: {n}" for k, n in self.reasons.most_common())
        return f"{self.source}: read {self.read}, skipped {self.skipped}" + (f" ({why})" if why else "")

    def log(self) -> ReadSummary:
        (log.warning if self.skipped else log.info)("%s", self)
        return self


class RecordError(Exception):
    """Raised inside a reader for one bad record; turned into a skip or a DataError."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def where(path, index=None, rid=None) -> str:
    s = str(path)
    if index is not None:
        s += f" record {index}"
    if rid not in (None, ""):
        s += f" (id {rid!r})"
    return s


def require(record: dict, name: str, at: str, types=None):
    """record[name], or RecordError naming the record and the field."""
    if not isinstance(record, dict):
        raise RecordError(f"{at}: expected a JSON object, got {type(record).__name__}", "not an object")
    if name not in record or record[name] is None:
        raise RecordError(f"{at}: missing field {name!r}", f"missing {name}")
    value = record[name]
    if types is not None and not isinstance(value, types):
        exp = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        raise RecordError(f"{at}: field {name!r} should be {exp}, got {type(value).__name__}",
                          f"bad {name}")
    return value


def handle(err: RecordError, summary: ReadSummary, strict: bool) -> None:
    if strict:
        raise DataError(str(err)) from err
    summary.skip(str(err), err.kind)


# --------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------
_OPT = re.compile(r"(?<![A-Za-z0-9])([A-H])[.:)]\s")


def split_options(text: str) -> tuple[str, list[str]]:
    """Split a question with options ("... A. x B. y", inline or one per line) into (stem, options
    as "A. x"). The options are the last run A, B, C, ... of markers; no run of >= 2 -> (text, [])."""
    marks = list(_OPT.finditer(text))
    for s in range(len(marks) - 1, -1, -1):        # last 'A' that starts a run A, B, ...
        if marks[s].group(1) != "A":
            continue
        run = [marks[s]]
        for m in marks[s + 1:]:
            if m.group(1) == LETTERS[len(run)]:
                run.append(m)
        if len(run) < 2:
            continue
        opts = []
        for k, m in enumerate(run):
            end = run[k + 1].start() if k + 1 < len(run) else len(text)
            opts.append(f"{m.group(1)}. {text[m.end():end].strip().rstrip(',;').strip()}")
        return text[:run[0].start()].strip(), opts
    return text.strip(), []


def join_options(stem: str, options: list[str], sep: str = "\n") -> str:
    return stem if not options else stem + sep + sep.join(options)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------
def read_image(src) -> np.ndarray:
    """uint8 [H, W, 3] from a path or encoded bytes."""
    from PIL import Image

    if isinstance(src, (bytes, bytearray)):
        src = io.BytesIO(src)
    with Image.open(src) as im:
        return np.asarray(im.convert("RGB"))


def encode_png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    # zlib level 1: ~4x faster to write than PIL's default 6, lossless, a little larger
    Image.fromarray(np.asarray(img, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_image(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(img, dtype=np.uint8)).save(path, compress_level=1)  # fast; still lossless


def write_depth_png(depth: np.ndarray, path) -> None:
    """z-depth (metres) -> uint16 PNG in millimetres; invalid or > 65.535 m -> 0 (invalid). `path`: a file
    path, or a binary file object."""
    from PIL import Image

    d = np.asarray(depth, dtype=np.float64)
    mm = np.where(np.isfinite(d) & (d > 0) & (d <= 65.535), np.round(d * 1000.0), 0).astype(np.uint16)
    if isinstance(path, (str, Path)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mm).save(path, format="PNG", compress_level=1)


def read_depth_png(path: Path) -> np.ndarray:
    """uint16 millimetre PNG -> float32 metres (0 stays 0 = invalid)."""
    from PIL import Image

    with Image.open(path) as im:
        mm = np.asarray(im)
    if mm.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel depth PNG, got shape {mm.shape}")
    return mm.astype(np.float32) / 1000.0


def read_matrix(path: Path, shapes=((4, 4),)) -> np.ndarray:
    m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if m.shape not in shapes:
        raise ValueError(f"{path}: expected a matrix of shape {' or '.join(map(str, shapes))}, got {m.shape}")
    return m


def write_matrix(m: np.ndarray, path) -> None:
    """A matrix as text (`path`: a file path, or a binary file object)."""
    if isinstance(path, (str, Path)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.asarray(m, dtype=np.float64), fmt="%.17g")
