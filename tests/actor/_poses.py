"""Pose helper shared by the ActoR tests: a roll-free camera-to-world pose from position, yaw, pitch (deg)."""
import math

from hatch_vlm.geometry import pose_from_yaw_pitch


def look_pose(position, yaw_deg, pitch_deg, up=(0.0, 0.0, 1.0)):
    return pose_from_yaw_pitch(position, math.radians(yaw_deg), math.radians(pitch_deg), up)
