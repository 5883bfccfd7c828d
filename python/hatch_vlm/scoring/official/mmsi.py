"""MMSI-Bench scored by its authors' rules.

Sources (all read at the commits named; the rules are restated here in our own code, no code is copied):

* **Official (followed by `extract` / `score`)**: InternRobotics/MMSI-Bench `README.md`, section
  "Answer Extraction" (commit 5de2f3d2eb0159dbcc76790074029aa400143603, 2025-08-08; the section was added by
  the first author on 2025-06-20 and is unchanged in substance since). It gives the post-prompt and the
  function `extract_single_choice_with_word_boundary(pred, gt)`. The same author contributed the identical
  function to EvolvingLMMs-Lab/lmms-eval `lmms_eval/tasks/mmsi_bench/utils.py` (PR #715, commit f12b79a1,
  2025-06-18), so lmms-eval scored MMSI exactly this way until 2026-03-01.
* **Alternatives, exposed for comparison** (they give other numbers on the same replies):
  - `extract_mmsi_vlmeval`: the MMSI-Bench repository's own evaluation code, a VLMEvalKit fork,
    `vlmeval/dataset/mmsi_bench.py` `MMSIBenchDataset.extract_single_choice_with_word_boundary` + `evaluate`
    (commit c4b16dc, 2025-05-29, never changed; identical in Mor-Li/VLMEvalKit). It is the README rule
    *without* the braces step, so `\\boxed{C}` still gives C and `{…}` text is not narrowed (on an ActoR
    completion the first lone capital is the letter inside `<answer>`).
  - `extract_lmms_eval`: lmms-eval since v0.7 (commit d8fcb9c3, 2026-03-01, still so at 75571cfe): the
    README rule but the letter may be A-F in either case ("a" -> A, "the answer is b" -> B).
  - `extract_vlmevalkit`: open-compass/VLMEvalKit (EASI) `vlmeval/dataset/mmsibench.py` `MMSIBench`
    (`MMSIBench_wo_circular`), scored by `vlmeval/dataset/utils/spatial_bench/cal_scores.py`
    `compute_mcq_score` with `matching_func.py` `can_match_option` (commit e8e78f05, rule path, i.e. no
    judge model). This produces the "VLMEvalKit 28.6" calibration figure for Qwen2.5-VL-3B (EASI
    docs/Benchmark_Verification.md). Its rule chain is different: `<answer>` tags, letters before
    `</answer>`/`</think>`, the last lines, answer phrases, then a single distinct capital letter.

The official rule (README), step by step (`extract`):
  1. if the text holds a pair of double backticks, keep what is between the first pair (``C`` -> C);
  2. then, if it holds a pair of single backticks, keep what is between the first pair;
  3. then, if it holds `{…}`, keep what is between the first `{` and the first `}` after it; this also
     drops `\\boxed{`, but it turns an ActoR completion `<action>{from:0,…}</action><answer>C</answer>`
     into `from:0,to:1,action:[{turn left: 30 deg`, which has no letter: the official score is 0;
  4. the first upper-case A-D standing alone (regex word boundaries) that is not followed by one white-space
     character and a letter ("A ball" is not option A; nor is the C of "C\\nExplanation"); none -> no answer.
     Matching is case-sensitive: a lone "a" is not an answer. "A or C" gives C ("A" is followed by " o").
  The score is 1 iff the lower-cased, stripped gold answer equals the lower-cased letter (the README's
  further "(x" / "option x" / "the answer is x" comparisons can never fire on a one-letter match).
  The README adds that when extraction fails an LLM is asked; no judge model is used here (neither
  lmms-eval nor the repository's `evaluate` calls one): a failed extraction scores 0.
  Not reproduced either: VLMEvalKit's circular protocol (`MMSIBench_circular`, its generic MCQ pipeline)
  and its judge-model path; they are other protocols, not other readings of one reply.

Aggregation (README's numbers; lmms-eval `msr_aggregate_results`; repo `evaluate`): the overall accuracy is the
mean over all questions; per question_type accuracies are means over that type's questions. The four table
columns group the 11 types as the README/paper do ("six types of positional relationships …, two types of
attribute reasoning (measurement and appearance), two types of motion reasoning (camera motion and object
motion), and a multi-step reasoning category"); the official code never computes the groups, so a column is,
like the overall, the mean over its questions (this reproduces the HATCH paper's MMSI Avg from its columns:
27.8·522 + 19.2·130 + 23.3·150 + 25.8·198 -> 25.6).
"""
from __future__ import annotations

