"""Camera actions of the ActoR format: data types, text serializer, tolerant parser, teacher actions from
two camera poses, and composition of actions back into a relative motion.

The viewer model (docs/design.md, "The ActoR format and rewards"): a viewer has a position, a yaw about world up
and a pitch (no roll). `turn left/right` changes the yaw (left = counter-clockwise seen from above, i.e. the
yaw increases, with a right-handed world), `turn up/down` changes the pitch, `move forward` moves along the
*horizontal* heading (the pitch does not tilt the move), `move up/down` moves along world up. Yaw, pitch and the
horizontal frame come from `hatch_vlm.geometry` (`up_basis`, `yaw_pitch`, `relative_motion`).

A relative motion is a `hatch_vlm.geometry.Motion`, in the horizontal frame of the start viewer: forward
(along its heading), left, up, in metres; `yaw_deg` and `pitch_deg` changes in degrees (yaw wrapped to
(-180, 180]), the unit of the action text, so no conversion happens here.

Text format (one pair block):

    {from:0,to:1,action:[{turn right: 120 deg}{move forward: 1.2 m}{turn left: 150 deg}]}

and a whole completion: ``<action>`` pair blocks for every i < j in order ``</action><answer>...</answer>``.
Parsers never raise: they return a `Parsed` holding either the value or the reason the text is rejected.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Generic, TypeVar
from collections.abc import Sequence

from .. import geometry as geo

T = TypeVar("T")

TURN_DIRECTIONS = ("left", "right", "up", "down")
MOVE_DIRECTIONS = ("forward", "up", "down")


# ----------------------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class Action:
    """One camera action: `kind` "turn" (value in degrees) or "move" (value in metres)."""

    kind: str        # "turn" | "move"
    direction: str   # turn: left|right|up|down; move: forward|up|down
    value: float     # degrees for turns, metres for moves

    def __post_init__(self):
        allowed = {"turn": TURN_DIRECTIONS, "move": MOVE_DIRECTIONS}
        if self.kind not in allowed:
            raise ValueError(f"Action.kind must be 'turn' or 'move', got {self.kind!r}")
        if self.direction not in allowed[self.kind]:
            raise ValueError(f"Action.direction for {self.kind!r} must be one of {allowed[self.kind]}, "
                             f"got {self.direction!r}")
        if not math.isfinite(float(self.value)):
            raise ValueError(f"Action.value must be finite, got {self.value!r}")

    @property
    def unit(self) -> str:
        return "deg" if self.kind == "turn" else "m"


@dataclass(frozen=True)
class PairActions:
    """The actions that take the viewer of image `src` to the viewer of image `dst`."""

    src: int
    dst: int
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class Completion:
    """A parsed ActoR completion: the pair blocks in written order and the (stripped) answer text."""

    pairs: tuple[PairActions, ...]
    answer: str


@dataclass(frozen=True)
class Parsed(Generic[T]):
    """Result of a parse: `value` when `ok`, else `error` says why (and where) the text was rejected."""

    value: T | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def _fail(msg: str) -> Parsed:
    return Parsed(None, msg)


# ------------------------------------------------------------------------------------------ serializer
def _format_value(a: Action) -> str:
    # Degrees are written as integers and metres with one decimal (the teacher's rounding); other values
    # keep enough digits to round-trip exactly.
    v = float(a.value)
    if a.kind == "turn" and v == round(v):
        return str(int(round(v)))
    if a.kind == "move" and round(v, 1) == v:
        return f"{v:.1f}"
    return repr(v)


def format_action(a: Action) -> str:
    return f"{{{a.kind} {a.direction}: {_format_value(a)} {a.unit}}}"


def format_pair(p: PairActions) -> str:
    return f"{{from:{p.src},to:{p.dst},action:[{''.join(format_action(a) for a in p.actions)}]}}"


def format_completion(pairs: Sequence[PairActions], answer: str) -> str:
    """The full ActoR completion text: all pair blocks in one `<action>` tag, then the answer."""
    return f"<action>{''.join(format_pair(p) for p in pairs)}</action><answer>{answer}</answer>"


# ---------------------------------------------------------------------------------------------- parser
_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_DEG_UNITS = {"deg", "degs", "degree", "degrees", "°"}
_M_UNITS = {"m", "meter", "meters", "metre", "metres"}
_ACTION_RE = re.compile(
    rf"\{{\s*(?P<kind>[a-z]+)\s+(?P<dir>[a-z]+)\s*:\s*(?P<val>{_NUM})\s*(?P<unit>[a-z°]*)\s*\}}", re.I)
_PAIR_HEAD_RE = re.compile(
    r"\{\s*from\s*:\s*(?P<src>\d{1,9})\s*,\s*to\s*:\s*(?P<dst>\d{1,9})\s*,\s*actions?\s*:\s*\[", re.I)


def _never_raises(fn):
    """Parsers return a `Parsed`, never raise: a parser bug must not crash a training run."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            return _fail(f"internal parser error: {type(exc).__name__}: {exc}")
    return wrapper


