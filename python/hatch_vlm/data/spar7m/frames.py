"""The frames of a `SparRecord` -> a `Sample`: colour views (markers drawn as SPAR draws them), depth in
metres, K of the depth map, camera-to-world poses. Called lazily, when a batch needs the record.

Per scene (ScanNet through SensReader, fudan-zvg/spar readme.md)::

    <scene>/image_color/<frame>.jpg      colour (ScanNet 1296x968)
    <scene>/image_depth/<frame>.png      uint16 depth (ScanNet: millimetres, 640x480; 0 = invalid)
    <scene>/pose/<frame>.txt             4x4 camera-to-world
    <scene>/intrinsic/intrinsic_depth.txt, intrinsic_color.txt   4x4 (the 3x3 block is K)

K is the depth map's (intrinsic_depth); with only intrinsic_color, it is scaled from the colour size to the
depth size. Depth is checked: a view whose median valid depth (after the source's scale) is outside
[MIN_MEDIAN_DEPTH, MAX_MEDIAN_DEPTH] metres is refused ("implausible depth"), which is what a wrong unit
looks like (millimetres read as metres gives kilometres).
"""
from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Mapping

import numpy as np

from ... import geometry as geo
from ..common import RecordError, read_image, read_matrix
from ..record import Sample
from .layout import DEFAULT_DEPTH_SCALE, FALLBACK_DEPTH_SCALE
from .records import SparRecord, check_record_markers

MIN_MEDIAN_DEPTH = 0.1     # metres; indoor scenes (ScanNet, ScanNet++, Structured3D) sit well inside
MAX_MEDIAN_DEPTH = 20.0


def depth_scale_of(source: str, depth_scale: float | Mapping[str, float] | None) -> float:
    """Metres per stored depth unit for `source` (a number for every source, or {source: number})."""
    if isinstance(depth_scale, (int, float)):
        return float(depth_scale)
    if depth_scale and source in depth_scale:
        return float(depth_scale[source])
    return DEFAULT_DEPTH_SCALE.get(source, FALLBACK_DEPTH_SCALE)


def read_depth(path: Path, scale: float) -> np.ndarray:
    """A single-channel depth PNG -> float32 metres (0 stays 0 = invalid)."""
    from PIL import Image

    with Image.open(path) as im:
        raw = np.asarray(im)
    if raw.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel depth image, got shape {raw.shape}")
    return raw.astype(np.float32) * np.float32(scale)


def check_depth(depth: np.ndarray, rec: SparRecord, view: int, scale: float) -> None:
    valid = depth[np.isfinite(depth) & (depth > 0)]
    if valid.size == 0:
        raise RecordError(f"{rec.at}: field 'depth'[{view}]: no valid pixel (all 0)", "empty depth")
    med = float(np.median(valid))
    if not MIN_MEDIAN_DEPTH <= med <= MAX_MEDIAN_DEPTH:
        raise RecordError(
            f"{rec.at}: field 'depth'[{view}]: median depth {med:.4g} m with scale {scale:g} m/unit for source "
            f"{rec.source!r} is implausible (expected {MIN_MEDIAN_DEPTH}-{MAX_MEDIAN_DEPTH} m): is the unit "
            f"right? set data.depth_scale: {{{rec.source}: <metres per unit>}}", "implausible depth")


def _scene_and_frame(image: str) -> tuple[str, str]:
    """(<scene> directory, frame name) of <scene>/image_color/<frame>.jpg."""
    return os.path.dirname(os.path.dirname(image)), os.path.splitext(os.path.basename(image))[0]


def frame_files(rec: SparRecord, view: int) -> tuple[str, str]:
    """(depth path, pose path) of a view: the record's `depth` entry or image_depth/<frame>.png beside it."""
    scene, frame = _scene_and_frame(rec.images[view])
    dpath = rec.depth[view] if rec.depth else os.path.join(scene, "image_depth", frame + ".png")
    return dpath, os.path.join(scene, "pose", frame + ".txt")


def _intrinsic(scene: str, frame: str, depth_hw: tuple[int, int], color_path: str, rec: SparRecord) -> np.ndarray:
    idir = Path(scene) / "intrinsic"
    try:
        for cand in (idir / f"{frame}.txt", idir / "intrinsic_depth.txt"):
            if cand.is_file():
                return geo.validate_intrinsics(read_matrix(cand, ((3, 3), (4, 4))), str(cand))
        color = idir / "intrinsic_color.txt"
        if color.is_file():
            from PIL import Image

            K = geo.validate_intrinsics(read_matrix(color, ((3, 3), (4, 4))), str(color)).copy()
            with Image.open(color_path) as im:
                w, h = im.size
            K[0] *= depth_hw[1] / w          # colour pixels -> depth pixels
            K[1] *= depth_hw[0] / h
            return K
    except ValueError as e:
        raise RecordError(f"{rec.at}: intrinsic: {e}", "bad intrinsic") from e
    raise RecordError(f"{rec.at}: no intrinsic_depth.txt / intrinsic_color.txt in {idir}", "missing intrinsic")