import math
import re
from typing import Any
from collections.abc import Callable, Iterable, Mapping

SOURCE = ("InternRobotics/MMSI-Bench README.md 'Answer Extraction' @5de2f3d2eb0159dbcc76790074029aa400143603 "
          "(= EvolvingLMMs-Lab/lmms-eval lmms_eval/tasks/mmsi_bench/utils.py @f12b79a1)")

# README "Answer Extraction" `post_prompt`, verbatim, with its leading newline; lmms-eval msr_bench.yaml
# `post_prompt` is the same string (appended to question.strip()); VLMEvalKit joins question and the
# same sentence with "\n". So the prompt is `question + POST_PROMPT`.
POST_PROMPT = ("\nAnswer with the option's letter from the given choices directly. "
               "Enclose the option's letter within ``.")

CATEGORIES = ("Pos", "Att", "Mot", "MSR")

# The 11 `question_type` values as RunsenXu/MMSI-Bench ships them (en dash), in the paper's column order
# (VLMEvalKit mmsibench.py `_task_category`: Pos-Cam-Cam, Pos-Obj-Obj, Pos-Reg-Reg, Pos-Cam-Obj, Pos-Obj-Reg,
# Pos-Cam-Reg, Attr-Meas, Attr-Appr, Motion-Cam, Motion-Obj, MSR).
QUESTION_TYPES = (
    "Positional Relationship (Cam.\u2013Cam.)",
    "Positional Relationship (Obj.\u2013Obj.)",
    "Positional Relationship (Reg.\u2013Reg.)",
    "Positional Relationship (Cam.\u2013Obj.)",
    "Positional Relationship (Obj.\u2013Reg.)",
    "Positional Relationship (Cam.\u2013Reg.)",
    "Attribute (Meas.)",
    "Attribute (Appr.)",
    "Motion (Cam.)",
    "Motion (Obj.)",
    "MSR",
)
_GROUP_OF_TYPE = {t: ("Pos" if t.startswith("Positional") else "Att" if t.startswith("Attribute")
                      else "Mot" if t.startswith("Motion") else "MSR") for t in QUESTION_TYPES}
# The hyphen forms also occur (lmms-eval utils.py CATEGORY_ALIASES maps "(Cam.-Obj.)" etc. to the en dash).
_CANONICAL_TYPE = {t: t for t in QUESTION_TYPES}
_CANONICAL_TYPE.update({t.replace("\u2013", "-"): t for t in QUESTION_TYPES if "\u2013" in t})
# VLMEvalKit's TSV (MMSIBench_wo_circular) ships its own short names in `category` instead.
_CANONICAL_TYPE.update(dict(zip(
    ("Pos-Cam-Cam", "Pos-Obj-Obj", "Pos-Reg-Reg", "Pos-Cam-Obj", "Pos-Obj-Reg", "Pos-Cam-Reg",
     "Attr-Meas", "Attr-Appr", "Motion-Cam", "Motion-Obj"), QUESTION_TYPES[:10])))


def question_type(row: Any) -> str | None:
    """The row's official question_type, en-dash form (hyphen forms and VLMEvalKit's short names in
    `category` are accepted), or None when it is not one of the 11."""
    if not isinstance(row, Mapping):
        return None
    raw = row.get("question_type")
    if raw is None:
        raw = row.get("category")
    if not isinstance(raw, str):
        return None
    return _CANONICAL_TYPE.get(raw.strip())


def category(row: Any) -> str | None:
    """The table column (Pos / Att / Mot / MSR) of a row, None for an unknown question_type."""
    qt = question_type(row)
    return None if qt is None else _GROUP_OF_TYPE[qt]


# Not an official rule: the question-type family the readers record as a sample's `category`
# (hatch_vlm.data.mmsi). It is lenient (any case, any dash, unknown subtypes of a family) because it labels
# rows of every origin, and it names the family in full; `category` above is the strict official
# grouping into the table's columns, used for every score. Both live here so there is one place for
# MMSI's categories.
FAMILIES = ("Positional", "Attribute", "Motion", "MSR")


