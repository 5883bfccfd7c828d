"""SPAR-7M-RGBD (training) and SPAR-Bench (evaluation): readers returning `Sample`s, and writers (used to
export synthetic data so the real readers load it).

SPAR-7M-RGBD layout under a root directory::

    <source>/images/<scene>/image_color/<frame>.jpg|png     RGB
    <source>/images/<scene>/image_depth/<frame>.png         uint16 depth, millimetres (0 = invalid)
    <source>/images/<scene>/pose/<frame>.txt                4x4 camera-to-world (OpenCV axes)
    <source>/images/<scene>/intrinsic/<frame>.txt | intrinsic_depth.txt | intrinsic_color.txt
                                                            3x3 or 4x4, pixels of the depth map
    qa_jsonl/<split>/<task>/<fill|select|sentence>/*.jsonl

A QA record: ``id``, ``conversations`` (LLaVA style: [{"from": "human", "value": "<image>\\n...question
[\\nA. ...\\nB. ...]"}, {"from": "gpt", "value": answer}]), ``image`` (list of root-relative paths of
image_color files), ``type`` and optionally ``depth`` (root-relative depth paths; otherwise
image_depth/<frame>.png next to the colour frame). ``select`` -> multiple choice ("mc"), ``fill`` ->
numeric, ``sentence`` -> open. We also write (and read when present) ``category`` and ``meta``.

SPAR-Bench: JSONL / JSON / parquet records with ``question`` (options inline or one per line),
``image`` (a path or bytes, or a list of them), ``task``, ``answer``; optional ``id`` and ``level``
(Low / Middle / High; otherwise derived from the task name).

    read_spar_rgbd(root, split=None, strict=False) -> (list[Sample], ReadSummary)
    iter_spar_rgbd(root, split=None, ...) -> Iterator[Sample]          (lazy, for large sets)
    write_spar_rgbd(samples, root, source="synthetic", split="train") -> list[Path]
    read_spar_bench(path, strict=False) -> (list[Sample], ReadSummary)
    write_spar_bench(samples, path) -> Path
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .. import geometry as geo
from .common import (DataError, ReadSummary, RecordError, encode_png, extract_letter, handle, join_options,
                     read_depth_png, read_image, read_matrix, require, split_options, where, write_depth_png,
                     write_image, write_matrix)
from .record import Sample

TYPE_OF = {"mc": "select", "numeric": "fill", "open": "sentence"}
ANSWER_TYPE = {v: k for k, v in TYPE_OF.items()}
_IMAGE_TOKEN = re.compile(r"<image>\s*")


def _scene_name(sample: Sample, index: int) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", sample.id or f"sample_{index:06d}")
    return name


# --------------------------------------------------------------------------------------------------
# SPAR-7M-RGBD writer
# --------------------------------------------------------------------------------------------------
def write_spar_rgbd(samples, root, source: str = "synthetic", split: str = "train",
                    image_ext: str = ".png", include_meta: bool = True, append: bool = False) -> list[Path]:
    """Write samples (with geometry) in the SPAR-7M-RGBD layout under `root`; one scene per sample.
    Colour frames are PNG by default (lossless, so a round trip is exact; SPAR itself uses .jpg).
    `append` adds to existing QA files (to write a large set chunk by chunk). Returns the QA JSONL
    files written."""
    root = Path(root)
    files: dict[Path, list[str]] = {}
    for n, s in enumerate(samples):
        if not s.has_geometry:
            raise DataError(f"write_spar_rgbd: sample {n} (id {s.id!r}) has no depth/K/cam_to_world")
        scene = _scene_name(s, n)
        sdir = root / source / "images" / scene
        img_paths, depth_paths = [], []
        for v in range(s.num_views):
            write_image(s.images[v], sdir / "image_color" / f"{v}{image_ext}")
            write_depth_png(s.depth[v], sdir / "image_depth" / f"{v}.png")
            write_matrix(s.cam_to_world[v], sdir / "pose" / f"{v}.txt")
            img_paths.append(f"{source}/images/{scene}/image_color/{v}{image_ext}")
            depth_paths.append(f"{source}/images/{scene}/image_depth/{v}.png")
        same_K = all(np.array_equal(s.K[0], s.K[v]) for v in range(s.num_views))
        for name in ("intrinsic_depth.txt", "intrinsic_color.txt"):
            write_matrix(_as4(s.K[0]), sdir / "intrinsic" / name)
        if not same_K:
            for v in range(s.num_views):
                write_matrix(_as4(s.K[v]), sdir / "intrinsic" / f"{v}.txt")
        kind = TYPE_OF[s.answer_type]
        rec = {
            "id": s.id or scene,
            "conversations": [
                {"from": "human", "value": "<image>\n" * s.num_views + join_options(s.question, s.options)},
                {"from": "gpt", "value": s.answer},
            ],
            "image": img_paths,
            "depth": depth_paths,
            "type": kind,
            "category": s.category,
        }
        if include_meta and s.meta:
            rec["meta"] = s.meta
        path = root / "qa_jsonl" / split / (s.task or "unknown") / kind / f"{s.task or 'unknown'}.jsonl"
        files.setdefault(path, []).append(json.dumps(rec))
    for path, lines in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a" if append else "w") as fh:
            fh.write("\n".join(lines) + "\n")
    return sorted(files)


def _as4(K) -> np.ndarray:
    M = np.eye(4)
    M[:3, :3] = K
    return M


# --------------------------------------------------------------------------------------------------
# SPAR-7M-RGBD reader
# --------------------------------------------------------------------------------------------------
def _intrinsic(scene_dir: Path, frame: str, at: str) -> np.ndarray:
    idir = scene_dir / "intrinsic"
    for cand in (idir / f"{frame}.txt", idir / "intrinsic_depth.txt", idir / "intrinsic_color.txt"):
        if cand.exists():
            try:
                return geo.validate_intrinsics(read_matrix(cand, ((3, 3), (4, 4))), str(cand))
            except ValueError as e:
                raise RecordError(f"{at}: field 'intrinsic': {e}", "bad intrinsic") from e
    raise RecordError(f"{at}: field 'intrinsic': no {frame}.txt, intrinsic_depth.txt or intrinsic_color.txt "
                      f"in {idir}", "missing intrinsic")


def _frame_geometry(root: Path, img_rel: str, depth_rel: str | None, at: str):
    img_path = root / img_rel
    scene_dir, frame = img_path.parent.parent, img_path.stem
    dpath = root / depth_rel if depth_rel else scene_dir / "image_depth" / f"{frame}.png"
    ppath = scene_dir / "pose" / f"{frame}.txt"
    for name, p in (("depth", dpath), ("pose", ppath)):
        if not p.exists():
            raise RecordError(f"{at}: field {name!r}: file not found: {p}", f"missing {name} file")
    try:
        depth = read_depth_png(dpath)
        pose = geo.validate_pose(read_matrix(ppath), str(ppath))
    except (ValueError, OSError) as e:
        raise RecordError(f"{at}: {e}", "bad geometry file") from e
    return depth, pose, _intrinsic(scene_dir, frame, at)


def _parse_conversation(rec: dict, at: str) -> tuple[str, str]:
    conv = require(rec, "conversations", at, list)
    human = next((c for c in conv if isinstance(c, dict) and c.get("from") == "human"), None)
    gpt = next((c for c in conv if isinstance(c, dict) and c.get("from") == "gpt"), None)
    if human is None or not isinstance(human.get("value"), str):
        raise RecordError(f"{at}: field 'conversations': no human turn with a text 'value'", "bad conversations")
    if gpt is None or gpt.get("value") is None:
        raise RecordError(f"{at}: field 'conversations': no gpt turn with a 'value'", "bad conversations")
    return _IMAGE_TOKEN.sub("", human["value"]).strip(), str(gpt["value"]).strip()


def parse_answer(question_text: str, answer: str, kind: str, at: str):
    """(stem, options, answer, answer_type) from a question's text and its gold answer."""
    stem, options = split_options(question_text)
    answer_type = ANSWER_TYPE.get(kind)
    if answer_type is None:
        answer_type = "mc" if options else "numeric" if _is_number(answer) else "open"
    if answer_type == "mc":
        if not options:
            raise RecordError(f"{at}: field 'question': a multiple-choice record with no options "
                              f"('A. ...')", "no options")
        letter = extract_letter(answer, options)
        if letter is None or letter not in [o[0] for o in options]:
            raise RecordError(f"{at}: field 'answer': {answer!r} is not one of the options' letters",
                              "bad answer")
        return stem, options, letter, "mc"
    if answer_type == "numeric":
        if not _is_number(answer):
            raise RecordError(f"{at}: field 'answer': {answer!r} is not a number", "bad answer")
        return join_options(stem, options), [], answer, "numeric"
    return join_options(stem, options), [], answer, "open"


