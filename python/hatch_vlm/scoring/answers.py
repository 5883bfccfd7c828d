"""Our answer rules: reading a model's reply (the ActoR answer reward, the synthetic benchmark, the
`<answer>` span of the official scores) and reading a dataset's gold label (the readers).

docs/design.md: the last `<answer>` wins; multiple choice accepts "C", "C.", "(C)", "C. Back, Right" (and
"answer: C", "The answer is C"); numeric answers are scored by SPAR-Bench's mean relative accuracy:
the mean over θ ∈ {0.50, 0.55, …, 0.95} of [|pred − gold| / |gold| <= 1 − θ] (`<=` as the official
SPAR-Bench code has it, hatch_vlm.scoring.official.spar_bench).

Two letter rules, on purpose (they read different texts):

* `reply_letter`: a model's free-form reply ("I think it's C.", "**C**", "\\boxed{C}"); ordered rules.
* `label_letter`: a dataset's answer field ("C", "(C)", "C. Back, Right" or the option's own text, which
  needs the options); strict, so that a malformed record is rejected by its reader rather than guessed.

The benchmarks' own extractors (what their official code reads from a reply) are not these: they are in
`hatch_vlm.scoring.official.<benchmark>`. None of these functions raises on any text.
"""
from __future__ import annotations

import math
import re

THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))

_ANSWER_CLOSED = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_ANSWER_OPEN = re.compile(r"<answer>", re.I)
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
# Our letter rules (ordered; the first that finds a letter wins). The benchmarks' own rules are in
# hatch_vlm.scoring.official; these are what the ActoR answer reward and the synthetic benchmark use.
_BOXED = re.compile(r"\\boxed\s*\{\s*\(?\s*([A-Za-z])\s*\)?[^}]*\}")
_MARKUP = re.compile(r"[*`_~]|\\text\{|\\mathrm\{")
# the whole text is a letter, or starts with one followed by punctuation ("C", "C.", "(C)", "C: Back", "C) x")
_LEADING_LETTER = re.compile(r"^\s*[\(\[{]?\s*([A-Za-z])\s*(?:[\)\]}\.:,]|$)")
# "the answer is C", "answer: (C)", "option C", "choice: C" -- the last such phrase
_PHRASED_LETTER = re.compile(
    r"(?:answer|option|choice)\s*(?:is|would be|should be|=|:)?\s*[:\-]?\s*[\(\[{]?\s*([A-Za-z])\b(?![\w'])", re.I)
# a capital letter standing alone, not the article of a following word ("A ball")
_LONE_LETTER = re.compile(r"(?<![\w'])([A-Z])(?![\w'])(?!\s+(?!(?:or|and|nor)\b)[a-z])")


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


def reply_letter(text: str, num_options: int = 26) -> str | None:
    """The option letter of a model's answer text, upper-case, or None. Rules in order:

    1. ``\\boxed{C}``; then markup (``**C**``, backticks) is dropped;
    2. the text is a letter or starts with one and punctuation: "C", "C.", "(C)", "C. Back, Right", "c";
    3. the last "answer is C" / "answer: C" / "option C" phrase ("A ball is left, so the answer is C." -> C);
    4. a single distinct capital letter standing alone ("I think it's C.", "Based on the two images, C"),
       not an article ("A ball"); two different ones ("A or C") are ambiguous: None.

    Only the first `num_options` letters count as options."""
    if not isinstance(text, str):
        return None
    allowed = {chr(ord("A") + k) for k in range(max(1, min(num_options, 26)))}
    t = text.strip()
    m = _BOXED.search(t)
    if m and m.group(1).upper() in allowed:
        return m.group(1).upper()
    t = _MARKUP.sub("", t).strip()
    m = _LEADING_LETTER.match(t)
    if m and m.group(1).upper() in allowed:
        letter = m.group(1)
        # a lower-case letter counts only alone ("c", "c."), never as a word's start ("a ball ...")
        if letter.isupper() or len(t) <= 2:
            return letter.upper()
    phrased = [x.group(1).upper() for x in _PHRASED_LETTER.finditer(t)]
    phrased = [x for x in phrased if x in allowed]
    if phrased:
        return phrased[-1]
    lone = {x.group(1) for x in _LONE_LETTER.finditer(t)} & allowed
    return lone.pop() if len(lone) == 1 else None


def label_letter(answer: str, options: list[str] | None = None) -> str | None:
    """The option letter of a dataset's gold answer written as "C", "C.", "(C)", "C. Back, Right" or as
    the option text itself (options as "A. x"); None if none can be found."""
    a = str(answer).strip()
    m = re.match(r"^\(?([A-H])\)?(?:[.:)]|\s|$)", a)
    if m:
        return m.group(1)
    for o in options or []:
        letter, _, body = o.partition(". ")
        if body.strip().lower() == a.lower():
            return letter
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
    pred = reply_letter(answer_span(completion), num_options)
    gold = reply_letter(str(gold_letter), 26) if gold_letter is not None else None
    return 1.0 if pred is not None and pred == gold else 0.0


def mean_relative_accuracy(pred: float | None, gold: float) -> float:
    """SPAR-Bench's rule. A gold of 0 is scored by absolute error against the same thresholds."""
    if pred is None or gold is None or not math.isfinite(gold):
        return 0.0
    err = abs(pred - gold) / abs(gold) if gold != 0 else abs(pred)
    return sum(err <= 1 - t for t in THRESHOLDS) / len(THRESHOLDS)


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
