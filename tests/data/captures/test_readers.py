"""The capture readers' conventions, each proven on an analytic room: reprojecting view 0's depth into
view 1 with the reader's poses and K lands on view 1's depth (median residual < 5 mm), and with the
convention undone (no OpenGL axis flip, no world-to-camera inversion) it does not (> 100 mm).
Depth units, skipped frames and the refusal of captures without metric depth are checked too."""
import json

import numpy as np
import pytest

from hatch_vlm import geometry as geo
from hatch_vlm.data.captures.arkitscenes import ARKitScenesCapture
from hatch_vlm.data.captures.frames import CaptureError
from hatch_vlm.data.captures.nerfstudio import NerfstudioCapture
from hatch_vlm.data.captures.scannet import ScanNetCapture

from ._scene import intrinsics, look_at, render, write_arkitscenes, write_nerfstudio, write_scannet

H, W = 96, 128
# two views of the room ~25 degrees apart, both looking across it
POSES = [look_at([1.2, 0.3, 1.4], [-2.0, -0.5, 0.8]), look_at([1.0, -0.4, 1.5], [-2.0, 0.8, 0.9])]


def median_residual(depth0, K0, T0, depth1, K1, T1) -> float:
    """Median |z of view 0's points in view 1 - view 1's depth there, bilinearly interpolated| (metres);
    inf if < 5 % of view 0's pixels land inside view 1 with four valid neighbours."""
    X0 = geo.unproject_depth(depth0, K0).reshape(-1, 3)[depth0.reshape(-1) > 0]
    X1 = geo.transform_points(np.linalg.inv(T1) @ T0, X0)
    uv, z = geo.project_points(K1, X1)
    Hd, Wd = depth1.shape
    with np.errstate(invalid="ignore"):
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < Wd - 1) & (uv[:, 1] >= 0) & (uv[:, 1] < Hd - 1)
    uv, z = uv[inside], z[inside]
    c0, r0 = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
    a, b = uv[:, 0] - c0, uv[:, 1] - r0
    q = [depth1[r0, c0], depth1[r0, c0 + 1], depth1[r0 + 1, c0], depth1[r0 + 1, c0 + 1]]
    ok = np.all([v > 0 for v in q], 0)
    if ok.sum() < 0.05 * depth0.size:
        return float("inf")
    D = (1 - a) * (1 - b) * q[0] + a * (1 - b) * q[1] + (1 - a) * b * q[2] + a * b * q[3]
    return float(np.median(np.abs(z - D)[ok]))


def _two(frames):
    f0, f1 = frames[0], frames[1]
    return f0.depth(), f0, f1.depth(), f1


def test_nerfstudio_flip_makes_the_depth_reproject(tmp_path):
    cap = NerfstudioCapture(write_nerfstudio(tmp_path / "ns", POSES, H=H, W=W))
    frames = list(cap.frames())
    d0, f0, d1, f1 = _two(frames)
    assert median_residual(d0, f0.K, f0.cam_to_world, d1, f1.K, f1.cam_to_world) < 0.005
    # the file's OpenGL matrices used as if they were OpenCV: the flip is what makes it work
    raw = json.loads((tmp_path / "ns/transforms.json").read_text())["frames"]
    T0, T1 = (np.array(raw[k]["transform_matrix"]) for k in (0, 1))
    assert median_residual(d0, f0.K, T0, d1, f1.K, T1) > 0.1


def test_nerfstudio_intrinsics_half_pixel_and_depth_size(tmp_path):
    """cx in the file is ours + 0.5 at the colour size (2x the depth); the reader gives the depth map's K."""
    cap = NerfstudioCapture(write_nerfstudio(tmp_path / "ns", POSES, H=H, W=W, color_scale=2))
    f = next(cap.frames())
    assert f.depth_hw == (H, W)
    np.testing.assert_allclose(f.K, intrinsics(H, W), atol=1e-9)
    np.testing.assert_allclose(f.cam_to_world, POSES[0], atol=1e-9)


@pytest.mark.parametrize("unit,npy", [(1e-3, False), (1e-4, False), (1.0, True)])
def test_nerfstudio_depth_units(tmp_path, unit, npy):
    cap = NerfstudioCapture(write_nerfstudio(tmp_path / "ns", POSES[:1], H=H, W=W, unit=unit, npy=npy))
    f = next(cap.frames())
    truth, _ = render(intrinsics(H, W), POSES[0], H, W)
    tol = unit / 2 + 1e-6 if not npy else 1e-5
    np.testing.assert_allclose(f.depth(), truth, atol=tol)
    assert any("1e-3" in n for n in cap.log.notes) == (unit == 1e-3)   # the default unit is said


