"""Textured toy rooms for PaStA: `hatch_ext.scenes.room_scene` geometry (exact depth, K, poses) with an
RGB texture computed from each pixel's 3D hit point.

The colour is a function of the world position of the surface, so one surface has the same colour in
every view: cross-view correspondence is learnable from appearance, and the geometry says which cells
match. The PaStA stage's own data when no dataset is configured.

Why a third room generator beside `hatch_vlm.data.synthetic`: these are bare rooms (one occluding sphere)
whose geometry is exactly that of the ops' test rigs, so the PaStA stage and its metric run on the
scenes the kernels are checked on; `data.synthetic` draws furnished rooms for question answering. Only
the texturing is here; the geometry is `hatch_ext.scenes`. `world_points` stays in torch float64 (not
`hatch_vlm.geometry.unproject_depth`, numpy) so the texture of every generated sample stays bit-identical.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from hatch_vlm.data.record import Sample
from hatch_ext.scenes import room_scene


def world_points(depth: torch.Tensor, K: torch.Tensor, cam_to_world: torch.Tensor) -> torch.Tensor:
    """World coordinates [H, W, 3] of every pixel of one view (depth [H, W] z-depth, K [3, 3], T [4, 4])."""
    H, W = depth.shape
    dt = torch.float64
    rr, cc = torch.meshgrid(torch.arange(H, dtype=dt), torch.arange(W, dtype=dt), indexing="ij")
    rays = torch.linalg.inv(K.to(dt)) @ torch.stack([cc, rr, torch.ones_like(rr)]).reshape(3, -1)
    X_cam = rays * depth.to(dt).reshape(1, -1)
    T = cam_to_world.to(dt)
    return (T[:3, :3] @ X_cam + T[:3, 3:]).T.reshape(H, W, 3)


def texture(points: torch.Tensor, seed: int) -> np.ndarray:
    """uint8 [H, W, 3] colour of world points [H, W, 3]: a few random plane waves per channel (smooth,
    ~0.5-1.5 cycles per metre) plus a faint 0.5 m checker, so nearby surfaces differ and one surface
    looks the same from every view."""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.zeros(*points.shape[:2], 3, dtype=torch.float64)
    for ch in range(3):
        for _ in range(2):
            direction = torch.randn(3, generator=g, dtype=torch.float64)
            direction = direction / direction.norm()
            freq = 0.5 + float(torch.rand(1, generator=g)) * 1.0
            phase = float(torch.rand(1, generator=g)) * 2 * math.pi
            rgb[..., ch] += 0.5 * torch.sin(2 * math.pi * freq * (points @ direction) + phase)
    # Offset by a quarter cell: the walls lie exactly on multiples of 0.5 m, where floor() would flicker.
    checker = torch.floor(points / 0.5 + 0.25).sum(-1).remainder(2)      # 0 / 1
    rgb = 0.5 + 0.35 * rgb / 2 + 0.1 * (checker[..., None] - 0.5)
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def textured_room_samples(num: int, views: int = 2, size: int = 112, seed: int = 0,
                          max_yaw_deg: float = 30.0) -> list[Sample]:
    """`num` samples of `views` square `size` px views of textured rooms with exact depth (same resolution).

    Sample k uses room_scene seed `seed * 100003 + k` and texture seed `seed * 7919 + k`, so
    different seeds give disjoint (held-out) scenes.
    """
    if num < 0 or views < 2 or size < 28:
        raise ValueError(f"need num >= 0, views >= 2, size >= 28; got num={num}, views={views}, size={size}")
    samples = []
    for k in range(num):
        scene = room_scene(1, views, size, size, seed=seed * 100003 + k, occluders=1,
                           max_yaw_deg=max_yaw_deg)
        images = []
        for v in range(views):
            pts = world_points(scene.depth[0, v], scene.K[0, v], scene.cam_to_world[0, v])
            images.append(texture(pts, seed=seed * 7919 + k))
        samples.append(Sample(images=images, depth=scene.depth[0].float().numpy(), K=scene.K[0].numpy(),
                              cam_to_world=scene.cam_to_world[0].numpy(), source="toy_room",
                              id=f"toy_room-{seed}-{k}"))
    return samples
