"""`hatch-vlm data build` end to end on an analytic room: every generated answer is recomputed here, from the
true scene (exact depth by ray casting, the true poses) and the markers as the record stores them, with
code written in this test (not the builder's functions); the tree reads back with `data stats --strict`."""
import json
import math
import re

import numpy as np
import pytest

from hatch_vlm.data.captures.build import BuildConfig, build
from hatch_vlm.data.captures.frames import CaptureError
from hatch_vlm.data.captures.select import SelectConfig
from hatch_vlm.data.spar7m import read_spar_rgbd

from ._scene import dolly_poses, intrinsics, orbit_poses, render, write_nerfstudio

H, W = 48, 64
N = 30
# an orbit, then a walk straight ahead (its later cameras are in view of its earlier ones)
POSES = orbit_poses(N, degrees_per_frame=5) + dolly_poses(8)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("build")
    src = write_nerfstudio(base / "room", POSES, H=H, W=W)
    cfg = BuildConfig("nerfstudio", str(src), str(base / "out"), contact_sheet=3,
                      select=SelectConfig(band=(0.1, 0.8), sizes=(2, 3), max_tuples=80, window=6, frame_step=1))
    summary = build(cfg, progress=False)
    samples, rs = read_spar_rgbd(base / "out", strict=True, draw_markers=True)
    return base, summary, samples


def _truth(sample, v):
    """(true depth map, true pose) of view v, from the frame index in its file name."""
    k = int(re.search(r"frame_(\d+)", sample.meta["image_paths"][v]).group(1))
    d, _ = render(intrinsics(H, W), POSES[k], H, W)
    return d, POSES[k]


def _pixel(coord, size):
    return min(int(coord / 1000 * size), size - 1)


def _yaw_pitch(T):
    f = T[:3, 2]
    return math.atan2(f[1], f[0]), math.asin(max(-1.0, min(1.0, f[2])))


def _world(K, T, depth, row, col):
    X = np.linalg.solve(K, [col, row, 1.0]) * depth[row, col]
    return T[:3, :3] @ X + T[:3, 3]


def _project(K, T, X):
    c = np.linalg.inv(T) @ np.append(X, 1.0)
    p = K @ c[:3]
    return p[0] / p[2], p[1] / p[2], c[2]


def _by_task(samples, task, kind):
    out = [s for s in samples if s.task == task and s.meta["answer_kind"] == kind]
    assert out, f"no {task}/{kind} record was built"
    return out


def test_summary_and_stats(built):
    base, summary, samples = built
    assert summary["frames"]["seen"] == len(POSES) and summary["frames"]["yielded"] == len(POSES)
    assert summary["questions_total"] == len(samples) > 0
    sel = summary["selection"]
    assert sel["pairs_considered"] == sum(sel["overlap_histogram"]) > sel["pairs_in_band"] > 0
    assert (base / "out/captures/build_room.png").is_file() and (base / "out/captures/build_room.json").is_file()
    from hatch_vlm.data.spar7m.stats import dataset_stats

    st = dataset_stats(base / "out", strict=True)
    assert json.loads(json.dumps(st, default=str))   # readable, nothing skipped under --strict
    for s in samples:                                  # the written poses are the true ones (world up was +z)
        for v in range(s.num_views):
            np.testing.assert_allclose(s.cam_to_world[v], _truth(s, v)[1], atol=1e-6)


def test_view_change_answers(built):
    for s in _by_task(built[2], "view_change_infer", "fill"):
        Ta, Tb = _truth(s, 0)[1], _truth(s, 1)[1]
        ya, pa = _yaw_pitch(Ta)
        yb, pb = _yaw_pitch(Tb)
        d = Tb[:3, 3] - Ta[:3, 3]
        fwd = d @ [math.cos(ya), math.sin(ya), 0]
        left = d @ [-math.sin(ya), math.cos(ya), 0]
        turn_left = math.degrees(math.remainder(yb - ya, 2 * math.pi))
        want = {"right": -left, "forward": fwd, "up": d[2], "rot_right": -turn_left,
                "rot_up": math.degrees(pb - pa)}
        got = dict.fromkeys(want, 0.0)
        for part in s.answer.split(","):
            key, val = part.split(":")
            sign = 1 if key in ("move_right", "move_forward", "move_up", "rotate_right", "rotate_up") else -1
            name = {"move_right": "right", "move_left": "right", "move_forward": "forward",
                    "move_backward": "forward", "move_up": "up", "move_down": "up", "rotate_right": "rot_right",
                    "rotate_left": "rot_right", "rotate_up": "rot_up", "rotate_down": "rot_up"}[key]
            got[name] = sign * float(val)
        for k in ("right", "forward", "up"):
            assert abs(got[k] - want[k]) <= 0.05 + 1e-9, (s.answer, want)
        for k in ("rot_right", "rot_up"):
            assert abs(got[k] - want[k]) <= 0.5 + 1e-9, (s.answer, want)


