"""Pose helpers shared by the ActoR tests: camera-to-world matrices from position, yaw, pitch (and roll)."""
import math

import numpy as np


def look_pose(position, yaw_deg, pitch_deg, up=(0.0, 0.0, 1.0), roll_deg=0.0):
    """Camera-to-world 4x4 (OpenCV axes) of a camera at `position` with the given yaw / pitch about `up`."""
    from hatch.actor.actions import horizontal_basis

    e1, e2, u = horizontal_basis(up)
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    h = math.cos(y) * e1 + math.sin(y) * e2
    f = math.cos(p) * h + math.sin(p) * u
    left = -math.sin(y) * e1 + math.cos(y) * e2           # horizontal, 90 deg left of the heading
    right = -left
    down = np.cross(f, right)                              # x right, y down, z forward: right-handed
    if roll_deg:
        r = math.radians(roll_deg)
        right, down = math.cos(r) * right + math.sin(r) * down, -math.sin(r) * right + math.cos(r) * down
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = right, down, f, position
    return T
