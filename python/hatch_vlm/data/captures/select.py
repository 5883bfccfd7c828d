"""Choosing which frames go together, with our own op: a streaming pass over the capture scores candidate
view pairs by their measured cell overlap (`torch.ops.hatch.patch_overlap` on small copies of the depth
maps, every candidate pair of a new frame in one batched call) and keeps tuples whose every pair lies in
a band of overlap: views that share enough to correspond and differ enough to reason about.

* Candidates: each frame is compared with the last `window` sampled frames (every `frame_step`-th usable
  frame is sampled). Captures are walks, so views that overlap are near in time; loop closures (the same
  wall seen again minutes later) are not found, which costs variety, not correctness.
* Overlap of a pair: the fraction of grid cells (grid x grid over the image) of which at least half the
  valid-depth pixels are visible in the other view (the op's visibility test), averaged over both
  directions. Cells without valid depth count as unmatched: a view that sees mostly sky/void shares little.
* Tuples of `sizes` views (2-4) whose every pair is in the band; at most `max_tuples` are kept per
  capture: those with the smallest seeded hash of their frame names, so the choice is deterministic, does
  not depend on the order candidates arrive in and needs O(max_tuples) memory (a bounded heap).

Memory is O(window) depth maps + O(max_tuples) tuples, whatever the number of frames.
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .frames import CaptureFrame, median_depth_problem

HIST_BINS = 10          # overlap histogram: 0-10 %, ..., 90-100 %


@dataclass(frozen=True)
class SelectConfig:
    band: tuple[float, float] = (0.10, 0.70)   # kept pairs' overlap, fraction of cells matched
    sizes: tuple[int, ...] = (2, 3)             # views per tuple
    max_tuples: int = 200                       # per capture
    window: int = 12                            # sampled frames each new frame is compared with
    frame_step: int = 5                         # sample every k-th usable frame
    grid: int = 8                               # cells per side for the overlap
    overlap_width: int = 80                     # depth maps are subsampled to about this width
    cell_match: float = 0.5                     # a cell is matched when this fraction of it is visible
    seed: int = 0

    def check(self) -> SelectConfig:
        lo, hi = self.band
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"--band: expected 0 <= low < high <= 1 (fractions of cells), got {self.band}")
        if not self.sizes or any(s not in (2, 3, 4) for s in self.sizes):
            raise ValueError(f"--views: tuple sizes must be 2, 3 or 4, got {list(self.sizes)}")
        for name in ("max_tuples", "window", "frame_step", "grid", "overlap_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)}")
        if max(self.sizes) > self.window + 1:
            raise ValueError(f"--window {self.window}: too small for {max(self.sizes)}-view tuples")
        return self


@dataclass
class Selection:
    tuples: list[tuple[CaptureFrame, ...]]      # kept, in a deterministic order (hash key)
    overlaps: dict[tuple[str, ...], list[float]]  # per kept tuple: its pairs' overlaps
    pairs_considered: int = 0
    pairs_in_band: int = 0
    tuples_in_band: Counter = field(default_factory=Counter)    # by size, before the cap
    histogram: list[int] = field(default_factory=lambda: [0] * HIST_BINS)   # every considered pair
    frames_sampled: int = 0
    frames_not_sampled: int = 0                 # usable frames passed over by frame_step (not a data problem)
    depth_skipped: Counter = field(default_factory=Counter)    # frames refused for their depth, by reason
    depth_examples: dict = field(default_factory=dict)
    up_sum: np.ndarray = field(default_factory=lambda: np.zeros(3))   # sum of the cameras' image-up vectors

    def as_dict(self) -> dict:
        return {"frames_sampled": self.frames_sampled, "frames_not_sampled_frame_step": self.frames_not_sampled,
                "frames_skipped_for_depth": dict(self.depth_skipped), "depth_examples": self.depth_examples,
                "pairs_considered": self.pairs_considered, "pairs_in_band": self.pairs_in_band,
                "tuples_in_band": {str(k): v for k, v in sorted(self.tuples_in_band.items())},
                "tuples_kept": len(self.tuples), "overlap_histogram": self.histogram}


def subsample(depth: np.ndarray, K: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(depth[::s, ::s], its K, s) with s the integer step giving about `width` columns: pixel c' of the
    copy is pixel s c' of the original, so u' = u / s exactly in the pixel-centre convention."""
    s = max(1, int(round(depth.shape[1] / width)))
    K2 = np.array(K, dtype=np.float64)
    K2[:2] /= s
    K2[2] = [0, 0, 1]
    return np.ascontiguousarray(depth[::s, ::s]), K2, s


