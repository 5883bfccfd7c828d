"""Questions that need no object labels, in SPAR's answer formats, with SPAR's markers
(../shared/SCANS.md, last section; the marker fields and where fudan-zvg/spar's loader draws them:
hatch_vlm.data.spar7m.markers). Every answer is computed from the geometry of the views.

    task                       folder   answer                              markers
    view_change_infer          fill     move_right:0.5,rotate_left:30       none
    camera_motion_infer        fill     metres moved (numeric)              none
                               select   where Image 2's camera stands in    none
                                        Image 1, [x, y] on the 0-1000 scale
    depth_prediction_oc_mv     fill     depth of the red point (m)          red point (view a), blue (b)
                               select   which point is farther from its camera
    distance_prediction_oo_mv  fill     red-to-blue distance (m)            red point (view a), blue (b)
    position_matching          fill     [x1, y1, x2, y2] of the red box's   red bbox on Image 1
                                        surface in Image 2 (0-1000)
                               select   the same among four boxes

Frame of the motions: gravity-levelled, as ActoR's teacher (`hatch_vlm.geometry.relative_motion` with
world up +z: the builder rotates each capture's world so that its up is +z before anything is asked).
`move_forward` is along the first view's horizontal heading, `move_up` along gravity, `rotate_left` a
heading change to the left, `rotate_up` a pitch change; metres with 1 decimal, degrees whole, and a
component that rounds to 0 is left out (SPAR's scorer reads a missing key as 0).

A marker sits on a depth-map pixel with valid depth whose 3x3 neighbourhood varies by < 10 % (a depth
edge under the drawn dot would make the answer ambiguous), away from the border. Its 0-1000
coordinates are chosen first and the pixel measured is the one the loader's `int(x / 1000 * W)` gives,
so the answer is read exactly where the marker is drawn. The position_matching box is placed where
>= 80 % of its valid pixels are visible in the other view (the ops' visibility test).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ... import geometry as geo

LETTERS = "ABCD"
MARGIN = 0.08                   # markers stay this fraction of the image away from the border
SMOOTH_REL = 0.10               # max (max - min) / depth over a marker's 3x3 neighbourhood (a depth
                                # edge jumps far more; a slanted floor at low resolution varies this much)
MIN_DEPTH_GAP = 0.25            # metres between the two depths of the "which is farther" question
BOX_FRACTION = 0.2              # position_matching box side, fraction of the image side
BOX_VISIBLE = 0.8
TASKS = ("view_change_infer", "camera_motion_infer", "depth_prediction_oc_mv", "distance_prediction_oo_mv",
         "position_matching")
PAIR_TASKS = ("view_change_infer", "camera_motion_infer", "position_matching")


@dataclass
class View:
    """One view of a tuple: depth (metres) + K of the depth map, levelled camera-to-world."""
    depth: np.ndarray
    K: np.ndarray
    cam_to_world: np.ndarray

    @property
    def hw(self) -> tuple[int, int]:
        return self.depth.shape


@dataclass
class CaptureQuestion:
    task: str
    kind: str                       # answer folder: fill | select
    question: str
    options: list[str]
    answer: str
    markers: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)   # what the answer was computed from (tests, the contact sheet)


def img(k: int) -> str:
    return f"Image {k + 1}"


def to_1000(pix: float, size: int) -> int:
    """0-1000 coordinate of a continuous pixel position (pixel c covers [c, c + 1) in corner coordinates)."""
    return int(np.clip(round((pix + 0.5) / size * 1000), 0, 1000))


def pixel_of(coord: int, size: int) -> int:
    """The pixel SPAR's loader puts a 0-1000 coordinate on: int(coord / 1000 * size)."""
    return min(int(coord / 1000 * size), size - 1)


def world_point(view: View, row: int, col: int) -> np.ndarray:
    X = np.linalg.inv(view.K) @ np.array([col, row, 1.0]) * float(view.depth[row, col])
    return view.cam_to_world[:3, :3] @ X + view.cam_to_world[:3, 3]


