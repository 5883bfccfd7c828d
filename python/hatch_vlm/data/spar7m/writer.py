"""Writing samples (with geometry) in the SPAR-7M-RGBD layout: how `hatch-vlm data synth` exports synthetic
scenes so that the real reader, and nothing else, loads them.

    <root>/<source>/images/<scene>/image_color/<v>.jpg       colour (JPEG, as SPAR ships it)
    <root>/<source>/images/<scene>/image_depth/<v>.png       uint16 millimetres (0 = invalid)
    <root>/<source>/images/<scene>/pose/<v>.txt              4x4 camera-to-world
    <root>/<source>/images/<scene>/intrinsic/intrinsic_depth.txt, intrinsic_color.txt    4x4
    <root>/<source>/qa_jsonl/<split>/<task>/<fill|select|sentence>/<kind>_<N>.jsonl

One scene per sample. Record paths are relative to `<root>/<source>/images`; select questions list their
options one per line and end with SPAR's instruction line; the answer is the human value's gpt turn.
Views whose K differs from view 0's also get `intrinsic/<v>.txt` (read first by the reader).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from ..common import LETTERS, DataError, write_depth_png, write_matrix
from ..record import Sample

KIND_OF = {"mc": "select", "numeric": "fill", "open": "sentence"}


def _trailer(n_options: int) -> str:
    letters = list(LETTERS[:n_options])
    return "Your answer can only include one of options " + ", ".join(letters[:-1]) + f" or {letters[-1]}"


def human_text(sample: Sample) -> str:
    text = "<image>\n" * sample.num_views + sample.question.strip()
    if sample.options:
        text += "\n" + "\n".join(o.strip() for o in sample.options) + "\n" + _trailer(len(sample.options))
    return text


def _as4(K) -> np.ndarray:
    M = np.eye(4)
    M[:3, :3] = K
    return M


def scene_files(sample: Sample, quality: int = 95) -> dict[str, bytes]:
    """One sample's scene files, encoded: {path under the scene directory: bytes}. A pure function of the
    sample, so the process that rendered it can encode them (the JPEG and PNG encoders are most of the
    writing time) and the writer only writes bytes: the same bytes either way."""
    import io

    from PIL import Image

    def encoded(write, *args, **kwargs) -> bytes:
        buf = io.BytesIO()
        write(*args, buf, **kwargs)
        return buf.getvalue()

    def image_save(array, buf, **kwargs) -> None:
        Image.fromarray(np.asarray(array, np.uint8)).save(buf, **kwargs)

    def pose_text(matrix, buf) -> None:
        np.savetxt(buf, np.asarray(matrix, np.float64), fmt="%.9f")

    if not sample.has_geometry:
        raise DataError(f"SparWriter: sample {sample.id!r} has no depth/K/cam_to_world")
    out = {}
    for v in range(sample.num_views):
        out[f"image_color/{v}.jpg"] = encoded(image_save, sample.images[v], format="JPEG", quality=quality,
                                              subsampling=0)
        out[f"image_depth/{v}.png"] = encoded(write_depth_png, sample.depth[v])
        out[f"pose/{v}.txt"] = encoded(pose_text, sample.cam_to_world[v])
        if v and not np.array_equal(sample.K[v], sample.K[0]):
            out[f"intrinsic/{v}.txt"] = encoded(write_matrix, _as4(sample.K[v]))
    for name in ("intrinsic_depth.txt", "intrinsic_color.txt"):
        out[f"intrinsic/{name}"] = encoded(write_matrix, _as4(sample.K[0]))
    return out


class SparWriter:
    """Appends samples to a SPAR-7M tree; `close()` (or leaving the `with`) names each QA file
    `<kind>_<N>.jsonl` with its record count, as the official files are named."""

    def __init__(self, root, source: str = "synthetic", split: str = "train", quality: int = 95):
        self.root = Path(root)
        self.source, self.split, self.quality = source, split, quality
        self.images = self.root / source / "images"
        self._files: dict[Path, tuple[object, int]] = {}
        self._n = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _scene(self, sample: Sample) -> str:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", sample.id or f"sample_{self._n:06d}")
        return name

    def add(self, sample: Sample, files: dict[str, bytes] | None = None) -> dict:
        """Write `sample`'s scene and append its QA record. `files`: its scene's files already encoded
        (`scene_files(sample, quality)`, e.g. in the process that rendered it), else they are encoded here."""
        if not sample.has_geometry:
            raise DataError(f"SparWriter: sample {self._n} (id {sample.id!r}) has no depth/K/cam_to_world")
        scene = self._scene(sample)
        sdir = self.images / scene
        for sub in ("image_color", "image_depth", "pose", "intrinsic"):
            (sdir / sub).mkdir(parents=True, exist_ok=True)
        for rel, data in (files if files is not None else scene_files(sample, self.quality)).items():
            (sdir / rel).write_bytes(data)
        kind = KIND_OF[sample.answer_type]
        task = sample.task or "unknown"
        rec = {"id": sample.id or scene,
               "conversations": [{"from": "human", "value": human_text(sample)},
                                 {"from": "gpt", "value": str(sample.answer)}],
               "image": [f"{scene}/image_color/{v}.jpg" for v in range(sample.num_views)],
               "depth": [f"{scene}/image_depth/{v}.png" for v in range(sample.num_views)],
               "type": task}
        path = self.root / self.source / "qa_jsonl" / self.split / task / kind / f"{kind}.jsonl.partial"
        fh, n = self._files.get(path, (None, 0))
        if fh is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "w")
        fh.write(json.dumps(rec) + "\n")
        self._files[path] = (fh, n + 1)
        self._n += 1
        return rec

    def close(self) -> list[Path]:
        out = []
        for path, (fh, n) in self._files.items():
            fh.close()
            kind = path.name.split(".")[0]
            final = path.with_name(f"{kind}_{n}.jsonl")
            os.replace(path, final)
            out.append(final)
        self._files = {}
        return sorted(out)


def write_spar_rgbd(samples, root, source: str = "synthetic", split: str = "train") -> list[Path]:
    """Write `samples` under `root` (the spar/ directory); returns the QA files written."""
    with SparWriter(root, source, split) as w:
        for s in samples:
            w.add(s)
        return w.close()
