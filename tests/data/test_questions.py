"""Question families on hand-built scenes whose answers are known by construction."""
import math

import numpy as np
import pytest

from hatch_vlm import geometry as geo
from hatch_vlm.data import questions as qs
from hatch_vlm.data.scene import Scene, SceneObject, Texture
from hatch_vlm.data.synthetic import make_context, render_views

S = 64


def room(objects, size=8.0):
    tex = [Texture("checkers", (0.8, 0.8, 0.8), (0.2, 0.2, 0.2), 0.5, (0.0, 0.0))] * 6
    return Scene(size, size, 3.0, tex, objects)


def ball(colour, x, y, r=0.3):
    return SceneObject("ball", colour, (x, y, r), (r, r, r))


def context(scene, poses, anchor=None, fov=90.0):
    poses = np.stack(poses)
    K = np.stack([geo.intrinsics(S, fov)] * len(poses))
    _, _, ids = render_views(scene, K, poses, S)
    return make_context(scene, K, poses, ids, anchor)


def pose(x, y, yaw_deg, z=1.5, pitch_deg=0.0):
    return geo.pose_from_yaw_pitch([x, y, z], math.radians(yaw_deg), math.radians(pitch_deg))


def all_variants(fn, ctx, n=60):
    """Question per variant key (meta 'variant' or the question text) over many rng draws."""
    out = {}
    for seed in range(n):
        q = fn(ctx, np.random.default_rng(seed))
        if q is not None:
            out.setdefault(q.meta.get("variant", q.question), q)
    return out


def gold_text(q):
    return next(o[3:] for o in q.options if o[0] == q.answer)


def test_camera_turn_left_30():
    sc = room([ball("red", 5, 2)])
    ctx = context(sc, [pose(2, 2, 0), pose(2, 2, 30)])
    v = all_variants(qs.camera_motion, ctx)
    assert set(v) == {"turn_direction", "turn_angle"}       # no movement: no move questions
    assert gold_text(v["turn_direction"]) == "Left"
    assert v["turn_angle"].answer == "30" and v["turn_angle"].answer_type == "numeric"


def test_camera_moves_right_then_turns_right():
    sc = room([ball("red", 5, 2)])
    # facing +y (yaw 90): moving to -x... facing +y, right is +x: move 1.2 m to +x, turn right 40
    ctx = context(sc, [pose(2, 2, 90), pose(3.2, 2, 50)])
    v = all_variants(qs.camera_motion, ctx)
    assert gold_text(v["turn_direction"]) == "Right" and v["turn_angle"].answer == "40"
    assert gold_text(v["move_direction"]) == "Right"
    assert v["move_distance"].answer == "1.20"


def test_camera_moves_backward():
    sc = room([ball("red", 6, 2)])
    ctx = context(sc, [pose(3, 2, 0), pose(2.5, 2, 0)])
    v = all_variants(qs.camera_motion, ctx)
    assert gold_text(v["move_direction"]) == "Backward" and v["move_distance"].answer == "0.50"


def test_object_position_from_other_viewpoint():
    # View 2 at (4, 4) facing -x (yaw 180): its left is -y, its front is -x.
    sc = room([ball("red", 2, 2), ball("blue", 5.5, 5.8, r=0.5)])
    ctx = context(sc, [pose(0.5, 4, 0), pose(4, 4, 180)])
    seen = {}
    for seed in range(80):
        q = qs.object_position(ctx, np.random.default_rng(seed))
        if q is not None and q.meta["view"] == 1:
            seen[q.meta["object"]] = gold_text(q)
    # red at (2, 2): in front (x < 4) and at y < 4 = view 2's left. blue at (5.5, 5.8): behind, right.
    assert seen == {"red ball": "Front, Left", "blue ball": "Back, Right"}


def test_object_depth_and_distance():
    sc = room([ball("red", 5, 2), ball("green", 5, 6)])
    ctx = context(sc, [pose(2, 2, 0, z=0.3), pose(2, 6, 0, z=0.3)])
    depths = {(q.meta["object"], q.meta["view"]): q.answer for q in
              filter(None, (qs.object_depth(ctx, np.random.default_rng(k)) for k in range(40)))}
    assert depths[("red ball", 0)] == "3.00" and depths[("green ball", 1)] == "3.00"
    q = qs.object_distance(ctx, np.random.default_rng(0))
    assert q.answer == "4.00" and q.answer_type == "numeric"


