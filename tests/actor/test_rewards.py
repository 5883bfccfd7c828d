"""Rewards on realistic completions: format, answer, action; TRL calling convention; never raising."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hatch_vlm.actor.actions import Action, PairActions, compose_actions, format_completion, teacher_pairs
from hatch_vlm.actor.rewards import (SHAPE_SCALES, action_reward, answer_reward, format_reward, make_action_reward,
                                     motion_errors, motion_score, partial_action_reward)
from hatch_vlm.geometry import Motion

from ._poses import look_pose

POSES = np.stack([look_pose([0, 0, 1.5], 0, 0), look_pose([2.0, 1.0, 1.4], 60, -10),
                  look_pose([-1.0, 3.0, 1.6], 200, 5)])
TEACHER = teacher_pairs(POSES)
GOOD = format_completion(TEACHER, "C. Back, Right")


def conv(text):
    return [{"role": "assistant", "content": text}]


def test_teacher_completion_scores_one_everywhere():
    kw = dict(answer=["C"] * 2, answer_type=["mc"] * 2, gold_poses=[POSES.tolist()] * 2, num_views=[3] * 2)
    for comps in ([GOOD, GOOD], [conv(GOOD), [{"role": "assistant", "content": [{"type": "text", "text": GOOD}]}]]):
        assert format_reward(prompts=None, completions=comps, **kw) == [1.0, 1.0]
        assert answer_reward(prompts=None, completions=comps, **kw) == [1.0, 1.0]
        assert action_reward(prompts=None, completions=comps, **kw) == [1.0, 1.0]
    # gold given as motions (what formatting.py stores) works the same
    motions = [[compose_actions(p.actions).as_list() for p in TEACHER]]
    assert action_reward(completions=[GOOD], gold_motions=motions) == [1.0]
    assert format_reward(completions=[GOOD], gold_motions=motions) == [1.0]


def _with_answer(ans):
    return format_completion(TEACHER, ans)


@pytest.mark.parametrize("ans, gold, score", [
    ("C", "C", 1.0), ("C.", "C", 1.0), ("(C)", "C", 1.0), ("C. Back, Right", "C", 1.0), ("c", "C", 1.0),
    ("B", "C", 0.0), ("B. Back, Left", "C", 0.0), ("Back", "C", 0.0),
])
def test_answer_reward_mc(ans, gold, score):
    assert answer_reward(completions=[_with_answer(ans)], answer=[gold], answer_type=["mc"]) == [score]


def test_answer_reward_last_answer_wins_and_numeric_rule():
    two = "<answer>B</answer> wait <answer>C</answer>"
    assert answer_reward(completions=[two, two], answer=["C", "B"], answer_type=["mc", "mc"]) == [1.0, 0.0]
    # gold 10: rel. error 0 -> 1; 0.35 <= 1 - theta for theta in {0.50, ..., 0.65} (SPAR-Bench's `<=`: the
    # boundary counts) -> 0.4; 0.65 -> none -> 0.
    comps = [_with_answer(a) for a in ("10", "13.5 m", "6.5", "about 16.5")]
    got = answer_reward(completions=comps, answer=["10"] * 4, answer_type=["numeric"] * 4)
    assert got == pytest.approx([1.0, 0.4, 0.4, 0.0])


def test_action_reward_strictly_decreases_with_noise():
    rng = np.random.default_rng(0)
    signs = [[rng.choice([-1.0, 1.0]) for _ in p.actions] for p in TEACHER]
    scores = []
    for eps in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4):
        noisy = [PairActions(p.src, p.dst, tuple(
            Action(a.kind, a.direction, a.value * (1 + s * eps)) for a, s in zip(p.actions, sg)))
            for p, sg in zip(TEACHER, signs)]
        scores.append(action_reward(completions=[format_completion(noisy, "C")], gold_poses=[POSES])[0])
    assert scores[0] == 1.0
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[-1] > 0


def test_motion_score_formula():
    g = Motion(1.0, 0.0, 0.0, 30.0, 0.0)
    assert motion_score(g, g) == 1.0
    assert motion_score(Motion(1.5, 0.0, 0.0, 30.0, 0.0), g) == pytest.approx(math.exp(-1))
    # yaw wraps: -170 vs 170 is 20 deg apart; pitch adds
    assert motion_score(Motion(1, 0, 0, -170, 5), Motion(1, 0, 0, 170, 0),
                        sigma_ang=25) == pytest.approx(math.exp(-1))
    wide = make_action_reward(sigma_pos=2.0)
    off = format_completion([PairActions(0, 1, (Action("move", "forward", 1.0),))], "A")
    gold = [[[2.0, 0, 0, 0, 0]]]
    assert wide(completions=[off], gold_motions=gold) == [pytest.approx(math.exp(-0.5))]
    assert action_reward(completions=[off], gold_motions=gold) == [pytest.approx(math.exp(-2))]
    with pytest.raises(ValueError, match="sigma"):
        make_action_reward(sigma_pos=0)


# ------------------------------------------------------------------------------------ the partial shape
def test_partial_shape_formula_and_values_at_typical_errors():
    g = Motion(1.0, 0.0, 0.0, 30.0, 0.0)
    assert motion_score(g, g, shape="partial") == 1.0
    assert SHAPE_SCALES["partial"] == (1.0, 60.0)
    # 1 m and 60 deg off (typical after the demo's cold start): 1/2 (1/2 + 1/2); the product gives ~0.02
    off = Motion(2.0, 0.0, 0.0, 90.0, 0.0)
    assert motion_errors(off, g) == pytest.approx((1.0, 60.0))
    assert motion_score(off, g, shape="partial") == pytest.approx(0.5)
    assert motion_score(off, g) == pytest.approx(math.exp(-4)) and motion_score(off, g) < 0.02
    # each error earns its own credit: right heading, 1 m off -> 1/2 (1/2 + 1)
    assert motion_score(Motion(2.0, 0, 0, 30, 0), g, shape="partial") == pytest.approx(0.75)
    # yaw wraps, pitch adds; explicit scales override the shape's
    assert motion_score(Motion(1, 0, 0, -170, 10), Motion(1, 0, 0, 170, 0), shape="partial",
                        sigma_ang=30) == pytest.approx(0.5 * (1 + 1 / 2))
    assert motion_score(Motion(3.0, 0, 0, 30, 0), g, sigma_pos=2.0, shape="partial") == pytest.approx(0.75)


def test_partial_teacher_text_scores_exactly_one():
    kw = dict(gold_poses=[POSES.tolist()], num_views=[3])
    assert partial_action_reward(completions=[GOOD], **kw) == [1.0]
    assert partial_action_reward(completions=[conv(GOOD)], **kw) == [1.0]
    motions = [[compose_actions(p.actions).as_list() for p in TEACHER]]
    assert make_action_reward(shape="partial")(completions=[GOOD], gold_motions=motions) == [1.0]
    assert partial_action_reward(completions=["<answer>C</answer>", "", None], gold_poses=[POSES] * 3) == [0, 0, 0]


@pytest.mark.parametrize("shape", ["partial", "product"])
def test_action_reward_is_monotone_and_continuous_in_each_error(shape):
    g = Motion(1.0, -0.5, 0.2, 40.0, -10.0)
    steps = np.linspace(0.0, 4.0, 401)                    # metres, and x 45 degrees
    for axis in range(5):
        scale = 1.0 if axis < 3 else 45.0
        vals = []
        for t in steps:
            p = g.as_list()
            p[axis] += t * scale
            vals.append(motion_score(Motion.from_list(p), g, shape=shape))
        vals = np.array(vals)
        assert vals[0] == 1.0
        assert np.all(np.diff(vals) < 0), (axis, shape)                  # strictly decreasing
        # continuous: a 0.01 step moves the reward by at most Lipschitz * step (1/scale for these shapes)
        assert np.max(np.abs(np.diff(vals))) <= 0.011 * (2.0 if shape == "product" else 1.0), (axis, shape)
        if axis != 3:         # yaw wraps at 180 deg; along the others the partial credit never vanishes
            assert shape == "product" or vals[-1] > 0.1


def test_partial_gives_signal_where_the_product_gives_none():
    # the same noisy actions as test_action_reward_strictly_decreases_with_noise, much larger noise
    rng = np.random.default_rng(1)
    scores = {"partial": [], "product": []}
    for eps in (0.0, 0.25, 0.5, 1.0, 2.0):
        noisy = [PairActions(p.src, p.dst, tuple(
            Action(a.kind, a.direction, a.value * (1 + rng.choice([-1.0, 1.0]) * eps)) for a in p.actions))
            for p in TEACHER]
        text = format_completion(noisy, "C")
        scores["partial"].append(partial_action_reward(completions=[text], gold_poses=[POSES])[0])
        scores["product"].append(action_reward(completions=[text], gold_poses=[POSES])[0])
    assert scores["partial"][0] == scores["product"][0] == 1.0
    assert all(p >= q for p, q in zip(scores["partial"], scores["product"]))
    assert min(scores["partial"]) > 0.2


def test_action_reward_shape_options():
    from hatch_vlm.actor.grpo import GRPOOptions, reward_functions
    from hatch_vlm.utils.config import ConfigError, from_dict

    with pytest.raises(ValueError, match="shape must be one of"):
        make_action_reward(shape="sum")
    with pytest.raises(ValueError, match="sigma"):
        make_action_reward(sigma_ang=float("nan"), shape="partial")
    assert GRPOOptions().action_reward == "partial"
    with pytest.raises(ConfigError, match=r"action_reward: must be one of 'partial', 'product', got 'exp'"):
        GRPOOptions(action_reward="exp")
    with pytest.raises(ConfigError, match="sigma_pos: must be a finite number > 0"):
        GRPOOptions(sigma_pos=-1.0)
    with pytest.raises(ConfigError, match="action_reward"):
        from_dict(GRPOOptions, {"action_reward": "nope"})
    off = format_completion([PairActions(0, 1, (Action("move", "forward", 1.0),))], "A")
    gold = [[[2.0, 0, 0, 0, 0]]]                                        # 1 m off, heading right
    for opts, want in ((GRPOOptions(), 0.75), (GRPOOptions(action_reward="product"), math.exp(-2)),
                       (from_dict(GRPOOptions, {"action_reward": "product", "sigma_pos": 1.0}), math.exp(-1)),
                       (GRPOOptions(sigma_pos=3.0), 0.5 * (0.75 + 1))):
        act = reward_functions(opts)[0]
        assert act.__name__ == "action_reward"                          # TRL logs rewards/action_reward/mean
        assert act(completions=[off], gold_motions=gold) == [pytest.approx(want)]


def test_missing_unparsable_and_duplicated_pairs():
    kw = dict(gold_poses=[POSES] * 6, num_views=[3] * 6)     # one gold entry per completion, as in TRL
    missing = format_completion(TEACHER[:2], "C")                            # pair (1,2) missing
    bad = GOOD.replace("{from:1,to:2,action:[", "{from:1,to:2,action:[{fly up: 2 m}")
    dup = format_completion(TEACHER[:2] + TEACHER[1:], "C")                  # (0,2) twice
    after = GOOD + " I hope this helps."
    no_answer = GOOD[:GOOD.index("<answer>")]
    assert action_reward(completions=[missing, bad, dup], **kw) == pytest.approx([2 / 3, 2 / 3, 2 / 3])
    assert format_reward(completions=[missing, bad, dup, after, no_answer, GOOD], **kw) == [0, 0, 0, 0, 0, 1]
    assert action_reward(completions=["<answer>C</answer>", ""], **kw) == [0.0, 0.0]


@settings(max_examples=150, deadline=None)
@given(text=st.one_of(st.text(max_size=150), st.none(), st.integers(), st.just([{"role": "x"}]),
                      st.just([{"content": None}]), st.just({})))
def test_rewards_never_raise(text):
    bad_gold = dict(answer=[None], answer_type=[3], gold_poses=[[[1, 2]]], num_views=["x"], world_up=["up"])
    for kw in (dict(answer=["C"], gold_poses=[POSES], num_views=[3]), bad_gold, {}):
        for fn in (format_reward, answer_reward, action_reward, partial_action_reward):
            out = fn(prompts=None, completions=[text], **kw)
            assert len(out) == 1 and 0.0 <= out[0] <= 1.0