# ------------------------------------------------------------------------------------------- markers
def smooth_mask(depth: np.ndarray) -> np.ndarray:
    """Pixels where a point marker may go: valid, flat 3x3 neighbourhood, inside the margin."""
    H, W = depth.shape
    d = np.where(depth > 0, depth, np.nan)
    pad = np.pad(d, 1, constant_values=np.nan)
    win = np.lib.stride_tricks.sliding_window_view(pad, (3, 3))
    with np.errstate(invalid="ignore"):
        lo, hi = win.min((-1, -2)), win.max((-1, -2))
        ok = np.isfinite(lo) & np.isfinite(hi) & ((hi - lo) <= SMOOTH_REL * d)
    rr, cc = np.mgrid[0:H, 0:W]
    ok &= (rr >= MARGIN * H) & (rr < (1 - MARGIN) * H) & (cc >= MARGIN * W) & (cc < (1 - MARGIN) * W)
    return ok


def pick_point(view: View, rng) -> tuple[list[int], tuple[int, int]] | None:
    """([x, y] on 0-1000, the (row, col) the loader draws it at) on a smooth valid pixel, or None."""
    H, W = view.hw
    mask = smooth_mask(view.depth)
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return None
    k = int(rng.integers(len(rows)))
    xy = [to_1000(cols[k], W), to_1000(rows[k], H)]
    rc = (pixel_of(xy[1], H), pixel_of(xy[0], W))
    if not mask[rc]:                       # the 0-1000 rounding moved it onto a pixel that is not smooth
        return None
    return xy, rc


# ------------------------------------------------------------------------------------------- tasks
def view_change_answer(m: geo.Motion) -> str:
    """SPAR's `move_*:m,rotate_*:deg` text of a levelled motion; '' when every component rounds to 0."""
    parts = []
    for value, pos, neg, fmt in ((-m.left, "move_right", "move_left", "{:.1f}"),
                                 (m.forward, "move_forward", "move_backward", "{:.1f}"),
                                 (m.up, "move_up", "move_down", "{:.1f}"),
                                 (-m.yaw_deg, "rotate_right", "rotate_left", "{:.0f}"),
                                 (m.pitch_deg, "rotate_up", "rotate_down", "{:.0f}")):
        text = fmt.format(abs(value))
        if float(text) != 0:
            parts.append(f"{pos if value > 0 else neg}:{text}")
    return ",".join(parts)


def view_change(views: list[View], rng) -> CaptureQuestion | None:
    m = geo.relative_motion(views[0].cam_to_world, views[1].cam_to_world)
    ans = view_change_answer(m)
    if not ans:
        return None
    q = (f"{img(0)} and {img(1)} were taken by the same camera. How did the camera move and rotate from "
         f"{img(0)} to {img(1)}? Answer in the frame of {img(0)}'s camera levelled to gravity, as "
         f"comma-separated move_right/move_left/move_forward/move_backward/move_up/move_down:<meters> and "
         f"rotate_left/rotate_right/rotate_up/rotate_down:<degrees>.")
    return CaptureQuestion("view_change_infer", "fill", q, [], ans, meta={"motion": m.as_list()})


def _point_options(gold: list[int], rng, min_gap: int = 150) -> tuple[list[str], str] | None:
    pts = [gold]
    for _ in range(200):
        p = [int(rng.integers(50, 951)), int(rng.integers(50, 951))]
        if all(max(abs(p[0] - q[0]), abs(p[1] - q[1])) >= min_gap for q in pts):
            pts.append(p)
        if len(pts) == 4:
            break
    if len(pts) < 4:
        return None
    order = rng.permutation(4)
    opts = [f"{LETTERS[k]}. [{pts[o][0]}, {pts[o][1]}]" for k, o in enumerate(order)]
    return opts, LETTERS[int(np.nonzero(order == 0)[0][0])]


