"""Where things are in a SPAR-7M / SPAR-7M-RGBD download, and the task names (docs/formats.md).

The download is per source (fudan-zvg/spar readme.md, datasets/generate_data_josn.py)::

    spar/<source>/images/<scene>/{image_color,image_depth,pose,intrinsic,video_*}/...
    spar/<source>/qa_jsonl/<split>/<task>/<fill|select|sentence|judge>/<kind>_<N>.jsonl

and the paths inside a record (`image`, `depth`) are relative to `spar/<source>/images` (the official
training index sets `"root": "spar/<source>/images"` for every QA file of that source). A user points
hatch at `spar/` (every source under it) or at one `spar/<source>/`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable

from ..common import DataError

# The sources of the official release (others are accepted: any directory holding qa_jsonl/ and images/).
KNOWN_SOURCES = ("scannet", "scannetpp", "structured3d", "rxr")
ANSWER_KINDS = ("fill", "select", "sentence", "judge")

# Task names by view setting, as fudan-zvg/spar datasets/draw_marker.py groups them (DRAW_FUNCTIONS).
SINGLE_VIEW_TASKS = (
    "obj_spatial_relation_oo", "depth_prediction_oc", "depth_prediction_oo",
    "distance_prediction_oc", "distance_prediction_oo", "distance_infer_center_oc", "distance_infer_center_oo",
    "spatial_volume_infer", "spatial_imagination_oc", "spatial_imagination_oo",
)
MULTI_VIEW_TASKS = (
    "position_matching", "view_change_infer", "depth_prediction_oc_mv", "depth_prediction_oo_mv",
    "distance_prediction_oc_mv", "distance_prediction_oo_mv", "obj_spatial_relation_oc_mv",
    "obj_spatial_relation_oo_mv", "distance_infer_center_oc_mv", "distance_infer_center_oo_mv",
    "spatial_imagination_oc_mv", "spatial_imagination_oo_mv", "spatial_imagination_map_mv",
    "camera_motion_infer",
)
VIDEO_TASKS = (
    "distance_prediction_oo_video", "distance_infer_center_oo_video", "spatial_imagination_oo_video",
    "spatial_imagination_oc_video", "spatial_imagination_oc_video_hard", "spatial_imagination_oo_video_hard",
    "obj_frame_locate", "appearance_order", "room_size", "obj_count", "nav",
)
TASK_GROUPS = {"multi_view": MULTI_VIEW_TASKS, "single_view": SINGLE_VIEW_TASKS, "video": VIDEO_TASKS}

# Metres per stored depth unit, per source. ScanNet's depth PNGs are uint16 millimetres (SensReader,
# SensorData.py); the other sources' units are not documented: millimetres is assumed and checked
# (hatch_vlm.data.spar7m.frames refuses implausible depths), and `data.depth_scale` overrides it.
DEFAULT_DEPTH_SCALE = {"scannet": 0.001, "scannetpp": 0.001, "structured3d": 0.001, "rxr": 0.001}
FALLBACK_DEPTH_SCALE = 0.001


def resolve_tasks(names: Iterable[str] | None) -> frozenset[str] | None:
    """Task names with groups expanded ("multi_view" -> its tasks); None or empty -> None (every task)."""
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    out: set[str] = set()
    for n in names:
        out.update(TASK_GROUPS.get(n, (n,)))
    return frozenset(out) or None


@dataclass(frozen=True)
class QAFile:
    """One QA JSONL file and what its place in the tree says."""
    path: Path
    source: str          # e.g. "scannet"
    split: str           # e.g. "train"
    task: str            # the task folder (a record's `type` wins when present)
    kind: str            # fill | select | sentence | judge (or an unknown folder name, reported)
    images_root: Path    # spar/<source>/images: what the record's paths are relative to

    @property
    def group(self) -> str:
        """The file's folder relative to spar/ (source/split/task/kind): the stable name of its records
        (the official tooling renames files when their record count changes, folders never)."""
        return f"{self.source}/{self.split}/{self.task}/{self.kind}"


def find_sources(root) -> dict[str, Path]:
    """{source name: spar/<source> directory} for `root` = spar/ or one spar/<source>/."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"SPAR-7M root {root}: no such directory")
    if (root / "qa_jsonl").is_dir():
        return {root.resolve().name: root}
    found = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and (p / "qa_jsonl").is_dir()}
    if not found:
        hint = ""
        if (root / "spar").is_dir():
            hint = f"; did you mean {root / 'spar'}?"
        raise DataError(f"SPAR-7M root {root}: neither {root}/qa_jsonl nor {root}/<source>/qa_jsonl exists "
                        f"(expected spar/ or spar/<source>/ of the SPAR-7M download){hint}")
    return found


def qa_files(root, split: str | None = None, tasks: Iterable[str] | None = None) -> list[QAFile]:
    """Every QA JSONL file under `root` (sorted: the order selection and statistics walk them in).

    split: a qa_jsonl/<split> folder ("train", "val"); None takes every split. tasks: names or groups.
    """
    wanted = resolve_tasks(tasks)
    out: list[QAFile] = []
    splits_seen: set[str] = set()
    for source, sdir in find_sources(root).items():
        qa = sdir / "qa_jsonl"
        for split_dir in sorted(p for p in qa.iterdir() if p.is_dir()):
            splits_seen.add(split_dir.name)
            if split is not None and split_dir.name != split:
                continue
            for f in sorted(split_dir.rglob("*.jsonl")):
                rel = f.relative_to(split_dir).parts            # task, kind, file
                if len(rel) != 3:
                    raise DataError(f"{f}: not at qa_jsonl/<split>/<task>/<fill|select|sentence|judge>/"
                                    "<file>.jsonl")
                task, kind = rel[0], rel[1]
                if wanted is not None and task not in wanted:
                    continue
                out.append(QAFile(f, source, split_dir.name, task, kind, sdir / "images"))
    if split is not None and split not in splits_seen:
        raise DataError(f"SPAR-7M root {root}: no split {split!r} (found: {sorted(splits_seen) or 'none'})")
    return out
