"""SPAR-7M's question markers drawn onto the views the way the official loader draws them.

A QA record's question refers to markers ("the towel (red bbox)", "object2") that the official loader,
fudan-zvg/spar ``datasets/draw_marker.py`` (``DRAW_FUNCTIONS``, called by ``datasets/toy_dataset.py`` on
the PIL RGB images right after loading, before any resizing), paints onto the frames. This module
reproduces that behaviour with numpy and PIL only (our own code; nothing is imported from SPAR).

Record fields (coordinates on a 0-1000 scale of the image: x by width, y by height):

* ``red_point`` / ``blue_point`` / ``green_point``: ``[[x, y]]``
* ``red_bbox`` / ``blue_bbox`` / ``green_bbox`` / ``yellow_bbox``: ``[[x1, y1, x2, y2]]``
* ``bbox_list``: ``[[box, box, ...]]``; ``point_list``: ``[[point, point, ...]]``
* ``point_img_idx`` / ``bbox_img_idx``: ``[[i0, i1, ...]]``, the view each marker goes on

As in the official code only the first entry of a marker value is used (``value[0]``), coordinates are
scaled as ``coord / 1000 * (W, H)`` per view and truncated with ``int()``.

How the official code draws, and so how this module draws:

* PIL functions (most tasks): a point is a filled ``ImageDraw.ellipse`` of radius 20 px around the
  truncated centre; a box is ``ImageDraw.rectangle(outline=colour, width=20)`` on the box pushed out by
  20*7/8 = 17.5 px on each side (pushed out before the ``int()``, so the drawn rectangle is
  ``int(x1 - 17.5), int(y1 - 17.5), int(x2 + 17.5), int(y2 + 17.5)`` of the unrounded scaled box). PIL
  colour names: "red" (255, 0, 0), "blue" (0, 0, 255), "green" (0, 128, 0), "yellow" (255, 255, 0).
  These shapes are drawn by PIL itself, so they are the official pixels under the same Pillow version.
* OpenCV functions (``spatial_imagination_map_mv``, ``distance_infer_center_oo_video``,
  ``spatial_imagination_oc_video`` / ``_oo_video``): cv2 is not used here. Its shapes are reproduced
  pixel for pixel from OpenCV's drawing code (imgproc/src/drawing.cpp): ``cv2.rectangle(thickness=20)``
  on the box pushed out by 20 px is four 21 px wide bands centred on the rectangle's edges plus a filled
  radius-10 cv2 circle at each corner; ``cv2.circle(radius=20, thickness=-1)`` is OpenCV's own filled
  circle raster; ``cv2.FILLED`` rectangles are inclusive. ``cv2.getTextSize`` (Hershey simplex, scale 2,
  thickness 10) is computed exactly, so every label sits where OpenCV puts it, but the label glyphs are
  drawn with PIL's default font (size and stroke chosen to match the Hershey cap height and stroke width,
  stretched to the Hershey text width): the text differs slightly from cv2's Hershey font.
  Colours: map_mv and infer_center_oo_video draw with cv2 on the RGB array, so (0, 0, 255) is pure blue
  and (0, 255, 0) pure green; the two spatial_imagination video tasks convert to BGR first, so their
  colours read as BGR: green (0, 255, 0), blue (0, 0, 255), red (255, 0, 0) and "yellow" (225, 225, 0)
  in BGR, which is (0, 225, 225) (cyan) in RGB -- reproduced as the official code draws it.

Deviations from the official code (which raises Python errors instead):

* a missing or malformed marker, or a view index out of range or negative (Python would wrap a negative
  index to the last views), raises ``RecordError(kind="bad marker")``;
* a record with markers whose task has no rule raises ``RecordError(kind="unknown marker task")``; an
  unknown task without markers draws nothing (the official loader raises for any unknown type);
* obj_spatial_relation_oc_mv with none of its three boxes is refused ("bad marker"); the official code
  draws nothing;
* a multi-view or video task whose record has a single image draws on that image (the official loader
  passes a bare PIL image to the list-indexing function and crashes); a single-view task with more than
  one view is refused ("bad marker").
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..common import RecordError

__all__ = ["MARKER_KEYS", "draw_markers", "has_markers", "DRAWN_TASKS", "PASS_TASKS", "marker_tasks"]

POINT_KEYS = ("red_point", "blue_point", "green_point")
BBOX_KEYS = ("red_bbox", "blue_bbox", "green_bbox", "yellow_bbox")
LIST_KEYS = ("bbox_list", "point_list")
INDEX_KEYS = ("point_img_idx", "bbox_img_idx")
MARKER_KEYS = POINT_KEYS + BBOX_KEYS + LIST_KEYS + INDEX_KEYS

RADIUS = 20                 # PIL point radius and cv2.circle radius (px)
STROKE = 20                 # PIL rectangle width and cv2.rectangle thickness (px)
PIL_EXTEND = STROKE * 7 / 8  # PIL boxes are pushed out by this before int()
CV_EXTEND = 20              # cv2 boxes are pushed out by this after int()
FONT_SCALE = 2.0            # cv2.FONT_HERSHEY_SIMPLEX scale of every SPAR label
TEXT_THICKNESS = 10         # cv2.putText thickness of every SPAR label

# Colours as the pixels come out (RGB).
PIL_RGB = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 128, 0), "yellow": (255, 255, 0)}
CV_BLUE_ON_RGB = (0, 0, 255)     # color=(0, 0, 255) given to cv2 on an RGB array
CV_GREEN_ON_RGB = (0, 255, 0)    # color=(0, 255, 0) given to cv2 on an RGB array
WHITE = (255, 255, 255)
# spatial_imagination_{oc,oo}_video draw on a BGR copy: (key, name, BGR colour given, label).
_VIDEO_BOXES = (
    ("green_bbox", "green", (0, 255, 0), "object0"),
    ("blue_bbox", "blue", (255, 0, 0), "object1"),
    ("red_bbox", "red", (0, 0, 255), "object2"),
    ("yellow_bbox", "yellow", (225, 225, 0), "object3"),
)

# Hershey simplex (OpenCV hershey_fonts.cpp): advance (right - left) of the glyphs SPAR's labels use,
# cap + base line 12 + 9.
_HERSHEY_ADVANCE = {"o": 19, "b": 19, "j": 10, "e": 18, "c": 18, "t": 12, "A": 18,
                    **{str(d): 20 for d in range(10)}}
_HERSHEY_CAP, _HERSHEY_BASE = 12, 9


# ---------------------------------------------------------------------------------------------- checks

def _nonempty(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, (list, tuple)):
        return any(_nonempty(v) for v in value)
    if isinstance(value, (str, bytes, Mapping)):
        return len(value) > 0
    return True


def has_markers(record: Mapping) -> bool:
    """Whether the record carries any marker key with a non-empty value ([[...]] with something in it)."""
    return any(_nonempty(record.get(k)) for k in MARKER_KEYS)


def _bad(task: str, msg: str) -> RecordError:
    return RecordError(f"markers of task {task!r}: {msg}", "bad marker")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) \
        and math.isfinite(float(v))


def _coords(task: str, key: str, raw: Any, value: Any, n: int) -> list[float]:
    """`value` as a list of n finite numbers (RecordError naming the key and the raw value otherwise)."""
    if not isinstance(value, (list, tuple)) or len(value) != n or not all(_is_number(v) for v in value):
        what = "x, y" if n == 2 else "x1, y1, x2, y2"
        raise _bad(task, f"{key} {raw!r}: expected [{what}] (numbers on the 0-1000 scale)")
    return [float(v) for v in value]


def _first(task: str, record: Mapping, key: str) -> Any:
    """record[key][0] (the official code's `data_entry[key][0]`), RecordError if absent or not a list."""
    raw = record.get(key)
    if raw is None:
        raise _bad(task, f"missing {key!r}")
    if not isinstance(raw, (list, tuple)) or len(raw) == 0:
        raise _bad(task, f"{key} {raw!r}: expected a non-empty list ([[...]])")
    return raw[0]


def _marker(task: str, record: Mapping, key: str) -> list[float]:
    n = 2 if key.endswith("_point") else 4
    return _coords(task, key, record.get(key), _first(task, record, key), n)


def _view(task: str, record: Mapping, key: str, pos: int, nviews: int) -> int:
    """record[key][0][pos]: a view index in [0, nviews) (RecordError naming key, value and view count)."""
    raw = record.get(key)
    idx = _first(task, record, key)
    if not isinstance(idx, (list, tuple)):
        raise _bad(task, f"{key} {raw!r}: expected [[view, view, ...]] ({nviews} views)")
    if pos >= len(idx):
        raise _bad(task, f"{key} {raw!r}: no entry {pos} (the task needs {pos + 1} view indices; "
                         f"{nviews} views)")
    v = idx[pos]
    if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)):
        raise _bad(task, f"{key} {raw!r}: entry {pos} ({v!r}) is not an integer view index ({nviews} views)")
    if not 0 <= int(v) < nviews:
        raise _bad(task, f"{key} {raw!r}: view index {int(v)} (entry {pos}) out of range for {nviews} views")
    return int(v)


