"""Vectorised ray casting of a :class:`~hatch.data.scene.Scene` (numpy, one pass per primitive over all
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

from functools import lru_cache

import numpy as np

from .scene import SURFACES, Scene, SceneObject, Texture

EPS = 1e-6
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
    return out / out.max()


def _noise(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Periodic value noise at continuous coords (period 16 units), nearest lookup."""
    tab = _noise_table()
    n = tab.shape[0]
    iu = np.floor(u * (n / 16.0)).astype(np.int64) % n
    iv = np.floor(v * (n / 16.0)).astype(np.int64) % n
    return tab[iu, iv]


def texture_colour(tex: Texture, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] `[N, 3]` of a procedural texture at surface coords (u, v) in metres."""
    s = tex.scale
    if tex.pattern == "checkers":
        m = (np.floor(u / s) + np.floor(v / s)) % 2
    elif tex.pattern == "stripes_u":
        m = np.floor(u / s) % 2
    elif tex.pattern == "stripes_v":
        m = np.floor(v / s) % 2
    elif tex.pattern == "noise":
        m = _noise(u / s, v / s)
    else:
        raise ValueError(f"texture pattern: unknown {tex.pattern!r}")
    a, b = np.asarray(tex.colour_a), np.asarray(tex.colour_b)
    col = a[None] * (1 - m)[:, None] + b[None] * m[:, None]
    # Large-scale brightness variation: makes each place on a surface look different from the next
    # period of its pattern, so cross-view correspondence is learnable.
    bright = 0.7 + 0.6 * _noise(u * 0.4 + tex.offset[0], v * 0.4 + tex.offset[1])
    return col * bright[:, None]


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
    r1 = np.where(np.abs(A) > 1e-12, (-B - sq) / safeA, np.where(np.abs(B) > 1e-12, -C / (2 * np.where(B == 0, 1, B)), np.inf))
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


def _hit_room(o, d, scene: Scene):
    """Exit distance from the inside of the room box and which surface (index into SURFACES)."""
    lo = np.zeros(3)
    hi = np.array([scene.width, scene.depth, scene.height])
    with np.errstate(divide="ignore"):
        tpos = (hi - o) / d
        tneg = (lo - o) / d
    t_ax = np.where(d > 0, tpos, np.where(d < 0, tneg, np.inf))
    ax = np.argmin(t_ax, axis=1)
    t = t_ax[np.arange(len(d)), ax]
    pos = d[np.arange(len(d)), ax] > 0
    # axis 0: wall_x0 / wall_x1, axis 1: wall_y0 / wall_y1, axis 2: floor / ceiling
    surf = np.where(ax == 2, np.where(pos, 1, 0), np.where(ax == 0, np.where(pos, 3, 2), np.where(pos, 5, 4)))
    return t, surf


@lru_cache(maxsize=8)
def _pixel_rays(K_bytes: bytes, H: int, W: int) -> np.ndarray:
    K = np.frombuffer(K_bytes).reshape(3, 3)
    rr, cc = np.mgrid[0:H, 0:W]
    pix = np.stack([cc.ravel(), rr.ravel(), np.ones(H * W)], 1).astype(np.float64)
    return pix @ np.linalg.inv(K).T                    # [N, 3], z = 1


def cast(scene: Scene, K: np.ndarray, cam_to_world: np.ndarray, H: int, W: int):
    """Geometry of one view: (t [N] z-depth, ids [N], normals [N, 3], rays [N, 3] world, origin [3])."""
    K = np.ascontiguousarray(K, dtype=np.float64)
    T = np.asarray(cam_to_world, dtype=np.float64)
    d = _pixel_rays(K.tobytes(), H, W) @ T[:3, :3].T
    o = T[:3, 3].copy()
    t, surf = _hit_room(o, d, scene)
    ids = (-1 - surf).astype(np.int16)
    normals = np.zeros_like(d)
    a = np.einsum("ij,ij->i", d, d)
    for k, ob in enumerate(scene.objects):
        # Bounding-sphere cull: only rays that pass within bound_radius of the centre are tested.
        oc = o - np.asarray(ob.center)
        b = d @ oc
        disc = b * b - a * (oc @ oc - ob.bound_radius ** 2)
        cand = np.nonzero(disc > 0)[0]
        if cand.size == 0:
            continue
        tk, nk = _HIT[ob.kind](o, d[cand], ob)
        better = tk < t[cand]
        idx = cand[better]
        t[idx] = tk[better]
        ids[idx] = k
        normals[idx] = nk[better]
    return t, ids, normals, d, o


def shade(scene: Scene, t, ids, normals, d, o) -> np.ndarray:
    """RGB float [N, 3] in [0, 1] for the hits of :func:`cast`."""
    rgb = np.zeros_like(d)
    p = o + t[:, None] * d
    for s, name in enumerate(SURFACES):
        m = np.nonzero(ids == -1 - s)[0]
        if m.size == 0:
            continue
        q = p[m]
        if name in ("floor", "ceiling"):
            u, v = q[:, 0], q[:, 1]
        elif name in ("wall_x0", "wall_x1"):
            u, v = q[:, 1], q[:, 2]
        else:
            u, v = q[:, 0], q[:, 2]
        rgb[m] = texture_colour(scene.textures[s], u, v) * SURFACE_SHADE[name]
    for k, ob in enumerate(scene.objects):
        m = np.nonzero(ids == k)[0]
        if m.size == 0:
            continue
        lam = np.clip(normals[m] @ LIGHT, 0, None)
        rgb[m] = ob.rgb[None] * (0.4 + 0.6 * lam)[:, None]
    return np.clip(rgb, 0, 1)


def render_view(scene: Scene, K: np.ndarray, cam_to_world: np.ndarray, H: int, W: int,
                with_rgb: bool = True):
    """Render one view. Returns (rgb uint8 [H, W, 3] or None, depth float32 [H, W] metres,
    ids int16 [H, W])."""
    t, ids, normals, d, o = cast(scene, K, cam_to_world, H, W)
    rgb = None
    if with_rgb:
        rgb = (shade(scene, t, ids, normals, d, o) * 255 + 0.5).astype(np.uint8).reshape(H, W, 3)
    return rgb, t.astype(np.float32).reshape(H, W), ids.reshape(H, W)
