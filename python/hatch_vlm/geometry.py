"""Camera geometry helpers shared by the data, PaStA and ActoR code (numpy, float64): the one home of the
viewer model and of its motion type.

Conventions (docs/design.md): OpenCV camera axes (x right, y down, z forward); poses are camera-to-world
4x4 matrices; K in pixels, pixel (r, c) centred at (u, v) = (c, r); depth is z-depth in metres. World
"up" is a parameter (default +z, as ScanNet / SPAR).

A *viewer* (ActoR's action model) has a position, a yaw about world up and a pitch, and no roll:

* yaw: heading angle in the horizontal plane, counter-clockwise seen from above (so a positive change is
  a turn to the *left*). Measured in the horizontal basis ``(e1, e2)`` of :func:`up_basis` (for up = +z:
  e1 = +x, e2 = +y, yaw 0 faces +x).
* pitch: elevation of the viewing direction above the horizontal (positive looks up).

Units: lengths are metres everywhere. The pose-level functions (`yaw_pitch`, `pose_from_yaw_pitch`,
`heading`, `wrap_radians`) work in radians, as numpy's trigonometry does. A :class:`Motion` holds its angles
in **degrees** (`yaw_deg`, `pitch_deg`), the unit of the ActoR action text, the rewards and the questions:
`relative_motion` converts once from radians, `compose_motion` back, and nothing else converts.

Public functions:
    validate_pose, validate_poses, validate_intrinsics  -> raise ValueError naming what is wrong
    normalize_up, up_basis                               -> world-up handling
    relative_pose(T_a, T_b)                              -> pose of b in a's camera frame
    yaw_pitch(T, up), pose_from_yaw_pitch(pos, yaw, pitch, up), look_at(eye, target, up)
    relative_motion(T_a, T_b, up) / compose_motion(T_a, motion, up)  -> viewer-frame Motion and back
    wrap_radians, wrap_degrees                           -> angles into (-pi, pi] / (-180, 180]
    intrinsics(size, fov_deg), unproject_depth, project_points, transform_points, reproject, visible_in
"""
from __future__ import annotations

import functools

import math
from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np

