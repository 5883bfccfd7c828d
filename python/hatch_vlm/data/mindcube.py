"""MindCube (MindCube-Tiny) JSONL: reader returning `Sample`s, and a writer.

As published (mll-lab-nu/MindCube README, scripts/bash_scripts/download_data.bash): the download unpacks to
``data/``; the benchmark file is ``data/raw/MindCube_tinybench.jsonl`` and its image paths
(``other_all_image/among/backpack_002/front_039.jpg``) are relative to ``data/``, the JSONL's
**grandparent** (the official inference code's ``image_root`` default is ``./data/``). A record: ``id``,
``category``, ``type``, ``meta_info``, ``question`` (options inline: "... A. Left B. Right"), ``images``,
``gt_answer`` (a letter).

The setting comes from the id, as the official ``get_setting_from_id`` finds it (the one rule,
``hatch_vlm.scoring.official.mindcube.setting``): the first of around > rotation > translation > among that
the id contains (case-insensitive); an id naming none is "other" (read, and counted by the official
overall; MindCube-Tiny has none). It becomes the sample's
``category``; translation is read but is not counted in the benchmark's overall score. ``meta["row"]`` is
the record without ``images``.

    read_mindcube(path, strict=False, image_root=None) -> (LazySamples, ReadSummary)
    write_mindcube(samples, path) -> Path      (path = <root>/raw/<name>.jsonl, images under <root>/)
"""
from __future__ import annotations

import json
from pathlib import Path

from ..scoring.official import mindcube as official
from .common import DataError, join_options, require, write_image
from .lazy import read_bench_records
from .record import Sample
from .spar import _scene_name, parse_answer

OTHER = "other"
SETTINGS = tuple(s for s in official.OFFICIAL_SETTINGS if s != OTHER)   # the official order of precedence
COUNTED = ("around", "rotation", "among")


def setting_of(rid) -> str:
    """The MindCube setting an id names, by precedence around > rotation > translation > among ("" when
    it names none; the official code calls that "other")."""
    found = official.setting({"id": rid})
    return "" if found == OTHER else found


def read_mindcube(path, strict: bool = False, image_root=None):
    """Read MindCube JSONL records (a file or a directory of .jsonl files). Image paths are relative to
    `image_root`, by default the JSONL's grandparent (``data/`` of the download)."""

    def parse(rec, at, f, n) -> Sample:
        rid = str(require(rec, "id", at))
        question = require(rec, "question", at, str)
        answer = str(require(rec, "gt_answer", at)).strip()
        stem, options, answer, atype = parse_answer(question, answer, "select", at)
        setting = setting_of(rid) or OTHER
        return Sample(images=[], question=stem, options=options, answer=answer, answer_type=atype,
                      task=f"mindcube_{setting}", category=setting, source="mindcube", id=rid)

    return read_bench_records(path, f"MindCube {path}", parse, "images", exts=(".jsonl", ".json"), strict=strict,
                              image_root=image_root, default_root=lambda f: f.parent.parent)


def write_mindcube(samples, path, append: bool = False) -> Path:
    """Write multiple-choice samples whose category is a MindCube setting as MindCube JSONL, laid out as the
    download is: `path` is ``<root>/raw/<name>.jsonl``; images go to
    ``<root>/other_all_image/<setting>/<scene>/<view>.png`` and the records name them relative to
    ``<root>`` (the JSONL's grandparent). The id is prefixed with the setting when it does not name it."""
    path = Path(path)
    root = path.parent.parent
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
            rel = f"other_all_image/{setting}/{_scene_name(s, n)}/{v}.png"
            write_image(im, root / rel)
            rels.append(rel)
        lines.append(json.dumps({"id": rid, "category": [setting], "type": s.task or setting, "meta_info": [],
                                 "question": join_options(s.question, s.options, " "), "images": rels,
                                 "gt_answer": s.answer}))
    with open(path, "a" if append else "w") as fh:
        fh.write("".join(line + "\n" for line in lines))
    return path
