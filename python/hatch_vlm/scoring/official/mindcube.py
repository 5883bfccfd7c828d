"""MindCube-Tiny, scored as the official MindCube code scores it.

Source: mll-lab-nu/MindCube at commit 6d8fd9acdf5b80769373a21cdbfcf068ab356e0f (2026-03-22):

* ``src/evaluation/core/extractors.py``   ``extract_answer`` (the letter in a reply) and
  ``get_setting_from_id`` (the setting of a row).
* ``src/evaluation/evaluator.py``         ``BasicEvaluator.evaluate`` (the per-question comparison and
  the counting); ``src/evaluation/cogmap/cogmap_evaluator.py`` (the default task of
  ``scripts/run_evaluation.py``) counts and compares the same way.
* ``src/evaluation/core/base_metrics.py`` ``initialize_basic_results_structure`` (the settings, their
  order, and which enter the overall) and ``update_accuracy_metrics`` (the accuracies).
* ``src/prompt_generation/templates.py``  ``RAW_QA_BACKGROUND_INSTRUCTION`` and ``RawQATemplate`` (the
  prompt of the ``raw_qa`` task, the plain question-answer setting the Tiny numbers are reported for).
* ``scripts/bash_scripts/download_data.bash``, ``README.md``, ``scripts/run_inference.py`` and
  ``src/inference/base.py`` (where the JSONL and the images live, and how image paths are resolved).

The rules are re-implemented here (no official code is imported or copied); each carries a comment
naming the official function it follows.

Settings. The official code knows five settings, in this order: ``around``, ``rotation``,
``translation``, ``among``, ``other`` (base_metrics.py). ``translation`` is tracked but excluded from the
overall; ``other`` (an id naming no setting) *is* included in the overall. MindCube-Tiny has only
among (600), around (250) and rotation (200) rows, so our table shows the official order without the
two settings Tiny lacks: CATEGORIES = ("Around", "Rotation", "Among"). `category` returns None for
translation and other rows (no column); `aggregate` still counts other rows in the overall, as the
official code does, and leaves translation rows out of it.

Overall. Pooled over questions: (correct answers in counted settings) / (questions in counted
settings), not a mean of the per-setting accuracies (base_metrics.update_accuracy_metrics). So "Avg"
and "per_question" are the same number here. Rows whose ``gt_answer`` is missing or empty are skipped
entirely, in no setting and no total (evaluator.BasicEvaluator.evaluate: ``if not gt_answer: continue``).
An empty setting's accuracy is 0.0, as the official code reports it.

Scoring. A question is correct iff the letter `extract` returns is non-empty and equals ``gt_answer``
with Python ``==``: case-sensitive, no stripping, no option-text matching (evaluator.py). The official
extractor itself reads only upper-case letters A-E.

Prompt. MindCube's own evaluation prompt (raw_qa) puts its instruction *before* the question:
``RAW_QA_INSTRUCTION + "\\n" + "[Question]\\n" + question`` (templates.RawQATemplate.generate_prompt).
`build_prompt(row)` gives that layout exactly and is what a faithful run should send. `POST_PROMPT`
holds the same instruction text for callers that can only append an instruction to the question
(the interface of this package); appended, its "options listed below" reads slightly off. lmms-eval
(``lmms_eval/tasks/mindcube/utils.py``) and VLMEvalKit (``vlmeval/dataset`` MindCubeBench) both send the
dataset's precomputed ``input_prompt``, i.e. this same official raw_qa prompt, with no post-prompt.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

SOURCE = ("mll-lab-nu/MindCube src/evaluation/core/extractors.py (extract_answer, get_setting_from_id), "
          "src/evaluation/core/base_metrics.py, src/evaluation/evaluator.py, "
          "src/prompt_generation/templates.py @ 6d8fd9acdf5b80769373a21cdbfcf068ab356e0f")

# --------------------------------------------------------------------------------------------------
# Prompt (templates.py: RAW_QA_BACKGROUND_INSTRUCTION, QUESTION_HEADER, RawQATemplate.generate_prompt).
# The instruction text must be the official one word for word for the prompt to be the official prompt.
RAW_QA_INSTRUCTION = (
    "[Task]\n"
    "Your task is to analyze the spatial arrangement of objects in the scene by examining the provided "
    "images, which show the scene from different viewpoints.\n"
    "[Answer Instruction]\n"
    "You only need to provide *ONE* correct answer selecting from the options listed below. For example, "
    "if you think the correct answer is 'A. Above' from 'A. Above B. Under C. Front D. Behind', your "
    "response should **only** be '<answer>A. Above</answer>'.\n"
)
QUESTION_HEADER = "[Question]\n"
PRE_PROMPT = RAW_QA_INSTRUCTION
# The interface asks for an instruction appended to the question; MindCube's precedes it (see above).
POST_PROMPT = RAW_QA_INSTRUCTION


def build_prompt(row) -> str:
    """The official raw_qa prompt of a row: instruction, a blank line, "[Question]", the question with
    its inline options (RawQATemplate joins [instruction, header + question] with a newline)."""
    question = row.get("question", "") if isinstance(row, Mapping) else ""
    return RAW_QA_INSTRUCTION + "\n" + QUESTION_HEADER + (question if isinstance(question, str) else str(question))


# --------------------------------------------------------------------------------------------------
# Settings (extractors.get_setting_from_id; base_metrics.initialize_basic_results_structure).
OFFICIAL_SETTINGS = ("around", "rotation", "translation", "among", "other")   # official order
IN_OVERALL = {"around": True, "rotation": True, "translation": False, "among": True, "other": True}
CATEGORIES = ("Around", "Rotation", "Among")
_COLUMN = {"around": "Around", "rotation": "Rotation", "among": "Among"}


def setting(row) -> str:
    """The official setting of a row from its id: a case-insensitive substring test in the order
    around > rotation > translation > among, else "other" (get_setting_from_id; an empty id is
    "other"). "aroundnew_group003_q2_1" is around."""
    rid = row.get("id", "") if isinstance(row, Mapping) else ""
    if rid is None or rid == "":
        return "other"
    low = str(rid).lower()
    for name in ("around", "rotation", "translation", "among"):
        if name in low:
            return name
    return "other"


def category(row) -> str | None:
    """The table column of a row: "Around", "Rotation" or "Among"; None for translation (excluded from
    the official overall) and for ids naming no setting (official "other": no column of ours, but
    `aggregate` counts it in the overall as the official code does)."""
    return _COLUMN.get(setting(row))


# --------------------------------------------------------------------------------------------------
# Answer extraction (extractors.extract_answer). Upper-case A-E only; each stage returns the LAST match
# of the first pattern that matches anywhere; the stages run in this order:
#   1. any "X." in the whole reply                                          (its "simple answer format")
#   2. inside a capitalised "<Answer>" tag, up to the next "<" or the end: "my answer is X",
#      "the answer is X", "X.", a stand-alone X
#   3. over the whole reply: "X. words" (two forms), X at the start of the reply or of a line followed
#      by "." / whitespace / the end, X between "*"/'"' marks, "Answer:? X", "my answer is X",
#      "answer is X"
#   4. line by line: the last line holding "X. words"
#   5. from the last line up: the first stand-alone X (\b X \b) of the lowest line that has one
# Stage 1 fires whenever any "X." occurs, so every later pattern that needs "X." (2's third, 3's first
# two, stage 4) can never decide; they are kept so the transcription reads against the original.
# The lower-case <answer>...</answer> of the official prompt is not special: its letter is found by
# stage 1 ("C. Behind") or stage 5 ("C").
_LETTER_DOT = re.compile(r"([A-E])\.")                                          # stage 1
_ANSWER_TAG = re.compile(r"<Answer>(.*?)(?:<|$)", re.DOTALL)                   # stage 2 (case-sensitive)
_IN_TAG = tuple(re.compile(p) for p in (
    r"[Mm]y answer is ([A-E])",
    r"[Mm]y answer is ([A-E])\.",
    r"[Tt]he answer is ([A-E])",
    r"(?:Answer: )?([A-E])\.",
    r"\b([A-E])\b",
))
_WHOLE = tuple(re.compile(p) for p in (                                         # stage 3, in order
    r"(?:Answer: )?([A-E])\. [A-Za-z0-9 \-\(\)'\",]+(?=(?:\n|$|\.|\"))",         # letter + description
    r"(?:Answer: )?([A-E])\. [A-Za-z0-9 \-\(\)'\"]+",                            # letter + partial description
    r"(?:^|\n)(?:Answer: )?([A-E])(?:\.|$|\s)",                                 # letter opening a line
    r"[\*\"]([A-E])[\*\"]",                                                     # *X* or "X"
    r"\bAnswer:?\s*([A-E])\b",                                                  # Answer: X
    r"[Mm]y answer is ([A-E])",
    r"[Mm]y answer is ([A-E])\.",
    r"answer is ([A-E])",                                                       # lower-case "answer is X"
))
_LINE_DESCRIBED = re.compile(r"([A-E])\. [A-Za-z0-9 \-\(\)'\",]+")             # stage 4
_LONE = re.compile(r"\b([A-E])\b")                                              # stage 5


def _last(pattern, text):
    found = None
    for found in pattern.finditer(text):  # noqa: B007 -- the last match is kept
        pass
    return found.group(1) if found else None


def extract(reply, row=None) -> str | None:
    """The letter (A-E) the official extractor reads from a raw reply, or None. Non-text replies give
    None (the official code would raise on them; an empty reply gives None there too)."""
    if not isinstance(reply, str) or not reply:
        return None
    # stage 1: the last "X." anywhere
    letter = _last(_LETTER_DOT, reply)
    if letter:
        return letter
    # stage 2: the first capitalised <Answer> section
    tag = _ANSWER_TAG.search(reply)
    if tag:
        for pattern in _IN_TAG:
            letter = _last(pattern, tag.group(1))
            if letter:
                return letter
    # stage 3: whole-reply patterns by priority
    for pattern in _WHOLE:
        letter = _last(pattern, reply)
        if letter:
            return letter
    lines = reply.split("\n")
    # stage 4: the last line with "X. words"
    described = [m.group(1) for m in (_LINE_DESCRIBED.search(line) for line in lines) if m]
    if described:
        return described[-1]
    # stage 5: bottom-up, the first stand-alone letter of a line
    for line in reversed(lines):
        m = _LONE.search(line)
        if m:
            return m.group(1)
    return None


def score(reply, row) -> float:
    """1.0 iff the extracted letter is non-empty and == the row's gt_answer (exact, case-sensitive,
    unstripped, as evaluator.BasicEvaluator compares them); else 0.0. Never raises."""
    try:
        gold = row.get("gt_answer") if isinstance(row, Mapping) else None
        pred = extract(reply, row)
        return 1.0 if pred and gold and pred == gold else 0.0
    except Exception:       # defensive: nothing above is expected to raise
        return 0.0


def aggregate(pairs) -> dict:
    """Official aggregation of [(row, score), ...] in percent.

    Per column: correct / questions of that setting (0.0 when it has none). "Avg" = "per_question" =
    correct / questions over the settings in the official overall (around, rotation, among and other;
    not translation). Rows with no gt_answer are skipped, as officially. "n": questions in the overall."""
    total = {s: 0 for s in OFFICIAL_SETTINGS}
    correct = {s: 0.0 for s in OFFICIAL_SETTINGS}
    for row, value in pairs:
        if not isinstance(row, Mapping) or not row.get("gt_answer"):
            continue                                   # evaluator.py: `if not gt_answer: continue`
        s = setting(row)
        total[s] += 1
        correct[s] += float(value)
    counted = [s for s in OFFICIAL_SETTINGS if IN_OVERALL[s]]
    n = sum(total[s] for s in counted)
    hits = sum(correct[s] for s in counted)
    overall = 100.0 * hits / n if n else 0.0
    columns = {_COLUMN[s]: (100.0 * correct[s] / total[s] if total[s] else 0.0)
               for s in ("around", "rotation", "among")}
    return {"categories": {c: columns[c] for c in CATEGORIES}, "Avg": overall, "per_question": overall,
            "n": n}


# --------------------------------------------------------------------------------------------------
# Where the images are. download_data.bash unpacks the dataset's data.zip into ./data (moving its inner
# data/ folder there); README names the file data/raw/MindCube_tinybench.jsonl; run_inference.py's
# --image-root defaults to "./data/" and src/inference/base.py joins each `images` entry
# ("other_all_image/among/backpack_002/front_039.jpg") onto it. So the root is the JSONL's grandparent.
IMAGE_ROOT_RULE = ("image paths in `images` are relative to the JSONL's grandparent: "
                   "data/raw/MindCube_tinybench.jsonl -> data/ (official --image-root ./data/)")


def image_root(jsonl_path) -> Path:
    """The folder the rows' image paths are relative to: the JSONL's grandparent
    (data/raw/MindCube_tinybench.jsonl -> data/)."""
    return Path(jsonl_path).parent.parent


def resolve_image(rel, root) -> Path:
    """An `images` entry on disk, as src/inference/base.py (process_single_sample) maps it: a path
    already starting with the root is kept; an absolute path (or a Windows drive path) keeps only its
    part after "MindCube_image/", else from "other_all_image/" on, else its file name; a relative path
    is kept; the result is joined onto the root."""
    rel, root_s = str(rel), str(root)
    if rel.startswith(root_s):
        return Path(rel)
    if os.path.isabs(rel) or (len(rel) > 2 and rel[1] == ":"):
        if "MindCube_image/" in rel:
            rel = rel.split("MindCube_image/", 1)[1]
        elif "other_all_image/" in rel:
            rel = "other_all_image/" + rel.split("other_all_image/", 1)[1]
        else:
            rel = os.path.basename(rel)
    return Path(os.path.join(root_s, rel))