def family(question_type: str) -> str:
    """Positional / Attribute / Motion / MSR from an MMSI question type ("" if unknown)."""
    q = question_type.lower()
    if q.startswith("positional"):
        return "Positional"
    if q.startswith("attribute"):
        return "Attribute"
    if q.startswith("motion"):
        return "Motion"
    if "msr" in q or "multi-step" in q:
        return "MSR"
    return ""


# ---------------------------------------------------------------- the README rule and its relatives
_DOUBLE_TICKS = re.compile(r"``([^`]*)``")          # README step pattern_1
_SINGLE_TICKS = re.compile(r"`([^`]*)`")            # README step pattern_2
_BRACES = re.compile(r"\{([^}]*)\}")                # README step pattern_add (absent in the repo's code)
# README pattern_3: a lone capital A-D, not followed by white space + a letter (case-sensitive).
_LONE_A_TO_D = re.compile(r"\b[A-D]\b(?!\s[a-zA-Z])")
# lmms-eval >= v0.7 (d8fcb9c3): A-F, re.IGNORECASE, upper-cased afterwards.
_LONE_A_TO_F_ANY_CASE = re.compile(r"\b[A-F]\b(?!\s[a-zA-Z])", re.IGNORECASE)


def _as_text(reply: Any) -> str | None:
    # Non-text replies: the repo's evaluate() and lmms-eval >= v0.7 give None for None and str() the rest.
    if reply is None:
        return None
    if isinstance(reply, str):
        return reply
    try:
        return str(reply)
    except Exception:
        return None


def _narrow_then_letter(reply: Any, braces: bool, letter: re.Pattern) -> str | None:
    text = _as_text(reply)
    if text is None:
        return None
    steps = (_DOUBLE_TICKS, _SINGLE_TICKS, _BRACES) if braces else (_DOUBLE_TICKS, _SINGLE_TICKS)
    for narrowing in steps:          # each step keeps the first enclosed span, when there is one
        m = narrowing.search(text)
        if m:
            text = m.group(1)
    m = letter.search(text)
    return m.group().upper() if m else None


def extract(reply: Any, row: Any = None) -> str | None:
    """The letter the official (README) rule reads from a raw reply, or None (see the module docstring)."""
    return _narrow_then_letter(reply, braces=True, letter=_LONE_A_TO_D)


def extract_mmsi_vlmeval(reply: Any, row: Any = None) -> str | None:
    """The MMSI-Bench repository's own code (vlmeval/dataset/mmsi_bench.py): the README rule without the
    braces step."""
    return _narrow_then_letter(reply, braces=False, letter=_LONE_A_TO_D)


def extract_lmms_eval(reply: Any, row: Any = None) -> str | None:
    """lmms-eval since v0.7 (lmms_eval/tasks/mmsi_bench/utils.py @d8fcb9c3): the README rule, letters A-F
    in either case, returned upper-case."""
    return _narrow_then_letter(reply, braces=True, letter=_LONE_A_TO_F_ANY_CASE)


# ---------------------------------------------------------------- VLMEvalKit (EASI) can_match_option
# open-compass/VLMEvalKit vlmeval/dataset/utils/spatial_bench/matching_func.py `can_match_option`, as
# called by cal_scores.py `compute_mcq_score` (no `choices`: letters A-F; last 6 lines; 800-char tail).
_VK_LETTERS = "ABCDEF"
_VK_TAIL_LINES = 6
_VK_TAIL_CHARS = 800
_VK_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\ufeff]")
_VK_OPEN_BR = r"[\(\[\{（【]?"
_VK_CLOSE_BR = r"[\)\]\}）】]?"
# step 2: an <answer …> block whose first non-blank character is a letter A-J (any case; whatever follows).
_VK_ANSWER_BLOCK = re.compile(r"<\s*answer\b[^>]*>\s*([A-Ja-j])(?:\s*[\.．:：\)\]】、])?.*?<\s*/\s*answer\s*>",
                              re.IGNORECASE | re.DOTALL)
