"""One SPAR-7M QA line -> a `SparRecord`: the question, options, answer and frame paths, without reading
any frame (selection and statistics parse records by the million).

A record (fudan-zvg/spar readme.md): ``id``, ``conversations`` ([{"from": "human", "value": ...},
{"from": "gpt", "value": ...}]; the human value may start with one ``<image>\\n`` per image), ``image``
(paths relative to spar/<source>/images), ``type`` (the task), optional ``depth`` and the markers
(hatch_vlm.data.spar7m.markers). Select questions list their options one per line and end with the line
"Your answer can only include one of options A, B, C or D", which is an instruction, not part of the
last option.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from ...scoring.answers import label_letter
from ..common import RecordError, require, split_options
from .layout import ANSWER_KINDS, QAFile

_IMAGE_TOKEN = re.compile(r"<image>\s*")
# SPAR's instruction line after the options (and variants of its wording).
_TRAILER = re.compile(r"\n?\s*your answer (can|should|must) only include[^\n]*\s*$", re.IGNORECASE)
# A fill answer that is a plain number (optionally with a unit), e.g. "1.5", "1.5 m", "2 meters."
_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*(?:m|meters?|metres?|cm|degrees?|deg)?\s*\.?\s*$", re.IGNORECASE)
ANSWER_TYPE_OF_KIND = {"select": "mc", "sentence": "open", "judge": "open"}   # fill: numeric or open


@dataclass
class SparRecord:
    """A parsed QA record: everything but the frames."""
    id: str
    source: str
    split: str
    task: str
    kind: str                      # fill | select | sentence | judge
    question: str                  # without <image> prefixes, options and the trailer line
    options: list[str]
    answer: str
    answer_type: str               # mc | numeric | open
    images: list[str]              # colour-frame paths (under spar/<source>/images)
    depth: list[str] | None        # the record's depth paths (None: next to the colour frames)
    raw: dict[str, Any] = field(repr=False, default_factory=dict)   # the JSON object (markers live here)
    at: str = ""                   # "<file> line <n> (id ...)" for messages


def strip_trailer(text: str) -> str:
    return _TRAILER.sub("", text.rstrip()).rstrip()


def _conversation(rec: dict, at: str) -> tuple[str, str]:
    conv = require(rec, "conversations", at, list)
    human = next((c for c in conv if isinstance(c, dict) and c.get("from") == "human"), None)
    gpt = next((c for c in conv if isinstance(c, dict) and c.get("from") == "gpt"), None)
    if human is None or not isinstance(human.get("value"), str):
        raise RecordError(f"{at}: field 'conversations': no human turn with a text 'value'", "bad conversations")
    if gpt is None or gpt.get("value") is None:
        raise RecordError(f"{at}: field 'conversations': no gpt turn with a 'value'", "bad conversations")
    return _IMAGE_TOKEN.sub("", human["value"]).strip(), str(gpt["value"]).strip()


def parse_question(text: str, answer: str, kind: str, at: str) -> tuple[str, list[str], str, str]:
    """(question stem, options, answer, answer_type) of one record's human text and gold answer."""
    if kind not in ANSWER_KINDS:
        raise RecordError(f"{at}: answer folder {kind!r} is not one of {'/'.join(ANSWER_KINDS)}",
                          "unknown answer folder")
    text = strip_trailer(text)
    if kind == "select":
        stem, options = split_options(text)
        if not options:
            raise RecordError(f"{at}: field 'conversations': a select record with no options ('A. ...')",
                              "no options")
        letter = label_letter(answer, options)
        if letter is None or letter not in [o[0] for o in options]:
            raise RecordError(f"{at}: field 'conversations' (gpt): {answer!r} is not one of the options' "
                              f"letters {[o[0] for o in options]}", "bad answer")
        return stem, options, letter, "mc"
    if kind == "fill":
        m = _NUMBER.match(answer)
        if m:
            return text, [], m.group(1), "numeric"
    return text, [], answer, "open"


def _paths(rec: dict, name: str, at: str, images_root: str, required: bool) -> list[str] | None:
    value = rec.get(name)
    if value is None and not required:
        return None
    value = require(rec, name, at, (list, str))
    value = [value] if isinstance(value, str) else value
    if not value or not all(isinstance(p, str) and p for p in value):
        raise RecordError(f"{at}: field {name!r}: expected a non-empty list of paths, got {value!r}", f"bad {name}")
    # strings, not Paths: selection checks millions of them and pathlib costs ~10 us a join
    return [os.path.join(images_root, p) for p in value]


def where(path, line_no: int, rid=None) -> str:
    """"<file> line <n> (id '...')": what error messages name (n 1-based, as an editor counts)."""
    return f"{path} line {line_no}" + (f" (id {rid!r})" if rid not in (None, "") else "")


def parse_record(line: str | bytes, qa: QAFile, line_no: int) -> SparRecord:
    """A `SparRecord` from line `line_no` (1-based) of `qa`; RecordError (kind names the problem) if malformed."""
    at = where(qa.path, line_no)
    try:
        rec = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"{at}: not valid JSON ({e})", "bad json") from e
    if not isinstance(rec, dict):
        raise RecordError(f"{at}: expected a JSON object, got {type(rec).__name__}", "not an object")
    at = where(qa.path, line_no, rec.get("id"))
    text, answer = _conversation(rec, at)
    task = rec.get("type") if isinstance(rec.get("type"), str) and rec.get("type") else qa.task
    question, options, answer, answer_type = parse_question(text, answer, qa.kind, at)
    root = str(qa.images_root)
    images = _paths(rec, "image", at, root, required=True)
    depth = _paths(rec, "depth", at, root, required=False)
    if depth is not None and len(depth) != len(images):
        raise RecordError(f"{at}: field 'depth': {len(depth)} paths for {len(images)} images", "bad depth")
    return SparRecord(id=str(rec.get("id", f"{qa.group}/{line_no}")), source=qa.source, split=qa.split,
                      task=task, kind=qa.kind, question=question, options=options, answer=answer,
                      answer_type=answer_type, images=images, depth=depth, raw=rec, at=at)


def check_record_markers(rec: SparRecord) -> None:
    """The record's markers can be drawn on its views (no frame read); RecordError naming file and line."""
    from .markers import check_markers

    try:
        check_markers(rec.raw, rec.task, len(rec.images))
    except RecordError as e:
        raise RecordError(f"{rec.at}: {e}", e.kind) from e
