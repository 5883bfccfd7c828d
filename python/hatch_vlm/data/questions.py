"""Question generators with gold answers computed from the scene geometry.

Each family is a function ``f(ctx, rng) -> Question | None`` (None: the scene does not allow an
unambiguous question of that kind; the generator then draws another scene). The families, the camera
layout each needs (see ``hatch_vlm.data.synthetic``) and their benchmark category:

    task                  mode      category  answer   what it asks
    camera_motion         near      Middle    mc/num   turn direction / angle, move direction / distance
    object_position       near      High      mc       object's place (front/back, left/right) as seen
                                                       from another view's viewpoint
    object_depth          near      Low       numeric  z-depth of an object's centre in a view (m)
    object_distance       near      Low       numeric  centre-to-centre distance of two objects (m)
    cross_view_matching   near      Middle    mc       where an object of view i appears in view j
    mindcube_around       around    around    mc       from which side of an object another view was taken
    mindcube_rotation     rotation  rotation  mc       which object is behind / left / right when turning
    mindcube_among        among     among     mc       which object is in a quadrant around a central
                                                       object, seen from a (possibly unseen) viewpoint

Images are named "Image 1", "Image 2", ... (1-based) in the text. Multiple-choice options are
"A. …", "B. …"; the answer is the letter. Numeric answers are text ("1.25" metres, "35" degrees).
Directions are those of a viewer with no roll and world up +z (see ``hatch_vlm.geometry``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable

import numpy as np

from .. import geometry as geo
from .scene import Scene

LETTERS = "ABCDEFGH"


@dataclass
class Context:
    """What a question generator sees: the scene, the cameras and what each view shows."""
    scene: Scene
    K: np.ndarray                      # [V, 3, 3]
    cam_to_world: np.ndarray           # [V, 4, 4]
    size: tuple[int, int]              # (H, W) of the views
    pixels: np.ndarray                 # [V, n_obj] int: pixels of each object in each view
    centroids: np.ndarray              # [V, n_obj, 2] (row, col) of those pixels; NaN where none
    anchor: int | None = None          # central object of the around / among layouts
    up: tuple[float, float, float] = geo.UP_Z

    @property
    def num_views(self) -> int:
        return len(self.cam_to_world)

    @property
    def min_pixels(self) -> int:
        """Pixels an object needs in a view to count as visible there."""
        H, W = self.size
        return max(20, int(0.002 * H * W))

    def visible(self, view: int) -> np.ndarray:
        return np.nonzero(self.pixels[view] >= self.min_pixels)[0]

    def visible_anywhere(self) -> np.ndarray:
        return np.nonzero((self.pixels >= self.min_pixels).any(0))[0]


@dataclass
class Question:
    task: str
    category: str
    question: str
    options: list[str]
    answer: str
    answer_type: str                   # "mc" | "numeric"
    meta: dict = field(default_factory=dict)


def mc(task: str, category: str, text: str, choices: list[str], gold: int, **meta) -> Question:
    """A multiple-choice question from plain choice texts and the gold index."""
    options = [f"{LETTERS[k]}. {c}" for k, c in enumerate(choices)]
    return Question(task, category, text, options, LETTERS[gold], "mc", meta)


def shuffled_mc(rng, task, category, text, gold_text: str, distractors: list[str], **meta) -> Question:
    choices = [gold_text] + list(distractors)
    order = rng.permutation(len(choices))
    choices = [choices[k] for k in order]
    return mc(task, category, text, choices, int(np.nonzero(order == 0)[0][0]), **meta)


def numeric(task: str, category: str, text: str, value: float, decimals: int, **meta) -> Question:
    ans = f"{value:.{decimals}f}" if decimals > 0 else str(int(round(value)))
    return Question(task, category, text, [], ans, "numeric", meta)


def viewer_frame(T, up=geo.UP_Z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position, forward heading, left heading) of a camera as a roll-free viewer."""
    T = np.asarray(T, dtype=np.float64)
    yaw, _ = geo.yaw_pitch(T, up)
    f = geo.heading(yaw, up)
    left = np.cross(geo.normalize_up(up), f)
    return T[:3, 3], f, left


