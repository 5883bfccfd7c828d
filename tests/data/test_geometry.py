"""hatch_vlm.geometry: conventions, pose validation, world up, viewer motion decomposition."""
import math

import numpy as np
import pytest

from hatch_vlm import geometry as geo


def test_look_at_opencv_axes_with_z_up():
    T = geo.look_at([1, 2, 1.5], [5, 2, 1.5])           # facing +x, level
    np.testing.assert_allclose(T[:3, 2], [1, 0, 0], atol=1e-12)   # forward
    np.testing.assert_allclose(T[:3, 0], [0, -1, 0], atol=1e-12)  # right of +x with z up is -y
    np.testing.assert_allclose(T[:3, 1], [0, 0, -1], atol=1e-12)  # image down is world down
    geo.validate_pose(T)
    yaw, pitch = geo.yaw_pitch(T)
    assert yaw == pytest.approx(0) and pitch == pytest.approx(0)


def test_yaw_pitch_round_trip_and_left_is_positive():
    T = geo.pose_from_yaw_pitch([0, 0, 0], math.radians(90), math.radians(-20))
    np.testing.assert_allclose(T[:3, 2], [0, math.cos(math.radians(20)), -math.sin(math.radians(20))], atol=1e-12)
    yaw, pitch = geo.yaw_pitch(T)
    assert math.degrees(yaw) == pytest.approx(90) and math.degrees(pitch) == pytest.approx(-20)
    m = geo.relative_motion(geo.pose_from_yaw_pitch([0, 0, 0], 0, 0), T)
    assert m.yaw_deg == pytest.approx(90)      # turned left (a Motion's angles are in degrees)


def test_relative_pose_maps_b_into_a():
    rng = np.random.default_rng(0)
    Ta = geo.pose_from_yaw_pitch(rng.normal(size=3), 0.3, -0.2)
    Tb = geo.pose_from_yaw_pitch(rng.normal(size=3), -1.1, 0.1)
    np.testing.assert_allclose(Ta @ geo.relative_pose(Ta, Tb), Tb, atol=1e-12)


@pytest.mark.parametrize("up", [(0, 0, 1), (0, -1, 0), (0.3, 0.2, 0.9)])
def test_motion_composes_back_within_rounding(up):
    """The action gold: (turn, move, turn) rounded to 1 deg / 0.1 m composes back to the pose."""
    rng = np.random.default_rng(1)
    e1, e2, u = geo.up_basis(up)
    assert np.cross(e1, e2) == pytest.approx(u)
    for _ in range(50):
        Ta = geo.pose_from_yaw_pitch(rng.normal(size=3), rng.uniform(-3, 3), rng.uniform(-0.6, 0.6), up)
        Tb = geo.pose_from_yaw_pitch(rng.normal(size=3), rng.uniform(-3, 3), rng.uniform(-0.6, 0.6), up)
        m = geo.relative_motion(Ta, Tb, up)
        np.testing.assert_allclose(geo.compose_motion(Ta, m, up), Tb, atol=1e-9)
        r = geo.Motion(round(m.forward, 1), round(m.left, 1), round(m.up, 1), round(m.yaw_deg), round(m.pitch_deg))
        Tr = geo.compose_motion(Ta, r, up)
        assert np.linalg.norm(Tr[:3, 3] - Tb[:3, 3]) <= 0.05 * math.sqrt(3) + 1e-9
        ang = math.degrees(math.acos(np.clip((np.trace(Tr[:3, :3].T @ Tb[:3, :3]) - 1) / 2, -1, 1)))
        assert ang <= 0.5 * math.sqrt(2) + 1e-6


def test_validation_errors_name_the_problem():
    with pytest.raises(ValueError, match="4x4"):
        geo.validate_pose(np.eye(3))
    bad = np.eye(4)
    bad[0, 0] = -1
    with pytest.raises(ValueError, match="reflection"):
        geo.validate_pose(bad)
    bad = np.eye(4)
    bad[0, 1] = 0.5
    with pytest.raises(ValueError, match="orthonormal"):
        geo.validate_pose(bad, "pose/3.txt")
    with pytest.raises(ValueError, match="last row"):
        geo.validate_pose(np.ones((4, 4)))
    with pytest.raises(ValueError, match="world_up"):
        geo.normalize_up((0, 0, 0))
    with pytest.raises(ValueError, match="focal"):
        geo.validate_intrinsics(np.diag([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"cam_to_world\[1\]"):
        geo.validate_poses(np.stack([np.eye(4), np.zeros((4, 4))]))


def test_intrinsics_pixel_centre_convention():
    K = geo.intrinsics(224, 90.0)
    assert K[0, 2] == pytest.approx(111.5) and K[0, 0] == pytest.approx(112.0)
    uv, z = geo.project_points(K, [[1.0, 0.0, 1.0]])    # 45 deg right: the image's right edge
    assert uv[0, 0] == pytest.approx(223.5)


def test_reproject_identity_lands_on_itself():
    K = geo.intrinsics(16, 60)
    d = np.full((16, 16), 2.0)
    d[0, 0] = 0                                           # invalid
    vis, rows, cols, z = geo.visible_in(d, K, np.eye(4), d, K, np.eye(4))
    assert not vis[0, 0] and vis.sum() == 255
    np.testing.assert_array_equal(rows[1:, :], np.mgrid[1:16, 0:16][0])


@pytest.mark.parametrize("up", [(0, 0, 1), (0.3, 0.2, 0.9)])
@pytest.mark.parametrize("sign", [1, -1])
def test_yaw_of_a_camera_looking_straight_up_or_down_is_the_limit_of_tilting(up, sign):
    """Straight up / down the yaw is undefined; the fallback must be the limit of tilting a no-roll camera
    with that yaw (it was 180 degrees off looking up)."""
    _, _, u = geo.up_basis(up)
    for yaw_deg in (0.0, 37.0, 150.0, -100.0):
        tilted = geo.pose_from_yaw_pitch([1, 2, 3], math.radians(yaw_deg), sign * math.radians(89.0), up)
        vertical = tilted.copy()
        right = tilted[:3, 0]                             # the same for every pitch of this yaw
        vertical[:3, 2] = sign * u
        vertical[:3, 1] = np.cross(vertical[:3, 2], right)
        yaw, pitch = geo.yaw_pitch(vertical, up)
        assert math.degrees(pitch) == pytest.approx(sign * 90)
        diff = (math.degrees(yaw) - yaw_deg + 180) % 360 - 180
        assert abs(diff) < 1e-6, (yaw_deg, math.degrees(yaw))
        assert math.degrees(geo.yaw_pitch(tilted, up)[0]) == pytest.approx(yaw_deg)