def camera_motion(views: list[View], rng) -> CaptureQuestion | None:
    a, b = views[0], views[1]
    pre = f"{img(0)} and {img(1)} were taken by the same camera. "
    if rng.random() < 0.5:
        d = float(np.linalg.norm(b.cam_to_world[:3, 3] - a.cam_to_world[:3, 3]))
        if round(d, 2) == 0:
            return None
        return CaptureQuestion("camera_motion_infer", "fill", pre + f"How far did the camera move between "
                               f"{img(0)} and {img(1)}, in meters?", [], f"{d:.2f}", meta={"distance": d})
    c = geo.transform_points(np.linalg.inv(a.cam_to_world), b.cam_to_world[:3, 3])
    uv, z = geo.project_points(a.K, c)
    H, W = a.hw
    if not (z > 0.3 and 0 <= uv[0] <= W - 1 and 0 <= uv[1] <= H - 1):
        return None                         # Image 2's camera is not in front of Image 1's
    gold = [to_1000(uv[0], W), to_1000(uv[1], H)]
    made = _point_options(gold, rng)
    if made is None:
        return None
    opts, letter = made
    return CaptureQuestion("camera_motion_infer", "select", pre + f"Where in {img(0)} is the position from "
                           f"which {img(1)} was taken? Points are [x, y] on a 0-1000 scale of {img(0)}, "
                           f"origin at the top-left corner.", opts, letter, meta={"point": gold})


def _two_points(views: list[View], rng):
    a, b = (int(v) for v in rng.choice(len(views), size=2, replace=False))
    pa, pb = pick_point(views[a], rng), pick_point(views[b], rng)
    if pa is None or pb is None:
        return None
    markers = {"red_point": [pa[0]], "blue_point": [pb[0]], "point_img_idx": [[a, b]]}
    return a, b, pa, pb, markers


def point_depth(views: list[View], rng) -> CaptureQuestion | None:
    got = _two_points(views, rng)
    if got is None:
        return None
    a, b, pa, pb, markers = got
    da, db = float(views[a].depth[pa[1]]), float(views[b].depth[pb[1]])
    meta = {"depths": [da, db], "views": [a, b], "pixels": [list(pa[1]), list(pb[1])]}
    if rng.random() < 0.5:
        return CaptureQuestion(
            "depth_prediction_oc_mv", "fill",
            f"The red point is marked in {img(a)} and the blue point in {img(b)}. What is the depth of the red "
            f"point from the camera of {img(a)}, i.e. its distance along that camera's viewing direction, in "
            f"meters?", [], f"{da:.2f}", markers, meta)
    if abs(da - db) < MIN_DEPTH_GAP:
        return None
    return CaptureQuestion(
        "depth_prediction_oc_mv", "select",
        f"The red point is marked in {img(a)} and the blue point in {img(b)}. Which point is farther from the "
        f"camera of the image it is marked in (depth along that camera's viewing direction)?",
        ["A. the red point", "B. the blue point"], "A" if da > db else "B", markers, meta)


def cross_view_distance(views: list[View], rng) -> CaptureQuestion | None:
    got = _two_points(views, rng)
    if got is None:
        return None
    a, b, pa, pb, markers = got
    d = float(np.linalg.norm(world_point(views[a], *pa[1]) - world_point(views[b], *pb[1])))
    return CaptureQuestion(
        "distance_prediction_oo_mv", "fill",
        f"The red point is marked in {img(a)} and the blue point in {img(b)}. What is the distance between the "
        f"two surface points, in meters?", [], f"{d:.2f}", markers,
        {"distance": d, "views": [a, b], "pixels": [list(pa[1]), list(pb[1])]})


