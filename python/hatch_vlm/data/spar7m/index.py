"""Choosing N records out of millions without decoding them: a pass over the JSONL text, O(N) memory.

Every non-blank line of every selected QA file gets a key: a 64-bit hash of (its folder, e.g.
"scannet/train/depth_prediction_oo_mv/select", its line number within that folder, the seed). Records are
ranked by key; walking that ranking, each candidate is parsed, its markers are checked against its view count
and its files are checked to exist (still no decoding) and bad ones are skipped and counted with their
reason. The first `num_eval` good records are the held-out part, the next `num_train` the training part. So:

* the choice is a deterministic function of the tree and the seed: the same on every run, on every rank
  and for any number of processes;
* the held-out part does not depend on `num_train`, and never overlaps the training part;
* only the `num_eval + num_train (+ slack)` smallest keys are held (an `argpartition` merge per chunk of
  text), so memory does not grow with the dataset;
* folders, not file names, name the records: the official tooling renames `fill_116242.jsonl` when its
  count changes, which would otherwise reshuffle the choice.

The line offsets of each file are cached (`cache_dir`, keyed by the file's path, size and mtime), so a
second start skips the text pass entirely.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterable

import numpy as np

from ..common import DataError, ReadSummary, RecordError
from .layout import QAFile, qa_files
from .records import SparRecord, check_record_markers, parse_record

log = logging.getLogger("hatch_vlm.data")

CHUNK_BYTES = 1 << 24
DEPTH_CHECKS = 4          # candidates per source whose depth `depth_check` decodes
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def default_cache_dir() -> Path:
    base = os.environ.get("HATCH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hatch")
    return Path(base) / "spar7m_index"


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of uint64 values (Steele et al.'s SplitMix64 finaliser)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _group_base(group: str, seed: int) -> np.uint64:
    h = hashlib.blake2b(f"{seed}\0{group}".encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(h, "little"))


# ----------------------------------------------------------------------------------------- offsets
def scan_offsets(path: Path, progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(byte offsets, 1-based line numbers), int64, of the non-blank lines of a text file, from one pass."""
    starts: list[np.ndarray] = []
    numbers: list[np.ndarray] = []
    pos = 0
    line_start = 0          # offset where the current (unfinished) line began
    line_no = 1             # its 1-based number
    with open(path, "rb") as fh:
        while True:
            buf = fh.read(CHUNK_BYTES)
            if not buf:
                break
            arr = np.frombuffer(buf, dtype=np.uint8)
            nl = np.flatnonzero(arr == 10).astype(np.int64) + pos      # absolute newline offsets
            if nl.size:
                begins = np.concatenate(([line_start], nl[:-1] + 1))
                keep = (nl - begins) > 0                              # drop empty lines
                starts.append(begins[keep])
                numbers.append(np.arange(line_no, line_no + nl.size, dtype=np.int64)[keep])
                line_start = int(nl[-1]) + 1
                line_no += int(nl.size)
            pos += len(buf)
            if progress:
                progress(len(buf))
    if pos > line_start:        # a last line without a newline
        starts.append(np.array([line_start], dtype=np.int64))
        numbers.append(np.array([line_no], dtype=np.int64))
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(starts), np.concatenate(numbers)


def _cache_path(cache_dir: Path, path: Path) -> Path:
    h = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:20]
    return cache_dir / f"{h}.npy"


def file_offsets(path: Path, cache_dir: Path | None, progress=None) -> tuple[np.ndarray, np.ndarray, bool]:
    """(offsets, line numbers, from_cache). A cache entry is [size, mtime_ns, n, offsets..., lines...]."""
    st = path.stat()
    stamp = np.array([st.st_size, st.st_mtime_ns], dtype=np.int64)
    cp = _cache_path(cache_dir, path) if cache_dir else None
    if cp is not None and cp.is_file():
        try:
            arr = np.load(cp, mmap_mode="r")
            if arr.shape[0] >= 3 and arr[0] == stamp[0] and arr[1] == stamp[1]:
                n = int(arr[2])
                if arr.shape[0] == 3 + 2 * n:
                    if progress:
                        progress(int(st.st_size))
                    return np.asarray(arr[3:3 + n]), np.asarray(arr[3 + n:]), True
        except (OSError, ValueError):
            pass                     # a torn or foreign file: rebuild it
    offsets, lines = scan_offsets(path, progress)
    if cp is not None:
        try:
            cp.parent.mkdir(parents=True, exist_ok=True)
            tmp = cp.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, np.concatenate([stamp, [offsets.shape[0]], offsets, lines]))
            os.replace(tmp, cp)
        except OSError as e:         # a read-only cache is not an error, only slower next time
            log.warning("SPAR-7M index cache %s not writable (%s): the next start re-reads the text", cp, e)
    return offsets, lines, False