# ------------------------------------------------------------------------------------- cv2 rasterisers

def _fill(arr: np.ndarray, y: int, x0: int, x1: int, color) -> None:
    """One inclusive horizontal span, clipped to the image."""
    h, w = arr.shape[:2]
    if 0 <= y < h:
        x0, x1 = max(x0, 0), min(x1, w - 1)
        if x0 <= x1:
            arr[y, x0:x1 + 1] = color


def _fill_rect(arr: np.ndarray, x0: int, y0: int, x1: int, y1: int, color) -> None:
    """Inclusive axis-aligned rectangle (cv2 FILLED / a thick axis-aligned segment), clipped."""
    h, w = arr.shape[:2]
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if x0 <= x1 and y0 <= y1:
        arr[y0:y1 + 1, x0:x1 + 1] = color


def _cv_circle_filled(arr: np.ndarray, cx: int, cy: int, r: int, color) -> None:
    """OpenCV's `Circle(..., fill=1)` raster (what cv2.circle(thickness=-1, LINE_8) and the round caps of
    thick LINE_8 lines draw)."""
    err, dx, dy, plus, minus = 0, r, 0, 1, 2 * r - 1
    while dx >= dy:
        _fill(arr, cy - dy, cx - dx, cx + dx, color)
        _fill(arr, cy + dy, cx - dx, cx + dx, color)
        _fill(arr, cy - dx, cx - dy, cx + dy, color)
        _fill(arr, cy + dx, cx - dy, cx + dy, color)
        dy += 1
        err += plus
        plus += 2
        if err > 0:
            err -= minus
            dx -= 1
            minus -= 2


