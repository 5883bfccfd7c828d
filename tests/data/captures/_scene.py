"""An analytic room for the capture tests: exact z-depth by ray casting (a box room with a cube in it), colour
from the 3D surface point (so views of the same surface look alike), and writers of the three capture
formats written from the format descriptions in ../shared/SCANS.md with numpy / PIL / json only (not the
readers' code). World up is +z; poses are built here as OpenCV camera-to-world (x right, y down, z forward).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

ROOM_LO, ROOM_HI = np.array([-2.5, -2.0, 0.0]), np.array([2.5, 2.0, 2.6])
CUBE_LO, CUBE_HI = np.array([0.3, -0.4, 0.0]), np.array([0.9, 0.2, 0.8])
GL_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenCV camera-to-world at `eye` looking at `target`, image rows level."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    f = target - eye
    f /= np.linalg.norm(f)
    right = np.cross(f, up)
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = right, down, f, eye
    return T


def intrinsics(H: int, W: int, fov_deg: float = 70.0) -> np.ndarray:
    """Pixel-centre K (centre of pixel c at u = c)."""
    f = (W / 2) / np.tan(np.deg2rad(fov_deg) / 2)
    return np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]])


def _rays(K, T, H, W):
    rr, cc = np.mgrid[0:H, 0:W]
    pix = np.stack([cc, rr, np.ones_like(rr)], -1).reshape(-1, 3).astype(np.float64)
    d_cam = pix @ np.linalg.inv(K).T                      # z = 1: t along it is the z-depth
    return T[:3, 3], d_cam @ T[:3, :3].T


def render(K, T, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """(z-depth [H, W] metres, colour uint8 [H, W, 3]) of the room seen by camera (K, T)."""
    o, d = _rays(K, T, H, W)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_room = np.where(d > 0, (ROOM_HI - o) / d, (ROOM_LO - o) / d)
        t_room = np.where(np.isfinite(t_room) & (t_room > 0), t_room, np.inf).min(1)
        t1, t2 = (CUBE_LO - o) / d, (CUBE_HI - o) / d
        tmin, tmax = np.minimum(t1, t2).max(1), np.maximum(t1, t2).min(1)
    hit = (tmax >= tmin) & (tmin > 1e-6)
    t = np.where(hit, np.minimum(tmin, t_room), t_room)
    X = o + d * t[:, None]
    cell = np.floor(X * 4 + 1e-6).astype(np.int64)
    h = (cell[:, 0] * 73856093) ^ (cell[:, 1] * 19349663) ^ (cell[:, 2] * 83492791)
    rgb = np.stack([(h >> s) & 255 for s in (0, 8, 16)], -1).astype(np.uint8)
    return t.reshape(H, W).astype(np.float64), rgb.reshape(H, W, 3)


def orbit_poses(n: int, radius: float = 1.2, height: float = 1.4, degrees_per_frame: float = 6.0) -> list:
    """Cameras walking a circle around the room's centre, each looking across the room."""
    out = []
    for k in range(n):
        a = np.deg2rad(k * degrees_per_frame)
        eye = [radius * np.cos(a), radius * np.sin(a) * 0.8, height + 0.1 * np.sin(3 * a)]
        target = [-1.5 * np.cos(a + 0.6), -1.2 * np.sin(a + 0.6), 0.9]
        out.append(look_at(eye, target))
    return out


def dolly_poses(n: int, start=(1.3, -0.2, 1.3), target=(-1.6, 0.3, 1.0), step: float = 0.18) -> list:
    """Cameras walking straight towards `target`, looking at it: each later camera stands in front of the
    earlier ones, inside their images (what the camera-motion "where was Image 2 taken from" question needs;
    an orbit never has it)."""
    start, target = np.asarray(start, float), np.asarray(target, float)
    ahead = (target - start) / np.linalg.norm(target - start)
    return [look_at(start + k * step * ahead, target) for k in range(n)]


def surface_point(K, T, depth, row: int, col: int) -> np.ndarray:
    """World point of pixel (row, col) of a view (pixel centre at (u, v) = (col, row))."""
    X = np.linalg.inv(K) @ np.array([col, row, 1.0]) * depth[row, col]
    return T[:3, :3] @ X + T[:3, 3]


def _save_depth_png(depth_m: np.ndarray, path: Path, unit: float) -> None:
    raw = np.round(depth_m / unit)
    raw = np.where(np.isfinite(raw) & (raw > 0) & (raw < 65536), raw, 0).astype(np.uint16)
    Image.fromarray(raw).save(path)