def _snippet(text: str, pos: int, width: int = 30) -> str:
    return repr(text[pos:pos + width] + ("..." if len(text) > pos + width else ""))


@_never_raises
def parse_action(text: str) -> Parsed[Action]:
    """Parse one `{turn right: 120 deg}`-style action (surrounding whitespace allowed)."""
    if not isinstance(text, str):
        return _fail(f"expected a string, got {type(text).__name__}")
    m = _ACTION_RE.fullmatch(text.strip())
    if not m:
        return _fail(f"not an action of the form '{{turn|move <direction>: <number> deg|m}}': {_snippet(text, 0)}")
    return _action_from_match(m)


def _action_from_match(m: re.Match) -> Parsed[Action]:
    kind, direction, unit = m["kind"].lower(), m["dir"].lower(), m["unit"].lower()
    if kind == "turn":
        if direction not in TURN_DIRECTIONS:
            return _fail(f"'turn' takes left|right|up|down, got {direction[:20]!r}")
        if unit not in _DEG_UNITS:
            return _fail(f"a turn is measured in deg, got unit {m['unit'][:20]!r}")
    elif kind == "move":
        if direction not in MOVE_DIRECTIONS:
            return _fail(f"'move' takes forward|up|down, got {direction[:20]!r}")
        if unit not in _M_UNITS:
            return _fail(f"a move is measured in m, got unit {m['unit'][:20]!r}")
    else:
        return _fail(f"an action is 'turn' or 'move', got {m['kind'][:20]!r}")
    value = float(m["val"])
    if not math.isfinite(value):
        return _fail(f"action value is not finite: {m['val'][:20]!r}")
    return Parsed(Action(kind, direction, value))


def _parse_pair_at(text: str, pos: int) -> tuple[Parsed[PairActions], int]:
    """Parse a pair block starting at `pos` (after whitespace); returns the result and the end position."""
    head = _PAIR_HEAD_RE.match(text, pos)
    if not head:
        return _fail(f"expected a pair block '{{from:i,to:j,action:[...]}}' at {_snippet(text, pos)}"), pos
    src, dst = int(head["src"]), int(head["dst"])
    pos = head.end()
    actions: list[Action] = []
    sep = re.compile(r"[\s,]*")
    while True:
        pos = sep.match(text, pos).end()
        if text.startswith("]", pos):
            pos += 1
            break
        m = _ACTION_RE.match(text, pos)
        if not m:
            return _fail(f"pair {src}->{dst}: expected an action or ']' at {_snippet(text, pos)}"), pos
        a = _action_from_match(m)
        if not a.ok:
            return _fail(f"pair {src}->{dst}: {a.error}"), pos
        actions.append(a.value)
        pos = m.end()
    close = re.compile(r"\s*\}").match(text, pos)
    if not close:
        return _fail(f"pair {src}->{dst}: expected '}}' after the action list at {_snippet(text, pos)}"), pos
    return Parsed(PairActions(src, dst, tuple(actions))), close.end()


@_never_raises
def parse_pair(text: str) -> Parsed[PairActions]:
    """Parse exactly one pair block (surrounding whitespace allowed)."""
    if not isinstance(text, str):
        return _fail(f"expected a string, got {type(text).__name__}")
    res, end = _parse_pair_at(text, len(text) - len(text.lstrip()))
    if res.ok and text[end:].strip():
        return _fail(f"unexpected text after the pair block: {_snippet(text, end)}")
    return res


@_never_raises
def parse_action_section(body: str) -> Parsed[tuple[PairActions, ...]]:
    """Parse the inside of `<action>...</action>`: pair blocks separated by optional whitespace / commas."""
    pairs: list[PairActions] = []
    pos, sep = 0, re.compile(r"[\s,]*")
    while True:
        pos = sep.match(body, pos).end()
        if pos >= len(body):
            break
        res, pos = _parse_pair_at(body, pos)
        if not res.ok:
            return _fail(res.error)
        pairs.append(res.value)
    if not pairs:
        return _fail("the <action> section holds no pair block")
    return Parsed(tuple(pairs))


@_never_raises
def parse_completion(text: str, num_views: int | None = None) -> Parsed[Completion]:
    """Parse a whole completion `<action>...</action><answer>...</answer>` and check its structure.

    With `num_views` = V the pairs must be exactly (0,1), (0,2), ..., (V-2, V-1) in that order; without it they
    must still be distinct pairs i < j in increasing order. Nothing but whitespace may precede `<action>` or
    follow `</answer>`. Never raises.
    """
    if not isinstance(text, str):
        return _fail(f"expected a string, got {type(text).__name__}")
    m = re.fullmatch(r"\s*<action>(?P<body>.*?)</action>\s*<answer>(?P<ans>.*?)</answer>\s*", text,
                     re.I | re.S)
    if not m:
        return _fail(_why_not_structure(text))
    for tag in ("<action>", "</action>", "<answer>", "</answer>"):
        if m["body"].lower().count(tag) or m["ans"].lower().count(tag):
            return _fail(f"nested or repeated tag {tag} inside a section")
    section = parse_action_section(m["body"])
    if not section.ok:
        return _fail(section.error)
    pairs = section.value
    got = [(p.src, p.dst) for p in pairs]
    if num_views is not None:
        want = expected_pairs(num_views)
        if got != want:
            return _fail(f"expected pairs {want} for {num_views} views, got {got}")
    else:
        for (a, b), prev in zip(got, [None] + got[:-1]):
            if a >= b:
                return _fail(f"pair ({a},{b}) must have from < to")
            if prev is not None and (a, b) <= prev:
                return _fail(f"pairs must be distinct and in increasing order, got {prev} then {(a, b)}")
    answer = m["ans"].strip()
    if not answer:
        return _fail("the <answer> is empty")
    return Parsed(Completion(pairs, answer))


