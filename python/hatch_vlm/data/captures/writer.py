"""Writing a capture's chosen frames and questions in the SPAR-7M-RGBD layout (the layout
`hatch_vlm.data.spar7m` reads; docs/spar7m.md). Unlike `spar7m.writer.SparWriter` (one scene per sample),
a capture is one scene whose frames are written once and shared by every record that shows them::

    <out>/<source>/images/<scene>/image_color/<frame>.<jpg|png>   the capture's colour file, copied as is
    <out>/<source>/images/<scene>/image_depth/<frame>.png         uint16 millimetres (0 = invalid)
    <out>/<source>/images/<scene>/pose/<frame>.txt                4x4 camera-to-world (world levelled, z up)
    <out>/<source>/images/<scene>/intrinsic/<frame>.txt           K of the depth map (read first by the reader)
    <out>/<source>/images/<scene>/intrinsic/intrinsic_depth.txt   the first frame's K (what tools look for)
    <out>/<source>/qa_jsonl/<split>/<task>/<fill|select>/<kind>_<scene>_<N>.jsonl
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from ..common import write_depth_png, write_matrix
from ..spar7m.writer import _trailer
from .questions import CaptureQuestion


def _as4(K) -> np.ndarray:
    M = np.eye(4)
    M[:3, :3] = K
    return M


def human_text(q: CaptureQuestion, num_views: int) -> str:
    text = "<image>\n" * num_views + q.question.strip()
    if q.options:
        text += "\n" + "\n".join(q.options) + "\n" + _trailer(len(q.options))
    return text


class CaptureWriter:
    """Frames (once each) and records of one capture; `close()` names the QA files with their counts."""

    def __init__(self, out, source: str, scene: str, split: str = "train"):
        self.root, self.source, self.scene, self.split = Path(out), source, scene, split
        self.scene_dir = self.root / source / "images" / scene
        self.written: set[str] = set()
        self._files: dict[Path, list] = {}
        self._intrinsic_done = False

    def frame_paths(self, name: str, color_suffix: str) -> tuple[str, str]:
        """(image, depth) paths of a frame as records hold them (relative to <source>/images)."""
        return (f"{self.scene}/image_color/{name}{color_suffix}", f"{self.scene}/image_depth/{name}.png")

    def add_frame(self, name: str, color_path: Path, depth: np.ndarray, K: np.ndarray, cam_to_world) -> None:
        if name in self.written:
            return
        d = self.scene_dir
        (d / "image_color").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(color_path, d / "image_color" / f"{name}{color_path.suffix.lower()}")
        write_depth_png(depth, d / "image_depth" / f"{name}.png")
        write_matrix(np.asarray(cam_to_world, np.float64), d / "pose" / f"{name}.txt")
        write_matrix(_as4(K), d / "intrinsic" / f"{name}.txt")
        if not self._intrinsic_done:
            write_matrix(_as4(K), d / "intrinsic" / "intrinsic_depth.txt")
            self._intrinsic_done = True
        self.written.add(name)

    def add_record(self, rid: str, q: CaptureQuestion, frames: list[tuple[str, str]]) -> dict:
        """frames: (name, colour suffix) per view, in the record's view order."""
        paths = [self.frame_paths(n, s) for n, s in frames]
        rec = {"id": rid,
               "conversations": [{"from": "human", "value": human_text(q, len(frames))},
                                 {"from": "gpt", "value": q.answer}],
               "image": [p[0] for p in paths], "depth": [p[1] for p in paths], "type": q.task, **q.markers}
        path = self.root / self.source / "qa_jsonl" / self.split / q.task / q.kind / f"{q.kind}_{self.scene}.partial"
        entry = self._files.get(path)
        if entry is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            entry = self._files[path] = [open(path, "w"), 0]
        entry[0].write(json.dumps(rec) + "\n")
        entry[1] += 1
        return rec

    def close(self) -> list[Path]:
        out = []
        for path, (fh, n) in self._files.items():
            fh.close()
            final = path.with_name(path.name[: -len(".partial")] + f"_{n}.jsonl")
            os.replace(path, final)
            out.append(final)
        self._files = {}
        return sorted(out)


def existing_outputs(out, source: str, scene: str) -> list[Path]:
    """What an earlier build of this scene left under `out` (its frames folder and QA files)."""
    root = Path(out) / source
    found = []
    if (root / "images" / scene).exists():
        found.append(root / "images" / scene)
    qa = root / "qa_jsonl"
    if qa.is_dir():
        # <kind>_<scene>_<N>.jsonl exactly: scene "a" must not claim scene "a_b"'s files
        mine = re.compile(rf"^[a-z]+_{re.escape(scene)}(_\d+\.jsonl|\.partial)$")
        found += sorted(p for p in qa.rglob("*") if p.is_file() and mine.match(p.name))
    return found