def write_nerfstudio(root: Path, poses, H: int = 48, W: int = 64, color_scale: int = 2, unit: float = 1e-3,
                     edit=None, depth=True, npy=False) -> Path:
    """A Nerfstudio capture: colour at `color_scale` x the depth size, OpenGL `transform_matrix`, cx/cy with
    nerfstudio's +0.5, depth PNG in `unit` metres (or .npy of raw values). `edit(k, frame_dict)` may change a
    frame's entry (drop keys, poison the pose)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    (root / "depth").mkdir(exist_ok=True)
    K = intrinsics(H, W)
    Hc, Wc = H * color_scale, W * color_scale
    Kc = intrinsics(Hc, Wc)
    frames = []
    for k, T in enumerate(poses):
        d, rgb = render(K, T, H, W)
        if color_scale != 1:
            _, rgb = render(Kc, T, Hc, Wc)
        Image.fromarray(rgb).save(root / "images" / f"frame_{k:05d}.jpg", quality=90)
        f = {"file_path": f"images/frame_{k:05d}.jpg", "transform_matrix": (T @ GL_FLIP).tolist()}
        if depth:
            if npy:
                np.save(root / "depth" / f"frame_{k:05d}.npy", (d / unit).astype(np.float32))
                f["depth_file_path"] = f"depth/frame_{k:05d}.npy"
            else:
                _save_depth_png(d, root / "depth" / f"frame_{k:05d}.png", unit)
                f["depth_file_path"] = f"depth/frame_{k:05d}.png"
        if edit is not None:
            edit(k, f)
        frames.append(f)
    meta = {"camera_model": "OPENCV", "fl_x": Kc[0, 0], "fl_y": Kc[1, 1], "cx": Kc[0, 2] + 0.5,
            "cy": Kc[1, 2] + 0.5, "w": Wc, "h": Hc, "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
            "frames": frames}
    if unit != 1e-3:
        meta["depth_unit_scale_factor"] = unit
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def write_scannet(root: Path, poses, H: int = 48, W: int = 64, color_scale: int = 2, bad_pose=()) -> Path:
    """A SensReader export: color/<i>.jpg, depth/<i>.png (mm), pose/<i>.txt (c2w; all -inf for `bad_pose`),
    intrinsic/intrinsic_{depth,color}.txt (4x4)."""
    for sub in ("color", "depth", "pose", "intrinsic"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    K = intrinsics(H, W)
    Kc = intrinsics(H * color_scale, W * color_scale)
    for k, T in enumerate(poses):
        d, _ = render(K, T, H, W)
        _, rgb = render(Kc, T, H * color_scale, W * color_scale)
        Image.fromarray(rgb).save(root / "color" / f"{k}.jpg", quality=90)
        _save_depth_png(d, root / "depth" / f"{k}.png", 1e-3)
        P = np.full((4, 4), -np.inf) if k in bad_pose else T
        np.savetxt(root / "pose" / f"{k}.txt", P, fmt="%f")
    for name, M in (("intrinsic_depth.txt", K), ("intrinsic_color.txt", Kc)):
        M4 = np.eye(4)
        M4[:3, :3] = M
        np.savetxt(root / "intrinsic" / name, M4, fmt="%f")
    return root


def axis_angle(R: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix (scipy, independent of the reader's Rodrigues)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_rotvec()


def write_arkitscenes(root: Path, poses, H: int = 48, W: int = 64, video: str = "41069025",
                      frame_dt: float = 1 / 60, pose_every: int = 6) -> Path:
    """ARKitScenes raw: one frame per pose in `poses` at 60 fps; the .traj holds world-to-camera samples of
    every `pose_every`-th frame (10 fps), timestamps with 4 decimals as the .traj has them, file names with 3."""
    for sub in ("lowres_wide", "lowres_depth", "lowres_wide_intrinsics"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    K = intrinsics(H, W)
    lines = []
    for k, T in enumerate(poses):
        ts = 100.0 + k * frame_dt
        name = f"{video}_{ts:.3f}"
        d, rgb = render(K, T, H, W)
        Image.fromarray(rgb).save(root / "lowres_wide" / f"{name}.png")
        _save_depth_png(d, root / "lowres_depth" / f"{name}.png", 1e-3)
        (root / "lowres_wide_intrinsics" / f"{name}.pincam").write_text(
            f"{W} {H} {K[0, 0]} {K[1, 1]} {K[0, 2]} {K[1, 2]}\n")
        if k % pose_every == 0:
            w2c = np.linalg.inv(T)
            r = axis_angle(w2c[:3, :3])
            lines.append(" ".join(f"{v:.8f}" for v in [round(ts, 4), *r, *w2c[:3, 3]]))
    (root / "lowres_wide.traj").write_text("\n".join(lines) + "\n")
    return root
