"""Vectorised ray casting of a :class:`~hatch_vlm.data.scene.Scene` (numpy, one pass per primitive over all
pixels of a view).

Each pixel (r, c) shoots the ray o + t·d with d = R K⁻¹ (c, r, 1): d has camera-frame z = 1, so the
ray parameter t of the first hit *is* the pixel's z-depth (exact, no conversion). Objects are tested
only on the rays that hit their bounding sphere. Shapes: oriented boxes (slab test), balls,
vertical cylinders (side + top cap) and vertical cones (side; their bases rest on the floor and so face
away from any camera above it). Shading: objects Lambert + ambient; room surfaces procedural texture ×
large-scale brightness noise × a per-surface factor.

    render_view(scene, K, cam_to_world, H, W) -> (rgb uint8 [H, W, 3], depth float32 [H, W], ids int16 [H, W])

ids: object index (0, 1, ...) or -1 - s for room surface s (SURFACES order).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .scene import SURFACES, Scene, SceneObject, Texture

EPS = 1e-6
# Rays, hits and shading in float32: half the memory traffic of float64; z-depth stays exact to ~1e-6
# relative (far below the 1 mm of the depth PNGs and the 5 cm of the PaStA visibility test).
DTYPE = np.float32
LIGHT = np.array([0.35, 0.25, 0.90]) / np.linalg.norm([0.35, 0.25, 0.90])
SURFACE_SHADE = {"floor": 1.0, "ceiling": 0.95, "wall_x0": 0.88, "wall_x1": 0.78,
                 "wall_y0": 0.83, "wall_y1": 0.93}


@lru_cache(maxsize=1)
def _noise_table(n: int = 128, cells: int = 16) -> np.ndarray:
    """Smooth periodic value noise in [0, 1], [n, n]; fixed (seed 0) so textures are reproducible."""
    g = np.random.default_rng(0).random((cells, cells))
    x = np.arange(n) * cells / n
    i0 = np.floor(x).astype(int)
    f = x - i0
    f = f * f * (3 - 2 * f)                       # smoothstep: no visible grid lines
    i1 = (i0 + 1) % cells
    rows = g[i0] * (1 - f)[:, None] + g[i1] * f[:, None]
    out = rows[:, i0] * (1 - f)[None] + rows[:, i1] * f[None]
    out -= out.min()
    return (out / out.max()).astype(DTYPE)


def _noise(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Periodic value noise at continuous coords >= 0 (period 16 units), nearest lookup.
    (Coordinates in a room are >= 0, so truncation is floor and a bit mask is the modulo.)"""
    tab = _noise_table()
    n = tab.shape[0]
    iu = (u * DTYPE(n / 16.0)).astype(np.int32) & (n - 1)
    iv = (v * DTYPE(n / 16.0)).astype(np.int32) & (n - 1)
    return tab.ravel()[iu * n + iv]