def test_camera_motion_answers(built):
    K = intrinsics(H, W)
    for s in _by_task(built[2], "camera_motion_infer", "fill"):
        Ta, Tb = _truth(s, 0)[1], _truth(s, 1)[1]
        assert float(s.answer) == pytest.approx(np.linalg.norm(Tb[:3, 3] - Ta[:3, 3]), abs=0.005 + 1e-9)
    select = [s for s in built[2] if s.task == "camera_motion_infer" and s.meta["answer_kind"] == "select"]
    assert select, "no camera-motion multiple-choice question: the check below would not run"
    for s in select:
        u, v, z = _project(K, _truth(s, 0)[1], _truth(s, 1)[1][:3, 3])
        assert z > 0
        gold = [o for o in s.options if o.startswith(s.answer + ".")][0]
        x, y = (int(t) for t in re.findall(r"\d+", gold[2:]))
        assert abs(x - (u + 0.5) / W * 1000) <= 1 and abs(y - (v + 0.5) / H * 1000) <= 1


def _points(s):
    raw = s.meta["markers"]
    pts = {m["color"]: m for m in raw}
    return pts


def _marked(s, rec_key_xy, view):
    d, T = _truth(s, view)
    x, y = rec_key_xy
    return d, T, _pixel(y, H), _pixel(x, W)


def test_point_depth_and_distance_answers(built):
    K = intrinsics(H, W)
    samples = built[2]
    for s in _by_task(samples, "depth_prediction_oc_mv", "fill") + _by_task(samples, "distance_prediction_oo_mv", "fill") \
            + _by_task(samples, "depth_prediction_oc_mv", "select"):
        rec = json.loads(open(_qa_line_file(built, s)).read().splitlines()[_qa_line_no(built, s)])
        a, b = rec["point_img_idx"][0]
        da, Ta, ra, ca = _marked(s, rec["red_point"][0], a)
        db, Tb, rb, cb = _marked(s, rec["blue_point"][0], b)
        assert a != b and da[ra, ca] > 0 and db[rb, cb] > 0
        if s.task == "distance_prediction_oo_mv":
            want = np.linalg.norm(_world(K, Ta, da, ra, ca) - _world(K, Tb, db, rb, cb))
            assert float(s.answer) == pytest.approx(want, abs=0.005 + 0.002)
        elif s.answer_type == "numeric":
            assert float(s.answer) == pytest.approx(da[ra, ca], abs=0.005 + 0.001)
        else:
            assert s.answer == ("A" if da[ra, ca] > db[rb, cb] else "B")
        # the markers are drawn where the record says, on the views it names
        views = {m["color"]: m["view"] for m in s.meta["markers"]}
        assert views == {"red": a, "blue": b}


def test_position_matching_answers(built):
    K = intrinsics(H, W)
    for s in _by_task(built[2], "position_matching", "fill") + _by_task(built[2], "position_matching", "select"):
        rec = json.loads(open(_qa_line_file(built, s)).read().splitlines()[_qa_line_no(built, s)])
        box = rec["red_bbox"][0]
        da, Ta = _truth(s, 0)
        db, Tb = _truth(s, 1)
        us, vs = [], []
        for r in range(_pixel(box[1], H), _pixel(box[3], H) + 1):
            for c in range(_pixel(box[0], W), _pixel(box[2], W) + 1):
                u, v, z = _project(K, Tb, _world(K, Ta, da, r, c))
                cu, rv = int(np.floor(u + 0.5)), int(np.floor(v + 0.5))
                if z > 0 and 0 <= cu < W and 0 <= rv < H and abs(db[rv, cu] - z) <= 0.05 + 0.05 * db[rv, cu]:
                    us.append(u)
                    vs.append(v)
        want = [(min(us) + 0.5) / W * 1000, (min(vs) + 0.5) / H * 1000, (max(us) + 0.5) / W * 1000,
                (max(vs) + 0.5) / H * 1000]
        text = s.answer if s.answer_type != "mc" else [o for o in s.options if o.startswith(s.answer + ".")][0][2:]
        got = [int(t) for t in re.findall(r"\d+", text)]
        # depth files hold millimetres: a box edge can move by a fraction of a pixel (1000 / 64 = 16 per pixel)
        assert np.abs(np.subtract(got, want)).max() <= 16, (got, want)


def _qa_line_file(built, s):
    return s.meta["at"].split(" line ")[0]


def _qa_line_no(built, s):
    return int(s.meta["at"].split(" line ")[1].split()[0]) - 1


def test_rebuild_needs_overwrite_and_bad_unit_is_refused(built, tmp_path):
    base = built[0]
    cfg = BuildConfig("nerfstudio", str(base / "room"), str(base / "out"))
    with pytest.raises(CaptureError, match="--overwrite"):
        build(cfg, progress=False)
    src = write_nerfstudio(tmp_path / "m", POSES[:6], H=H, W=W, unit=1.0, npy=True)
    meta = json.loads((src / "transforms.json").read_text())
    meta.pop("depth_unit_scale_factor")                     # metres read as the default millimetres
    (src / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(CaptureError, match="depth_unit_scale_factor"):
        build(BuildConfig("nerfstudio", str(src), str(tmp_path / "o"), select=SelectConfig(frame_step=1, window=3)),
              progress=False)
