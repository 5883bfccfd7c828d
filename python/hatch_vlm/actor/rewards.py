"""Verifiable rewards of ActoR as TRL reward functions.

Every function has TRL's calling convention `f(prompts=None, completions=..., **kwargs) -> list[float]`:
`completions[k]` is either a string or a conversational message list (the text is
`completions[k][0]["content"]`, itself a string or a list of `{"type": "text", "text": ...}` parts), and the
dataset's gold columns arrive as keyword lists with one entry per completion. They never raise: a
completion that cannot be read, or a row with missing / malformed gold data, scores 0.

Gold columns read:
* `format_reward`: `num_views` (int), or it counts the views from `gold_motions` / `gold_poses`; without any
  it checks the structure only (distinct pairs i < j, in order).
* `answer_reward`: `answer` (gold letter or number as text) and `answer_type` ("mc" | "numeric").
* `action_reward`: `gold_motions` (per pair i < j, in order: [forward, left, up, yaw_deg, pitch_deg], the
  motion in viewer i's horizontal frame, see `hatch_vlm.geometry.Motion`), or `gold_poses` ([V, 4, 4]
  camera-to-world) with optional `world_up`, from which the motions of the teacher actions are computed.

R_act formula (ours; the paper gives none). For each pair (i, j) with gold motion g and the composition p of
the predicted actions of that pair:

    pos_err = || (p.forward, p.left, p.up) - (g.forward, g.left, g.up) ||         (metres)
    ang_err = |wrap(p.yaw - g.yaw)| + |p.pitch - g.pitch|                        (degrees)

and one of two shapes (`shape`, GRPOOptions.action_reward):

    "partial" (GRPO's default):  r_pair = 1/2 * [ 1 / (1 + pos_err / s_pos) + 1 / (1 + ang_err / s_ang) ]
                                 with s_pos = 1.0 m and s_ang = 60 deg
    "product" (the original):    r_pair = exp(-pos_err / s_pos) * exp(-ang_err / s_ang)
                                 with s_pos = 0.5 m and s_ang = 30 deg

(`sigma_pos` / `sigma_ang` override the scales; None takes the shape's defaults.) r_pair = 0 for a pair the
completion lacks or cannot parse; R_act = mean over the gold pairs. GRPO trains with
`GRPOOptions.action_reward` ("partial" unless set); `action_reward` below (and `make_action_reward()`) is the
product, the held-out metric the pipeline reports (`generation.evaluate_rewards`), so that metric compares
with earlier runs; `partial_action_reward` is the partial one. Both shapes are 1 exactly at zero error
and decrease continuously and strictly in each error. The gold from `gold_poses` is the composition of the
(rounded) teacher actions, so the teacher's own text scores exactly 1.

Why "partial" (measured in docs/grpo_study.md): after the demo's cold start, sampled actions are off by a
median 0.7 m and 90 deg (typical errors ~1 m / 60 deg). There the product gives exp(-2) * exp(-2) = 0.018
(0.14 at 0.5 m / 30 deg, 0.0025 at 1.5 m / 90 deg): 31% of GRPO groups (G = 4) have an R_act std < 0.01, and
R_act is 8% of the within-group variance of the summed reward that TRL normalises (the 0/1 answer dominates).
The partial shape gives 0.67 at 0.5 m / 30 deg, 0.50 at 1 m / 60 deg, 0.40 at 1.5 m / 90 deg, 0.25 at
3 m / 180 deg (the 1/(1+x) tail keeps ranking far-off completions, where exp(-x) with such scales would
flatten out), 0.75 for the right heading at 1 m off (each error earns its own credit); no group has an R_act
std < 0.01, and R_act's share of the variance doubles (15%).
"""
from __future__ import annotations

import math
import re
from typing import Any
from collections.abc import Callable, Sequence

import numpy as np

from ..geometry import Motion, wrap_degrees
from ..scoring.answers import score_answer
from .actions import compose_actions, expected_pairs, parse_action_section, parse_completion, teacher_pairs

ACTION_REWARD_SHAPES = ("partial", "product")
DEFAULT_ACTION_REWARD = "partial"
# The scales of each shape (metres, degrees) when sigma_pos / sigma_ang are not given (see the module doc).
SHAPE_SCALES: dict[str, tuple[float, float]] = {"product": (0.5, 30.0), "partial": (1.0, 60.0)}
DEFAULT_SIGMA_POS, DEFAULT_SIGMA_ANG = SHAPE_SCALES["product"]     # the product's (kept for callers)


