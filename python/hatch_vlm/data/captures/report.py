"""The contact sheet of `hatch-vlm data build`: a few built records read back through the SPAR-7M reader
(so the sheet shows what training sees: SPAR's markers drawn by `spar7m.markers`), one row each, with the
task, question and answer under the views."""
from __future__ import annotations

import textwrap
from pathlib import Path


ROW_H = 160


def _records(files: list[Path], n: int):
    """Up to n records, round-robin over the QA files so the sheet shows several tasks."""
    from ..spar7m.layout import QAFile
    from ..spar7m.records import parse_record
    from ..spar7m.frames import load_sample

    handles = []
    for f in files:
        parts = f.parts
        i = parts.index("qa_jsonl")
        qa = QAFile(f, parts[i - 1], parts[i + 1], parts[i + 2], parts[i + 3], Path(*parts[:i]) / "images")
        handles.append((qa, f.read_text().splitlines()))
    out, line = [], 0
    while len(out) < n and any(line < len(lines) for _, lines in handles):
        for qa, lines in handles:
            if line < len(lines) and len(out) < n:
                out.append(load_sample(parse_record(lines[line], qa, line + 1)))
        line += 1
    return out


def contact_sheet(files: list[Path], path: Path, n: int) -> Path:
    from PIL import Image, ImageDraw

    rows = []
    for s in _records(files, n):
        views = [Image.fromarray(v).resize((int(v.shape[1] * ROW_H / v.shape[0]), ROW_H)) for v in s.images]
        width = sum(v.width for v in views) + 4 * len(views)
        text = textwrap.wrap(f"[{s.task}] {s.question} " + " ".join(s.options) + f"  -> {s.answer}", 110)[:4]
        row = Image.new("RGB", (max(width, 700), ROW_H + 14 * len(text) + 8), "white")
        x = 0
        for v in views:
            row.paste(v, (x, 0))
            x += v.width + 4
        ImageDraw.Draw(row).multiline_text((4, ROW_H + 4), "\n".join(text), fill="black")
        rows.append(row)
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    sheet.save(path)
    return path