def texture_colour(tex: Texture, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] `[N, 3]` of a procedural texture at surface coords (u, v) >= 0 in metres."""
    s = DTYPE(1.0 / tex.scale)
    if tex.pattern == "checkers":
        m = (((u * s).astype(np.int32) + (v * s).astype(np.int32)) & 1).astype(DTYPE)
    elif tex.pattern == "stripes_u":
        m = ((u * s).astype(np.int32) & 1).astype(DTYPE)
    elif tex.pattern == "stripes_v":
        m = ((v * s).astype(np.int32) & 1).astype(DTYPE)
    elif tex.pattern == "noise":
        m = _noise(u * s, v * s)
    else:
        raise ValueError(f"texture pattern: unknown {tex.pattern!r}")
    a = np.asarray(tex.colour_a, dtype=DTYPE)
    b = np.asarray(tex.colour_b, dtype=DTYPE)
    # Large-scale brightness variation: makes each place on a surface look different from the next
    # period of its pattern, so cross-view correspondence is learnable.
    bright = DTYPE(0.7) + DTYPE(0.6) * _noise(u * DTYPE(0.4) + DTYPE(tex.offset[0]),
                                              v * DTYPE(0.4) + DTYPE(tex.offset[1]))
    return (a[None] + m[:, None] * (b - a)[None]) * bright[:, None]


# --------------------------------------------------------------------------------------------------
# Ray-primitive intersections. o: [3] origin, d: [N, 3] directions (not unit). Return t [N] (inf where
# missed) and normals [N, 3] (world, unit; garbage where missed).
# --------------------------------------------------------------------------------------------------
def _hit_box(o, d, ob: SceneObject):
    c, s = np.cos(ob.yaw), np.sin(ob.yaw)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])   # local -> world
    ol = R.T @ (o - np.asarray(ob.center))
    dl = d @ R                                          # = (R^T d^T)^T
    dl = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
    h = np.asarray(ob.half)
    t1 = (-h - ol) / dl
    t2 = (h - ol) / dl
    tn = np.minimum(t1, t2)
    tf = np.maximum(t1, t2)
    axis = np.argmax(tn, axis=1)
    tmin = np.take_along_axis(tn, axis[:, None], 1)[:, 0]
    tmax = tf.min(axis=1)
    hit = (tmax >= tmin) & (tmin > EPS)
    t = np.where(hit, tmin, np.inf)
    nl = np.zeros_like(dl)
    rows = np.arange(len(d))
    nl[rows, axis] = -np.sign(dl[rows, axis])
    return t, nl @ R.T


def _hit_ball(o, d, ob: SceneObject):
    r = ob.half[0]
    oc = o - np.asarray(ob.center)
    a = np.einsum("ij,ij->i", d, d)
    b = d @ oc
    disc = b * b - a * (oc @ oc - r * r)
    ok = disc > 0
    t = (-b - np.sqrt(np.where(ok, disc, 0))) / a
    hit = ok & (t > EPS)
    t = np.where(hit, t, np.inf)
    n = (o + np.where(hit, t, 0)[:, None] * d - np.asarray(ob.center)) / r
    return t, n


def _hit_cylinder(o, d, ob: SceneObject):
    r = ob.half[0]
    cx, cy, cz = ob.center
    z0, z1 = cz - ob.half[2], cz + ob.half[2]
    ox, oy = o[0] - cx, o[1] - cy
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    a = dx * dx + dy * dy
    b = dx * ox + dy * oy
    disc = b * b - a * (ox * ox + oy * oy - r * r)
    ok = (disc > 0) & (a > 1e-12)
    ts = (-b - np.sqrt(np.where(ok, disc, 0))) / np.where(a > 1e-12, a, 1)
    zs = o[2] + ts * dz
    side = ok & (ts > EPS) & (zs >= z0) & (zs <= z1)
    with np.errstate(divide="ignore", invalid="ignore"):
        tc = (z1 - o[2]) / dz
    xc, yc = ox + tc * dx, oy + tc * dy
    cap = (dz < 0) & (tc > EPS) & (xc * xc + yc * yc <= r * r)
    t = np.where(side, ts, np.inf)
    t = np.where(cap & (tc < t), tc, t)
    use_cap = cap & (t == tc)
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    n = np.stack([(p[:, 0] - cx) / r, (p[:, 1] - cy) / r, np.zeros(len(d))], 1)
    n[use_cap] = (0, 0, 1)
    return t, n


def _hit_cone(o, d, ob: SceneObject):
    r = ob.half[0]
    cx, cy, cz = ob.center
    z0, z1 = cz - ob.half[2], cz + ob.half[2]          # base, apex heights
    k2 = (r / (z1 - z0)) ** 2
    ox, oy, w = o[0] - cx, o[1] - cy, z1 - o[2]
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    # x^2 + y^2 = k^2 (z1 - z)^2 along the ray: A t^2 + 2 B t + C = 0.
    A = dx * dx + dy * dy - k2 * dz * dz
    B = dx * ox + dy * oy + k2 * w * dz
    C = ox * ox + oy * oy - k2 * w * w
    disc = B * B - A * C
    ok = disc >= 0
    sq = np.sqrt(np.where(ok, disc, 0))
    safeA = np.where(np.abs(A) > 1e-12, A, 1)
    linear = np.where(np.abs(B) > 1e-12, -C / (2 * np.where(B == 0, 1, B)), np.inf)  # A == 0: one root
    r1 = np.where(np.abs(A) > 1e-12, (-B - sq) / safeA, linear)
    r2 = np.where(np.abs(A) > 1e-12, (-B + sq) / safeA, np.inf)
    t = np.full(len(d), np.inf)
    for root in (r1, r2):
        z = o[2] + root * dz
        good = ok & (root > EPS) & (z >= z0) & (z <= z1)
        t = np.where(good & (root < t), root, t)
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    n = np.stack([p[:, 0] - cx, p[:, 1] - cy, k2 * (z1 - p[:, 2])], 1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return t, n


_HIT = {"box": _hit_box, "ball": _hit_ball, "cylinder": _hit_cylinder, "cone": _hit_cone}


def _hit_room(o, dx, dy, dz, scene: Scene):
    """Exit distance from the inside of the room box (rays as component arrays) and which surface
    (index into SURFACES). The camera is strictly inside the room, so along each axis the ray leaves
    through the face it moves toward."""
    ext = (scene.width, scene.depth, scene.height)
    ts = []
    with np.errstate(divide="ignore"):
        for k, dk in enumerate((dx, dy, dz)):
            tk = np.where(dk > 0, DTYPE(ext[k] - o[k]), DTYPE(-o[k])) / dk
            ts.append(np.abs(tk, out=tk))          # dk == 0: -o/0 = -inf -> +inf (never reached)
    tx, ty, tz = ts
    t = np.minimum(np.minimum(tx, ty), tz)
    # axis x: wall_x0 / wall_x1 (2/3), axis y: wall_y0 / wall_y1 (4/5), axis z: floor / ceiling (0/1)
    surf = np.where(t == tz, (dz > 0).astype(np.int8),
                    np.where(t == tx, 2 + (dx > 0), 4 + (dy > 0)).astype(np.int8))
    return t, surf


@lru_cache(maxsize=8)
def _pixel_grid(K_bytes: bytes, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame ray components (x/z, y/z) of every pixel centre, float32 [N] each (z = 1)."""
    K = np.frombuffer(K_bytes).reshape(3, 3)
    Ki = np.linalg.inv(K)                      # upper triangular: x depends on (u, v), y on v only
    u = np.arange(W, dtype=np.float64)
    v = np.arange(H, dtype=np.float64)
    x = (Ki[0, 0] * u[None, :] + (Ki[0, 1] * v + Ki[0, 2])[:, None]).ravel()
    y = np.repeat(Ki[1, 1] * v + Ki[1, 2], W)
    return x.astype(DTYPE), y.astype(DTYPE)


