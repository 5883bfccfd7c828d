"""Nerfstudio `transforms.json` (nerfstudio-project/nerfstudio: docs/quickstart/data_conventions.md,
nerfstudio_dataparser.py; ../shared/SCANS.md) -> `CaptureFrame`s.

Conventions, and what we do with each:

* `frames[].transform_matrix` is camera-to-world with OpenGL camera axes (x right, y up, z back):
  OpenCV c2w = T @ diag(1, -1, -1, 1). `applied_transform` is a world rotation: relative poses do not
  depend on it, so it is ignored. Nerfstudio's own parser is not used: it re-centres and rescales the poses
  to a unit box, which loses metres.
* Intrinsics `fl_x fl_y cx cy w h` at the top level, or per frame (a frame's own keys win). Nerfstudio puts
  pixel centres at +0.5, so its cx is our (pixel-centre) cx + 0.5: we subtract 0.5. K is then scaled from
  the colour size (w, h) to the depth map's size (Polycam's depth is 4x smaller than its colour).
* Only pinhole images: `camera_model` OPENCV_FISHEYE / EQUIRECTANGULAR is refused; non-zero distortion
  (k1..k4, p1, p2) is refused unless `ignore_distortion` (then it is noted in the summary).
* Depth `frames[].depth_file_path` (16-bit PNG or .npy) times `depth_unit_scale_factor` (default 1e-3,
  millimetres). No frame with `depth_file_path` -> refused: without metric depth there is no PaStA target.
* Paths are relative to the JSON's folder.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .frames import CaptureError, CaptureFrame, FrameLog, depth_size, pose_problem, scale_K

GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])     # flips camera y and z (OpenGL -> OpenCV axes)
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
UNSUPPORTED_MODELS = ("OPENCV_FISHEYE", "EQUIRECTANGULAR")
DEFAULT_DEPTH_UNIT = 1e-3


def opengl_to_opencv(T) -> np.ndarray:
    """OpenCV camera-to-world of an OpenGL camera-to-world matrix (same camera centre, y and z flipped)."""
    return np.asarray(T, dtype=np.float64) @ GL_TO_CV


def _frame_name(path: str, k: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem)
    return f"{k:06d}_{stem}"


class NerfstudioCapture:
    """Reads `SRC/transforms.json` (or SRC itself when it is the JSON file)."""
    format = "nerfstudio"
    default_up = None            # worlds differ by converter (ARKit y-up, Polycam z-up): estimated

    def __init__(self, src, ignore_distortion: bool = False):
        src = Path(src)
        self.json_path = src / "transforms.json" if src.is_dir() else src
        if not self.json_path.is_file():
            raise CaptureError(f"--from nerfstudio {src}: no transforms.json there")
        self.root = self.json_path.parent
        try:
            self.meta = json.loads(self.json_path.read_text())
        except json.JSONDecodeError as e:
            raise CaptureError(f"{self.json_path}: not valid JSON ({e})") from e
        self.ignore_distortion = ignore_distortion
        self.log = FrameLog()
        self.frames_meta = self._frames_list()
        self.depth_unit = self._depth_unit()
        self._check_camera_model(self.meta, "top level")
        self._check_has_depth()

    @property
    def num_frames(self) -> int:
        return len(self.frames_meta)

    def _frames_list(self) -> list:
        frames = self.meta.get("frames")
        if not isinstance(frames, list) or not frames:
            raise CaptureError(f"{self.json_path}: key 'frames': expected a non-empty list")
        return frames

    def _depth_unit(self) -> float:
        unit = self.meta.get("depth_unit_scale_factor", DEFAULT_DEPTH_UNIT)
        if not isinstance(unit, (int, float)) or not unit > 0:
            raise CaptureError(f"{self.json_path}: key 'depth_unit_scale_factor': expected metres per stored "
                               f"unit (> 0), got {unit!r}")
        if "depth_unit_scale_factor" not in self.meta:
            self.log.notes.append("depth_unit_scale_factor absent: nerfstudio's default 1e-3 (millimetres)")
        return float(unit)

    def _check_has_depth(self) -> None:
        if not any(isinstance(f, dict) and f.get("depth_file_path") for f in self.frames_meta):
            raise CaptureError(
                f"{self.json_path}: no frame has 'depth_file_path': the capture has no metric depth, so it "
                f"cannot supervise PaStA (reprojection needs depth in metres). Export depth with the capture "
                f"(Record3D / Polycam LiDAR; COLMAP-only poses are not metric either)")

    def _check_camera_model(self, d: dict, where: str) -> None:
        model = d.get("camera_model")
        if model in UNSUPPORTED_MODELS:
            raise CaptureError(f"{self.json_path}: key 'camera_model' ({where}) is {model}: only pinhole "
                               f"(PINHOLE / OPENCV) images are supported")
        dist = {k: d[k] for k in DISTORTION_KEYS if isinstance(d.get(k), (int, float)) and d[k] != 0}
        if dist and not self.ignore_distortion:
            raise CaptureError(f"{self.json_path}: distortion {dist} ({where}): depth reprojection assumes "
                               f"undistorted pinhole images; undistort the capture, or pass "
                               f"--ignore-distortion to use it as pinhole anyway")
        if dist and len(self.log.notes) < 20:
            self.log.notes.append(f"distortion ignored ({where}): {dist}")

    def _intrinsics(self, f: dict, at: str) -> tuple[np.ndarray, tuple[int, int]]:
        vals = {}
        for k in INTRINSIC_KEYS:
            v = f.get(k, self.meta.get(k))
            if not isinstance(v, (int, float)) or not np.isfinite(v):
                raise CaptureError(f"{self.json_path}: {at}: intrinsic key {k!r} missing or not a number "
                                   f"(neither the frame nor the top level has it)")
            vals[k] = float(v)
        K = np.array([[vals["fl_x"], 0, vals["cx"] - 0.5], [0, vals["fl_y"], vals["cy"] - 0.5], [0, 0, 1.0]])
        return K, (int(vals["h"]), int(vals["w"]))

    def frames(self) -> Iterator[CaptureFrame]:
        """Usable frames in file order; the others are counted in `self.log` by reason."""
        for k, f in enumerate(self.frames_meta):
            self.log.seen += 1
            at = f"frames[{k}]"
            if not isinstance(f, dict):
                self.log.skip("not an object", at)
                continue
            frame = self._frame(k, f, at)
            if frame is not None:
                self.log.yielded += 1
                yield frame

    def _frame(self, k: int, f: dict, at: str) -> CaptureFrame | None:
        at = f"{at} ({f.get('file_path')})"
        if f.get("transform_matrix") is None:
            self.log.skip("no pose", at)
            return None
        T = np.asarray(f["transform_matrix"], dtype=np.float64)
        if T.shape == (3, 4):
            T = np.vstack([T, [0, 0, 0, 1]])
        problem = pose_problem(T)
        if problem:
            self.log.skip(problem, at)
            return None
        if not f.get("depth_file_path"):
            self.log.skip("no depth_file_path", at)
            return None
        if not f.get("file_path"):
            self.log.skip("no file_path", at)
            return None
        color, depth = self.root / f["file_path"], self.root / f["depth_file_path"]
        for p, what in ((color, "missing colour file"), (depth, "missing depth file")):
            if not p.is_file():
                self.log.skip(what, at)
                return None
        if f is not self.meta:
            self._check_camera_model(f, at)
        K_color, color_hw = self._intrinsics(f, at)
        hw = depth_size(depth)
        return CaptureFrame(index=k, name=_frame_name(f["file_path"], k), color_path=color, depth_path=depth,
                            depth_scale=self.depth_unit, depth_hw=hw, K=scale_K(K_color, color_hw, hw),
                            cam_to_world=opengl_to_opencv(T))
