"""Procedural room scenes: the plain description the renderer draws and the question generators read.

A room is the axis-aligned box [0, width] x [0, depth] x [0, height] (metres, world up +z), floor at
z = 0. Its six surfaces (floor, ceiling, four walls) each carry a procedural texture. Objects stand on
the floor; each has a kind (its shape), a colour and so a unique name ("red box", "blue ball").
Everything here is plain data (JSON-serialisable through `to_dict` / `from_dict`). (Why this is not
`hatch_ext.scenes`, the ops' bare test rooms: see `hatch_vlm.data.synthetic`.)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

# Object kinds: the noun used in questions for each shape.
KIND_NOUN = {"box": "box", "ball": "ball", "cylinder": "cylinder", "cone": "cone"}
KINDS = tuple(KIND_NOUN)

# Saturated object colours (distinct from the muted room textures), RGB in [0, 1].
OBJECT_COLOURS = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.10, 0.70, 0.15),
    "blue": (0.12, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.15, 0.75),
    "orange": (0.98, 0.50, 0.05),
    "cyan": (0.05, 0.80, 0.85),
    "pink": (0.98, 0.45, 0.70),
    "white": (0.95, 0.95, 0.95),
    "black": (0.08, 0.08, 0.08),
}

# Muted colours for the room's textures, RGB in [0, 1].
ROOM_COLOURS = [
    (0.80, 0.72, 0.60), (0.55, 0.45, 0.35), (0.70, 0.75, 0.80), (0.40, 0.45, 0.55),
    (0.75, 0.80, 0.65), (0.45, 0.55, 0.40), (0.85, 0.75, 0.75), (0.60, 0.40, 0.45),
    (0.88, 0.86, 0.80), (0.35, 0.33, 0.30), (0.65, 0.60, 0.75), (0.50, 0.60, 0.62),
]

PATTERNS = ("checkers", "stripes_u", "stripes_v", "noise")

# Surface ids in the renderer's id map (objects are 0, 1, ...).
SURFACES = ("floor", "ceiling", "wall_x0", "wall_x1", "wall_y0", "wall_y1")


@dataclass
class Texture:
    pattern: str                      # one of PATTERNS
    colour_a: tuple[float, float, float]
    colour_b: tuple[float, float, float]
    scale: float                      # metres per pattern period half (tile size, stripe width)
    offset: tuple[float, float]       # offset into the large-scale brightness noise (breaks repetition)


@dataclass
class SceneObject:
    kind: str                         # one of KINDS
    colour: str                       # key of OBJECT_COLOURS
    center: tuple[float, float, float]  # centre of the bounding box (metres)
    half: tuple[float, float, float]  # half extents (box); ball: (r, r, r); cylinder/cone: (r, r, h/2)
    yaw: float = 0.0                  # rotation about +z (radians), boxes only

    @property
    def name(self) -> str:
        return f"{self.colour} {KIND_NOUN[self.kind]}"

    @property
    def rgb(self) -> np.ndarray:
        return np.asarray(OBJECT_COLOURS[self.colour])

    @property
    def footprint(self) -> float:
        """Radius of a vertical cylinder that holds the object (for placement)."""
        return float(np.hypot(self.half[0], self.half[1]))

    @property
    def bound_radius(self) -> float:
        """Radius of a sphere around `center` that holds the object (ray culling)."""
        return float(np.linalg.norm(self.half))


@dataclass
class Scene:
    width: float
    depth: float
    height: float
    textures: list[Texture]           # one per SURFACES entry
    objects: list[SceneObject] = field(default_factory=list)

    def object_named(self, name: str) -> SceneObject:
        for o in self.objects:
            if o.name == name:
                return o
        raise KeyError(f"no object named {name!r} in the scene ({[o.name for o in self.objects]})")

    def to_dict(self) -> dict:
        """Plain JSON types (lists, not tuples), so it survives a JSON round trip unchanged."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        tex = [Texture(t["pattern"], tuple(t["colour_a"]), tuple(t["colour_b"]), float(t["scale"]),
                       tuple(t["offset"])) for t in d["textures"]]
        objs = [SceneObject(o["kind"], o["colour"], tuple(o["center"]), tuple(o["half"]),
                            float(o.get("yaw", 0.0))) for o in d["objects"]]
        return cls(float(d["width"]), float(d["depth"]), float(d["height"]), tex, objs)
