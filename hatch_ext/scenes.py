"""Synthetic camera rigs with exact depth: the ops' own geometry fixtures, in the package (not the tests),
because the training framework builds its textured toy rooms on them (hatch_vlm.pasta.scenes) and the
README shows them as stand-in data; `hatch_ext.testing` re-exports them for the tests and benchmarks.

`room_scene` renders z-depth by ray casting into an axis-aligned room (+z up) with optional spherical
occluders, from cameras placed near the room centre with random yaw/pitch, so views overlap a lot and
the occluders hide surfaces from some views (the depth test must reject those pixels).
`plane_pair` is the analytic case: a fronto-parallel plane seen by two cameras that differ by a pure
sideways translation, where the overlap is known by hand.

Why this is not `hatch_vlm.data.synthetic` (the other room generator): that one draws furnished rooms
(textured walls, boxes/balls/cylinders/cones with names) in numpy float32 for question answering, with
camera layouts chosen per question; this one gives bare rooms in torch at any dtype (float64 by default)
with invalid-depth pixels on demand, in `[B, V, ...]` op layout, seeded by a torch Generator. Both keep
their own generated data fixed (tests, benchmarks and the demo depend on it), so they are not merged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Scene", "intrinsics", "look_pose", "render_depth", "room_scene", "plane_pair"]


@dataclass
class Scene:
    depth: Tensor          # [B, V, H, W] z-depth, metres
    K: Tensor              # [B, V, 3, 3]
    cam_to_world: Tensor   # [B, V, 4, 4], OpenCV camera axes

    def to(self, *args, **kwargs) -> Scene:
        return Scene(self.depth.to(*args, **kwargs), self.K.to(*args, **kwargs),
                     self.cam_to_world.to(*args, **kwargs))


def intrinsics(H: int, W: int, fov_deg: float = 70.0, dtype=torch.float64) -> Tensor:
    f = 0.5 * W / math.tan(math.radians(fov_deg) / 2)
    return torch.tensor([[f, 0.0, (W - 1) / 2], [0.0, f, (H - 1) / 2], [0.0, 0.0, 1.0]], dtype=dtype)


def look_pose(position: Tensor, yaw: float, pitch: float) -> Tensor:
    """Camera-to-world (OpenCV axes: x right, y down, z forward) for a camera at `position` looking
    along yaw (about world +z) and pitch (positive = up)."""
    dt = position.dtype
    fwd = torch.tensor([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw),
                        math.sin(pitch)], dtype=dt)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=dt)
    right = torch.linalg.cross(fwd, up)
    right = right / right.norm()
    down = torch.linalg.cross(fwd, right)
    T = torch.eye(4, dtype=dt)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = right, down, fwd, position
    return T


def render_depth(K: Tensor, cam_to_world: Tensor, H: int, W: int, room: Tensor,
                 spheres: list[tuple[Tensor, float]]) -> Tensor:
    """z-depth [H, W] of the nearest surface: the inside of the room box (half-extents `room`) or a sphere."""
    dt = K.dtype
    rr, cc = torch.meshgrid(torch.arange(H, dtype=dt), torch.arange(W, dtype=dt), indexing="ij")
    rays_cam = torch.linalg.inv(K) @ torch.stack([cc, rr, torch.ones_like(rr)]).reshape(3, -1)
    d = cam_to_world[:3, :3] @ rays_cam                 # world directions with camera z-component 1
    o = cam_to_world[:3, 3:4]
    # Exit of the box from inside: per axis, the wall the ray is heading to.
    with torch.no_grad():
        bound = torch.where(d > 0, room[:, None], -room[:, None])
        t_axis = torch.where(d.abs() > 1e-12, (bound - o) / d, torch.full_like(d, float("inf")))
        t = t_axis.min(0).values
        for centre, radius in spheres:
            oc = o[:, 0] - centre
            a = (d * d).sum(0)
            b = 2 * (oc[:, None] * d).sum(0)
            c = oc @ oc - radius * radius
            disc = b * b - 4 * a * c
            hit = disc >= 0
            t_s = (-b - torch.sqrt(disc.clamp_min(0))) / (2 * a)
            t = torch.where(hit & (t_s > 1e-6) & (t_s < t), t_s, t)
    return t.reshape(H, W)  # the rays have camera-z 1, so t is the z-depth


def room_scene(B: int, V: int, H: int, W: int, seed: int = 0, dtype=torch.float64,
               occluders: int = 1, invalid_fraction: float = 0.0, spread: float = 0.3,
               max_yaw_deg: float = 40.0) -> Scene:
    """B samples of V cameras in a 6 x 5 x 3 m room (+z up), with `occluders` spheres between them.

    Cameras stand within `spread` metres of the centre, yaw within +-max_yaw_deg of a shared heading,
    pitch within +-10 deg; `invalid_fraction` of the pixels get depth 0 or NaN (invalid)."""
    g = torch.Generator().manual_seed(seed)
    u = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    room = torch.tensor([3.0, 2.5, 1.5], dtype=torch.float64)
    depth = torch.empty(B, V, H, W, dtype=torch.float64)
    Ks = torch.empty(B, V, 3, 3, dtype=torch.float64)
    Ts = torch.empty(B, V, 4, 4, dtype=torch.float64)
    for b in range(B):
        heading = float(u(1)) * 2 * math.pi
        spheres = []
        for _ in range(occluders):
            ang = heading + (float(u(1)) - 0.5) * 0.8
            dist = 1.2 + float(u(1)) * 0.6
            centre = torch.tensor([dist * math.cos(ang), dist * math.sin(ang), (float(u(1)) - 0.5) * 0.6],
                                  dtype=torch.float64)
            spheres.append((centre, 0.25 + 0.2 * float(u(1))))
        for v in range(V):
            pos = (u(3) - 0.5) * 2 * spread
            pos[2] *= 0.3
            yaw = heading + math.radians((float(u(1)) - 0.5) * 2 * max_yaw_deg)
            pitch = math.radians((float(u(1)) - 0.5) * 20)
            K = intrinsics(H, W, fov_deg=60 + 20 * float(u(1)))
            T = look_pose(pos, yaw, pitch)
            Ks[b, v], Ts[b, v] = K, T
            depth[b, v] = render_depth(K, T, H, W, room, spheres)
    if invalid_fraction > 0:
        mask = u(B, V, H, W) < invalid_fraction
        nan = u(B, V, H, W) < 0.5
        depth = torch.where(mask & nan, torch.full_like(depth, float("nan")), depth)
        depth = torch.where(mask & ~nan, torch.zeros_like(depth), depth)
    return Scene(depth.to(dtype), Ks.to(dtype), Ts.to(dtype))


def plane_pair(H: int = 12, W: int = 16, shift_px: int = 4, plane_depth: float = 2.0,
               focal: float = 20.0, dtype=torch.float64) -> Scene:
    """Two cameras facing a fronto-parallel plane at `plane_depth`; camera 1 sits
    shift_px * plane_depth / focal metres to the right of camera 0 (same orientation). A point seen
    at column c by camera 0 is seen at column c - shift_px by camera 1, same row."""
    K = torch.tensor([[focal, 0.0, (W - 1) / 2], [0.0, focal, (H - 1) / 2], [0.0, 0.0, 1.0]],
                     dtype=dtype)
    T0 = torch.eye(4, dtype=dtype)
    T1 = torch.eye(4, dtype=dtype)
    T1[0, 3] = shift_px * plane_depth / focal
    depth = torch.full((1, 2, H, W), plane_depth, dtype=dtype)
    return Scene(depth, K.expand(1, 2, 3, 3).clone(), torch.stack([T0, T1])[None])
