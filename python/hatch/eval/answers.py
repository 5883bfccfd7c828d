"""Answer extraction and scoring, shared by evaluation and the ActoR answer reward.

DESIGN.md: the last `<answer>` wins; multiple choice accepts "C", "C.", "(C)", "C. Back, Right" (and
"answer: C", "The answer is C"); numeric answers are scored by SPAR-Bench's mean relative accuracy:
the mean over θ ∈ {0.50, 0.55, …, 0.95} of [|pred − gold| / |gold| < 1 − θ].
None of these functions raises on any text.
"""
from __future__ import annotations

import math
import re

THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))

_ANSWER_CLOSED = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_ANSWER_OPEN = re.compile(r"<answer>", re.I)
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
# A letter standing alone as an option: at the start ("C", "C.", "(C)", "C: ...", "C) ..."), or after
# "answer is"/"answer:"/"option".
_LEADING_LETTER = re.compile(r"^\s*[\(\[]?\s*([A-Za-z])\s*(?:[\)\]\.:,]|\s|$)")
_PHRASED_LETTER = re.compile(
    r"(?:answer\s*(?:is|:)?|option|choice)\s*[\(\[]?\s*([A-Za-z])\s*(?:[\)\]\.:,]|\s|$)", re.I)


def answer_span(completion: str) -> str:
    """The text the model gave as its answer: the last closed <answer>…</answer>, else the text after
    the last unclosed <answer>, else the whole completion (stripped)."""
    if not isinstance(completion, str):
        return ""
    closed = _ANSWER_CLOSED.findall(completion)
    if closed:
        return closed[-1].strip()
    opened = list(_ANSWER_OPEN.finditer(completion))
    if opened:
        return completion[opened[-1].end():].strip()
    return completion.strip()


def extract_letter(text: str, num_options: int = 26) -> str | None:
    """The option letter in an answer text ("C", "C.", "(C)", "C. Back, Right", "The answer is C"),
    upper-case, or None. Only the first `num_options` letters count as options."""
    if not isinstance(text, str):
        return None
    allowed = {chr(ord("A") + k) for k in range(max(1, min(num_options, 26)))}
    for pattern in (_LEADING_LETTER, _PHRASED_LETTER):
        m = pattern.search(text.strip())
        if m and m.group(1).upper() in allowed:
            # A leading word like "A ball" must not read as option A when options are long words:
            # accept a lower-case letter only when it stands alone.
            letter = m.group(1)
            if letter.islower() and len(text.strip()) > 2:
                continue
            return letter.upper()
    return None


def extract_number(text: str) -> float | None:
    """The first finite number in an answer text ("2.5", "about 2.5 m", "-3"), or None."""
    if not isinstance(text, str):
        return None
    for m in _NUMBER.finditer(text):
        try:
            value = float(m.group(0))
        except ValueError:
            continue
        if math.isfinite(value):
            return value
    return None


def score_mc(completion: str, gold_letter: str, num_options: int = 26) -> float:
    """1.0 iff the letter extracted from the completion's answer equals the gold letter."""
    pred = extract_letter(answer_span(completion), num_options)
    gold = extract_letter(str(gold_letter), 26) if gold_letter is not None else None
    return 1.0 if pred is not None and pred == gold else 0.0


def mean_relative_accuracy(pred: float | None, gold: float) -> float:
    """SPAR-Bench's rule. A gold of 0 is scored by absolute error against the same thresholds."""
    if pred is None or gold is None or not math.isfinite(gold):
        return 0.0
    err = abs(pred - gold) / abs(gold) if gold != 0 else abs(pred)
    return sum(err < 1 - t for t in THRESHOLDS) / len(THRESHOLDS)


def score_numeric(completion: str, gold: float | str) -> float:
    try:
        gold_value = float(gold)
    except (TypeError, ValueError):
        return 0.0
    return mean_relative_accuracy(extract_number(answer_span(completion)), gold_value)


def score_answer(completion: str, gold: str, answer_type: str, num_options: int = 26) -> float:
    """Dispatch on the answer type: "mc" (letter), "numeric" (mean relative accuracy), anything else:
    case-insensitive exact match of the answer span."""
    try:
        if answer_type == "mc":
            return score_mc(completion, gold, num_options)
        if answer_type == "numeric":
            return score_numeric(completion, gold)
        return 1.0 if answer_span(completion).strip().lower() == str(gold).strip().lower() else 0.0
    except Exception:  # a scorer never raises, whatever text it gets
        return 0.0
