"""ARKitScenes raw data (apple/ARKitScenes; ../shared/SCANS.md) -> `CaptureFrame`s::

    SRC/lowres_wide/<video>_<ts>.png               colour 256x192
    SRC/lowres_depth/<video>_<ts>.png              uint16 millimetres 256x192, 0 = invalid
    SRC/lowres_wide_intrinsics/<video>_<ts>.pincam one line: w h fx fy cx cy (colour pixels)
    SRC/lowres_wide.traj                           lines: ts ax ay az tx ty tz (world-to-camera:
                                                   axis-angle rotation, metres), OpenCV camera axes

The pose of a frame is inv([Rodrigues(a) | t]). Poses come at 10 fps against 60 fps frames, so only about
one frame in six has one: a frame is matched to the trajectory sample nearest its timestamp (the name's
<ts>), within 5 ms; the others are skipped ("no pose within 5 ms") and counted. Confidence maps beside the
depth are not used. World up: estimated from the cameras (`--up` to set it).
"""
from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .frames import CaptureError, CaptureFrame, FrameLog, depth_size, pose_problem, scale_K

DEPTH_UNIT = 1e-3
MATCH_TOL_S = 0.005
_TS = re.compile(r"_(\d+(?:\.\d+)?)$")


def rodrigues(axis_angle) -> np.ndarray:
    """Rotation matrix of an axis-angle vector (angle = its norm, radians)."""
    r = np.asarray(axis_angle, dtype=np.float64)
    theta = float(np.linalg.norm(r))
    if theta < 1e-12:
        return np.eye(3)
    k = r / theta
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * Kx + (1 - np.cos(theta)) * (Kx @ Kx)


def traj_to_cam_to_world(values) -> np.ndarray:
    """camera-to-world of one .traj line's 6 numbers (ax ay az tx ty tz, world-to-camera)."""
    w2c = np.eye(4)
    w2c[:3, :3] = rodrigues(values[:3])
    w2c[:3, 3] = values[3:6]
    return np.linalg.inv(w2c)


def read_traj(path: Path) -> tuple[list[float], list[np.ndarray]]:
    """(sorted timestamps, their 6-number rows) of a .traj file; CaptureError naming the line if malformed."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            vals = [float(x) for x in parts]
        except ValueError:
            vals = []
        if len(vals) != 7:
            raise CaptureError(f"{path} line {n}: expected 7 numbers 'ts ax ay az tx ty tz', got {line!r}")
        rows.append((vals[0], np.array(vals[1:])))
    rows.sort(key=lambda r: r[0])
    return [r[0] for r in rows], [r[1] for r in rows]


class ARKitScenesCapture:
    format = "arkitscenes"
    default_up = None

    def __init__(self, src):
        self.root = Path(src)
        for sub in ("lowres_wide", "lowres_wide_intrinsics"):
            if not (self.root / sub).is_dir():
                raise CaptureError(f"--from arkitscenes {self.root}: no {sub}/ folder")
        if not (self.root / "lowres_depth").is_dir() or not any((self.root / "lowres_depth").glob("*.png")):
            raise CaptureError(f"--from arkitscenes {self.root}: no lowres_depth/*.png: the capture has no "
                               f"metric depth, so it cannot supervise PaStA")
        trajs = sorted(self.root.glob("*.traj"))
        if len(trajs) != 1:
            raise CaptureError(f"--from arkitscenes {self.root}: expected one .traj file (lowres_wide.traj), "
                               f"found {[t.name for t in trajs]}")
        self.times, self.rows = read_traj(trajs[0])
        self.color_files = sorted(self.root.glob("lowres_wide/*.png"), key=lambda p: self._ts(p) or 0.0)
        self.log = FrameLog()

    @property
    def num_frames(self) -> int:
        return len(self.color_files)

    @staticmethod
    def _ts(p: Path) -> float | None:
        m = _TS.search(p.stem)
        return float(m.group(1)) if m else None

    def _pose_at(self, ts: float) -> np.ndarray | None:
        i = bisect.bisect_left(self.times, ts)
        best = min((j for j in (i - 1, i) if 0 <= j < len(self.times)), key=lambda j: abs(self.times[j] - ts),
                   default=None)
        if best is None or abs(self.times[best] - ts) > MATCH_TOL_S:
            return None
        return traj_to_cam_to_world(self.rows[best])

    def frames(self) -> Iterator[CaptureFrame]:
        for k, cpath in enumerate(self.color_files):
            self.log.seen += 1
            frame = self._frame(k, cpath)
            if frame is not None:
                self.log.yielded += 1
                yield frame

    def _frame(self, k: int, cpath: Path) -> CaptureFrame | None:
        at = cpath.name
        ts = self._ts(cpath)
        if ts is None:
            self.log.skip("no timestamp in the name", at)
            return None
        T = self._pose_at(ts)
        if T is None:
            self.log.skip("no pose within 5 ms", at)
            return None
        problem = pose_problem(T)
        if problem:
            self.log.skip(problem, at)
            return None
        dpath = self.root / "lowres_depth" / cpath.name
        ipath = self.root / "lowres_wide_intrinsics" / (cpath.stem + ".pincam")
        if not dpath.is_file():
            self.log.skip("missing depth file", at)
            return None
        if not ipath.is_file():
            self.log.skip("missing .pincam", at)
            return None
        try:
            w, h, fx, fy, cx, cy = (float(x) for x in ipath.read_text().split())
        except ValueError:
            raise CaptureError(f"{ipath}: expected one line 'w h fx fy cx cy'") from None
        hw = depth_size(dpath)
        K = scale_K(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), (int(h), int(w)), hw)
        return CaptureFrame(index=k, name=cpath.stem, color_path=cpath, depth_path=dpath, depth_scale=DEPTH_UNIT,
                            depth_hw=hw, K=K, cam_to_world=T)