def in_viewer_frame(T, point, up=geo.UP_Z) -> tuple[float, float]:
    """(forward, left) coordinates (metres) of a world point relative to a viewer at pose T."""
    p, f, left = viewer_frame(T, up)
    v = np.asarray(point, dtype=np.float64) - p
    return float(v @ f), float(v @ left)


def _img(k: int) -> str:
    return f"Image {k + 1}"


# --------------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------------
MIN_TURN_DEG = 10.0
MIN_MOVE_M = 0.2
MARGIN_M = 0.3          # a front/back or left/right call needs the object this far off the dividing line


def camera_motion(ctx: Context, rng) -> Question | None:
    i, j = 0, int(rng.integers(1, ctx.num_views))
    m = geo.relative_motion(ctx.cam_to_world[i], ctx.cam_to_world[j], ctx.up)
    yaw = m.yaw_deg
    horiz = np.hypot(m.forward, m.left)
    pre = f"{_img(i)} and {_img(j)} were taken by the same camera. "
    variants = []
    if abs(yaw) >= MIN_TURN_DEG:
        variants += ["turn_direction", "turn_angle"]
    big, small = max(abs(m.forward), abs(m.left)), min(abs(m.forward), abs(m.left))
    if big >= MIN_MOVE_M + 0.1 and big >= 2 * small:
        variants.append("move_direction")
    if horiz >= MIN_MOVE_M:
        variants.append("move_distance")
    if not variants:
        return None
    v = variants[int(rng.integers(len(variants)))]
    meta = dict(variant=v, pair=[i, j])
    if v == "turn_direction":
        return mc("camera_motion", "Middle", pre + "Between them, which way did the camera turn?",
                  ["Left", "Right"], 0 if yaw > 0 else 1, **meta)
    if v == "turn_angle":
        return numeric("camera_motion", "Middle",
                       pre + f"By how many degrees did the camera turn horizontally from {_img(i)} to "
                             f"{_img(j)}?", abs(yaw), 0, **meta)
    if v == "move_direction":
        if abs(m.forward) >= abs(m.left):
            gold = 0 if m.forward > 0 else 1
        else:
            gold = 2 if m.left > 0 else 3
        return mc("camera_motion", "Middle",
                  pre + f"Relative to the direction it faced in {_img(i)}, which way did the camera "
                        f"mostly move to take {_img(j)}?",
                  ["Forward", "Backward", "Left", "Right"], gold, **meta)
    return numeric("camera_motion", "Middle",
                   pre + f"How far did the camera move horizontally between {_img(i)} and {_img(j)}, "
                         f"in metres?", horiz, 2, **meta)


def object_position(ctx: Context, rng) -> Question | None:
    j = int(rng.integers(ctx.num_views))
    cands = []
    for k in ctx.visible_anywhere():
        f, l = in_viewer_frame(ctx.cam_to_world[j], ctx.scene.objects[k].center, ctx.up)
        if abs(f) >= MARGIN_M and abs(l) >= MARGIN_M:
            cands.append((k, f, l))
    if not cands:
        return None
    k, f, l = cands[int(rng.integers(len(cands)))]
    gold = (0 if f > 0 else 2) + (0 if l > 0 else 1)
    name = ctx.scene.objects[k].name
    return mc("object_position", "High",
              f"Imagine standing where {_img(j)} was taken, facing the same way as that camera. "
              f"Where is the {name} relative to you?",
              ["Front, Left", "Front, Right", "Back, Left", "Back, Right"], gold, object=name, view=j)


def object_depth(ctx: Context, rng) -> Question | None:
    cands = []
    H, W = ctx.size
    for v in range(ctx.num_views):
        Tinv = np.linalg.inv(ctx.cam_to_world[v])
        for k in ctx.visible(v):
            X = geo.transform_points(Tinv, ctx.scene.objects[k].center)
            uv, z = geo.project_points(ctx.K[v], X)
            if z > 0.2 and 0 <= uv[0] <= W - 1 and 0 <= uv[1] <= H - 1:
                cands.append((v, k, float(z)))
    if not cands:
        return None
    v, k, z = cands[int(rng.integers(len(cands)))]
    name = ctx.scene.objects[k].name
    return numeric("object_depth", "Low",
                   f"In {_img(v)}, what is the depth of the {name}, i.e. the distance from the camera to "
                   f"its centre along the camera's viewing direction, in metres?", z, 2,
                   object=name, view=v)