@dataclass
class Hits:
    """Per-pixel result of :func:`cast` (N = H*W pixels, row-major)."""
    t: np.ndarray          # [N] float32 z-depth (metres)
    ids: np.ndarray        # [N] int16: object index, or -1 - surface index
    normals: np.ndarray    # [N, 3] float32 object normals (0 on room surfaces)
    o: np.ndarray          # [3] camera centre
    d: tuple               # (dx, dy, dz) world ray components, float32 [N] each


def cast(scene: Scene, K: np.ndarray, cam_to_world: np.ndarray, H: int, W: int) -> Hits:
    """Cast one ray per pixel: first hit of each (room surfaces, then objects on culled subsets)."""
    K = np.ascontiguousarray(K, dtype=np.float64)
    T = np.asarray(cam_to_world, dtype=np.float64)
    px, py = _pixel_grid(K.tobytes(), H, W)
    R = T[:3, :3].astype(DTYPE)
    dx, dy, dz = (R[k, 0] * px + R[k, 1] * py + R[k, 2] for k in range(3))
    return cast_rays(scene, T[:3, 3], dx, dy, dz)


def cast_rays(scene: Scene, origin, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> Hits:
    """First hits of the rays origin + t (dx, dy, dz) (world frame, components float32 [N] each,
    not normalised: t is in units of the direction). The origin must be inside the room."""
    dx, dy, dz = (np.ascontiguousarray(c, dtype=DTYPE) for c in (dx, dy, dz))
    o = np.asarray(origin, dtype=np.float64).copy()
    t, surf = _hit_room(o, dx, dy, dz, scene)
    ids = (-1 - surf).astype(np.int16)
    normals = np.zeros((len(t), 3), dtype=DTYPE)
    a = None
    for k, ob in enumerate(scene.objects):
        # Bounding-sphere cull: only rays that pass within bound_radius of the centre are tested.
        oc = (o - np.asarray(ob.center)).astype(DTYPE)
        if a is None:
            a = dx * dx + dy * dy + dz * dz
        b = dx * oc[0] + dy * oc[1] + dz * oc[2]
        disc = b * b - a * (oc @ oc - DTYPE(ob.bound_radius ** 2))
        cand = np.nonzero(disc > 0)[0]
        if cand.size == 0:
            continue
        tk, nk = _HIT[ob.kind](o, np.stack([dx[cand], dy[cand], dz[cand]], 1), ob)
        better = tk < t[cand]
        idx = cand[better]
        t[idx] = tk[better]
        ids[idx] = k
        normals[idx] = nk[better]
    return Hits(t, ids, normals, o, (dx, dy, dz))


def _surface_uv(name: str, o, t, d, m):
    """Texture coordinates (metres along the surface) of the hits m on surface `name`."""
    axes = (0, 1) if name in ("floor", "ceiling") else (1, 2) if name in ("wall_x0", "wall_x1") else (0, 2)
    tm = t[m]
    return tuple(DTYPE(o[k]) + tm * d[k][m] for k in axes)


def shade(scene: Scene, h: Hits) -> np.ndarray:
    """RGB float32 [N, 3] in [0, 1] for the hits of :func:`cast`."""
    rgb = np.zeros((len(h.t), 3), dtype=DTYPE)
    for s, name in enumerate(SURFACES):
        m = np.nonzero(h.ids == -1 - s)[0]
        if m.size == 0:
            continue
        u, v = _surface_uv(name, h.o, h.t, h.d, m)
        rgb[m] = texture_colour(scene.textures[s], u, v) * DTYPE(SURFACE_SHADE[name])
    for k, ob in enumerate(scene.objects):
        m = np.nonzero(h.ids == k)[0]
        if m.size == 0:
            continue
        lam = np.clip(h.normals[m] @ LIGHT.astype(DTYPE), 0, None)
        rgb[m] = ob.rgb.astype(DTYPE)[None] * (0.4 + 0.6 * lam)[:, None]
    return np.clip(rgb, 0, 1)


def render_view(scene: Scene, K: np.ndarray, cam_to_world: np.ndarray, H: int, W: int,
                with_rgb: bool = True):
    """Render one view. Returns (rgb uint8 [H, W, 3] or None, depth float32 [H, W] metres,
    ids int16 [H, W])."""
    h = cast(scene, K, cam_to_world, H, W)
    rgb = None
    if with_rgb:
        rgb = (shade(scene, h) * 255 + 0.5).astype(np.uint8).reshape(H, W, 3)
    return rgb, h.t.reshape(H, W), h.ids.reshape(H, W)