def _why_not_structure(text: str) -> str:
    low = text.lower()
    if "<action>" not in low:
        return "no <action> tag"
    if "</action>" not in low:
        return "<action> is never closed by </action>"
    if "<answer>" not in low:
        return "no <answer> tag"
    if "</answer>" not in low:
        return "<answer> is never closed by </answer>"
    if low.count("<action>") > 1 or low.count("<answer>") > 1:
        return "more than one <action> or <answer> section"
    if low.strip().startswith("<action>") and not low.strip().endswith("</answer>"):
        return f"text after </answer>: {_snippet(text, low.rfind('</answer>') + len('</answer>'))}"
    if not low.strip().startswith("<action>"):
        return f"text before <action>: {_snippet(text.strip(), 0)}"
    return "sections out of order: expected <action>...</action> then <answer>...</answer>"


def expected_pairs(num_views: int) -> list[tuple[int, int]]:
    """All pairs i < j of `num_views` images, in the order the completion lists them."""
    return [(i, j) for i in range(num_views) for j in range(i + 1, num_views)]


# ------------------------------------------------------------------------------------ viewer geometry
def compose_actions(actions: Sequence[Action]) -> geo.Motion:
    """Apply actions to a viewer at the origin with yaw 0 and pitch 0; return where it ends up."""
    x = y = z = yaw = pitch = 0.0
    for a in actions:
        v = float(a.value)
        if a.kind == "turn":
            if a.direction == "left":
                yaw += v
            elif a.direction == "right":
                yaw -= v
            elif a.direction == "up":
                pitch += v
            else:
                pitch -= v
        else:
            if a.direction == "forward":
                x += v * math.cos(math.radians(yaw))
                y += v * math.sin(math.radians(yaw))
            elif a.direction == "up":
                z += v
            else:
                z -= v
    return geo.Motion(x, y, z, geo.wrap_degrees(yaw), pitch)


def _turn(delta_deg: float, positive: str, negative: str) -> list[Action]:
    return [Action("turn", positive if delta_deg > 0 else negative, abs(delta_deg))] if delta_deg else []


def _move(delta_m: float, positive: str, negative: str) -> list[Action]:
    return [Action("move", positive if delta_m > 0 else negative, abs(delta_m))] if delta_m else []


def teacher_actions(T_i, T_j, world_up=(0.0, 0.0, 1.0)) -> tuple[Action, ...]:
    """Teacher actions from camera pose `T_i` to `T_j` (camera-to-world, OpenCV axes).

    Turn to face the horizontal displacement, move forward its length, move up/down, turn to the final yaw,
    turn up/down to the final pitch. Degrees are rounded to integers and metres to 0.1; zero actions are
    left out; a horizontal displacement that rounds to 0 m gives no initial turn and no forward move. The
    final turns are computed from the *rounded* earlier turns, so rounding errors do not add up: composing
    the result gives yaw and pitch within 0.5 deg and each position component within 0.05 m plus the
    0.5 deg heading error over the forward distance.
    """
    rel = geo.relative_motion(geo.validate_pose(T_i, "T_i"), geo.validate_pose(T_j, "T_j"), world_up)
    out: list[Action] = []
    dist = round(math.hypot(rel.forward, rel.left), 1)
    heading = 0.0
    if dist > 0:
        heading = float(round(geo.wrap_degrees(math.degrees(math.atan2(rel.left, rel.forward)))))
        out += _turn(heading, "left", "right")
        out += _move(dist, "forward", "forward")
    out += _move(round(rel.up, 1), "up", "down")
    out += _turn(float(round(geo.wrap_degrees(rel.yaw_deg - heading))), "left", "right")
    out += _turn(float(round(rel.pitch_deg)), "up", "down")
    return tuple(out)


def teacher_pairs(cam_to_world, world_up=(0.0, 0.0, 1.0)) -> tuple[PairActions, ...]:
    """Teacher actions for every pair i < j of the poses `cam_to_world` [V, 4, 4]."""
    poses = geo.validate_poses(cam_to_world, "cam_to_world")
    if poses.ndim != 3:
        raise ValueError(f"cam_to_world: expected [V, 4, 4], got shape {poses.shape}")
    return tuple(PairActions(i, j, teacher_actions(poses[i], poses[j], world_up))
                 for i, j in expected_pairs(len(poses)))