# --------------------------------------------------------------------------------------- selection
@dataclass
class RecordRefs:
    """Where chosen records are: parallel arrays into `files` (O(N) memory, picklable)."""
    files: list[QAFile]
    file_idx: np.ndarray        # int32
    offset: np.ndarray          # int64 byte offset of the line
    line: np.ndarray            # int64 1-based line number in its file (for messages)

    def __len__(self) -> int:
        return int(self.file_idx.shape[0])

    def subset(self, idx) -> RecordRefs:
        return RecordRefs(self.files, self.file_idx[idx], self.offset[idx], self.line[idx])


@dataclass
class Selection:
    held_out: RecordRefs
    train: RecordRefs
    summary: ReadSummary                       # skipped candidates, by reason
    num_records: int = 0                       # non-blank lines in the selected files
    seconds: float = 0.0
    cached_files: int = 0
    info: dict = field(default_factory=dict)


def read_line(fh, offset: int) -> bytes:
    fh.seek(int(offset))
    return fh.readline()


class _Candidates:
    """The `need` smallest keys seen so far, with their (file, offset, line)."""

    def __init__(self, need: int):
        self.need = need
        self.key = np.zeros(0, np.uint64)
        self.fidx = np.zeros(0, np.int32)
        self.off = np.zeros(0, np.int64)
        self.line = np.zeros(0, np.int64)

    def add(self, key, fidx, off, line) -> None:
        key = np.concatenate([self.key, key])
        fidx = np.concatenate([self.fidx, fidx])
        off = np.concatenate([self.off, off])
        line = np.concatenate([self.line, line])
        if key.shape[0] > self.need:
            keep = np.argpartition(key, self.need - 1)[:self.need]
            key, fidx, off, line = key[keep], fidx[keep], off[keep], line[keep]
        self.key, self.fidx, self.off, self.line = key, fidx, off, line

    def ranked(self):
        order = np.lexsort((self.line, self.fidx, self.key))     # ties (never in practice) broken stably
        return self.fidx[order], self.off[order], self.line[order]


def _rank(files: list[QAFile], need: int, seed: int, cache_dir: Path | None, bar) -> tuple[_Candidates, int, int]:
    cands = _Candidates(need)
    total = cached = 0
    group_count: dict[str, int] = {}
    for fi, qa in enumerate(files):
        offsets, lines, hit = file_offsets(qa.path, cache_dir, bar.update if bar is not None else None)
        cached += hit
        n = offsets.shape[0]
        first = group_count.get(qa.group, 0)
        group_count[qa.group] = first + n
        total += n
        if n == 0:
            continue
        line_in_group = np.arange(first, first + n, dtype=np.uint64)
        with np.errstate(over="ignore"):
            keys = _splitmix64(line_in_group + _group_base(qa.group, seed))
        cands.add(keys, np.full(n, fi, np.int32), offsets.astype(np.int64), lines.astype(np.int64))
    return cands, total, cached


