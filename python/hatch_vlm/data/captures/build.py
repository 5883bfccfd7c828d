"""`hatch-vlm data build`: a posed RGB-D capture -> a SPAR-7M-RGBD tree (docs/own_data.md).

Two streaming passes, neither holding more than a window of frames:

1. selection (`select.select_views`): every frame's pose, every `frame_step`-th frame's depth (decoded,
   checked for a plausible median, subsampled) -> the tuples of views to ask about;
2. writing: for each kept tuple, its frames are decoded again, the questions asked
   (`questions.ask`), the frames written once and the records appended.

World up: the readers' poses are in the capture's world, whose up differs by format (ScanNet z, ARKit y,
Polycam z). The builder rotates the world so that up is +z (a rotation of the world: relative poses, depth
reprojection and PaStA do not change) because ActoR's teacher and the view-change answers measure heading
and pitch about world +z. `up="auto"` estimates up as the mean of the cameras' image-up directions (a
handheld or head-level capture keeps its images upright) and snaps it to the nearest world axis; it
stops with a message naming `--up` when that mean is more than UP_SNAP_DEG from every axis.

The summary (frames read / skipped by reason, pairs considered / kept, overlap histogram, questions per
task) is printed and written as `<out>/<source>/build_<scene>.json`; a contact sheet of a few built
records, read back through the SPAR-7M reader with their markers drawn, goes to
`<out>/<source>/build_<scene>.png`.
"""
from __future__ import annotations

import json
import shutil
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .frames import CaptureError, CaptureFrame
from .questions import PAIR_TASKS, TASKS, View, ask
from .select import SelectConfig, Selection, select_views
from .writer import CaptureWriter, existing_outputs

UP_SNAP_DEG = 20.0
AXES = {"+x": (1, 0, 0), "-x": (-1, 0, 0), "+y": (0, 1, 0), "-y": (0, -1, 0), "+z": (0, 0, 1), "-z": (0, 0, -1)}


@dataclass
class BuildConfig:
    fmt: str
    src: str
    out: str
    source: str = "captures"
    scene: str | None = None            # default: the capture folder's name
    split: str = "train"
    tasks: tuple[str, ...] = TASKS
    up: str = "default"                 # default (the format's) | auto | +x -x +y -y +z -z
    ignore_distortion: bool = False
    overwrite: bool = False
    contact_sheet: int = 6              # records on the contact sheet (0: none)
    select: SelectConfig = field(default_factory=SelectConfig)


def open_capture(cfg: BuildConfig):
    from . import READERS

    if cfg.fmt not in READERS:
        raise CaptureError(f"--from: unknown format {cfg.fmt!r}; expected one of {sorted(READERS)}")
    if cfg.fmt == "nerfstudio":
        return READERS[cfg.fmt](cfg.src, ignore_distortion=cfg.ignore_distortion)
    if cfg.ignore_distortion:
        raise CaptureError(f"--ignore-distortion: only for --from nerfstudio (a {cfg.fmt} capture has no "
                           f"distortion keys)")
    return READERS[cfg.fmt](cfg.src)


def world_up(cfg: BuildConfig, capture, sel: Selection) -> tuple[np.ndarray, str]:
    """(unit up vector in the capture's world, how it was decided)."""
    choice = cfg.up
    if choice == "default":
        if capture.default_up is not None:
            return np.array(capture.default_up, float), f"{cfg.fmt} convention"
        choice = "auto"
    if choice in AXES:
        return np.array(AXES[choice], float), "--up"
    if choice != "auto":
        raise CaptureError(f"--up: expected default, auto or one of {list(AXES)}, got {cfg.up!r}")
    n = np.linalg.norm(sel.up_sum)
    if n == 0:
        raise CaptureError("--up auto: no camera to estimate up from; pass --up")
    mean = sel.up_sum / n
    name, axis = max(AXES.items(), key=lambda kv: float(np.dot(kv[1], mean)))
    angle = float(np.degrees(np.arccos(np.clip(np.dot(axis, mean), -1, 1))))
    if angle > UP_SNAP_DEG:
        raise CaptureError(f"--up auto: the cameras' mean image-up {np.round(mean, 3).tolist()} is {angle:.0f} deg "
                           f"from the nearest axis ({name}): pass --up with the capture's world up")
    return np.array(axis, float), f"auto: cameras' mean image-up within {angle:.1f} deg of {name}"


def levelling(up: np.ndarray) -> np.ndarray:
    """4x4 world rotation taking `up` to +z (identity for +z; a half turn about x for -z)."""
    z = np.array([0.0, 0.0, 1.0])
    v, c = np.cross(up, z), float(np.dot(up, z))
    L = np.eye(4)
    if c < -1 + 1e-9:
        L[:3, :3] = np.diag([1.0, -1.0, -1.0])
        return L
    Vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    L[:3, :3] = np.eye(3) + Vx + Vx @ Vx / (1 + c)
    return L


def check_depth_unit(capture, sel: Selection) -> None:
    """Most sampled frames implausible -> the unit is wrong: stop, naming where the unit comes from."""
    bad = sel.depth_skipped.get("implausible depth", 0)
    total = sel.frames_sampled + sum(sel.depth_skipped.values())
    if total and bad * 2 >= total:
        key = {"nerfstudio": "transforms.json key 'depth_unit_scale_factor'"}.get(
            capture.format, f"{capture.format} depth (millimetres by the format)")
        raise CaptureError(f"{bad} of {total} sampled frames have a median depth outside 0.1-20 m (e.g. frame "
                           f"{sel.depth_examples.get('implausible depth')}): the depth unit is wrong; check the "
                           f"{key}")