def _is_number(s) -> bool:
    try:
        float(str(s).strip())
        return True
    except ValueError:
        return False


def read_spar_rgbd(root, split: str | None = None, tasks=None, strict: bool = False,
                   require_geometry: bool = True, load_images: bool = True):
    """Read SPAR-7M-RGBD QA records (and their frames) under `root`.

    Args:
        root: the directory holding `qa_jsonl/` and the `<source>/images/` trees.
        split: a subdirectory of qa_jsonl (e.g. "train"); None reads every split.
        tasks: optional iterable of task names to keep.
        strict: raise DataError on the first bad record instead of skipping and counting it.
        require_geometry: depth, pose and intrinsic files must exist for every view (else the record
            is bad); False loads them only when all are present.
        load_images: decode the colour frames (False leaves `images` as [] and paths in meta).

    Returns:
        (samples, summary): `Sample`s with depth float32 [V, H, W] metres, K [V, 3, 3], cam_to_world
        [V, 4, 4]; task from the directory, answer_type from fill/select/sentence.
    """
    summary = ReadSummary(f"SPAR-7M-RGBD {root}")
    samples = list(iter_spar_rgbd(root, split, tasks, strict, require_geometry, load_images, summary))
    return samples, summary.log()


def iter_spar_rgbd(root, split=None, tasks=None, strict=False, require_geometry=True, load_images=True,
                   summary: ReadSummary | None = None):
    """Lazy :func:`read_spar_rgbd`: yields samples; skips are counted in `summary` (if given)."""
    root = Path(root)
    qa = root / "qa_jsonl"
    if not qa.is_dir():
        raise DataError(f"read_spar_rgbd: no qa_jsonl directory under {root}")
    base = qa / split if split else qa
    if split and not base.is_dir():
        raise DataError(f"read_spar_rgbd: split {split!r} not found ({base} does not exist)")
    summary = summary if summary is not None else ReadSummary(f"SPAR-7M-RGBD {root}")
    for f in sorted(base.rglob("*.jsonl")):
        rel = f.relative_to(qa).parts              # split, task, kind, file
        if len(rel) < 4:
            raise DataError(f"read_spar_rgbd: {f} is not at qa_jsonl/<split>/<task>/<fill|select|sentence>/")
        task, kind = rel[-3], rel[-2]
        if tasks is not None and task not in tasks:
            continue
        with open(f) as fh:
            for n, line in enumerate(fh):
                if not line.strip():
                    continue
                at = where(f, n)
                try:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise RecordError(f"{at}: not valid JSON ({e})", "bad json") from e
                    at = where(f, n, rec.get("id") if isinstance(rec, dict) else None)
                    sample = _spar_record(root, rec, task, kind, at, require_geometry, load_images)
                    summary.read += 1
                except RecordError as e:
                    handle(e, summary, strict)
                    continue
                yield sample