def _geometry(rec: SparRecord, view: int, scale: float):
    image = rec.images[view]
    scene, frame = _scene_and_frame(image)
    dpath, ppath = frame_files(rec, view)
    if not os.path.isfile(dpath):
        raise RecordError(f"{rec.at}: field 'depth'[{view}]: file not found: {dpath}", "missing depth file")
    if not os.path.isfile(ppath):
        raise RecordError(f"{rec.at}: pose of view {view}: file not found: {ppath}", "missing pose file")
    try:
        depth = read_depth(dpath, scale)
    except (OSError, ValueError) as e:
        raise RecordError(f"{rec.at}: field 'depth'[{view}]: cannot read {dpath} ({e})", "bad depth file") from e
    check_depth(depth, rec, view, scale)
    try:
        pose = geo.validate_pose(read_matrix(ppath), str(ppath))
    except (OSError, ValueError) as e:
        raise RecordError(f"{rec.at}: pose of view {view}: {e}", "bad pose") from e
    return depth, pose, _intrinsic(scene, frame, depth.shape, image, rec)


def check_files(rec: SparRecord, require_geometry: bool = True, exists=os.path.isfile) -> None:
    """Existence of every file the record needs (no decoding): RecordError naming the first missing one.

    `exists(path) -> bool` may be memoized by the caller (records share frames)."""
    for k, p in enumerate(rec.images):
        if not exists(p):
            raise RecordError(f"{rec.at}: field 'image'[{k}]: file not found: {p}", "missing image file")
    if not require_geometry:
        return
    for k in range(len(rec.images)):
        dpath, ppath = frame_files(rec, k)
        if not exists(dpath):
            raise RecordError(f"{rec.at}: field 'depth'[{k}]: file not found: {dpath}", "missing depth file")
        if not exists(ppath):
            raise RecordError(f"{rec.at}: pose of view {k}: file not found: {ppath}", "missing pose file")


def load_sample(rec: SparRecord, depth_scale: float | Mapping[str, float] | None = None,
                require_geometry: bool = True, draw_markers: bool = True) -> Sample:
    """Decode the record's frames into a `Sample` (RecordError with a kind if anything is missing or bad).

    With `require_geometry=False` a record without depth/pose files still loads (images and question only).
    """
    from .markers import draw_markers as draw

    images = []
    for k, p in enumerate(rec.images):
        if not os.path.isfile(p):
            raise RecordError(f"{rec.at}: field 'image'[{k}]: file not found: {p}", "missing image file")
        try:
            images.append(read_image(p))
        except Exception as e:  # PIL raises many types for a corrupt file
            raise RecordError(f"{rec.at}: field 'image'[{k}]: cannot decode {p} ({e})", "bad image file") from e
    drawn: list[dict] = []
    if draw_markers:
        try:
            images, drawn = draw(images, rec.raw, rec.task)
        except RecordError as e:
            raise RecordError(f"{rec.at}: {e}", e.kind) from e
    else:
        check_record_markers(rec)          # a record with bad markers is bad either way
    depth = K = T = None
    scale = depth_scale_of(rec.source, depth_scale)
    try:
        geom = [_geometry(rec, v, scale) for v in range(len(images))]
    except RecordError as e:
        if require_geometry or e.kind not in ("missing depth file", "missing pose file", "missing intrinsic"):
            raise
        geom = None
    if geom:
        shapes = {g[0].shape for g in geom}
        if len(shapes) != 1:
            raise RecordError(f"{rec.at}: field 'depth': the views' depth maps differ in size {sorted(shapes)}",
                              "bad depth")
        depth = np.stack([g[0] for g in geom])
        T = np.stack([g[1] for g in geom])
        K = np.stack([g[2] for g in geom])
    meta = {"spar_source": rec.source, "split": rec.split, "answer_kind": rec.kind, "markers": drawn,
            "image_paths": [str(p) for p in rec.images], "at": rec.at}
    return Sample(images=images, depth=depth, K=K, cam_to_world=T, question=rec.question, options=rec.options,
                  answer=rec.answer, answer_type=rec.answer_type, task=rec.task, category=rec.kind,
                  source="spar7m", id=rec.id, meta=meta)