UP_Z = (0.0, 0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------
def validate_pose(T, name: str = "pose", atol: float = 1e-4) -> np.ndarray:
    """Check one camera-to-world pose: 4x4, finite, last row (0, 0, 0, 1), rotation orthonormal with
    det +1. Returns it as float64; raises ValueError naming `name` and what is wrong."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"{name}: expected a 4x4 camera-to-world matrix, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError(f"{name}: contains non-finite values")
    if not np.allclose(T[3], [0, 0, 0, 1], atol=atol):
        raise ValueError(f"{name}: last row must be (0, 0, 0, 1), got {T[3].tolist()}")
    R = T[:3, :3]
    err = np.abs(R.T @ R - np.eye(3)).max()
    if err > atol:
        raise ValueError(f"{name}: rotation block is not orthonormal (max |R^T R - I| = {err:.2e})")
    det = np.linalg.det(R)
    if det < 0:
        raise ValueError(f"{name}: rotation block has det {det:.3f} (a reflection); expected +1")
    return T


def validate_poses(T, name: str = "cam_to_world", atol: float = 1e-4) -> np.ndarray:
    """Check a stack `[..., 4, 4]` of poses (each as :func:`validate_pose`)."""
    T = np.asarray(T, dtype=np.float64)
    if T.ndim < 2 or T.shape[-2:] != (4, 4):
        raise ValueError(f"{name}: expected [..., 4, 4], got shape {T.shape}")
    for idx in np.ndindex(T.shape[:-2]):
        validate_pose(T[idx], f"{name}{list(idx)}", atol)
    return T


def validate_intrinsics(K, name: str = "K") -> np.ndarray:
    """Check one pinhole K (3x3, finite, fx, fy > 0, zero skew row layout). Returns float64."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape == (4, 4):       # ScanNet-style files store a 4x4; the 3x3 block is K
        K = K[:3, :3]
    if K.shape != (3, 3):
        raise ValueError(f"{name}: expected a 3x3 intrinsic matrix, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError(f"{name}: contains non-finite values")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"{name}: focal lengths must be > 0, got fx={K[0, 0]}, fy={K[1, 1]}")
    if not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
        raise ValueError(f"{name}: expected rows [fx s cx; 0 fy cy; 0 0 1], got {K.tolist()}")
    return K


# --------------------------------------------------------------------------------------------------
# World up
# --------------------------------------------------------------------------------------------------
def normalize_up(up=UP_Z) -> np.ndarray:
    """Unit world-up vector (float64 [3]); raises on a zero / non-finite / wrong-size vector."""
    u = np.asarray(up, dtype=np.float64).reshape(-1)
    if u.shape != (3,) or not np.all(np.isfinite(u)):
        raise ValueError(f"world_up: expected 3 finite numbers, got {up!r}")
    n = np.linalg.norm(u)
    if n < 1e-9:
        raise ValueError(f"world_up: must be non-zero, got {up!r}")
    return u / n


def up_basis(up=UP_Z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-handed orthonormal basis (e1, e2, up) with e1, e2 horizontal and e1 x e2 = up.
    For up = +z this is exactly (+x, +y, +z); otherwise e1 is the world axis least aligned with up,
    made horizontal, so the basis is deterministic."""
    u = normalize_up(up)
    if np.allclose(u, UP_Z):
        return np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0])
    axis = np.eye(3)[np.argmin(np.abs(u))]
    e1 = axis - axis.dot(u) * u
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    return e1, e2, u


# --------------------------------------------------------------------------------------------------
# Poses
# --------------------------------------------------------------------------------------------------
def relative_pose(T_a, T_b) -> np.ndarray:
    """Pose of camera b expressed in camera a's frame: T_a^-1 T_b (maps b-coords to a-coords).
    Works on stacks: T_a, T_b `[..., 4, 4]`."""
    T_a = np.asarray(T_a, dtype=np.float64)
    T_b = np.asarray(T_b, dtype=np.float64)
    return np.linalg.inv(T_a) @ T_b


def heading(yaw: float, up=UP_Z) -> np.ndarray:
    """Horizontal unit vector at angle `yaw` (radians, CCW about up from e1)."""
    e1, e2, _ = up_basis(up)
    return np.cos(yaw) * e1 + np.sin(yaw) * e2


def yaw_pitch(T, up=UP_Z) -> tuple[float, float]:
    """(yaw, pitch) in radians of a camera-to-world pose's viewing direction (its +z axis).
    Roll is ignored. A camera looking straight up/down has an undefined yaw: we return the yaw of its
    image 'up' direction (-y axis) when looking down and of its image 'down' (+y) when looking up: the
    limits of a no-roll pose's yaw as its pitch goes to -90 / +90 degrees, so the result stays continuous."""
    T = np.asarray(T, dtype=np.float64)
    e1, e2, u = up_basis(up)
    f = T[:3, 2]
    pitch = float(np.arcsin(np.clip(f.dot(u), -1.0, 1.0)))
    h = f - f.dot(u) * u
    if np.linalg.norm(h) < 1e-9:
        # Tilting a no-roll camera up swings its image 'down' axis towards the old heading, tilting it
        # down swings its image 'up' axis there.
        h = T[:3, 1] if f.dot(u) > 0 else -T[:3, 1]
    return float(np.arctan2(h.dot(e2), h.dot(e1))), pitch


def pose_from_yaw_pitch(position, yaw: float, pitch: float, up=UP_Z) -> np.ndarray:
    """Camera-to-world pose (OpenCV axes, no roll) at `position` with the given yaw and pitch (rad)."""
    _, _, u = up_basis(up)
    f = np.cos(pitch) * heading(yaw, up) + np.sin(pitch) * u
    right = np.cross(f, u)                 # facing e1 with up +z: right = e1 x up = -e2
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2] = right, down, f
    T[:3, 3] = np.asarray(position, dtype=np.float64)
    return T


def look_at(eye, target, up=UP_Z) -> np.ndarray:
    """Camera-to-world pose at `eye` looking at `target`, no roll (image rows stay level)."""
    eye = np.asarray(eye, dtype=np.float64)
    d = np.asarray(target, dtype=np.float64) - eye
    n = np.linalg.norm(d)
    if n < 1e-9:
        raise ValueError(f"look_at: eye and target coincide ({eye.tolist()})")
    _, _, u = up_basis(up)
    e1, e2, _ = up_basis(up)
    pitch = float(np.arcsin(np.clip(d.dot(u) / n, -1, 1)))
    yaw = float(np.arctan2(d.dot(e2), d.dot(e1)))
    return pose_from_yaw_pitch(eye, yaw, pitch, up)


def wrap_radians(a):
    """Wrap radians into (-pi, pi] (numpy, element-wise)."""
    return -((-np.asarray(a) + np.pi) % (2 * np.pi) - np.pi)


def wrap_degrees(a: float) -> float:
    """Wrap one angle in degrees into (-180, 180]."""
    a = math.fmod(a, 360.0)
    if a <= -180.0:
        a += 360.0
    elif a > 180.0:
        a -= 360.0
    return a


@dataclass(frozen=True)
class Motion:
    """Motion of a roll-free viewer from pose a to pose b, in a's horizontal frame.

    forward, left: horizontal displacement along a's heading and to its left (metres);
    up: displacement along world up (metres);
    yaw_deg: heading change b - a (degrees, wrapped to (-180, 180]; + = turned left);
    pitch_deg: pitch of b minus pitch of a (degrees; + = looks more up).

    As a list ([forward, left, up, yaw_deg, pitch_deg]) it is the `gold_motions` column of ActoR's data."""
    forward: float
    left: float
    up: float
    yaw_deg: float
    pitch_deg: float

    @property
    def distance(self) -> float:
        return float(np.sqrt(self.forward ** 2 + self.left ** 2 + self.up ** 2))

    def as_list(self) -> list[float]:
        return [self.forward, self.left, self.up, self.yaw_deg, self.pitch_deg]

    @classmethod
    def from_list(cls, values: Sequence[float]) -> Motion:
        if len(values) != 5:
            raise ValueError(f"a motion needs 5 numbers (forward, left, up, yaw_deg, pitch_deg), got {len(values)}")
        return cls(*(float(v) for v in values))


def relative_motion(T_a, T_b, up=UP_Z) -> Motion:
    """Viewer-frame motion that takes camera a to camera b (see :class:`Motion`; roll is ignored)."""
    T_a = np.asarray(T_a, dtype=np.float64)
    T_b = np.asarray(T_b, dtype=np.float64)
    _, _, u = up_basis(up)
    yaw_a, pitch_a = yaw_pitch(T_a, up)
    yaw_b, pitch_b = yaw_pitch(T_b, up)
    d = T_b[:3, 3] - T_a[:3, 3]
    h_f = heading(yaw_a, up)
    h_l = np.cross(u, h_f)
    # radians -> degrees here, once (the wrap in radians first, as this function always did)
    return Motion(forward=float(d.dot(h_f)), left=float(d.dot(h_l)), up=float(d.dot(u)),
                  yaw_deg=wrap_degrees(math.degrees(float(wrap_radians(yaw_b - yaw_a)))),
                  pitch_deg=math.degrees(float(pitch_b - pitch_a)))


def compose_motion(T_a, m: Motion, up=UP_Z) -> np.ndarray:
    """Inverse of :func:`relative_motion`: the (roll-free) pose reached from a by motion m."""
    T_a = np.asarray(T_a, dtype=np.float64)
    _, _, u = up_basis(up)
    yaw_a, pitch_a = yaw_pitch(T_a, up)
    h_f = heading(yaw_a, up)
    h_l = np.cross(u, h_f)
    pos = T_a[:3, 3] + m.forward * h_f + m.left * h_l + m.up * u
    return pose_from_yaw_pitch(pos, yaw_a + math.radians(m.yaw_deg), pitch_a + math.radians(m.pitch_deg), up)


# --------------------------------------------------------------------------------------------------
# Pinhole projection
# --------------------------------------------------------------------------------------------------
def intrinsics(size: int | tuple[int, int], fov_deg: float) -> np.ndarray:
    """K for an image of `size` (S or (H, W)) px with horizontal field of view `fov_deg`, square
    pixels, principal point at the image centre ((W-1)/2, (H-1)/2) in the pixel-centre convention."""
    H, W = (size, size) if np.isscalar(size) else size
    f = (W / 2.0) / np.tan(np.deg2rad(fov_deg) / 2.0)
    return np.array([[f, 0, (W - 1) / 2.0], [0, f, (H - 1) / 2.0], [0, 0, 1.0]])


def transform_points(T, X) -> np.ndarray:
    """Apply a 4x4 transform to points X `[..., 3]`."""
    T = np.asarray(T, dtype=np.float64)
    return np.asarray(X, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]


def project_points(K, X_cam) -> tuple[np.ndarray, np.ndarray]:
    """Project camera-frame points `[..., 3]` -> (uv `[..., 2]` pixels, z `[...]`). uv is NaN where
    z <= 1e-6 (behind the camera)."""
    X = np.asarray(X_cam, dtype=np.float64)
    z = X[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = X @ np.asarray(K, dtype=np.float64).T
        uv = p[..., :2] / z[..., None]
    uv[z <= 1e-6] = np.nan
    return uv, z


def unproject_depth(depth, K) -> np.ndarray:
    """Camera-frame points `[H, W, 3]` of a z-depth map `[H, W]` (metres): d K^-1 (c, r, 1)."""
    depth = np.asarray(depth, dtype=np.float64)
    H, W = depth.shape
    rr, cc = np.mgrid[0:H, 0:W]
    pix = np.stack([cc, rr, np.ones_like(rr)], -1).astype(np.float64)
    return (pix @ np.linalg.inv(K).T) * depth[..., None]


def reproject(depth_a, K_a, T_a, K_b, T_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where view a's pixels land in view b (docs/design.md step 1, nearest pixel).

    Args: depth_a `[H, W]` z-depth (metres), K_a / K_b 3x3, T_a / T_b camera-to-world 4x4.
    Returns: (rows `[H, W]` int, cols `[H, W]` int, z `[H, W]` depth of the point in b's frame).
        rows / cols are -1 where the pixel has invalid depth, lands behind b, or outside `depth_a`'s
        image size (b is assumed to have the same size).
    """
    depth_a = np.asarray(depth_a, dtype=np.float64)
    H, W = depth_a.shape
    valid = np.isfinite(depth_a) & (depth_a > 0)
    X_a = unproject_depth(np.where(valid, depth_a, 0), K_a)
    X_b = transform_points(np.linalg.inv(np.asarray(T_b, dtype=np.float64)) @ np.asarray(T_a, dtype=np.float64), X_a)
    uv, z = project_points(K_b, X_b)
    with np.errstate(invalid="ignore"):
        col = np.floor(uv[..., 0] + 0.5)
        row = np.floor(uv[..., 1] + 0.5)
        ok = valid & (z > 1e-6) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    rows = np.where(ok, row, -1).astype(np.int64)
    cols = np.where(ok, col, -1).astype(np.int64)
    return rows, cols, z


@functools.lru_cache(maxsize=1)
def op_tolerances() -> tuple[float, float]:
    """`hatch_ext.ops.ABS_TOL`, `REL_TOL`: imported when torch is loaded already, else read from the module's
    source without importing it (loading the ops loads torch, ~1 s that `hatch-vlm data synth` does not
    otherwise need, and a process that imported torch is not forked to render)."""
    import sys

    if "torch" in sys.modules:
        from hatch_ext.ops import ABS_TOL, REL_TOL

        return float(ABS_TOL), float(REL_TOL)
    import ast
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("hatch_ext")
    source = Path(list(spec.submodule_search_locations)[0]) / "ops.py"
    found = {}
    for node in ast.parse(source.read_text()).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in ("ABS_TOL", "REL_TOL")):
            found[node.targets[0].id] = float(ast.literal_eval(node.value))
    if set(found) != {"ABS_TOL", "REL_TOL"}:
        raise RuntimeError(f"{source}: ABS_TOL / REL_TOL are not plain assignments any more ({found})")
    return found["ABS_TOL"], found["REL_TOL"]


def visible_in(depth_a, K_a, T_a, depth_b, K_b, T_b, abs_tol: float | None = None,
               rel_tol: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel visibility of view a's pixels in view b (docs/design.md's test, nearest-pixel lookup).

    Why a numpy twin of the op's test exists: the synthetic data generator checks candidate camera layouts
    with it (`hatch_vlm.data.synthetic.overlap_ok`) on numpy renders, per pixel, without torch; switching it
    to `hatch_ext.ops.patch_overlap` could decide boundary pixels differently and so change generated data.
    The tolerances are not a second rule: left as None they are the ops' own defaults
    (`hatch_ext.ops.ABS_TOL` / `REL_TOL`, see `op_tolerances`).

    Returns (visible `[H, W]` bool, rows, cols, z) with rows/cols/z as in :func:`reproject`."""
    if abs_tol is None or rel_tol is None:
        ABS_TOL, REL_TOL = op_tolerances()
        abs_tol = ABS_TOL if abs_tol is None else abs_tol
        rel_tol = REL_TOL if rel_tol is None else rel_tol
    rows, cols, z = reproject(depth_a, K_a, T_a, K_b, T_b)
    depth_b = np.asarray(depth_b, dtype=np.float64)
    land = rows >= 0
    D = np.where(land, depth_b[np.maximum(rows, 0), np.maximum(cols, 0)], np.nan)
    with np.errstate(invalid="ignore"):
        vis = land & np.isfinite(D) & (D > 0) & (np.abs(z - D) <= abs_tol + rel_tol * D)
    return vis, rows, cols, z