# step 3: a letter (any case, not preceded by a letter, optionally bracketed) right before </answer>, then </think>.
_VK_BEFORE_CLOSE = tuple(
    re.compile(rf"(?<![A-Za-z]){_VK_OPEN_BR}\s*([{_VK_LETTERS}])\s*{_VK_CLOSE_BR}\s*</\s*{tag}\s*>", re.IGNORECASE)
    for tag in ("answer", "think"))
# steps 4-5, per line (last lines first):
_VK_OPTION_LINE = re.compile(r"^(?:[*_>\-\s]*)(?:option|选项)\s+[A-J]\s*[:：]", re.IGNORECASE)   # skipped
_VK_LINE_IS_LETTER = re.compile(r"^\s*[*_`>（）\[\]【】\(\)]*\s*([A-Fa-f])\s*[*_`（）\[\]【】\(\)]*\s*$")
_VK_LINE_STARTS_LABEL = re.compile(r"^\s*([A-F])\s*[\.．:：\)\]】、-]\s+", re.IGNORECASE)
_VK_TIGHT_PUNCT = r"\.,:;!?\)\]】》」』，。；、：）】》」』"
_VK_INLINE_CAPITAL = re.compile(
    rf"(?<![A-Za-z])[*_`（\[\{{\(]*\s*([A-F])\s*[*_`）\]\}})]*(?=$|[\s{_VK_TIGHT_PUNCT}])")
# step 6: the first answer phrase in the whole text (the source's comment says "last", its code searches).
_VK_PHRASE = re.compile(
    r"(?i)(?:final\s*answer|the\s*answer\s*is|answer(?:\s*is)?|correct\s*answer|"
    r"答案|最终答案|结论|所以|因此|我选(?:择)?|选择|选)"
    rf"\s*[:：>＝=]?\s*{_VK_OPEN_BR}\s*([{_VK_LETTERS}])\s*{_VK_CLOSE_BR}(?:\b|[.)、。])")
# step 7: every capital A-F standing alone (optionally bracketed) outside "option X:" lines; exactly one kind.
_VK_GLOBAL_CAPITAL = re.compile(rf"(?<![A-Za-z]){_VK_OPEN_BR}\s*([{_VK_LETTERS}])\s*{_VK_CLOSE_BR}(?![A-Za-z])")
_VK_THINK_CLOSE = re.compile(r"</\s*think\s*>", re.IGNORECASE)
_VK_THINK_OPEN = re.compile(r"<\s*think\s*>", re.IGNORECASE)


def _vk_from_lines(lines: list[str]) -> str | None:
    for line in reversed([ln.strip() for ln in lines if ln.strip()]):
        if _VK_OPTION_LINE.search(line):
            continue
        m = _VK_LINE_IS_LETTER.fullmatch(line) or _VK_LINE_STARTS_LABEL.match(line)
        if m:
            return m.group(1).upper()
        found = {t.upper() for t in _VK_INLINE_CAPITAL.findall(line)}
        if len(found) == 1:
            return found.pop()
    return None


def extract_vlmevalkit(reply: Any, row: Any = None) -> str | None:
    """The letter VLMEvalKit's rule-based MMSIBench scoring reads (can_match_option), or None (its False).
    The prediction goes through str() first, as eval_mcq_score does."""
    try:
        text = _VK_ZERO_WIDTH.sub("", str(reply).strip())
    except Exception:
        return None
    m = _VK_ANSWER_BLOCK.search(text)                                    # 2) <answer>X…</answer>
    if m:
        return m.group(1).upper()
    tail = text[-_VK_TAIL_CHARS:]
    for anchor in _VK_BEFORE_CLOSE:                                       # 3) X</answer>, X</think>
        m = anchor.search(tail)
        if m:
            return m.group(1).upper()
    closes = list(_VK_THINK_CLOSE.finditer(text))                        # 4) last lines after the thinking
    opens = list(_VK_THINK_OPEN.finditer(text))
    after = text[closes[-1].end():].strip() if closes else text[opens[-1].end():].strip() if opens else text
    pick = _vk_from_lines(after.splitlines()[-_VK_TAIL_LINES:])
    if pick:
        return pick
    pick = _vk_from_lines(tail.splitlines()[-_VK_TAIL_LINES:])           # 5) last lines of the tail
    if pick:
        return pick
    m = _VK_PHRASE.search(text)                                           # 6) "the answer is X"
    if m:
        return m.group(1).upper()
    kept = "\n".join(ln for ln in text.splitlines() if not _VK_OPTION_LINE.search(ln))
    found = set(_VK_GLOBAL_CAPITAL.findall(kept))                         # 7) one distinct capital
    return found.pop() if len(found) == 1 else None


