"""Synthetic multi-view scenes: the built-in data for the demo and the tests.

Procedural rooms (textured floor, ceiling and walls; boxes, balls, cylinders and cones in distinct
colours, each with a unique name such as "red box") are seen by 2-4 cameras and rendered by vectorised
ray casting (``hatch_vlm.data.render``) into RGB, exact z-depth, K and camera-to-world poses, following
docs/design.md's conventions (OpenCV cameras, world up +z, K in pixels of the S x S depth map). Each sample
carries one question with its gold answer (``hatch_vlm.data.questions``); the poses are the gold for the
ActoR actions between views. Everything is deterministic for a seed: sample i of seed s depends only
on (s, i), not on how many samples are drawn.

API:

    from hatch_vlm.data.synthetic import generate, iter_samples, generate_sample, SceneConfig

    samples = generate(num=8, views=2, size=224, seed=0)            # list[Sample]
    for s in iter_samples(1000, config=SceneConfig(views=3)):        # lazily
        s.images       # V x uint8 [S, S, 3]
        s.depth        # float32 [V, S, S] metres (z-depth; every pixel valid)
        s.K            # float64 [V, 3, 3]
        s.cam_to_world # float64 [V, 4, 4]
        s.question, s.options, s.answer, s.answer_type, s.task, s.category
        s.meta["scene"]  # the room and objects (Scene.to_dict()), s.meta["mode"], ...

Camera layouts ("modes"), picked by the question family drawn for the sample:

* ``near``: consecutive cameras ``baseline_m`` apart with yaw steps of ``yaw_step_deg``; a layout is
  kept only if each consecutive pair overlaps by at least ``min_overlap`` (fraction of pixels of the
  first visible in the second, docs/design.md's visibility test on a low-resolution render).
* ``rotation``: one position, the camera turning in place by ``rotation_step_deg`` per view.
* ``around``: cameras on a circle around a central object, stepping ``around_step_deg``, looking at it.
* ``among``: a central object with four objects on its diagonals; cameras on its four sides.

Other room generators in the project, kept apart on purpose: ``hatch_ext.scenes.room_scene`` (bare rooms
with spheres, torch, any dtype, invalid pixels on demand: the ops' test and benchmark rigs) and
``hatch_vlm.pasta.scenes`` (those rigs textured, the PaStA stage's own data). This generator is the only
one with named objects, questions and camera layouts per question family; each keeps its generated data
fixed for its users, so they share only the conventions (docs/design.md), not code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from collections.abc import Callable, Iterator

import numpy as np

from .. import geometry as geo
from . import questions as qs
from .record import Sample
from ..utils.processes import fork_pool
from .render import render_view
from .scene import KINDS, OBJECT_COLOURS, PATTERNS, ROOM_COLOURS, Scene, SceneObject, Texture

CHECK_SIZE = 48          # side of the low-resolution render used to check overlap during placement


@dataclass
class SceneConfig:
    """Knobs of the generator (ranges are (low, high), drawn uniformly)."""
    views: int = 2
    size: int = 224
    fov_deg: tuple[float, float] = (60.0, 75.0)          # horizontal field of view
    room_size: tuple[float, float] = (4.5, 8.0)          # width and depth, metres (near / rotation)
    wide_room_size: tuple[float, float] = (6.8, 8.5)     # around / among layouts need more space
    room_height: tuple[float, float] = (2.6, 3.2)
    num_objects: tuple[int, int] = (3, 6)                # inclusive
    camera_height: tuple[float, float] = (1.2, 1.7)
    pitch_deg: tuple[float, float] = (-30.0, -10.0)
    yaw_step_deg: tuple[float, float] = (10.0, 45.0)     # near: |yaw change| between consecutive views
    baseline_m: tuple[float, float] = (0.2, 1.2)         # near: distance between consecutive views
    min_overlap: float = 0.2                             # near: required overlap of consecutive views
    rotation_step_deg: tuple[float, float] = (60.0, 100.0)
    around_step_deg: tuple[float, float] = (75.0, 105.0)
    tasks: tuple[str, ...] = qs.TASKS                    # question families, drawn uniformly
    max_tries: int = 50

    def validate(self) -> SceneConfig:
        if not 2 <= self.views <= 4:
            raise ValueError(f"views: expected 2..4 cameras per sample, got {self.views}")
        if self.size < 16:
            raise ValueError(f"size: expected an image side >= 16 px, got {self.size}")
        unknown = [t for t in self.tasks if t not in qs.FAMILIES]
        if unknown or not self.tasks:
            raise ValueError(f"tasks: unknown or empty {list(self.tasks)}; choose from {list(qs.TASKS)}")
        if not 0 <= self.min_overlap < 1:
            raise ValueError(f"min_overlap: expected a fraction in [0, 1), got {self.min_overlap}")
        return self


# --------------------------------------------------------------------------------------------------
# Room and objects
# --------------------------------------------------------------------------------------------------
def _u(rng, lo_hi) -> float:
    return float(rng.uniform(*lo_hi))


def random_textures(rng) -> list[Texture]:
    """Six textures (floor, ceiling, 4 walls) in 12 distinct colours, so every surface looks different."""
    cols = [ROOM_COLOURS[k] for k in rng.permutation(len(ROOM_COLOURS))]
    out = []
    for s in range(6):
        pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
        scale = _u(rng, (0.25, 0.6)) if pattern != "noise" else _u(rng, (0.08, 0.2))
        out.append(Texture(pattern, cols[2 * s], cols[2 * s + 1], scale,
                           (_u(rng, (0, 16)), _u(rng, (0, 16)))))
    return out


def random_object(rng, kind: str, colour: str, xy) -> SceneObject:
    """An object of `kind` standing on the floor at horizontal position xy."""
    if kind == "box":
        half = (_u(rng, (0.15, 0.45)), _u(rng, (0.15, 0.45)), _u(rng, (0.15, 0.5)))
        yaw = _u(rng, (0, math.pi))
    elif kind == "ball":
        r = _u(rng, (0.15, 0.35))
        half, yaw = (r, r, r), 0.0
    elif kind == "cylinder":
        r = _u(rng, (0.12, 0.3))
        half, yaw = (r, r, _u(rng, (0.2, 0.6))), 0.0
    elif kind == "cone":
        r = _u(rng, (0.15, 0.35))
        half, yaw = (r, r, _u(rng, (0.25, 0.5))), 0.0
    else:
        raise ValueError(f"kind: unknown object kind {kind!r}; expected one of {KINDS}")
    return SceneObject(kind, colour, (float(xy[0]), float(xy[1]), half[2]), half, yaw)


def _fits(scene: Scene, ob: SceneObject, gap: float = 0.25, wall: float = 0.3) -> bool:
    x, y, _ = ob.center
    r = ob.footprint
    if not (wall + r <= x <= scene.width - wall - r and wall + r <= y <= scene.depth - wall - r):
        return False
    return all(np.hypot(x - o.center[0], y - o.center[1]) >= r + o.footprint + gap for o in scene.objects)


def random_scene(rng, cfg: SceneConfig, mode: str) -> tuple[Scene, int | None]:
    """A room with objects for the layout `mode`; returns (scene, index of the central object or None)."""
    wide = mode in ("around", "among")
    size = cfg.wide_room_size if wide else cfg.room_size
    scene = Scene(_u(rng, size), _u(rng, size), _u(rng, cfg.room_height), random_textures(rng))
    colours = [list(OBJECT_COLOURS)[k] for k in rng.permutation(len(OBJECT_COLOURS))]
    kind = lambda: KINDS[int(rng.integers(len(KINDS)))]  # noqa: E731
    anchor = None
    if wide:
        c = np.array([scene.width / 2, scene.depth / 2]) + rng.uniform(-0.3, 0.3, 2)
        scene.objects.append(random_object(rng, kind(), colours.pop(), c))
        anchor = 0
    if mode == "among":
        # Four objects on the central object's diagonals (cameras will stand on its sides).
        theta0 = _u(rng, (0, 2 * math.pi))
        for k in range(4):
            a = theta0 + math.pi / 4 + k * math.pi / 2 + _u(rng, (-0.2, 0.2))
            rad = _u(rng, (1.0, 1.3))
            xy = np.asarray(scene.objects[0].center[:2]) + rad * np.array([math.cos(a), math.sin(a)])
            ob = random_object(rng, kind(), colours.pop(), xy)
            ob = replace(ob, half=tuple(min(h, 0.3) for h in ob.half[:2]) + (ob.half[2],)) \
                if ob.kind == "box" else ob
            scene.objects.append(ob)
        return scene, anchor
    n = int(rng.integers(cfg.num_objects[0], cfg.num_objects[1] + 1))
    tries = 0
    while len(scene.objects) < n and tries < 200:
        tries += 1
        xy = (_u(rng, (0, scene.width)), _u(rng, (0, scene.depth)))
        ob = random_object(rng, kind(), colours[-1], xy)
        if _fits(scene, ob):
            scene.objects.append(ob)
            colours.pop()
    return scene, anchor


# --------------------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------------------
def _free(scene: Scene, p, clearance: float = 0.35) -> bool:
    x, y, z = p
    if not (0.3 <= x <= scene.width - 0.3 and 0.3 <= y <= scene.depth - 0.3 and 0.3 < z < scene.height - 0.2):
        return False
    return all(np.hypot(x - o.center[0], y - o.center[1]) >= o.footprint + clearance for o in scene.objects)


def _random_free(rng, scene: Scene, cfg: SceneConfig, tries: int = 100):
    for _ in range(tries):
        p = (_u(rng, (0.3, scene.width - 0.3)), _u(rng, (0.3, scene.depth - 0.3)), _u(rng, cfg.camera_height))
        if _free(scene, p):
            return np.array(p)
    return None


def place_near(rng, scene: Scene, cfg: SceneConfig):
    """Camera 0 looks toward an object; each next camera moves `baseline_m` and turns `yaw_step_deg`."""
    p = _random_free(rng, scene, cfg)
    if p is None or not scene.objects:
        return None
    target = np.asarray(scene.objects[int(rng.integers(len(scene.objects)))].center)
    yaw = math.atan2(target[1] - p[1], target[0] - p[0]) + math.radians(_u(rng, (-15, 15)))
    turn_sign = 1 if rng.random() < 0.5 else -1
    poses = [geo.pose_from_yaw_pitch(p, yaw, math.radians(_u(rng, cfg.pitch_deg)))]
    for _ in range(cfg.views - 1):
        for _ in range(30):
            step = _u(rng, cfg.baseline_m)
            a = _u(rng, (0, 2 * math.pi))
            q = p + np.array([step * math.cos(a), step * math.sin(a), _u(rng, (-0.15, 0.15))])
            q[2] = np.clip(q[2], *cfg.camera_height)
            if _free(scene, q):
                break
        else:
            return None
        p = q
        yaw += turn_sign * math.radians(_u(rng, cfg.yaw_step_deg))
        poses.append(geo.pose_from_yaw_pitch(p, yaw, math.radians(_u(rng, cfg.pitch_deg))))
    return np.stack(poses)


def place_rotation(rng, scene: Scene, cfg: SceneConfig):
    """One position, the camera turning in place."""
    p = _random_free(rng, scene, cfg)
    if p is None:
        return None
    yaw = _u(rng, (0, 2 * math.pi))
    sign = 1 if rng.random() < 0.5 else -1
    poses = []
    for _ in range(cfg.views):
        poses.append(geo.pose_from_yaw_pitch(p, yaw, math.radians(_u(rng, (-15, -5)))))
        yaw += sign * math.radians(_u(rng, cfg.rotation_step_deg))
    return np.stack(poses)


def _ring_poses(scene: Scene, centre, angles, radius, height):
    poses = []
    for a in angles:
        p = np.array([centre[0] + radius * math.cos(a), centre[1] + radius * math.sin(a), height])
        if not _free(scene, p, clearance=0.2):
            return None
        poses.append(geo.look_at(p, centre))
    return np.stack(poses)


def place_around(rng, scene: Scene, cfg: SceneConfig, anchor: int):
    c = np.asarray(scene.objects[anchor].center)
    a0 = _u(rng, (0, 2 * math.pi))
    sign = 1 if rng.random() < 0.5 else -1
    angles, a = [], a0
    for _ in range(cfg.views):
        angles.append(a)
        a += sign * math.radians(_u(rng, cfg.around_step_deg))
    return _ring_poses(scene, c, angles, _u(rng, (1.8, 2.6)), _u(rng, cfg.camera_height))


def place_among(rng, scene: Scene, cfg: SceneConfig, anchor: int):
    """Cameras on the sides of the central object, between the diagonal objects."""
    c = np.asarray(scene.objects[anchor].center)
    o1 = np.asarray(scene.objects[1].center) - c
    theta0 = math.atan2(o1[1], o1[0]) - math.pi / 4     # ring objects sit at theta0 + 45 + k 90
    sides = [theta0 + k * math.pi / 2 for k in range(4)]
    start = int(rng.integers(4))
    angles = [sides[(start + k) % 4] for k in range(cfg.views)]
    return _ring_poses(scene, c, angles, _u(rng, (2.4, 2.9)), _u(rng, cfg.camera_height))


def overlap_ok(scene: Scene, poses: np.ndarray, cfg: SceneConfig, fov_deg: float) -> bool:
    """Each consecutive pair of views overlaps by >= min_overlap (checked on a small render with the
    sample's field of view)."""
    if cfg.min_overlap <= 0:
        return True
    Kc = geo.intrinsics(CHECK_SIZE, fov_deg)
    depths = [render_view(scene, Kc, T, CHECK_SIZE, CHECK_SIZE, with_rgb=False)[1] for T in poses]
    for a in range(len(poses) - 1):
        vis = geo.visible_in(depths[a], Kc, poses[a], depths[a + 1], Kc, poses[a + 1])[0]
        if vis.mean() < cfg.min_overlap:
            return False
    return True


# --------------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------------
def view_stats(ids: np.ndarray, n_obj: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels [V, n_obj] and centroids [V, n_obj, 2] (row, col; NaN where absent) from id maps."""
    V, H, W = ids.shape
    pixels = np.zeros((V, n_obj), dtype=np.int64)
    cent = np.full((V, n_obj, 2), np.nan)
    rr, cc = np.mgrid[0:H, 0:W]
    for v in range(V):
        flat = ids[v].ravel().astype(np.int64)
        obj = flat >= 0
        cnt = np.bincount(flat[obj], minlength=n_obj)[:n_obj]
        sr = np.bincount(flat[obj], weights=rr.ravel()[obj], minlength=n_obj)[:n_obj]
        sc = np.bincount(flat[obj], weights=cc.ravel()[obj], minlength=n_obj)[:n_obj]
        pixels[v] = cnt
        with np.errstate(invalid="ignore", divide="ignore"):
            cent[v, :, 0] = np.where(cnt > 0, sr / np.maximum(cnt, 1), np.nan)
            cent[v, :, 1] = np.where(cnt > 0, sc / np.maximum(cnt, 1), np.nan)
    return pixels, cent


def render_views(scene: Scene, K: np.ndarray, poses: np.ndarray, size: int):
    """Render all views: (images list of uint8 [S, S, 3], depth float32 [V, S, S], ids int16 [V, S, S])."""
    out = [render_view(scene, K[v], poses[v], size, size) for v in range(len(poses))]
    return [o[0] for o in out], np.stack([o[1] for o in out]), np.stack([o[2] for o in out])


def make_context(scene: Scene, K, poses, ids, anchor=None) -> qs.Context:
    pixels, cent = view_stats(ids, len(scene.objects))
    return qs.Context(scene, np.asarray(K), np.asarray(poses), ids.shape[1:], pixels, cent, anchor)


def _place(rng, scene, cfg, mode, anchor, fov_deg):
    if mode == "near":
        poses = place_near(rng, scene, cfg)
        return poses if poses is not None and overlap_ok(scene, poses, cfg, fov_deg) else None
    if mode == "rotation":
        return place_rotation(rng, scene, cfg)
    if mode == "around":
        return place_around(rng, scene, cfg, anchor)
    return place_among(rng, scene, cfg, anchor)


def generate_sample(index: int, seed: int = 0, config: SceneConfig | None = None) -> Sample:
    """Sample `index` of the stream for `seed` (independent of every other index)."""
    cfg = (config or SceneConfig()).validate()
    rng = np.random.default_rng([seed, index])
    S = cfg.size
    for _ in range(cfg.max_tries):
        task = cfg.tasks[int(rng.integers(len(cfg.tasks)))]
        mode = qs.FAMILIES[task].mode
        scene, anchor = random_scene(rng, cfg, mode)
        fov = _u(rng, cfg.fov_deg)
        poses = _place(rng, scene, cfg, mode, anchor, fov)
        if poses is None:
            continue
        K = np.stack([geo.intrinsics(S, fov)] * cfg.views)
        images, depth, ids = render_views(scene, K, poses, S)
        ctx = make_context(scene, K, poses, ids, anchor)
        q = qs.ask(task, ctx, rng)
        if q is None:
            continue
        return Sample(
            images=images, depth=depth, K=K, cam_to_world=poses, question=q.question,
            options=q.options, answer=q.answer, answer_type=q.answer_type, task=q.task,
            category=q.category, source="synthetic", id=f"synth_s{seed}_{index:06d}",
            meta={"scene": scene.to_dict(), "mode": mode, "anchor": anchor, "seed": seed, "index": index,
                  "object_pixels": ctx.pixels.tolist(), "question_meta": q.meta})
    raise RuntimeError(f"synthetic: no valid sample after {cfg.max_tries} tries (seed {seed}, index "
                       f"{index}); loosen SceneConfig (min_overlap={cfg.min_overlap}, tasks={cfg.tasks})")


def iter_samples(num: int, views: int | None = None, size: int | None = None, seed: int = 0,
                 config: SceneConfig | None = None, start: int = 0, workers: int = 1,
                 then: Callable | None = None) -> Iterator:
    """Yield samples start .. start+num-1 of the stream for `seed`. `views` / `size` override config.

    `workers` > 1 renders in that many forked processes, in order: the same samples (each depends only on its
    index and the seed). A process that has imported torch already is never forked (OpenMP's threads do not
    survive a fork): `workers` must then be 1, else a ValueError says so. `then`: a module-level function of a
    sample, run where the sample was rendered (e.g. encoding its images for a writer); the pairs
    (sample, then(sample)) are yielded instead."""
    if num < 0:
        raise ValueError(f"num: expected >= 0 samples, got {num}")
    if workers < 1:
        raise ValueError(f"workers: expected >= 1, got {workers}")
    cfg = config or SceneConfig()
    if views is not None:
        cfg = replace(cfg, views=views)
    if size is not None:
        cfg = replace(cfg, size=size)
    cfg.validate()
    if workers == 1 or num < 2:
        for i in range(start, start + num):
            yield _generate_one((i, seed, cfg, then))
        return
    hint = "render with workers=1 here, or from a process that has not imported torch"
    with fork_pool(workers, num, hint) as pool:
        yield from pool.imap(_generate_one, [(i, seed, cfg, then) for i in range(start, start + num)],
                             chunksize=2)


def _generate_one(args):
    i, seed, cfg, then = args
    sample = generate_sample(i, seed, cfg)
    return sample if then is None else (sample, then(sample))


def generate(num: int, views: int = 2, size: int = 224, seed: int = 0,
             config: SceneConfig | None = None) -> list[Sample]:
    """`num` samples with `views` cameras of `size` x `size` px (config's other knobs apply)."""
    return list(iter_samples(num, views, size, seed, config))


# The SPAR-Bench-SI task a synthetic family stands in for once cut to its one view (data.spar writes it).
SINGLE_VIEW_TASK = {"object_depth": "depth_prediction_oc", "object_position": "spatial_imagination_oc"}


def single_view(sample: Sample) -> Sample | None:
    """The single-image question inside a synthetic sample, or None: object_depth and object_position ask about
    one view (question_meta["view"]), so that view alone with "Image k" read as "the image" is a single-image
    question with the same gold (the stand-ins of the single-image benchmarks). Task: SINGLE_VIEW_TASK."""
    view = sample.meta.get("question_meta", {}).get("view")
    if sample.task not in SINGLE_VIEW_TASK or view is None:
        return None
    pick = slice(view, view + 1)
    return replace(sample, images=[sample.images[view]], question=sample.question.replace(f"Image {view + 1}",
                   "the image"), task=SINGLE_VIEW_TASK[sample.task], id=f"{sample.id}_v{view}",
                   depth=None if sample.depth is None else sample.depth[pick],
                   K=None if sample.K is None else sample.K[pick],
                   cam_to_world=None if sample.cam_to_world is None else sample.cam_to_world[pick],
                   meta={**sample.meta, "single_view_of": sample.id})