# --------------------------------------------------------------------------------------------- helpers
def completion_text(completion: Any) -> str | None:
    """Text of one completion, plain or conversational; None if it has no readable text."""
    if isinstance(completion, str):
        return completion
    try:
        if isinstance(completion, dict):
            completion = [completion]
        msg = completion[-1] if len(completion) > 1 else completion[0]
        content = msg["content"] if isinstance(msg, dict) else msg
        if isinstance(content, str):
            return content
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
        return "".join(p for p in parts if isinstance(p, str))
    except Exception:
        return None


def _column(kwargs: dict, name: str, k: int) -> Any:
    col = kwargs.get(name)
    if col is None:
        return None
    try:
        return col[k]
    except Exception:
        return None


def _safe(fn: Callable[[], float]) -> float:
    try:
        r = float(fn())
        return r if math.isfinite(r) else 0.0
    except Exception:
        return 0.0


def gold_motions_for(kwargs: dict, k: int) -> list[Motion] | None:
    """Gold relative motions of row k (one per pair i < j), from `gold_motions` or `gold_poses`."""
    motions = _column(kwargs, "gold_motions", k)
    if motions is not None:
        return [Motion.from_list(m) for m in motions]
    poses = _column(kwargs, "gold_poses", k)
    if poses is None:
        return None
    up = _column(kwargs, "world_up", k)
    up = (0.0, 0.0, 1.0) if up is None else tuple(up)
    return [compose_actions(p.actions) for p in teacher_pairs(np.asarray(poses, dtype=np.float64), up)]


def num_views_for(kwargs: dict, k: int) -> int | None:
    """Number of views of row k: `num_views`, else from the gold poses / motions (V(V-1)/2 pairs)."""
    try:
        v = _column(kwargs, "num_views", k)
        if v is not None:
            return int(v)
        poses = _column(kwargs, "gold_poses", k)
        if poses is not None:
            return len(poses)
        motions = _column(kwargs, "gold_motions", k)
        if motions is not None:
            n = len(motions)
            v = int(round((1 + math.sqrt(1 + 8 * n)) / 2))
            return v if v * (v - 1) // 2 == n else None
    except Exception:
        return None
    return None


# ----------------------------------------------------------------------------------------------- format
def format_score(text: str | None, num_views: int | None = None) -> float:
    """1.0 iff `text` parses as a complete ActoR completion (with exactly the pairs of `num_views`)."""
    if text is None:
        return 0.0
    return 1.0 if parse_completion(text, num_views).ok else 0.0


def format_reward(prompts=None, completions=None, **kwargs) -> list[float]:
    """R_fmt per completion: 1 iff it parses with one block per pair, in order, and the answer last."""
    completions = completions or []
    return [_safe(lambda k=k, c=c: format_score(completion_text(c), num_views_for(kwargs, k)))
            for k, c in enumerate(completions)]


# ----------------------------------------------------------------------------------------------- answer
def answer_score(text: str | None, gold: Any, answer_type: str = "mc") -> float:
    """R_ans of one completion text: `hatch_vlm.scoring.answers.score_answer` (the synthetic benchmark's
    scorer too, so training and evaluation agree): last `<answer>` wins, lenient letter match, SPAR's numeric rule."""
    if text is None or gold is None:
        return 0.0
    return score_answer(text, str(gold), str(answer_type).lower())


def answer_reward(prompts=None, completions=None, **kwargs) -> list[float]:
    """R_ans per completion from the `answer` and `answer_type` columns (type defaults to "mc")."""
    completions = completions or []
    out = []
    for k, c in enumerate(completions):
        at = _column(kwargs, "answer_type", k) or "mc"
        out.append(_safe(lambda k=k, c=c, at=at: answer_score(completion_text(c), _column(kwargs, "answer", k), at)))
    return out


# ----------------------------------------------------------------------------------------------- action
def motion_errors(pred: Motion, gold: Motion) -> tuple[float, float]:
    """(pos_err in metres, ang_err in degrees) of a predicted against a gold motion (see module doc)."""
    pos_err = math.dist((pred.forward, pred.left, pred.up), (gold.forward, gold.left, gold.up))
    ang_err = abs(wrap_degrees(pred.yaw_deg - gold.yaw_deg)) + abs(pred.pitch_deg - gold.pitch_deg)
    return pos_err, ang_err


