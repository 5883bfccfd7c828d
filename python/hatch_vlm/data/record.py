"""The sample record used everywhere in hatch: one multi-view sample with its geometry (when known)
and its question. Geometry follows docs/design.md's conventions: depth is z-depth in metres at the depth
map's own resolution, K in pixels of that depth map (OpenCV), poses camera-to-world (OpenCV axes)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

AnswerType = Literal["mc", "numeric", "open"]


@dataclass
class Sample:
    images: list[np.ndarray]                 # V images, uint8 [H, W, 3]
    depth: np.ndarray | None = None          # float32 [V, Hd, Wd], metres; <= 0 / NaN invalid
    K: np.ndarray | None = None              # float64 [V, 3, 3], pixels of the depth map
    cam_to_world: np.ndarray | None = None   # float64 [V, 4, 4]
    question: str = ""
    options: list[str] = field(default_factory=list)   # ["A. Left", "B. Right", ...] for multiple choice
    answer: str = ""                         # gold: a letter for "mc", a number (as text) for "numeric"
    answer_type: AnswerType = "open"
    task: str = ""                           # question family, e.g. "camera_motion", "object_distance"
    category: str = ""                       # benchmark category, e.g. "Low", "around", "Positional"
    source: str = "synthetic"
    id: str = ""
    world_up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_views(self) -> int:
        return len(self.images)

    @property
    def has_geometry(self) -> bool:
        return self.depth is not None and self.K is not None and self.cam_to_world is not None