def object_distance(ctx: Context, rng) -> Question | None:
    vis = ctx.visible_anywhere()
    if len(vis) < 2:
        return None
    # Prefer pairs seen in different views: the question is then a cross-view one.
    seen = ctx.pixels >= ctx.min_pixels
    pairs = [(a, b) for ai, a in enumerate(vis) for b in vis[ai + 1:]]
    cross = [(a, b) for a, b in pairs if not (seen[:, a] & seen[:, b]).any()]
    pool = cross if cross and rng.random() < 0.5 else pairs
    a, b = pool[int(rng.integers(len(pool)))]
    oa, ob = ctx.scene.objects[a], ctx.scene.objects[b]
    d = float(np.linalg.norm(np.subtract(oa.center, ob.center)))
    return numeric("object_distance", "Low",
                   f"What is the distance between the centre of the {oa.name} and the centre of the "
                   f"{ob.name}, in metres?", d, 2, objects=[oa.name, ob.name])


QUADRANTS = ["Top-left", "Top-right", "Bottom-left", "Bottom-right", "Not visible"]


def cross_view_matching(ctx: Context, rng) -> Question | None:
    i, j = 0, int(rng.integers(1, ctx.num_views))
    H, W = ctx.size
    both, absent = [], []
    for k in ctx.visible(i):
        n = ctx.pixels[j, k]
        if n >= ctx.min_pixels:
            r, c = ctx.centroids[j, k]
            if abs(r - (H - 1) / 2) >= 0.1 * H and abs(c - (W - 1) / 2) >= 0.1 * W:
                both.append((k, (0 if r < (H - 1) / 2 else 2) + (0 if c < (W - 1) / 2 else 1)))
        elif n == 0:
            absent.append((k, 4))
    pool = both if both and (not absent or rng.random() < 0.8) else absent
    if not pool:
        return None
    k, gold = pool[int(rng.integers(len(pool)))]
    name = ctx.scene.objects[k].name
    return mc("cross_view_matching", "Middle",
              f"The {name} is visible in {_img(i)}. In which part of {_img(j)} does it appear?",
              QUADRANTS, gold, object=name, pair=[i, j])


def _unique_nearest(angles_deg: np.ndarray, target: float, tol: float = 35.0, margin: float = 25.0):
    """Index of the angle nearest `target` if within `tol` and `margin` ahead of the runner-up."""
    diff = np.abs(geo.wrap_radians(np.deg2rad(angles_deg - target)))
    diff = np.rad2deg(diff)
    order = np.argsort(diff)
    if diff[order[0]] > tol or (len(order) > 1 and diff[order[1]] < diff[order[0]] + margin):
        return None
    return int(order[0])


def mindcube_rotation(ctx: Context, rng) -> Question | None:
    vis = ctx.visible_anywhere()
    if len(vis) < 2:
        return None
    T0 = ctx.cam_to_world[0]
    ang = np.array([np.rad2deg(np.arctan2(*reversed(in_viewer_frame(T0, ctx.scene.objects[k].center,
                                                                          ctx.up)))) for k in vis])
    asks = [("behind you", 180.0), ("on your left", 90.0), ("on your right", -90.0)]
    rng.shuffle(asks)
    for phrase, target in asks:
        g = _unique_nearest(ang, target)
        if g is None:
            continue
        names = [ctx.scene.objects[k].name for k in vis]
        gold = names[g]
        others = [n for n in names if n != gold]
        others = [others[k] for k in rng.permutation(len(others))[:3]]
        return shuffled_mc(rng, "mindcube_rotation", "rotation",
                           f"These images were taken from one spot while the viewer turned in place. "
                           f"Standing there and facing as in {_img(0)}, which object is {phrase}?",
                           gold, others, object=gold, direction=phrase)
    return None