def _spar_record(root, rec, task, kind, at, require_geometry, load_images) -> Sample:
    text, answer = _parse_conversation(rec, at)
    images = require(rec, "image", at, (list, str))
    images = [images] if isinstance(images, str) else images
    if not images or not all(isinstance(p, str) for p in images):
        raise RecordError(f"{at}: field 'image': expected a non-empty list of paths", "bad image")
    depth_rel = rec.get("depth")
    if depth_rel is not None and (not isinstance(depth_rel, list) or len(depth_rel) != len(images)):
        raise RecordError(f"{at}: field 'depth': expected a list of {len(images)} paths", "bad depth")
    stem, options, answer, answer_type = parse_answer(text, answer, kind, at)
    imgs = []
    for k, p in enumerate(images):
        if not (root / p).exists():
            raise RecordError(f"{at}: field 'image'[{k}]: file not found: {root / p}", "missing image file")
        if load_images:
            imgs.append(read_image(root / p))
    depth = K = T = None
    try:
        geom = [_frame_geometry(root, p, depth_rel[k] if depth_rel else None, at) for k, p in enumerate(images)]
    except RecordError:
        if require_geometry:
            raise
        geom = None
    if geom:
        shapes = {g[0].shape for g in geom}
        if len(shapes) != 1:
            raise RecordError(f"{at}: field 'depth': views have different depth sizes {shapes}", "bad depth")
        depth = np.stack([g[0] for g in geom])
        T = np.stack([g[1] for g in geom])
        K = np.stack([g[2] for g in geom])
    meta = dict(rec.get("meta") or {})
    meta["image_paths"] = images
    return Sample(images=imgs, depth=depth, K=K, cam_to_world=T, question=stem, options=options,
                  answer=answer, answer_type=answer_type, task=task, category=str(rec.get("category", "")),
                  source="spar7m", id=str(rec.get("id", "")), meta=meta)


# --------------------------------------------------------------------------------------------------
# SPAR-Bench
# --------------------------------------------------------------------------------------------------
# Level of SPAR-Bench tasks (by name fragments) when a record does not carry one.
LEVEL_RULES = [
    ("depth", "Low"), ("distance", "Low"), ("position_matching", "Middle"), ("matching", "Middle"),
    ("view_change", "Middle"), ("camera_motion", "Middle"), ("motion", "Middle"),
    ("spatial_imagination", "High"), ("relation", "High"), ("navigation", "High"),
    ("object_position", "High"), ("imagination", "High"),
]
LEVELS = ("Low", "Middle", "High")


