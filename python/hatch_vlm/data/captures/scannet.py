"""A ScanNet SensReader export (ScanNet's SensReader/python/SensorData.py; ../shared/SCANS.md) ->
`CaptureFrame`s::

    SRC/color/<i>.jpg        colour (1296x968)
    SRC/depth/<i>.png        uint16 millimetres (640x480), 0 = invalid
    SRC/pose/<i>.txt         4x4 camera-to-world, OpenCV axes (used as is)
    SRC/intrinsic/intrinsic_depth.txt, intrinsic_color.txt    4x4 each (the 3x3 block is K)

Colour and depth have different K: the depth map's is `intrinsic_depth.txt`; without it,
`intrinsic_color.txt` is scaled from the colour size to the depth size (said in the summary). Some poses
are all -inf (ScanNet issue #9): those frames are skipped and counted. World up is +z (ScanNet's scans are
gravity-aligned, z up).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..common import read_matrix
from .frames import CaptureError, CaptureFrame, FrameLog, depth_size, pose_problem, scale_K

DEPTH_UNIT = 1e-3      # SensReader writes millimetres


def _numeric_key(p: Path):
    return (0, int(p.stem)) if p.stem.isdigit() else (1, p.stem)


class ScanNetCapture:
    format = "scannet"
    default_up = (0.0, 0.0, 1.0)

    def __init__(self, src):
        self.root = Path(src)
        for sub in ("color", "depth", "pose", "intrinsic"):
            if not (self.root / sub).is_dir():
                raise CaptureError(f"--from scannet {self.root}: no {sub}/ folder (expected a SensReader export "
                                   f"with color/ depth/ pose/ intrinsic/)")
        self.depth_files = sorted(self.root.glob("depth/*.png"), key=_numeric_key)
        if not self.depth_files:
            raise CaptureError(f"--from scannet {self.root}: depth/ holds no .png: the capture has no metric "
                               f"depth, so it cannot supervise PaStA")
        self.log = FrameLog()
        self._K: np.ndarray | None = None
        self._K_hw: tuple[int, int] | None = None

    @property
    def num_frames(self) -> int:
        return len(self.depth_files)

    def _intrinsic(self, depth_hw: tuple[int, int], color: Path) -> np.ndarray:
        """K of the depth map (read once; every frame of a ScanNet scan shares it)."""
        if self._K is not None and self._K_hw == depth_hw:
            return self._K
        idir = self.root / "intrinsic"
        if (idir / "intrinsic_depth.txt").is_file():
            K = read_matrix(idir / "intrinsic_depth.txt", ((3, 3), (4, 4)))[:3, :3]
        elif (idir / "intrinsic_color.txt").is_file():
            from PIL import Image

            with Image.open(color) as im:
                color_hw = (im.size[1], im.size[0])
            K = scale_K(read_matrix(idir / "intrinsic_color.txt", ((3, 3), (4, 4)))[:3, :3], color_hw, depth_hw)
            self.log.notes.append("no intrinsic_depth.txt: K from intrinsic_color.txt scaled to the depth size")
        else:
            raise CaptureError(f"{idir}: neither intrinsic_depth.txt nor intrinsic_color.txt")
        self._K, self._K_hw = K, depth_hw
        return K

    def frames(self) -> Iterator[CaptureFrame]:
        for k, dpath in enumerate(self.depth_files):
            self.log.seen += 1
            frame = self._frame(k, dpath)
            if frame is not None:
                self.log.yielded += 1
                yield frame

    def _frame(self, k: int, dpath: Path) -> CaptureFrame | None:
        i = dpath.stem
        ppath, cpath = self.root / "pose" / f"{i}.txt", self.root / "color" / f"{i}.jpg"
        at = f"frame {i}"
        if not ppath.is_file():
            self.log.skip("no pose", at)
            return None
        try:
            T = np.loadtxt(ppath, dtype=np.float64, ndmin=2)
        except ValueError:
            self.log.skip("bad pose", f"{at} ({ppath})")
            return None
        problem = pose_problem(T)
        if problem:
            self.log.skip(problem, f"{at} ({ppath})")
            return None
        if not cpath.is_file():
            self.log.skip("missing colour file", at)
            return None
        hw = depth_size(dpath)
        return CaptureFrame(index=k, name=i, color_path=cpath, depth_path=dpath, depth_scale=DEPTH_UNIT,
                            depth_hw=hw, K=self._intrinsic(hw, cpath), cam_to_world=T)