def mindcube_around(ctx: Context, rng) -> Question | None:
    if ctx.anchor is None or ctx.num_views < 2:
        return None
    anchor = ctx.scene.objects[ctx.anchor]
    T0 = ctx.cam_to_world[0]
    R = np.linalg.norm((T0[:3, 3] - np.asarray(anchor.center))[:2])
    js = list(rng.permutation(np.arange(1, ctx.num_views)))
    for j in js:
        # Camera j's position relative to the anchor, in viewer 0's horizontal frame.
        f0, l0 = in_viewer_frame(T0, anchor.center, ctx.up)
        fj, lj = in_viewer_frame(T0, ctx.cam_to_world[j][:3, 3], ctx.up)
        f, l = fj - f0, lj - l0
        if f > 0.5 * R and abs(l) < 0.5 * R:
            gold = 2
        elif abs(l) >= 0.7 * R and abs(f) < 0.5 * R:
            gold = 0 if l > 0 else 1
        else:
            continue
        return mc("mindcube_around", "around",
                  f"{_img(0)} shows the {anchor.name} from the front; the other images were taken while "
                  f"walking around it. As seen from {_img(0)}'s viewpoint, from where was {_img(int(j))} "
                  f"taken?",
                  [f"From the left side of the {anchor.name}", f"From the right side of the {anchor.name}",
                   f"From behind the {anchor.name} (the opposite side)"], gold, view=int(j))
    return None


def mindcube_among(ctx: Context, rng) -> Question | None:
    if ctx.anchor is None:
        return None
    anchor = ctx.scene.objects[ctx.anchor]
    ring = [k for k in range(len(ctx.scene.objects)) if k != ctx.anchor]
    if len(ring) < 2:
        return None
    # The viewpoint: a shown view, or the unseen one opposite Image 1 (mental rotation).
    if rng.random() < 0.5:
        v = int(rng.integers(ctx.num_views))
        T = ctx.cam_to_world[v]
        where = f"Standing where {_img(v)} was taken and facing the {anchor.name}"
    else:
        p0 = ctx.cam_to_world[0][:3, 3]
        c = np.asarray(anchor.center)
        opposite = np.array([2 * c[0] - p0[0], 2 * c[1] - p0[1], p0[2]])
        T = geo.look_at(opposite, c, ctx.up)
        v = -1
        where = (f"Imagine standing on the opposite side of the {anchor.name} from where {_img(0)} was "
                 f"taken, facing the {anchor.name}")
    fa, la = in_viewer_frame(T, anchor.center, ctx.up)
    quad = {}
    for k in ring:
        f, l = in_viewer_frame(T, ctx.scene.objects[k].center, ctx.up)
        f, l = f - fa, l - la
        if abs(f) < MARGIN_M or abs(l) < MARGIN_M:
            continue
        quad.setdefault((f > 0, l > 0), []).append(k)
    unique = [(q, ks[0]) for q, ks in quad.items() if len(ks) == 1]
    if not unique:
        return None
    (far, left), k = unique[int(rng.integers(len(unique)))]
    depth_phrase = f"farther from you than the {anchor.name}" if far else f"closer to you than the {anchor.name}"
    side = "left" if left else "right"
    gold = ctx.scene.objects[k].name
    others = [ctx.scene.objects[q].name for q in ring if q != k]
    others = [others[q] for q in rng.permutation(len(others))[:3]]
    return shuffled_mc(rng, "mindcube_among", "among",
                       f"{where}, which object is {depth_phrase} and to the {side}?", gold, others,
                       object=gold, viewpoint=v)


@dataclass(frozen=True)
class Family:
    mode: str                          # camera layout it needs (hatch_vlm.data.synthetic)
    category: str
    fn: Callable[[Context, np.random.Generator], Question | None]


FAMILIES: dict[str, Family] = {
    "camera_motion": Family("near", "Middle", camera_motion),
    "object_position": Family("near", "High", object_position),
    "object_depth": Family("near", "Low", object_depth),
    "object_distance": Family("near", "Low", object_distance),
    "cross_view_matching": Family("near", "Middle", cross_view_matching),
    "mindcube_around": Family("around", "around", mindcube_around),
    "mindcube_rotation": Family("rotation", "rotation", mindcube_rotation),
    "mindcube_among": Family("among", "among", mindcube_among),
}
TASKS = tuple(FAMILIES)


def ask(task: str, ctx: Context, rng) -> Question | None:
    """Generate one question of family `task` (a key of FAMILIES) for the context, or None."""
    if task not in FAMILIES:
        raise ValueError(f"task: unknown question family {task!r}; expected one of {list(FAMILIES)}")
    return FAMILIES[task].fn(ctx, rng)