def _prepare_out(cfg: BuildConfig, scene: str) -> None:
    old = existing_outputs(cfg.out, cfg.source, scene)
    if old and not cfg.overwrite:
        raise CaptureError(f"--out {cfg.out}: scene {scene!r} of source {cfg.source!r} was built there already "
                           f"({old[0]}); pass --overwrite to replace it, or --scene NAME")
    for p in old:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def build(cfg: BuildConfig, progress: bool = True) -> dict:
    """Build the tree; returns the summary (also written beside the tree)."""
    from tqdm import tqdm

    unknown = [t for t in cfg.tasks if t not in TASKS]
    if unknown:
        raise CaptureError(f"--tasks: unknown {unknown}; expected some of {list(TASKS)}")
    capture = open_capture(cfg)
    scene = cfg.scene or Path(cfg.src).absolute().name.replace(" ", "_")   # a symlink keeps its own name
    _prepare_out(cfg, scene)
    with tqdm(total=capture.num_frames, desc="select views", unit="frame", disable=not progress) as bar:
        sel = select_views(capture.frames(), cfg.select, progress=bar)
    check_depth_unit(capture, sel)
    up, up_how = world_up(cfg, capture, sel)
    L = levelling(up)
    writer = CaptureWriter(cfg.out, cfg.source, scene, cfg.split)
    asked, not_askable = Counter(), Counter()
    for k, tup in enumerate(tqdm(sel.tuples, desc="write", unit="tuple", disable=not progress)):
        _write_tuple(k, tup, L, cfg, writer, scene, asked, not_askable)
    files = writer.close()
    summary = _summary(cfg, capture, sel, scene, up, up_how, asked, not_askable, writer, files)
    base = Path(cfg.out) / cfg.source / f"build_{scene}"
    base.parent.mkdir(parents=True, exist_ok=True)         # also when nothing was kept (the summary says why)
    base.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    if cfg.contact_sheet and files:
        from .report import contact_sheet

        summary["contact_sheet"] = str(contact_sheet(files, base.with_suffix(".png"), cfg.contact_sheet))
        base.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    return summary


def _write_tuple(k: int, tup: tuple[CaptureFrame, ...], L: np.ndarray, cfg: BuildConfig, writer: CaptureWriter,
                 scene: str, asked: Counter, not_askable: Counter) -> None:
    depths = [f.depth() for f in tup]
    views = [View(d, f.K, L @ f.cam_to_world) for d, f in zip(depths, tup)]
    key = zlib.crc32("\0".join(f.name for f in tup).encode())
    rng = np.random.default_rng([cfg.select.seed, key])
    for task in cfg.tasks:
        if task in PAIR_TASKS and len(tup) != 2:
            continue                      # a two-view task (SPAR's too): not asked on larger tuples
        q = ask(task, views, rng)
        if q is None:
            not_askable[f"{task} ({len(tup)} views)"] += 1
            continue
        for f, d, v in zip(tup, depths, views):
            writer.add_frame(f.name, f.color_path, d, f.K, v.cam_to_world)
        rid = f"{scene}_{k:05d}_{task}_{q.kind}"
        writer.add_record(rid, q, [(f.name, f.color_path.suffix.lower()) for f in tup])
        asked[f"{task}/{q.kind}"] += 1


def _summary(cfg, capture, sel, scene, up, up_how, asked, not_askable, writer, files) -> dict:
    return {"format": cfg.fmt, "src": str(cfg.src), "out": str(cfg.out), "source": cfg.source, "scene": scene,
            "frames": capture.log.as_dict(), "selection": sel.as_dict(),
            "select_config": asdict(cfg.select), "world_up": {"vector": up.tolist(), "how": up_how},
            "questions": dict(sorted(asked.items())), "questions_total": sum(asked.values()),
            "not_askable": dict(sorted(not_askable.items())), "frames_written": len(writer.written),
            "qa_files": [str(f) for f in files]}


def format_summary(s: dict) -> str:
    fr, se = s["frames"], s["selection"]
    lines = [f"hatch-vlm data build: {s['format']} {s['src']} -> {s['out']}/{s['source']} (scene {s['scene']})",
             f"  frames: {fr['seen']} seen, {fr['yielded']} usable, skipped "
             + (", ".join(f"{k}: {v}" for k, v in fr["skipped"].items()) or "none"),
             f"  sampled {se['frames_sampled']} (every {s['select_config']['frame_step']}th usable frame; "
             f"{se['frames_not_sampled_frame_step']} passed over), refused for depth: "
             + (", ".join(f"{k}: {v}" for k, v in se["frames_skipped_for_depth"].items()) or "none"),
             f"  pairs: {se['pairs_considered']} considered, {se['pairs_in_band']} in the band "
             f"{s['select_config']['band']}; tuples in band {se['tuples_in_band']}, kept {se['tuples_kept']} "
             f"(cap {s['select_config']['max_tuples']})",
             "  overlap histogram (fraction of cells matched, 10 % bins): "
             + " ".join(map(str, se["overlap_histogram"])),
             f"  world up: {s['world_up']['vector']} ({s['world_up']['how']})",
             f"  questions: {s['questions_total']} -- " + ", ".join(f"{k}: {v}" for k, v in s["questions"].items()),
             "  not askable on a tuple: " + (", ".join(f"{k}: {v}" for k, v in s["not_askable"].items()) or "none"),
             f"  frames written: {s['frames_written']}"]
    lines += [f"  note: {n}" for n in fr["notes"]]
    if s.get("contact_sheet"):
        lines.append(f"  contact sheet: {s['contact_sheet']}")
    return "\n".join(lines)