def level_of(task: str) -> str:
    t = task.lower()
    for frag, level in LEVEL_RULES:
        if frag in t:
            return level
    return ""


def _load_records(path: Path):
    """(file, index, record) of a .jsonl / .json / .parquet file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for n, rec in enumerate(pq.read_table(path).to_pylist()):
            yield n, rec
    elif path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        yield from enumerate(data)
    else:
        for n, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    yield n, RecordError(f"{where(path, n)}: not valid JSON ({e})", "bad json")


def _bench_files(path: Path, exts=(".jsonl", ".json", ".parquet")) -> list[Path]:
    if not path.exists():
        raise DataError(f"benchmark file or directory not found: {path}")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix in exts)
    if not files:
        raise DataError(f"no {'/'.join(exts)} files under {path}")
    return files


def read_bench_records(path, source: str, parse, exts=(".jsonl", ".json", ".parquet"),
                       strict: bool = False, image_root=None):
    """The loop every benchmark reader shares: each record of each file under `path` goes through
    `parse(rec, at, base, f, n) -> Sample` (`at` names file and record for errors, `base` is the image
    root: `image_root` or the file's directory). A RecordError from a record becomes a counted skip, or a
    DataError with `strict`. Returns (samples, summary)."""
    summary = ReadSummary(source)
    samples = []
    for f in _bench_files(Path(path), exts):
        base = Path(image_root) if image_root else f.parent
        for n, rec in _load_records(f):
            try:
                if isinstance(rec, RecordError):
                    raise rec
                at = where(f, n, rec.get("id") if isinstance(rec, dict) else None)
                samples.append(parse(rec, at, base, f, n))
                summary.read += 1
            except RecordError as e:
                handle(e, summary, strict)
    return samples, summary.log()


def load_images_field(value, base: Path, at: str, name: str = "image") -> list[np.ndarray]:
    """Decode an image field: a path / bytes / {"bytes"|"path"} dict, or a list of them."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise RecordError(f"{at}: field {name!r}: empty", f"bad {name}")
    out = []
    for k, it in enumerate(items):
        if isinstance(it, dict):
            it = it.get("bytes") or it.get("path")
        try:
            if isinstance(it, (bytes, bytearray)):
                out.append(read_image(it))
            elif isinstance(it, str):
                p = Path(it) if Path(it).is_absolute() else base / it
                if not p.exists():
                    raise RecordError(f"{at}: field {name!r}[{k}]: file not found: {p}", f"missing {name} file")
                out.append(read_image(p))
            else:
                raise RecordError(f"{at}: field {name!r}[{k}]: expected a path or bytes, got "
                                  f"{type(it).__name__}", f"bad {name}")
        except RecordError:
            raise
        except Exception as e:  # PIL's decode errors have many types
            raise RecordError(f"{at}: field {name!r}[{k}]: cannot decode image ({e})", f"bad {name}") from e
    return out


def read_spar_bench(path, strict: bool = False, image_root=None):
    """Read SPAR-Bench records from a file or a directory of them (see module doc).

    Image paths are relative to `image_root` (default: the records file's directory). Returns
    (samples, summary); `category` is the level (Low / Middle / High)."""

    def parse(rec, at, base, f, n) -> Sample:
        question = require(rec, "question", at, str)
        task = require(rec, "task", at, str)
        answer = str(require(rec, "answer", at)).strip()
        imgs = load_images_field(require(rec, "image", at), base, at)
        stem, options, answer, atype = parse_answer(question, answer, None, at)
        level = str(rec.get("level") or level_of(task))
        return Sample(images=imgs, question=stem, options=options, answer=answer, answer_type=atype,
                      task=task, category=level, source="spar_bench", id=str(rec.get("id", f"{f.stem}_{n}")))

    return read_bench_records(path, f"SPAR-Bench {path}", parse, strict=strict, image_root=image_root)


def write_spar_bench(samples, path, embed_images: bool = False, append: bool = False) -> Path:
    """Write samples as a SPAR-Bench JSONL file; images go to `<path stem>_images/` next to it (or are
    embedded as PNG bytes in a .parquet file when `embed_images` / the path ends in .parquet)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recs = []
    for n, s in enumerate(samples):
        rec = {"id": s.id or f"sample_{n}", "question": join_options(s.question, s.options), "task": s.task,
               "answer": s.answer, "level": s.category}
        if embed_images or path.suffix == ".parquet":
            rec["image"] = [encode_png(im) for im in s.images]
        else:
            rels = []
            for v, im in enumerate(s.images):
                rel = f"{path.stem}_images/{_scene_name(s, n)}_{v}.png"
                write_image(im, path.parent / rel)
                rels.append(rel)
            rec["image"] = rels
        recs.append(rec)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(recs), path)
    else:
        with open(path, "a" if append else "w") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in recs))
    return path