def pair_overlaps(new: tuple[np.ndarray, np.ndarray, np.ndarray], olds: list, grid: int,
                  cell_match: float) -> np.ndarray:
    """Overlap (fraction of cells matched, mean of both directions) of `new` with each of `olds`, one
    batched patch_overlap call. Each is (depth [h, w] float32, K [3, 3], cam_to_world [4, 4])."""
    import torch
    import hatch_ext.ops as ops

    B = len(olds)
    depth = torch.from_numpy(np.stack([np.stack([o[0], new[0]]) for o in olds])).float()
    K = torch.from_numpy(np.stack([np.stack([o[1], new[1]]) for o in olds])).double()
    T = torch.from_numpy(np.stack([np.stack([o[2], new[2]]) for o in olds])).double()
    M = ops.patch_overlap(depth.double(), K, T, grid_h=grid)          # [B, 2, 2, P, P]
    visible = M.sum(-1)                                                # [B, 2, 2, P]: fraction of cell i seen
    # the fraction is a sum of 1/n terms: a cell exactly at cell_match may sum to a hair below it
    matched = (visible >= cell_match - 1e-9).double().mean(-1)        # [B, 2, 2]
    return ((matched[:, 0, 1] + matched[:, 1, 0]) / 2).numpy().reshape(B)


def tuple_key(names: Iterable[str], seed: int) -> int:
    h = hashlib.blake2b(("\0".join(names) + f"\0{seed}").encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


class _Cap:
    """The `cap` tuples with the smallest keys seen so far (a max-heap of size cap)."""

    def __init__(self, cap: int):
        self.cap, self.heap = cap, []          # entries (-key, names, frames, overlaps)

    def offer(self, key: int, frames: tuple, overlaps: list[float]) -> None:
        entry = (-key, tuple(f.name for f in frames), frames, overlaps)
        if len(self.heap) < self.cap:
            heapq.heappush(self.heap, entry)
        elif -self.heap[0][0] > key:
            heapq.heapreplace(self.heap, entry)

    def sorted(self) -> list:
        return sorted(self.heap, key=lambda e: -e[0])


def select_views(frames: Iterable[CaptureFrame], cfg: SelectConfig, progress=None) -> Selection:
    """One pass over `frames` (each frame's depth is decoded once, when sampled); see the module doc."""
    cfg.check()
    sel = Selection(tuples=[], overlaps={})
    window: list[tuple[CaptureFrame, tuple]] = []    # (frame, (small depth, K, T)) of the last frames
    scores: dict[tuple[str, str], float] = {}          # overlaps among the frames in the window
    cap = _Cap(cfg.max_tuples)
    lo, hi = cfg.band
    for n, frame in enumerate(frames):
        if progress is not None:
            progress.update(1)
        sel.up_sum += -frame.cam_to_world[:3, 1]       # image up = -y of the OpenCV camera
        if n % cfg.frame_step:
            sel.frames_not_sampled += 1
            continue
        small = _sample(frame, cfg, sel)
        if small is None:
            continue
        sel.frames_sampled += 1
        if window:
            ov = pair_overlaps(small, [w[1] for w in window], cfg.grid, cfg.cell_match)
            for (old, _), o in zip(window, ov):
                scores[(old.name, frame.name)] = float(o)
                sel.pairs_considered += 1
                sel.histogram[min(int(o * HIST_BINS), HIST_BINS - 1)] += 1
                sel.pairs_in_band += int(lo <= o <= hi)
            _offer_tuples([w[0] for w in window], frame, scores, cfg, sel, cap)
        window.append((frame, small))
        if len(window) > cfg.window:
            gone = window.pop(0)[0].name
            scores = {k: v for k, v in scores.items() if gone not in k}
    for _neg_key, names, tup, ovs in cap.sorted():
        sel.tuples.append(tup)
        sel.overlaps[names] = ovs
    return sel


def _sample(frame: CaptureFrame, cfg: SelectConfig, sel: Selection):
    depth = frame.depth()
    problem = median_depth_problem(depth)
    if problem:
        sel.depth_skipped[problem] += 1
        sel.depth_examples.setdefault(problem, frame.name)
        return None
    d, K, _ = subsample(depth, frame.K, cfg.overlap_width)
    return d, K, frame.cam_to_world


def _offer_tuples(olds: list[CaptureFrame], new: CaptureFrame, scores: dict, cfg: SelectConfig,
                  sel: Selection, cap: _Cap) -> None:
    """Every tuple ending at `new` whose pairs are all in the band goes to the capped heap."""
    lo, hi = cfg.band
    ok = lambda a, b: lo <= scores.get((a.name, b.name), -1.0) <= hi
    partners = [o for o in olds if ok(o, new)]
    for size in cfg.sizes:
        for rest in itertools.combinations(partners, size - 1):
            if all(ok(a, b) for a, b in itertools.combinations(rest, 2)):
                tup = (*rest, new)
                ovs = [scores[(a.name, b.name)] for a, b in itertools.combinations(tup, 2)]
                sel.tuples_in_band[size] += 1
                cap.offer(tuple_key((f.name for f in tup), cfg.seed), tup, ovs)