def box_pixels(box: list[int], hw: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the depth map a 0-1000 box covers (the loader's int(coord / 1000 * size))."""
    H, W = hw
    return (slice(pixel_of(box[1], H), pixel_of(box[3], H) + 1), slice(pixel_of(box[0], W), pixel_of(box[2], W) + 1))


def matched_box(a: View, b: View, box: list[int]) -> list[int] | None:
    """The box in b (0-1000) around where a's box pixels land, if >= BOX_VISIBLE of them are visible."""
    vis, rows, cols, z = geo.visible_in(a.depth, a.K, a.cam_to_world, b.depth, b.K, b.cam_to_world)
    rs, cs = box_pixels(box, a.hw)
    valid = a.depth[rs, cs] > 0
    if valid.mean() < 0.9 or vis[rs, cs][valid].mean() < BOX_VISIBLE:
        return None
    rr, cc = np.mgrid[rs, cs]
    sel = vis[rs, cs]
    X = geo.unproject_depth(a.depth, a.K)[rr[sel], cc[sel]]
    uv, _ = geo.project_points(b.K, geo.transform_points(np.linalg.inv(b.cam_to_world) @ a.cam_to_world, X))
    H, W = b.hw
    return [to_1000(uv[:, 0].min(), W), to_1000(uv[:, 1].min(), H), to_1000(uv[:, 0].max(), W),
            to_1000(uv[:, 1].max(), H)]


def _box_options(gold: list[int], rng) -> tuple[list[str], str] | None:
    w, h = gold[2] - gold[0], gold[3] - gold[1]
    cands = []
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)):
        x1, y1 = gold[0] + int(dx * max(w, 150)), gold[1] + int(dy * max(h, 150))
        if 0 <= x1 and x1 + w <= 1000 and 0 <= y1 and y1 + h <= 1000:
            cands.append([x1, y1, x1 + w, y1 + h])
    if len(cands) < 3:
        return None
    pick = [cands[int(k)] for k in rng.choice(len(cands), size=3, replace=False)]
    boxes = [gold] + pick
    order = rng.permutation(4)
    opts = [f"{LETTERS[k]}. [{', '.join(str(v) for v in boxes[o])}]" for k, o in enumerate(order)]
    return opts, LETTERS[int(np.nonzero(order == 0)[0][0])]


def position_matching(views: list[View], rng) -> CaptureQuestion | None:
    a, b = views[0], views[1]        # SPAR draws the red box on the first image
    side = int(BOX_FRACTION * 1000)
    for _ in range(12):
        x1, y1 = (int(rng.integers(int(MARGIN * 1000), 1000 - int(MARGIN * 1000) - side)) for _ in range(2))
        box = [x1, y1, x1 + side, y1 + side]
        gold = matched_box(a, b, box)
        if gold is not None:
            break
    else:
        return None
    markers = {"red_bbox": [box], "bbox_img_idx": [[0]]}
    pre = (f"A region is marked with a red box in {img(0)}. Boxes are [x1, y1, x2, y2] on a 0-1000 scale of the "
           f"image, origin at the top-left corner. ")
    meta = {"box": box, "gold": gold}
    if rng.random() < 0.5:
        return CaptureQuestion("position_matching", "fill", pre + f"Give the box of the same surface in {img(1)}.",
                               [], f"[{', '.join(str(v) for v in gold)}]", markers, meta)
    made = _box_options(gold, rng)
    if made is None:
        return None
    opts, letter = made
    return CaptureQuestion("position_matching", "select", pre + f"Which box in {img(1)} holds the same surface?",
                           opts, letter, markers, meta)


GENERATORS = {"view_change_infer": view_change, "camera_motion_infer": camera_motion,
              "depth_prediction_oc_mv": point_depth, "distance_prediction_oo_mv": cross_view_distance,
              "position_matching": position_matching}


def ask(task: str, views: list[View], rng) -> CaptureQuestion | None:
    """One question of `task` about `views`, or None when these views do not allow one."""
    if task not in GENERATORS:
        raise ValueError(f"--tasks: unknown task {task!r}; expected some of {list(TASKS)}")
    if task in PAIR_TASKS and len(views) != 2:
        return None
    return GENERATORS[task](views, rng)
