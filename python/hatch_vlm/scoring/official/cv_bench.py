"""CV-Bench scored as its official evaluation code scores it.

Sources:
  * nyu-visionx/CV-Bench dataset card ("Accuracy"): accuracy per `source`; 2D = the mean of the ADE20K and COCO
    accuracies (a mean of two source accuracies, not a mean over the 2D rows); 3D = the Omni3D accuracy;
    overall = (2D + 3D) / 2. The task (Count, Relation, Depth, Distance) plays no part.
  * cambrian-mllm/cambrian (commit a220b3f549fb2948cd331227f0269313b5773ddb), the per-source scorers:
      eval/eval/coco/coco_test.py  extract_mcq_answer + compute_metrics (COCO; the file writes "ade_<model>.csv",
                                   it was copied from the ADE20K scorer, which this snapshot does not hold: the
                                   ADE20K rule is taken to be the same)
      eval/eval/omni/omni_test.py  extract_mcq_answer + compute_metrics (Omni3D)
      eval/eval/ade/ade_eval.py    the prompt: row["prompt"] + "\\n" + "Answer with the option's letter from the
                                   given choices directly.", greedy, max_new_tokens 512

The rules (written anew here, nothing copied):
  * extraction: the reply is lower-cased and stripped; for each of "answer is", "answer is:", "answer:" IN THAT
    ORDER, if it occurs in the (already cut) text the text becomes what follows its last occurrence; then the
    text is stripped, trailing characters are removed (COCO / ADE20K: "."; Omni3D: any of ".:,"), leading "("
    and trailing ")" are removed, and a text longer than one character is cut to its first character.
    So "The answer is: C" reads as ":" (the first keyword leaves ": c"), "B. right" as "b", "(c)." as "c",
    "table" as "t", an empty reply as "".
  * gold: the answer "(C)" lower-cased, its second character ("c").
  * score: 1 when the extracted text equals the gold letter. The Omni3D scorer also accepts the gold option's
    text, compared as is with the (at most one character, lower-cased) extraction: only a one-character option
    such as "2" can match that way ("2" scores 1 when the gold option's text is "2").

lmms-eval's cv_bench tasks report the flat row accuracy (and read the first letter at the start of the reply):
`aggregate` reports the flat row mean of these per-row scores beside the official score, named as such.
"""
from __future__ import annotations

import math
import re

SOURCE = ("nyu-visionx/CV-Bench dataset card (Accuracy); cambrian-mllm/cambrian eval/eval/coco/coco_test.py, "
          "eval/eval/omni/omni_test.py, eval/eval/ade/ade_eval.py, commit a220b3f549fb2948cd331227f0269313b5773ddb")
POST_PROMPT = "Answer with the option's letter from the given choices directly."
GENERATION_KWARGS = {"max_new_tokens": 512, "temperature": 0, "num_beams": 1, "do_sample": False}

CATEGORIES = ("2D", "3D")
SOURCES_2D = ("ADE20K", "COCO")
SOURCES_3D = ("Omni3D",)
SOURCES = SOURCES_2D + SOURCES_3D
_KEYWORDS = ("answer is", "answer is:", "answer:")            # extract_mcq_answer's list, in its order
_TRAILING = {"Omni3D": ".:,"}                                  # omni_test.py; coco_test.py strips "." only
_GOLD = re.compile(r"^\(([A-Za-z])\)$")
FLAT_NAME = "flat row accuracy (lmms-eval's formula)"


def _field(row, key):
    try:
        return row.get(key)
    except Exception:
        return None


def category(row) -> str | None:
    """"2D" (ADE20K, COCO), "3D" (Omni3D), None for a row of another source (not counted)."""
    source = _field(row, "source")
    if source in SOURCES_2D:
        return "2D"
    if source in SOURCES_3D:
        return "3D"
    return None


def gold_letter(row) -> str | None:
    """The gold as the official code compares it: "(C)" -> "c" (None when the answer is not "(X)")."""
    answer = _field(row, "answer")
    m = _GOLD.match(answer.strip()) if isinstance(answer, str) else None
    return m.group(1).lower() if m else None


def extract(reply, row) -> str:
    """What Cambrian's extract_mcq_answer makes of a reply (at most one character, lower-case)."""
    if not isinstance(reply, str):
        return ""
    text = reply.lower().strip()
    for keyword in _KEYWORDS:
        if keyword in text:
            text = text.split(keyword)[-1]
    text = text.strip().rstrip(_TRAILING.get(_field(row, "source"), ".")).lstrip("(").rstrip(")")
    return text[0] if len(text) > 1 else text


def score(reply, row) -> float:
    """The official per-row score, 0 or 1; 0.0 for anything it cannot score (never raises)."""
    try:
        gold = gold_letter(row)
        if gold is None:
            return 0.0
        got = extract(reply, row)
        if got == gold:
            return 1.0
        if _field(row, "source") in SOURCES_3D:         # omni_test.py: `or answer == text_answer`
            choices = _field(row, "choices")
            k = ord(gold) - ord("a")
            if isinstance(choices, (list, tuple)) and 0 <= k < len(choices) and got == choices[k]:
                return 1.0
        return 0.0
    except Exception:
        return 0.0


def build_prompt(row) -> str:
    """The official text: the row's `prompt` (question and its "(A) ..." choices), a newline, POST_PROMPT."""
    prompt = _field(row, "prompt")
    return f"{prompt if isinstance(prompt, str) else ''}\n{POST_PROMPT}"


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def aggregate(pairs) -> dict:
    """The official score over [(row, score), ...], in percent:
    {"sources": {source: accuracy}, "categories": {"2D": mean(ADE20K, COCO), "3D": Omni3D},
     "Avg": (2D + 3D) / 2, "per_question": the flat row mean, "n", "also": {FLAT_NAME: flat row mean}}.
    2D needs both 2D sources and Avg both 2D and 3D (None otherwise: a part of the benchmark was not evaluated,
    and the official formula has no value for it). Rows of another source are not counted."""
    by_source: dict[str, list[float]] = {}
    for row, s in pairs or ():
        source = _field(row, "source")
        if source not in SOURCES:
            continue
        s = float(s)
        by_source.setdefault(source, []).append(s if math.isfinite(s) else 0.0)
    acc = {src: _mean(v) for src, v in by_source.items()}
    two_d = (acc["ADE20K"] + acc["COCO"]) / 2 if all(s in acc for s in SOURCES_2D) else None
    three_d = acc.get("Omni3D")
    overall = (two_d + three_d) / 2 if two_d is not None and three_d is not None else None
    flat = _mean([s for v in by_source.values() for s in v])
    pct = lambda x: None if x is None else 100.0 * x  # noqa: E731
    return {"sources": {src: pct(a) for src, a in acc.items()},
            "categories": {"2D": pct(two_d), "3D": pct(three_d)},
            "Avg": pct(overall), "per_question": pct(flat), "n": sum(len(v) for v in by_source.values()),
            "also": {FLAT_NAME: pct(flat)}}
