"""MindCube (MindCube-Tiny) JSONL: reader returning `Sample`s, and a writer.

A record: ``id`` (its text names the setting: around / rotation / among / translation), ``question``
with the options inline ("... A. Left B. Right"), ``gt_answer`` (a letter) and ``images`` (paths
relative to an image root, by default the JSONL file's directory). The setting becomes the sample's
``category``; translation is read but is not counted in the benchmark's overall score.

    read_mindcube(path, strict=False, image_root=None) -> (list[Sample], ReadSummary)
    write_mindcube(samples, path) -> Path
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .common import DataError, RecordError, join_options, require, write_image
from .spar import _scene_name, load_images_field, parse_answer, read_bench_records
from .record import Sample

SETTINGS = ("around", "rotation", "among", "translation")
COUNTED = ("around", "rotation", "among")


def setting_of(rid: str) -> str:
    """The MindCube setting named in a record id ("" when none is)."""
    m = re.search("|".join(SETTINGS), rid.lower())
    return m.group(0) if m else ""


def read_mindcube(path, strict: bool = False, image_root=None):
    """Read MindCube JSONL records (a file or a directory of .jsonl files)."""

    def parse(rec, at, base, f, n) -> Sample:
        rid = str(require(rec, "id", at))
        question = require(rec, "question", at, str)
        answer = str(require(rec, "gt_answer", at)).strip()
        imgs = load_images_field(require(rec, "images", at), base, at, "images")
        stem, options, answer, atype = parse_answer(question, answer, "select", at)
        setting = setting_of(rid)
        if not setting:
            raise RecordError(f"{at}: field 'id': {rid!r} names none of the settings {SETTINGS}",
                              "unknown setting")
        return Sample(images=imgs, question=stem, options=options, answer=answer, answer_type=atype,
                      task=f"mindcube_{setting}", category=setting, source="mindcube", id=rid)

    return read_bench_records(path, f"MindCube {path}", parse, exts=(".jsonl", ".json"), strict=strict,
                              image_root=image_root)


def write_mindcube(samples, path, append: bool = False) -> Path:
    """Write multiple-choice samples whose category is a MindCube setting as MindCube JSONL (images as
    PNG under `<path stem>_images/`). The id is prefixed with the setting when it does not name it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for n, s in enumerate(samples):
        setting = setting_of(s.id) or (s.category if s.category in SETTINGS else "")
        if s.answer_type != "mc" or not setting:
            raise DataError(f"write_mindcube: sample {n} (id {s.id!r}) is not a multiple-choice question "
                            f"of a MindCube setting (category {s.category!r})")
        rid = s.id if setting_of(s.id) else f"{setting}_{s.id or n}"
        rels = []
        for v, im in enumerate(s.images):
            rel = f"{path.stem}_images/{_scene_name(s, n)}_{v}.png"
            write_image(im, path.parent / rel)
            rels.append(rel)
        lines.append(json.dumps({"id": rid, "question": join_options(s.question, s.options, " "),
                                 "gt_answer": s.answer, "images": rels}))
    with open(path, "a" if append else "w") as fh:
        fh.write("".join(line + "\n" for line in lines))
    return path