def select_records(root, num_train: int, num_eval: int, seed: int = 0, split: str | None = "train",
                   tasks: Iterable[str] | None = None, min_views: int = 1, require_geometry: bool = True,
                   answer_types: Iterable[str] | None = None,
                   depth_check: Callable[[SparRecord], None] | None = None, cache_dir: Path | str | None = "default",
                   strict: bool = False, progress: bool = True) -> Selection:
    """The held-out and training records of a SPAR-7M tree (see the module doc).

    Args:
        root: spar/ or spar/<source>/.
        num_train, num_eval: how many good records each part gets (fewer if the tree has fewer: warned).
        seed: the choice's seed. split: the qa_jsonl split (None: all). tasks: names and/or groups.
        min_views: skip records with fewer images (PaStA and ActoR need pairs).
        answer_types: keep only records of these answer types (mc, numeric, open; ActoR's rewards need mc or
            numeric); the others are counted as "answer type not selected".
        require_geometry: the candidates' depth and pose files must exist.
        depth_check: called on some candidates of each source (e.g. to decode their depth and refuse a wrong
            unit); a RecordError from it counts as a skip.
        cache_dir: where line offsets are cached ("default": ~/.cache/hatch_vlm/spar7m_index or
            $HATCH_CACHE_DIR; None: no cache).
        strict: raise DataError at the first bad candidate instead of skipping it.
    """
    from tqdm.auto import tqdm

    from .frames import check_files

    t0 = time.perf_counter()
    if num_train < 0 or num_eval < 0:
        raise ValueError(f"num_train and num_eval must be >= 0, got {num_train}, {num_eval}")
    cache = default_cache_dir() if cache_dir == "default" else (Path(cache_dir) if cache_dir else None)
    files = qa_files(root, split, tasks)
    if not files:
        raise DataError(f"SPAR-7M root {root}: no QA files for split={split!r}, tasks={sorted(tasks or []) or 'all'}")
    want = num_train + num_eval
    types = None if answer_types is None else set(answer_types)
    summary = ReadSummary(f"SPAR-7M {root}")
    total_bytes = sum(f.path.stat().st_size for f in files)
    need = max(want + want // 10 + 64, 1)
    checked_per_source: dict[str, list[int]] = {}      # source -> [depth-checked, implausible]
    seen: dict[str, bool] = {}

    def exists(path: str) -> bool:          # records share frames: one stat per file
        hit = seen.get(path)
        if hit is None:
            hit = seen[path] = os.path.isfile(path)
        return hit
    while True:
        bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="SPAR-7M index", disable=not progress,
                   leave=False)
        cands, total, cached = _rank(files, need, seed, cache, bar)
        bar.close()
        fidx, off, line = cands.ranked()
        good: list[int] = []
        summary = ReadSummary(f"SPAR-7M {root}")
        handles: dict[int, object] = {}
        try:
            for k in range(fidx.shape[0]):
                if len(good) == want:
                    break
                fi = int(fidx[k])
                fh = handles.get(fi) or handles.setdefault(fi, open(files[fi].path, "rb"))
                try:
                    rec = parse_record(read_line(fh, off[k]), files[fi], int(line[k]))
                    if types is not None and rec.answer_type not in types:
                        raise RecordError(f"{rec.at}: answer type {rec.answer_type!r} not in data.answer_types",
                                          "answer type not selected")
                    if len(rec.images) < min_views:
                        raise RecordError(f"{rec.at}: {len(rec.images)} image(s), fewer than data.min_views="
                                          f"{min_views}", "too few views")
                    check_files(rec, require_geometry, exists)
                    check_record_markers(rec)
                    if depth_check is not None and checked_per_source.get(rec.source, [0, 0])[0] < DEPTH_CHECKS:
                        tally = checked_per_source.setdefault(rec.source, [0, 0])
                        tally[0] += 1
                        try:
                            depth_check(rec)
                        except RecordError as e:
                            tally[1] += e.kind == "implausible depth"
                            raise
                except RecordError as e:
                    if strict and e.kind not in ("answer type not selected", "too few views"):
                        raise DataError(str(e)) from e
                    summary.skipped += 1
                    summary.reasons[e.kind] += 1
                    if len(summary.examples) < 10:
                        summary.examples.append(str(e))
                    continue
                good.append(k)
        finally:
            for fh in handles.values():
                fh.close()
        exhausted = fidx.shape[0] < need            # every record of the tree was a candidate
        if len(good) == want or exhausted:
            break
        need *= 4                                     # too many bad candidates: widen the net and redo
    good_arr = np.asarray(good, dtype=np.int64)
    summary.read = len(good)
    all_refs = RecordRefs(files, fidx[good_arr], off[good_arr], line[good_arr])
    n_eval = min(num_eval, len(good))
    sel = Selection(held_out=all_refs.subset(slice(0, n_eval)), train=all_refs.subset(slice(n_eval, None)),
                    summary=summary, num_records=total, seconds=time.perf_counter() - t0, cached_files=cached,
                    info={"depth_checked": checked_per_source})
    if len(good) < want:
        log.warning("SPAR-7M %s: only %d good records for num_eval=%d + num_train=%d (%s)", root, len(good),
                    num_eval, num_train, summary)
    if summary.skipped:
        log.warning("%s", summary)
        for ex in summary.examples[:3]:
            log.warning("  e.g. %s", ex)
    return sel
