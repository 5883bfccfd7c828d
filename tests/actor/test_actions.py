"""Actions: viewer geometry, teacher actions, composition, serializer and parser."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hatch_vlm.actor.actions import (Action, PairActions, compose_actions, format_action, format_completion,
                                     format_pair, parse_action, parse_completion, parse_pair, teacher_actions,
                                     teacher_pairs)
from hatch_vlm.geometry import relative_motion, wrap_degrees

from ._poses import look_pose

UPS = [(0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (0.0, -1.0, 0.0), (1.0, 2.0, -0.5)]


def test_relative_motion_by_hand():
    # Facing +x at (1, 2, 3) -> at (1, 4, 2) facing -x, looking 10 deg down: the target is 2 m to the left.
    m = relative_motion(look_pose([1, 2, 3], 0, 0), look_pose([1, 4, 2], 180, -10))
    assert (m.forward, m.left, m.up, abs(m.yaw_deg), m.pitch_deg) == pytest.approx((0, 2, -1, 180, -10), abs=1e-9)
    # Facing +y (yaw 90): a point at +x is to the right, and yaw is measured against the start heading.
    m = relative_motion(look_pose([0, 0, 0], 90, 5), look_pose([3, 0, 0], 60, 5))
    assert (m.forward, m.left, m.up, m.yaw_deg, m.pitch_deg) == pytest.approx((0, -3, 0, -30, 0), abs=1e-9)
    # The OpenCV identity camera looks along world +z: with up = -y (a y-down world) it looks horizontally.
    assert relative_motion(np.eye(4), look_pose([0, 0, 1], 0, 0, (0, -1, 0)), (0, -1, 0)).pitch_deg == \
        pytest.approx(0.0, abs=1e-9)


def test_teacher_actions_hand_example():
    # Facing +x at height 1 -> at (1, 1, 1.5) facing +y, looking 20 deg down.
    a = teacher_actions(look_pose([0, 0, 1], 0, 0), look_pose([1, 1, 1.5], 90, -20))
    assert a == (Action("turn", "left", 45), Action("move", "forward", 1.4), Action("move", "up", 0.5),
                 Action("turn", "left", 45), Action("turn", "down", 20))
    # Facing +x -> 2 m to the right (-y), facing back (-x): turn right 90, forward 2, turn right 90.
    a = teacher_actions(look_pose([0, 0, 0], 0, 0), look_pose([0, -2, 0], 180, 0))
    assert a == (Action("turn", "right", 90), Action("move", "forward", 2.0), Action("turn", "right", 90))
    # No horizontal displacement: only the vertical move and the turns; zero actions skipped.
    a = teacher_actions(look_pose([0, 0, 0], 10, 5), look_pose([0.01, 0, -0.3], -20, 5))
    assert a == (Action("move", "down", 0.3), Action("turn", "right", 30))
    assert teacher_actions(look_pose([1, 1, 1], 10, 5), look_pose([1, 1, 1], 10, 5)) == ()


def test_bad_pose_is_a_clear_error():
    with pytest.raises(ValueError, match="T_i: expected a 4x4"):
        teacher_actions(np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="world_up"):
        teacher_actions(np.eye(4), np.eye(4), (0, 0, 0))
    with pytest.raises(ValueError, match="cam_to_world"):
        teacher_pairs(np.eye(4)[None, :3])
    with pytest.raises(ValueError, match=r"\[V, 4, 4\]"):
        teacher_pairs(np.eye(4))
    with pytest.raises(ValueError, match="T_j"):
        teacher_actions(np.eye(4), np.diag([2.0, 1, 1, 1]))


coord = st.floats(-20, 20, allow_nan=False)
angle = st.floats(-180, 180, allow_nan=False)
pitch = st.floats(-85, 85, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(p1=st.tuples(coord, coord, coord), p2=st.tuples(coord, coord, coord), y1=angle, y2=angle,
       q1=pitch, q2=pitch, up=st.sampled_from(UPS))
def test_composed_teacher_actions_give_relative_motion(p1, p2, y1, y2, q1, q2, up):
    Ti, Tj = look_pose(p1, y1, q1, up), look_pose(p2, y2, q2, up)
    rel = relative_motion(Ti, Tj, up)
    # The relative motion itself is right: yaw / pitch differences and the displacement's length.
    assert abs(wrap_degrees(rel.yaw_deg - (y2 - y1))) < 1e-6 and rel.pitch_deg == pytest.approx(q2 - q1, abs=1e-6)
    assert math.dist((0, 0, 0), (rel.forward, rel.left, rel.up)) == pytest.approx(math.dist(p1, p2), abs=1e-6)
    actions = teacher_actions(Ti, Tj, up)
    for a in actions:
        assert a.value > 0
        assert a.value == round(a.value) if a.kind == "turn" else round(a.value, 1) == a.value
    got = compose_actions(actions)
    horiz = math.hypot(rel.forward, rel.left)
    tol_pos = 0.05 + horiz * math.sin(math.radians(0.5)) + 1e-9     # length rounding + heading rounding
    assert math.hypot(got.forward - rel.forward, got.left - rel.left) <= tol_pos
    assert abs(got.up - rel.up) <= 0.05 + 1e-9
    assert abs(wrap_degrees(got.yaw_deg - rel.yaw_deg)) <= 0.5 + 1e-9
    assert abs(got.pitch_deg - rel.pitch_deg) <= 0.5 + 1e-9


def test_compose_by_hand():
    m = compose_actions([Action("turn", "left", 90), Action("move", "forward", 2), Action("move", "down", 1),
                         Action("turn", "right", 270), Action("turn", "up", 10)])
    assert (m.forward, m.left, m.up, m.yaw_deg, m.pitch_deg) == pytest.approx((0, 2, -1, 180, 10), abs=1e-12)


def _action():
    turn = st.builds(lambda d, v: Action("turn", d, v), st.sampled_from(["left", "right", "up", "down"]),
                     st.one_of(st.integers(0, 360).map(float), st.floats(0, 1e4, allow_nan=False)))
    move = st.builds(lambda d, v: Action("move", d, v), st.sampled_from(["forward", "up", "down"]),
                     st.one_of(st.integers(0, 300).map(lambda k: round(k / 10, 1)),
                               st.floats(0, 1e4, allow_nan=False)))
    return st.one_of(turn, move)


pair_st = st.builds(lambda i, d, acts: PairActions(i, i + d, tuple(acts)), st.integers(0, 9),
                    st.integers(1, 9), st.lists(_action(), max_size=6))


@settings(max_examples=300, deadline=None)
@given(a=_action())
def test_serialize_parse_action_identity(a):
    assert parse_action(format_action(a)).value == a


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(pair_st, min_size=1, max_size=4), answer=st.text(min_size=1, max_size=20))
def test_serialize_parse_completion_identity(pairs, answer):
    answer = answer.replace("<", "(").strip() or "A"
    text = format_completion(pairs, answer)
    res = parse_completion(text)
    sorted_unique = all(p.src < p.dst for p in pairs) and all(
        (a.src, a.dst) < (b.src, b.dst) for a, b in zip(pairs, pairs[1:]))
    if sorted_unique:
        assert res.ok, res.error
        assert res.value.pairs == tuple(pairs) and res.value.answer == answer
    else:
        assert not res.ok and "order" in res.error
    for p in pairs:
        assert parse_pair(format_pair(p)).value == p


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(max_size=200),
                      st.text(alphabet="<>/{}[]:,. actionswerfromtoleftrightupdownmovdeg0123456789-",
                              max_size=200)))
def test_parser_never_raises_on_random_text(text):
    for fn in (parse_completion, parse_pair, parse_action):
        r = fn(text)
        assert r.ok == (r.error == "") and (r.value is None) == (not r.ok)


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, 120), junk=st.text(max_size=5))
def test_parser_never_raises_on_mutated_completions(cut, junk):
    good = ("<action>{from:0,to:1,action:[{turn right: 120 deg}{move forward: 1.2 m}]}"
            "{from:0,to:2,action:[]}{from:1,to:2,action:[{turn up: 3 deg}]}</action><answer>C. Back</answer>")
    cut = min(cut, len(good))
    for text in (good[:cut] + junk + good[cut:], good[:cut] + good[cut + len(junk):], good[:cut]):
        parse_completion(text, 3)
    assert parse_completion(good, 3).ok
    assert parse_completion(None).error and parse_action(3).error and parse_pair(b"x").error


def test_parser_tolerates_harmless_variation():
    text = (" <ACTION>\n{ FROM: 0 , To :1, action: [ { Turn RIGHT : 120.0 Deg }, {move Forward:1 m} ] },\n"
            "{from:0,to:2,actions:[{turn left: .5 degrees}]} {from:1,to:2,action:[]}</Action>\n"
            "<answer> C </answer>\n")
    res = parse_completion(text, 3)
    assert res.ok, res.error
    assert res.value.pairs[0].actions == (Action("turn", "right", 120), Action("move", "forward", 1))
    assert res.value.pairs[1].actions == (Action("turn", "left", 0.5),) and res.value.answer == "C"


@pytest.mark.parametrize("text, why", [
    ("<answer>C</answer>", "no <action>"),
    ("<action>{from:0,to:1,action:[]}</action>", "no <answer>"),
    ("<action>{from:0,to:1,action:[]}</action><answer>C</answer> because", "after </answer>"),
    ("Sure! <action>{from:0,to:1,action:[]}</action><answer>C</answer>", "before <action>"),
    ("<action>{from:0,to:1,action:[{turn forward: 3 deg}]}</action><answer>C</answer>", "left|right|up|down"),
    ("<action>{from:0,to:1,action:[{move up: 3 deg}]}</action><answer>C</answer>", "in m"),
    ("<action>{from:0,to:1,action:[{jump up: 3 m}]}</action><answer>C</answer>", "'turn' or 'move'"),
    ("<action>{from:0,to:1,action:[{turn left: 3 deg}</action><answer>C</answer>", "expected an action or ']'"),
    ("<action>{from:0,to:1,action:[]}{from:0,to:1,action:[]}</action><answer>C</answer>", "distinct"),
    ("<action>{from:1,to:0,action:[]}</action><answer>C</answer>", "from < to"),
    ("<action></action><answer>C</answer>", "no pair block"),
    ("<action>{from:0,to:1,action:[]}</action><answer> </answer>", "empty"),
])
def test_parser_says_why(text, why):
    res = parse_completion(text)
    assert not res.ok and why in res.error, res.error


def test_parser_checks_pairs_against_num_views():
    text = "<action>{from:0,to:1,action:[]}{from:1,to:2,action:[]}</action><answer>C</answer>"
    res = parse_completion(text, 3)
    assert not res.ok and "[(0, 1), (0, 2), (1, 2)]" in res.error
    assert parse_completion(text).ok