# ---------------------------------------------------------------- scores
def _gold(row: Any) -> str | None:
    if not isinstance(row, Mapping):
        return None
    gold = row.get("answer")
    if gold is None or (isinstance(gold, float) and math.isnan(gold)):
        return None
    return str(gold)


def _letter_matches(letter: str | None, gold: str | None) -> float:
    # README / lmms-eval / repo evaluate(): gt.lower().replace("\n", " ").strip() == predicted letter, lower-cased.
    if letter is None or gold is None:
        return 0.0
    return 1.0 if gold.lower().replace("\n", " ").strip() == letter.lower() else 0.0


def score(reply: Any, row: Any) -> float:
    """1.0 iff the official (README) extraction equals the row's `answer`; 0.0 otherwise; never raises."""
    try:
        return _letter_matches(extract(reply, row), _gold(row))
    except Exception:
        return 0.0


def score_vlmevalkit(reply: Any, row: Any) -> float:
    """VLMEvalKit's compute_mcq_score: exact_match(can_match_option(pred), can_match_option(answer)),
    both sides str().strip().lower(); a failed match is the value False, compared as the text "false"."""
    try:
        pred = extract_vlmevalkit(reply, row)
        gold = extract_vlmevalkit(str(row.get("answer") if isinstance(row, Mapping) else None).strip(), row)
        as_text = lambda x: "false" if x is None else x.strip().lower()  # noqa: E731
        return 1.0 if as_text(pred) == as_text(gold) else 0.0
    except Exception:
        return 0.0


EXTRACTORS: dict[str, Callable[[Any, Any], str | None]] = {
    "official": extract,                    # MMSI-Bench README (= lmms-eval until v0.7)
    "mmsi_vlmeval": extract_mmsi_vlmeval,   # MMSI-Bench repo vlmeval/dataset/mmsi_bench.py
    "lmms_eval": extract_lmms_eval,         # lmms-eval >= v0.7
    "vlmevalkit": extract_vlmevalkit,       # open-compass VLMEvalKit MMSIBench_wo_circular, rule path
}


def score_under(rule: str, reply: Any, row: Any) -> float:
    """The per-question score under one of EXTRACTORS' rules (each with its toolkit's comparison)."""
    if rule == "vlmevalkit":
        return score_vlmevalkit(reply, row)
    if rule not in EXTRACTORS:
        raise KeyError(f"unknown MMSI-Bench rule {rule!r}; known: {sorted(EXTRACTORS)}")
    try:
        return _letter_matches(EXTRACTORS[rule](reply, row), _gold(row))
    except Exception:
        return 0.0


# ---------------------------------------------------------------- aggregation
def aggregate(pairs: Iterable[tuple[Any, float]]) -> dict:
    """{"categories": {Pos/Att/Mot/MSR: % over that group's questions, None when it has none},
    "Avg": % over all questions, "per_question": the same, "n": number of questions,
    "types": {question_type (en dash): % over its questions, for the types present}}.

    As in the official code every question counts in the overall, also one whose question_type is unknown
    (it only has no column). A pair that is not (row, number) is skipped; a non-finite score counts as 0."""
    total, n = 0.0, 0
    by_col: dict[str, list[float]] = {}
    by_type: dict[str, list[float]] = {}
    for pair in pairs or ():
        try:
            row, s = pair
            s = float(s)
        except Exception:
            continue
        if not math.isfinite(s):
            s = 0.0
        total += s
        n += 1
        qt = question_type(row)
        if qt is not None:
            by_type.setdefault(qt, []).append(s)
            by_col.setdefault(_GROUP_OF_TYPE[qt], []).append(s)
    pct = lambda v: 100.0 * sum(v) / len(v) if v else None  # noqa: E731
    overall = 100.0 * total / n if n else 0.0
    return {
        "categories": {c: pct(by_col.get(c)) for c in CATEGORIES},
        "Avg": overall,
        "per_question": overall,
        "n": n,
        "types": {t: pct(by_type[t]) for t in QUESTION_TYPES if t in by_type},
    }