def _cv_rectangle(arr: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], color, thickness: int) -> None:
    """cv2.rectangle(p1, p2, thickness>1, LINE_8): each edge is a band of half-width thickness/2 (integer
    pixel corners, inclusive), each corner a round cap of radius (thickness/2 rounded)."""
    (x1, y1), (x2, y2) = p1, p2
    half = thickness // 2                       # thickness is even here (20): exact half-width
    cap = (thickness * (1 << 15) + (1 << 15)) >> 16
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)),
                               ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        if ay == by and ax != bx:
            _fill_rect(arr, ax, ay - half, bx, ay + half, color)
        elif ax == bx and ay != by:
            _fill_rect(arr, ax - half, ay, ax + half, by, color)
        _cv_circle_filled(arr, bx, by, cap, color)


def cv_text_size(label: str, scale: float = FONT_SCALE, thickness: int = TEXT_THICKNESS) -> tuple[int, int]:
    """cv2.getTextSize(label, FONT_HERSHEY_SIMPLEX, scale, thickness)[0] for SPAR's labels."""
    try:
        advance = sum(_HERSHEY_ADVANCE[c] for c in label)
    except KeyError as e:
        raise ValueError(f"no Hershey advance for {e.args[0]!r} in label {label!r}") from None
    width = round(advance * scale + thickness)
    height = round((_HERSHEY_CAP + _HERSHEY_BASE) * scale + (thickness + 1) // 2)
    return width, height


@lru_cache(maxsize=4)
def _font(size: int):
    return ImageFont.load_default(size=size)


def _put_label(arr: np.ndarray, label: str, org: tuple[int, int], color, antialias: bool) -> None:
    """Approximates cv2.putText(label, org, FONT_HERSHEY_SIMPLEX, 2.0, color, 10) with PIL's default font:
    the baseline starts at `org` (cv2's bottom-left origin), the cap height is the Hershey one (21 units
    * scale), the glyphs are stretched to the Hershey ink width; `antialias` (LINE_AA) blends the edges,
    otherwise the text is binary like LINE_8."""
    tw, _ = cv_text_size(label)
    font = _font(round(30 * FONT_SCALE))
    target_w = max(tw - TEXT_THICKNESS, 1)
    if isinstance(font, ImageFont.FreeTypeFont):
        stroke = max(0, round((TEXT_THICKNESS + 1 - font.size / 10) / 2))
        l, t, r, b = font.getbbox(label, anchor="ls", stroke_width=stroke)
        mask = Image.new("L", (max(r - l, 1), max(b - t, 1)), 0)
        ImageDraw.Draw(mask).text((-l, -t), label, fill=255, font=font, anchor="ls",
                                  stroke_width=stroke, stroke_fill=255)
        top = org[1] + t
    else:  # bitmap fallback (PIL without FreeType): scale the text line to the Hershey ink height
        l, t, r, b = font.getbbox(label)
        small = Image.new("L", (max(r - l, 1), max(b - t, 1)), 0)
        ImageDraw.Draw(small).text((-l, -t), label, fill=255, font=font)
        mask = small.resize((small.width, round(28 * FONT_SCALE) + TEXT_THICKNESS), Image.NEAREST)
        top = org[1] - round(21 * FONT_SCALE) - TEXT_THICKNESS // 2
    mask = np.asarray(mask.resize((target_w, mask.height), Image.BILINEAR), dtype=np.float32) / 255.0
    x0, y0 = org[0], top
    h, w = arr.shape[:2]
    ys, xs = slice(max(y0, 0), min(y0 + mask.shape[0], h)), slice(max(x0, 0), min(x0 + mask.shape[1], w))
    if ys.start >= ys.stop or xs.start >= xs.stop:
        return
    m = mask[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    region = arr[ys, xs]
    if antialias:
        blend = region.astype(np.float32) * (1 - m[..., None]) + np.asarray(color, np.float32) * m[..., None]
        arr[ys, xs] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    else:
        region[m >= 0.5] = color


# --------------------------------------------------------------------------------------------- canvas

class _Canvas:
    """The views being drawn on: copies made on first touch, kept as PIL or numpy as the drawing needs."""

    def __init__(self, images: Sequence[np.ndarray], record: Mapping, task: str):
        self.images = list(images)
        self.record = record
        self.task = task
        self.n = len(self.images)
        self.work: dict[int, Any] = {}
        self.drawn: list[dict] = []

    # --- storage
    def _source(self, view: int) -> np.ndarray:
        img = self.images[view]
        arr = np.asarray(img)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"draw_markers: view {view} should be a uint8 [H, W, 3] array, "
                             f"got {arr.dtype} {arr.shape}")
        return arr

    def pil(self, view: int) -> Image.Image:
        cur = self.work.get(view)
        if isinstance(cur, Image.Image):
            return cur
        arr = cur if cur is not None else self._source(view)
        img = Image.fromarray(np.array(arr, dtype=np.uint8, copy=True))
        self.work[view] = img
        return img

    def array(self, view: int) -> np.ndarray:
        cur = self.work.get(view)
        if isinstance(cur, np.ndarray):
            return cur
        arr = np.array(cur) if cur is not None else np.array(self._source(view), copy=True)
        self.work[view] = arr
        return arr

    def size(self, view: int) -> tuple[int, int]:
        cur = self.work.get(view)
        if isinstance(cur, Image.Image):
            return cur.size
        h, w = (cur if cur is not None else self._source(view)).shape[:2]
        return w, h

    def result(self) -> list[np.ndarray]:
        out = list(self.images)
        for v, cur in self.work.items():
            out[v] = np.array(cur) if isinstance(cur, Image.Image) else cur
        return out

    # --- official record access
    def marker(self, key: str) -> list[float]:
        return _marker(self.task, self.record, key)

    def view(self, key: str, pos: int) -> int:
        return _view(self.task, self.record, key, pos, self.n)

    def single(self) -> int:
        if self.n != 1:
            raise _bad(self.task, f"a single-view task, but the record has {self.n} views")
        return 0

    # --- PIL drawing (draw_points / draw_thick_bbox)
    def pil_point(self, view: int, key: str, color: str) -> None:
        p = self.marker(key)
        w, h = self.size(view)
        s = (np.array(p) / 1000) * np.array([w, h])
        x, y = (int(c) for c in s)
        ImageDraw.Draw(self.pil(view)).ellipse([x - RADIUS, y - RADIUS, x + RADIUS, y + RADIUS],
                                               fill=color)
        self.drawn.append({"kind": "point", "color": color, "view": view, "xy": [x, y]})

    def pil_bbox(self, view: int, key: str, color: str) -> None:
        b = self.marker(key)
        w, h = self.size(view)
        s = (np.array(b) / 1000) * np.array([w, h, w, h])
        out = [int(c) for c in (s[0] - PIL_EXTEND, s[1] - PIL_EXTEND, s[2] + PIL_EXTEND, s[3] + PIL_EXTEND)]
        if out[2] < out[0] or out[3] < out[1]:
            raise _bad(self.task, f"{key} {self.record.get(key)!r}: the box is inverted "
                                  f"(x2 < x1 or y2 < y1 by more than the outline)")
        ImageDraw.Draw(self.pil(view)).rectangle(tuple(out), outline=color, width=STROKE)
        self.drawn.append({"kind": "bbox", "color": color, "view": view, "box": [int(c) for c in s]})

    # --- cv2 drawing
    def cv_box(self, view: int, box: Sequence[float], rgb) -> np.ndarray:
        """cv2.rectangle of the truncated box pushed out by 20 px, thickness 20; returns the box."""
        arr = self.array(view)
        h, w = arr.shape[:2]
        b = (np.array(box) / 1000) * np.array([w, h, w, h])
        b = b.astype(int)
        _cv_rectangle(arr, (int(b[0]) - CV_EXTEND, int(b[1]) - CV_EXTEND),
                      (int(b[2]) + CV_EXTEND, int(b[3]) + CV_EXTEND), rgb, STROKE)
        return b


# ------------------------------------------------------------------------------------- the draw rules

def _points(*colors):
    """Single-view PIL points (`<colour>_point`, in this order) on the only view."""
    def rule(c: _Canvas) -> None:
        v = c.single()
        for color in colors:
            c.pil_point(v, f"{color}_point", color)
    return rule


def _boxes(*colors):
    """Single-view PIL boxes (`<colour>_bbox`, in this order) on the only view."""
    def rule(c: _Canvas) -> None:
        v = c.single()
        for color in colors:
            c.pil_bbox(v, f"{color}_bbox", color)
    return rule


def _mv_points(*colors):
    """Multi-view PIL points: colour k on view point_img_idx[0][k]."""
    def rule(c: _Canvas) -> None:
        for k, color in enumerate(colors):
            c.pil_point(c.view("point_img_idx", k), f"{color}_point", color)
    return rule


def _mv_boxes(*placed):
    """Multi-view PIL boxes: (colour, position in bbox_img_idx[0])."""
    def rule(c: _Canvas) -> None:
        for color, pos in placed:
            c.pil_bbox(c.view("bbox_img_idx", pos), f"{color}_bbox", color)
    return rule


def _position_matching(c: _Canvas) -> None:
    if c.n < 1:
        raise _bad(c.task, "no views")
    c.pil_bbox(0, "red_bbox", "red")


def _obj_spatial_relation_oc_mv(c: _Canvas) -> None:
    present = [color for color in ("red", "blue", "green") if c.record.get(f"{color}_bbox")]
    if not present:
        raise _bad(c.task, "none of red_bbox, blue_bbox, green_bbox")
    v = c.view("bbox_img_idx", 0)
    for color in present:
        c.pil_bbox(v, f"{color}_bbox", color)


def _obj_spatial_relation_oo_mv(c: _Canvas) -> None:
    absent = [color for color in ("red", "blue", "green") if c.record.get(f"{color}_bbox") is None]
    if not absent:
        raise _bad(c.task, "red_bbox, blue_bbox and green_bbox all present (the task takes two)")
    pair = {"red": ("blue", "green"), "blue": ("red", "green"), "green": ("red", "blue")}[absent[0]]
    for pos, color in enumerate(pair):
        c.pil_bbox(c.view("bbox_img_idx", pos), f"{color}_bbox", color)


def _spatial_imagination_map_mv(c: _Canvas) -> None:
    boxes = _first(c.task, c.record, "bbox_list")
    if not isinstance(boxes, (list, tuple)):
        raise _bad(c.task, f"bbox_list {c.record.get('bbox_list')!r}: expected [[box, box, ...]]")
    for i, box in enumerate(boxes):
        box = _coords(c.task, f"bbox_list[0][{i}]", box, box, 4)
        v = c.view("bbox_img_idx", i)
        b = c.cv_box(v, box, CV_BLUE_ON_RGB)
        label = f"object{i}"
        tw, th = cv_text_size(label)
        arr = c.array(v)
        org = (int(b[2]) - tw, int(b[3]) + th)
        if org[1] > arr.shape[0]:
            org = (int(b[2]) - tw, int(b[3]) - th)
        _put_label(arr, label, org, CV_GREEN_ON_RGB, antialias=False)
        c.drawn.append({"kind": "bbox", "color": "blue", "view": v, "box": [int(x) for x in b], "label": label})


def _distance_infer_center_oo_video(c: _Canvas) -> None:
    points = _first(c.task, c.record, "point_list")
    if not isinstance(points, (list, tuple)):
        raise _bad(c.task, f"point_list {c.record.get('point_list')!r}: expected [[point, point, ...]]")
    for i, point in enumerate(points):
        point = _coords(c.task, f"point_list[0][{i}]", point, point, 2)
        v = c.view("point_img_idx", i)
        arr = c.array(v)
        h, w = arr.shape[:2]
        x, y = (int(s) for s in (np.array(point) / 1000) * np.array([w, h]))
        _cv_circle_filled(arr, x, y, RADIUS, CV_BLUE_ON_RGB)
        label = "objectA" if i == 0 else f"object{i - 1}"
        _put_label(arr, label, (x + 20, y + 20), CV_GREEN_ON_RGB, antialias=False)
        c.drawn.append({"kind": "point", "color": "blue", "view": v, "xy": [x, y], "label": label})


def _spatial_imagination_video(count: int):
    def rule(c: _Canvas) -> None:
        for i, (key, name, bgr, label) in enumerate(_VIDEO_BOXES[:count]):
            v = c.view("bbox_img_idx", i)
            rgb = bgr[::-1]                     # drawn on the BGR copy, read back as RGB
            b = c.cv_box(v, c.marker(key), rgb)
            arr = c.array(v)
            tw, th = cv_text_size(label)
            tx, ty = int(b[2]) - tw, int(b[3]) + th
            if ty > arr.shape[0]:
                ty = int(b[3]) - 5
            _fill_rect(arr, tx, ty - th, tx + tw, ty + 5, rgb)
            _put_label(arr, label, (tx, ty), WHITE, antialias=True)
            c.drawn.append({"kind": "bbox", "color": name, "view": v, "box": [int(x) for x in b], "label": label})
    return rule


def _pass(c: _Canvas) -> None:
    return None


_RULES: dict[str, Callable[[_Canvas], None]] = {
    # single view (the record's only image)
    "obj_spatial_relation_oo": _boxes("red", "blue"),
    "depth_prediction_oc": _points("red", "blue"),
    "depth_prediction_oo": _points("red", "blue", "green"),
    "distance_prediction_oc": _points("red"),
    "distance_prediction_oo": _points("red", "blue"),
    "distance_infer_center_oc": _pass,
    "distance_infer_center_oo": _points("red", "blue", "green"),
    "spatial_volume_infer": _boxes("red"),
    "spatial_imagination_oc": _boxes("red", "blue", "green"),
    "spatial_imagination_oo": _boxes("red", "blue", "green", "yellow"),
    # multi view
    "position_matching": _position_matching,
    "view_change_infer": _pass,
    "depth_prediction_oc_mv": _mv_points("red", "blue"),
    "depth_prediction_oo_mv": _mv_points("red", "blue", "green"),
    "distance_prediction_oc_mv": _mv_points("red"),
    "distance_prediction_oo_mv": _mv_points("red", "blue"),
    "obj_spatial_relation_oc_mv": _obj_spatial_relation_oc_mv,
    "obj_spatial_relation_oo_mv": _obj_spatial_relation_oo_mv,
    "distance_infer_center_oc_mv": _pass,
    "distance_infer_center_oo_mv": _mv_points("red", "green", "blue"),
    "spatial_imagination_oc_mv": _mv_boxes(("red", 2), ("green", 0), ("blue", 1)),
    "spatial_imagination_oo_mv": _mv_boxes(("red", 2), ("green", 0), ("blue", 1), ("yellow", 3)),
    "spatial_imagination_map_mv": _spatial_imagination_map_mv,
    "camera_motion_infer": _pass,
    # video
    "distance_prediction_oo_video": _mv_points("red", "blue"),
    "distance_infer_center_oo_video": _distance_infer_center_oo_video,
    "spatial_imagination_oo_video": _spatial_imagination_video(4),
    "spatial_imagination_oc_video": _spatial_imagination_video(3),
    "spatial_imagination_oc_video_hard": _pass,
    "spatial_imagination_oo_video_hard": _pass,
    "obj_frame_locate": _mv_boxes(("red", 0)),
    "appearance_order": _pass,
    "room_size": _pass,
    "obj_count": _pass,
    "nav": _pass,
}

PASS_TASKS = frozenset(t for t, r in _RULES.items() if r is _pass)
DRAWN_TASKS = frozenset(_RULES) - PASS_TASKS


def marker_tasks() -> frozenset[str]:
    """Every task SPAR's loader knows (draws on or passes over)."""
    return frozenset(_RULES)


def draw_markers(images: Sequence[np.ndarray], record: Mapping, task: str | None
                 ) -> tuple[list[np.ndarray], list[dict]]:
    """Draws the record's markers onto its views as fudan-zvg/spar's loader does.

    `images`: the views in record order, uint8 [H, W, 3] RGB at their original size (never modified:
    a view drawn on is returned as a new array, the others as the same objects). Returns the views and
    one dict per drawn marker, in drawing order: {"kind": "point", "color", "view", "xy": [x, y]} or
    {"kind": "bbox", "color", "view", "box": [x1, y1, x2, y2]} (pixels after scaling and int(), before
    any outward extension), plus "label" where a text label is drawn.

    RecordError "bad marker": a marker the task needs is missing or malformed, or a view index is out of
    range; "unknown marker task": the record has markers but SPAR has no draw rule for the task.
    """
    rule = _RULES.get(task) if isinstance(task, str) else None
    if rule is None:
        if has_markers(record):
            keys = [k for k in MARKER_KEYS if _nonempty(record.get(k))]
            raise RecordError(f"task {task!r} has markers ({', '.join(keys)}) but SPAR's loader has no "
                              f"draw rule for it", "unknown marker task")
        return list(images), []
    canvas = _Canvas(images, record, task)
    rule(canvas)
    return canvas.result(), canvas.drawn


class _DryCanvas(_Canvas):
    """Checks what `draw_markers` would check (keys, shapes, view indices, inverted boxes) without drawing:
    selection validates every candidate this way, thousands per second. The cv2-style rules (rare tasks)
    still draw, on the 8x8 stand-in views they are given."""

    def size(self, view: int) -> tuple[int, int]:
        return 1000, 1000

    def pil_point(self, view: int, key: str, color: str) -> None:
        self.marker(key)

    def pil_bbox(self, view: int, key: str, color: str) -> None:
        b = self.marker(key)
        if b[2] + 2 * PIL_EXTEND < b[0] or b[3] + 2 * PIL_EXTEND < b[1]:
            raise _bad(self.task, f"{key} {self.record.get(key)!r}: the box is inverted "
                                  f"(x2 < x1 or y2 < y1 by more than the outline)")


def check_markers(record: Mapping, task: str | None, num_views: int) -> None:
    """RecordError (as `draw_markers` would raise it) if the record's markers cannot be drawn on
    `num_views` views; nothing is drawn."""
    rule = _RULES.get(task) if isinstance(task, str) else None
    if rule is None:
        draw_markers([], record, task)          # raises "unknown marker task" iff there are markers
        return
    rule(_DryCanvas([np.zeros((8, 8, 3), np.uint8)] * num_views, record, task))
