"""`hatch-vlm data stats ROOT`: what a SPAR-7M download holds, read from the QA text (no frame is decoded).

Records per source / task / answer folder / answer type, views per record, records with geometry (a
`depth` field, and their scene's pose/ and intrinsic/ folders present), records with markers, and the
records that would be skipped, with the reason for each kind and a few examples. `check_files` also looks
up every frame file a record names (one stat per file: slower on a network disk).
"""
from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from collections.abc import Iterable

from ..common import DataError, RecordError
from .layout import qa_files
from .records import check_record_markers, parse_record


def dataset_stats(root, split: str | None = None, tasks: Iterable[str] | None = None, check_files: bool = False,
                  progress: bool = True, limit: int | None = None, strict: bool = False) -> dict:
    """The statistics as a JSON-able dict (see the module doc); `limit` stops after that many records;
    `strict` raises DataError at the first bad record instead of counting it."""
    from tqdm.auto import tqdm

    from .frames import check_files as check
    from .markers import has_markers

    files = qa_files(root, split, tasks)
    out = {"root": str(root), "split": split, "files": len(files), "records": 0, "read": 0, "skipped": 0,
           "by_source": Counter(), "by_task": Counter(), "by_kind": Counter(), "by_answer_type": Counter(),
           "views": Counter(), "with_depth_field": 0, "with_scene_geometry": 0, "with_markers": 0,
           "markers_by_task": Counter(), "skip_reasons": Counter(), "skip_examples": defaultdict(list)}
    scene_ok: dict[str, bool] = {}
    bar = tqdm(total=sum(f.path.stat().st_size for f in files), unit="B", unit_scale=True, desc="SPAR-7M stats",
               disable=not progress)
    done = False
    for qa in files:
        with open(qa.path, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                bar.update(len(raw))
                if not raw.strip():
                    continue
                out["records"] += 1
                try:
                    rec = parse_record(raw, qa, n)
                    if check_files:
                        check(rec)
                    check_record_markers(rec)
                except RecordError as e:
                    if strict:
                        raise DataError(str(e)) from e
                    out["skipped"] += 1
                    out["skip_reasons"][e.kind] += 1
                    if len(out["skip_examples"][e.kind]) < 3:
                        out["skip_examples"][e.kind].append(str(e))
                    continue
                out["read"] += 1
                out["by_source"][rec.source] += 1
                out["by_task"][rec.task] += 1
                out["by_kind"][rec.kind] += 1
                out["by_answer_type"][rec.answer_type] += 1
                out["views"][len(rec.images)] += 1
                out["with_depth_field"] += rec.depth is not None
                scenes = {os.path.dirname(os.path.dirname(p)) for p in rec.images}
                for sc in scenes:
                    if sc not in scene_ok:
                        scene_ok[sc] = (os.path.isdir(os.path.join(sc, "pose"))
                                        and os.path.isdir(os.path.join(sc, "intrinsic")))
                out["with_scene_geometry"] += all(scene_ok[sc] for sc in scenes)
                if has_markers(rec.raw):
                    out["with_markers"] += 1
                    out["markers_by_task"][rec.task] += 1
                if limit is not None and out["records"] >= limit:
                    done = True
                    break
        if done:
            break
    bar.close()
    out["views"] = {str(k): v for k, v in sorted(out["views"].items())}
    for k in ("by_source", "by_task", "by_kind", "by_answer_type", "markers_by_task", "skip_reasons"):
        out[k] = dict(out[k].most_common())
    out["skip_examples"] = dict(out["skip_examples"])
    return out


def format_stats(st: dict) -> str:
    """A plain-text report of `dataset_stats`."""
    def table(title: str, counts: dict, total: int) -> list[str]:
        lines = [f"{title}:"]
        for k, v in counts.items():
            lines.append(f"  {k:<40} {v:>10}  {100 * v / max(total, 1):5.1f}%")
        return lines

    read = st["read"]
    lines = [f"SPAR-7M {st['root']} (split {st['split'] or 'all'}): {st['files']} QA files, {st['records']} "
             f"records, {read} readable, {st['skipped']} skipped"]
    lines += table("by source", st["by_source"], read)
    lines += table("by answer folder", st["by_kind"], read)
    lines += table("by answer type (as hatch scores it)", st["by_answer_type"], read)
    lines += table("views per record", st["views"], read)
    lines += [f"geometry: {st['with_depth_field']} records name depth files, {st['with_scene_geometry']} have "
              f"pose/ and intrinsic/ in every scene they use",
              f"markers: {st['with_markers']} records carry markers (drawn onto the views when loaded)"]
    lines += table("by task", st["by_task"], read)
    if st["skip_reasons"]:
        lines += table("skipped, by reason", st["skip_reasons"], st["records"])
        for kind, examples in st["skip_examples"].items():
            lines += [f"  e.g. [{kind}] {examples[0]}"]
    return "\n".join(lines)


def write_stats(st: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(st, indent=1))
    return path
