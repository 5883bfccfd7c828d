"""What every capture reader yields: one `CaptureFrame` per frame in HATCH's convention (OpenCV
camera-to-world pose, K in pixels of the depth map with pixel (r, c) centred at (u, v) = (c, r), depth in
metres), and the `FrameLog` that counts the frames a reader skipped, by reason.

Frames are yielded lazily: a reader holds the per-frame metadata (paths, pose, K), never the pixels;
`CaptureFrame.depth()` / `.color()` decode one file when asked.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import geometry as geo
from ..common import DataError

# Median valid depth a frame of an indoor capture can have (metres); outside it the unit is wrong.
MIN_MEDIAN_DEPTH = 0.1
MAX_MEDIAN_DEPTH = 20.0


class CaptureError(DataError):
    """A capture cannot be built from (the message names the file, the key or the frame, and why)."""


@dataclass
class FrameLog:
    """Frames a reader saw, yielded and skipped (by reason, with a few examples): never a silent drop."""
    seen: int = 0
    yielded: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)      # capture-wide facts the summary repeats

    def skip(self, reason: str, frame: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, frame)

    def as_dict(self) -> dict:
        return {"seen": self.seen, "yielded": self.yielded, "skipped": dict(self.skipped),
                "skipped_examples": dict(self.examples), "notes": list(self.notes)}


@dataclass
class CaptureFrame:
    """One posed RGB-D frame. `K` is for the depth map (`depth_hw`); colour may be larger (same view)."""
    index: int                      # position in the capture's frame order
    name: str                       # file-safe frame name (unique in the capture)
    color_path: Path
    depth_path: Path
    depth_scale: float              # metres per stored depth unit
    depth_hw: tuple[int, int]
    K: np.ndarray                   # [3, 3]
    cam_to_world: np.ndarray        # [4, 4], OpenCV camera axes

    def depth(self) -> np.ndarray:
        """float32 [H, W] metres; 0 where the stored value is 0 / non-finite (invalid)."""
        d = read_depth_file(self.depth_path, self.depth_scale)
        if d.shape != tuple(self.depth_hw):
            raise CaptureError(f"frame {self.name}: depth {self.depth_path} is {d.shape[1]}x{d.shape[0]}, "
                               f"but its header said {self.depth_hw[1]}x{self.depth_hw[0]}")
        return d

    def color(self) -> np.ndarray:
        from ..common import read_image

        return read_image(self.color_path)


def read_depth_file(path: Path, scale: float) -> np.ndarray:
    """A depth PNG (8/16-bit, one channel) or .npy -> float32 metres (raw * scale); invalid -> 0."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        raw = np.load(path)
    else:
        from PIL import Image

        with Image.open(path) as im:
            raw = np.asarray(im)
    if raw.ndim != 2:
        raise CaptureError(f"{path}: expected a single-channel depth map, got shape {raw.shape}")
    d = raw.astype(np.float32) * np.float32(scale)
    d[~np.isfinite(d) | (d < 0)] = 0
    return d


def depth_size(path: Path) -> tuple[int, int]:
    """(H, W) of a depth file from its header only (PNG) or its array header (.npy)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        shape = np.load(path, mmap_mode="r").shape
        return int(shape[0]), int(shape[1])
    from PIL import Image

    with Image.open(path) as im:
        return im.size[1], im.size[0]


def scale_K(K: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """K of an image of size `from_hw` for the same view resampled to `to_hw`, both in the pixel-centre
    convention used here (centre of pixel c at u = c): scaling acts on corner coordinates u + 0.5."""
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    K2 = np.array(K, dtype=np.float64)
    K2[0, 0] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K2[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K2[1, 2] + 0.5) * sy - 0.5
    return K2


def pose_problem(T) -> str | None:
    """Why a camera-to-world matrix cannot be used ("non-finite pose", "bad pose"), or None."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        return "bad pose"
    if not np.all(np.isfinite(T)):
        return "non-finite pose"
    try:
        geo.validate_pose(T, atol=1e-3)
    except ValueError:
        return "bad pose"
    return None


def median_depth_problem(depth: np.ndarray) -> str | None:
    """"empty depth" / "implausible depth" (median outside the indoor range: a wrong unit), or None."""
    valid = depth[depth > 0]
    if valid.size == 0:
        return "empty depth"
    med = float(np.median(valid))
    if not (MIN_MEDIAN_DEPTH <= med <= MAX_MEDIAN_DEPTH) or not math.isfinite(med):
        return "implausible depth"
    return None