def test_nerfstudio_skips_and_counts_frames_without_usable_pose(tmp_path):
    def edit(k, f):
        if k == 1:
            del f["transform_matrix"]
        if k == 2:
            f["transform_matrix"][0][3] = float("nan")
        if k == 3:
            f["transform_matrix"][1][1] = float("inf")

    poses = POSES + POSES + POSES[:1]
    cap = NerfstudioCapture(write_nerfstudio(tmp_path / "ns", poses, H=24, W=32, edit=edit))
    got = [f.index for f in cap.frames()]
    assert got == [0, 4]
    assert cap.log.seen == 5 and cap.log.yielded == 2
    assert dict(cap.log.skipped) == {"no pose": 1, "non-finite pose": 2}
    assert "frames[1]" in cap.log.examples["no pose"]


def test_nerfstudio_without_depth_is_refused_with_the_reason(tmp_path):
    root = write_nerfstudio(tmp_path / "ns", POSES, H=24, W=32, depth=False)
    with pytest.raises(CaptureError, match="no frame has 'depth_file_path'.*no metric depth.*PaStA"):
        NerfstudioCapture(root)


def test_nerfstudio_distortion_and_fisheye_are_refused(tmp_path):
    root = write_nerfstudio(tmp_path / "ns", POSES, H=24, W=32)
    meta = json.loads((root / "transforms.json").read_text())
    meta["k1"] = 0.1
    (root / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(CaptureError, match=r"distortion \{'k1': 0.1\}.*--ignore-distortion"):
        NerfstudioCapture(root)
    assert any("k1" in n for n in NerfstudioCapture(root, ignore_distortion=True).log.notes)
    meta["camera_model"] = "OPENCV_FISHEYE"
    (root / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(CaptureError, match="camera_model.*OPENCV_FISHEYE"):
        NerfstudioCapture(root, ignore_distortion=True)


def test_scannet_poses_as_is_and_inf_poses_skipped(tmp_path):
    cap = ScanNetCapture(write_scannet(tmp_path / "sc", POSES + POSES[:1], H=H, W=W, bad_pose=(2,)))
    frames = list(cap.frames())
    assert [f.name for f in frames] == ["0", "1"]
    assert dict(cap.log.skipped) == {"non-finite pose": 1}
    d0, f0, d1, f1 = _two(frames)
    assert median_residual(d0, f0.K, f0.cam_to_world, d1, f1.K, f1.cam_to_world) < 0.005
    np.testing.assert_allclose(f0.K, intrinsics(H, W), atol=1e-5)       # intrinsic_depth, not colour


def test_scannet_without_depth_is_refused(tmp_path):
    root = write_scannet(tmp_path / "sc", POSES, H=24, W=32)
    for p in (root / "depth").iterdir():
        p.unlink()
    with pytest.raises(CaptureError, match="no metric depth"):
        ScanNetCapture(root)


def test_arkitscenes_inversion_and_timestamp_matching(tmp_path):
    # 13 frames at 60 fps, poses at 10 fps: frames 0, 6, 12 have one; views 0 and 6 are ~25 degrees apart
    poses = [POSES[0] if k < 6 else POSES[1] for k in range(13)]
    cap = ARKitScenesCapture(write_arkitscenes(tmp_path / "ak", poses, H=H, W=W))
    frames = list(cap.frames())
    assert [f.index for f in frames] == [0, 6, 12]
    assert dict(cap.log.skipped) == {"no pose within 5 ms": 10}
    d0, f0, d1, f1 = _two(frames)
    assert median_residual(d0, f0.K, f0.cam_to_world, d1, f1.K, f1.cam_to_world) < 0.005
    # the .traj's world-to-camera matrices used without the inversion
    lines = (tmp_path / "ak/lowres_wide.traj").read_text().split("\n")
    from scipy.spatial.transform import Rotation

    def as_stored(line):
        v = np.array([float(x) for x in line.split()])
        M = np.eye(4)
        M[:3, :3], M[:3, 3] = Rotation.from_rotvec(v[1:4]).as_matrix(), v[4:7]
        return M
    assert median_residual(d0, f0.K, as_stored(lines[0]), d1, f1.K, as_stored(lines[1])) > 0.1


def test_arkitscenes_without_depth_is_refused(tmp_path):
    root = write_arkitscenes(tmp_path / "ak", POSES, H=24, W=32)
    for p in (root / "lowres_depth").iterdir():
        p.unlink()
    with pytest.raises(CaptureError, match="no metric depth"):
        ARKitScenesCapture(root)