def test_cross_view_matching_quadrant_and_absent():
    # Camera 2 looks +x from (1, 2) at height 1.5; the ball at (4, 1.2) is ahead, to the right (-y)
    # and below the horizon: bottom-right. The yellow ball at (0.6, 1) is behind camera 2. Camera 1
    # (facing about -y from (2.5, 4.5)) sees both.
    sc = room([ball("red", 4, 1.2), ball("yellow", 0.6, 1.0)])
    ctx = context(sc, [pose(2.5, 4.5, -100), pose(1, 2, 0)])
    got = {}
    for seed in range(40):
        q = qs.cross_view_matching(ctx, np.random.default_rng(seed))
        if q is not None:
            got[q.meta["object"]] = gold_text(q)
    assert got.get("red ball") == "Bottom-right"
    assert got.get("yellow ball") == "Not visible"


def test_mindcube_rotation_behind_left_right():
    sc = room([ball("red", 6, 4), ball("blue", 4, 6.5), ball("green", 4, 1.5), ball("white", 1.5, 4)])
    ctx = context(sc, [pose(4, 4, 0), pose(4, 4, 90), pose(4, 4, 180), pose(4, 4, 270)])
    expect = {"behind you": "white ball", "on your left": "blue ball", "on your right": "green ball"}
    asked = set()
    for seed in range(30):
        q = qs.mindcube_rotation(ctx, np.random.default_rng(seed))
        assert gold_text(q) == expect[q.meta["direction"]]
        assert q.meta["direction"] in q.question
        asked.add(q.meta["direction"])
    assert asked == set(expect)


def test_mindcube_around_sides():
    sc = room([SceneObject("box", "red", (4, 4, 0.4), (0.4, 0.4, 0.4))])
    # View 1 at (2, 4) faces +x: its right is -y. View 2 at (4, 2) is on that right side; view 3 at
    # (6, 4) is opposite; view 4 at (4, 6) on the left.
    eye = [(2, 4), (4, 2), (6, 4), (4, 6)]
    ctx = context(sc, [geo.look_at([x, y, 1.5], [4, 4, 0.4]) for x, y in eye], anchor=0)
    expect = {1: "From the right side of the red box", 2: "From behind the red box (the opposite side)",
              3: "From the left side of the red box"}
    seen = set()
    for seed in range(30):
        q = qs.mindcube_around(ctx, np.random.default_rng(seed))
        assert gold_text(q) == expect[q.meta["view"]]
        seen.add(q.meta["view"])
    assert seen == {1, 2, 3}


def test_mindcube_among_quadrants_and_unseen_viewpoint():
    c = (4.0, 4.0)
    objs = [ball("red", *c), ball("blue", 5, 5), ball("green", 5, 3), ball("yellow", 3, 5), ball("pink", 3, 3)]
    sc = room(objs)
    # View 1 at (1.5, 4) facing +x toward the centre: far = +x, left = +y.
    ctx = context(sc, [geo.look_at([1.5, 4, 1.5], [4, 4, 0.3]), geo.look_at([4, 1.5, 1.5], [4, 4, 0.3])], anchor=0)
    quad = {  # (viewpoint, far, left) -> object
        (0, True, True): "blue ball", (0, True, False): "green ball", (0, False, True): "yellow ball",
        (0, False, False): "pink ball",
        # View 2 at (4, 1.5) facing +y: far = +y, left = -x.
        (1, True, True): "yellow ball", (1, True, False): "blue ball", (1, False, True): "pink ball",
        (1, False, False): "green ball",
        # Unseen viewpoint opposite view 1: at (6.5, 4) facing -x: far = -x, left = -y.
        (-1, True, True): "pink ball", (-1, True, False): "yellow ball", (-1, False, True): "green ball",
        (-1, False, False): "blue ball",
    }
    seen = set()
    for seed in range(80):
        q = qs.mindcube_among(ctx, np.random.default_rng(seed))
        far = "farther from you" in q.question
        left = q.question.rstrip("?").endswith("to the left")
        assert gold_text(q) == quad[(q.meta["viewpoint"], far, left)], q.question
        seen.add(q.meta["viewpoint"])
    assert seen == {0, 1, -1}


def test_not_applicable_returns_none():
    sc = room([ball("red", 5, 2)])
    ctx = context(sc, [pose(2, 2, 0), pose(2, 2, 3)])       # 3 deg turn, no move: nothing to ask
    assert qs.camera_motion(ctx, np.random.default_rng(0)) is None
    with pytest.raises(ValueError, match="unknown question family"):
        qs.ask("nope", ctx, np.random.default_rng(0))