def check_shape(shape: str, sigma_pos: float | None = None, sigma_ang: float | None = None) -> tuple[float, float]:
    """The (sigma_pos, sigma_ang) of `shape` (None: the shape's default); ValueError on a bad shape or scale."""
    if shape not in SHAPE_SCALES:
        raise ValueError(f"action reward shape must be one of {list(ACTION_REWARD_SHAPES)}, got {shape!r}")
    dp, da = SHAPE_SCALES[shape]
    sp, sa = (dp if sigma_pos is None else sigma_pos), (da if sigma_ang is None else sigma_ang)
    if not (isinstance(sp, (int, float)) and isinstance(sa, (int, float)) and math.isfinite(sp)
            and math.isfinite(sa) and sp > 0 and sa > 0):
        raise ValueError(f"sigma_pos and sigma_ang must be finite numbers > 0, got {sigma_pos}, {sigma_ang}")
    return float(sp), float(sa)


def motion_score(pred: Motion, gold: Motion, sigma_pos: float | None = None, sigma_ang: float | None = None,
                 shape: str = "product") -> float:
    """r_pair of one predicted motion: 1 for an exact match, decreasing with the errors (see module doc).

    shape "product": exp(-pos_err / sigma_pos) * exp(-ang_err / sigma_ang) (scales 0.5 m, 30 deg by default);
    "partial": (1 / (1 + pos_err / sigma_pos) + 1 / (1 + ang_err / sigma_ang)) / 2 (1 m, 60 deg)."""
    sp, sa = check_shape(shape, sigma_pos, sigma_ang)
    pos_err, ang_err = motion_errors(pred, gold)
    if shape == "product":
        return math.exp(-pos_err / sp) * math.exp(-ang_err / sa)
    return 0.5 * (1.0 / (1.0 + pos_err / sp) + 1.0 / (1.0 + ang_err / sa))


def _action_section(text: str) -> str | None:
    """Body of the first `<action>...</action>` (or of an unclosed `<action>` up to `<answer>`)."""
    m = re.search(r"<action>(.*?)(?:</action>|<answer>|$)", text, re.I | re.S)
    return m.group(1) if m else None


def action_score(text: str | None, gold: Sequence[Motion], sigma_pos: float | None = None,
                 sigma_ang: float | None = None, shape: str = "product") -> float:
    """R_act of one completion: the mean over the gold pairs (i < j, in order) of the pair scores.

    Pairs are matched by their (from, to) indices; a gold pair the completion does not give, or gives
    twice, or whose section does not parse, scores 0 (partial credit comes from the pairs that parse).
    """
    if text is None or not gold:
        return 0.0
    v = int(round((1 + math.sqrt(1 + 8 * len(gold))) / 2))
    want = expected_pairs(v) if v * (v - 1) // 2 == len(gold) else [(0, k + 1) for k in range(len(gold))]
    body = _action_section(text)
    if body is None:
        return 0.0
    predicted: dict[tuple[int, int], list] = {}
    for block in _split_pair_blocks(body):
        parsed = parse_action_section(block)
        if parsed.ok:
            for p in parsed.value:
                predicted.setdefault((p.src, p.dst), []).append(p.actions)
    total = 0.0
    for key, g in zip(want, gold):
        acts = predicted.get(key)
        if acts is not None and len(acts) == 1:
            total += motion_score(compose_actions(acts[0]), g, sigma_pos, sigma_ang, shape)
    return total / len(gold)


def _split_pair_blocks(body: str) -> list[str]:
    """Cut an action section into candidate pair blocks at each '{from', so one bad block spares the rest."""
    starts = [m.start() for m in re.finditer(r"\{\s*from\s*:", body, re.I)]
    return [body[a:b] for a, b in zip(starts, starts[1:] + [len(body)])]


def make_action_reward(sigma_pos: float | None = None, sigma_ang: float | None = None, shape: str = "product"):
    """An action reward function of the given shape ("product" | "partial") and scales (metres, degrees;
    None: the shape's defaults, `SHAPE_SCALES`), named `action_reward` for TRL's logs."""
    sigma_pos, sigma_ang = check_shape(shape, sigma_pos, sigma_ang)

    def action_reward(prompts=None, completions=None, **kwargs) -> list[float]:
        """R_act per completion from the `gold_motions` (or `gold_poses` + `world_up`) column."""
        completions = completions or []
        return [_safe(lambda k=k, c=c: action_score(completion_text(c), gold_motions_for(kwargs, k) or [],
                                                    sigma_pos, sigma_ang, shape))
                for k, c in enumerate(completions)]

    action_reward.shape = shape
    return action_reward


# The original product shape: the held-out metric (`generation.evaluate_rewards`) and the tests' reference.
action_reward = make_action_reward()
partial_action_reward = make_action_reward(shape="partial")
