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
    r_pair  = exp(-pos_err / sigma_pos) * exp(-ang_err / sigma_ang)

with sigma_pos = 0.5 m and sigma_ang = 30 deg by default; r_pair = 0 for a pair the completion lacks or cannot
parse. R_act = mean over the gold pairs. The gold from `gold_poses` is the composition of the (rounded)
teacher actions, so the teacher's own text scores exactly 1.
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

DEFAULT_SIGMA_POS = 0.5    # metres
DEFAULT_SIGMA_ANG = 30.0   # degrees


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
def motion_score(pred: Motion, gold: Motion, sigma_pos: float = DEFAULT_SIGMA_POS,
                 sigma_ang: float = DEFAULT_SIGMA_ANG) -> float:
    """exp(-pos_err / sigma_pos) * exp(-ang_err / sigma_ang); 1 for an exact match (see module doc)."""
    pos_err = math.dist((pred.forward, pred.left, pred.up), (gold.forward, gold.left, gold.up))
    ang_err = abs(wrap_degrees(pred.yaw_deg - gold.yaw_deg)) + abs(pred.pitch_deg - gold.pitch_deg)
    return math.exp(-pos_err / sigma_pos) * math.exp(-ang_err / sigma_ang)


def _action_section(text: str) -> str | None:
    """Body of the first `<action>...</action>` (or of an unclosed `<action>` up to `<answer>`)."""
    m = re.search(r"<action>(.*?)(?:</action>|<answer>|$)", text, re.I | re.S)
    return m.group(1) if m else None


def action_score(text: str | None, gold: Sequence[Motion], sigma_pos: float = DEFAULT_SIGMA_POS,
                 sigma_ang: float = DEFAULT_SIGMA_ANG) -> float:
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
            total += motion_score(compose_actions(acts[0]), g, sigma_pos, sigma_ang)
    return total / len(gold)


def _split_pair_blocks(body: str) -> list[str]:
    """Cut an action section into candidate pair blocks at each '{from', so one bad block spares the rest."""
    starts = [m.start() for m in re.finditer(r"\{\s*from\s*:", body, re.I)]
    return [body[a:b] for a, b in zip(starts, starts[1:] + [len(body)])]


def make_action_reward(sigma_pos: float = DEFAULT_SIGMA_POS, sigma_ang: float = DEFAULT_SIGMA_ANG):
    """An action reward function with the given sigmas (metres, degrees), named `action_reward` for logs."""
    if not (sigma_pos > 0 and sigma_ang > 0):
        raise ValueError(f"sigma_pos and sigma_ang must be > 0, got {sigma_pos}, {sigma_ang}")

    def action_reward(prompts=None, completions=None, **kwargs) -> list[float]:
        """R_act per completion from the `gold_motions` (or `gold_poses` + `world_up`) column."""
        completions = completions or []
        return [_safe(lambda k=k, c=c: action_score(completion_text(c), gold_motions_for(kwargs, k) or [],
                                                    sigma_pos, sigma_ang))
                for k, c in enumerate(completions)]

    return action_reward


action_reward = make_action_reward()
