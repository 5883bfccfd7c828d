"""SPAR-Bench scored as its official evaluation code scores it.

Sources (fudan-zvg/spar, commit 167988589c2d862e4b78b7d59d0d1eacfa437f31):
  * lmms-eval/lmms_eval/tasks/sparbench/utils.py    task lists, prompts (sparbench_doc_to_text), per-question
                                                    scoring (sparbench_process_results, exact_match, process_na,
                                                    mean_relative_accuracy, compute_vci_metric), aggregation
                                                    (sparbench_aggregate_results)
  * lmms-eval/lmms_eval/tasks/sparbench/sparbench.yaml   post-prompts, generation settings, metric wiring
  * lmms-eval/lmms_eval/api/task.py                 ConfigurableTask.process_results strips every generated
                                                    reply (`res.strip()`) before the task's process_results
  * dataset card jasonzhango/SPAR-Bench (README.md) the row fields: id, img_type, format_type, task, source,
                                                    image, question, answer
(sparbench_tiny/utils.py is the same file apart from the YAML it reads.)

The rules, as the official code has them (written anew here, nothing copied):
  * Dispatch is by the *task name* against three fixed lists (MCA, NA, SPECIAL); the official code never
    reads `format_type`. The lists should agree with the rows' `format_type` (MCA = select, NA and
    view_change_infer = fill; not checked against the parquet here, which this checkout does not hold); only
    a task outside the lists falls back on `format_type` here (the official code raises for it), and such a
    row is not counted by `aggregate`.
  * Every reply is `.strip()`-ed first (lmms-eval api/task.py), then:
  * select (MCA) -- `exact_match`: reply and gold are lower-cased; the question scores 1 when the reply equals
    the gold, or the reply is a substring of the gold, or the reply's FIRST CHARACTER equals the gold. There is
    no letter extraction: "C", "c", "C.", "C) left", "CD", "c, d" score 1 for gold C; "(C)", "**C**",
    "The answer is C", "<answer>C</answer>" score 0; "A ball is left, so C" scores 1 for gold A. An empty
    (or whitespace-only) reply is a substring of every gold and scores 1.
  * fill (NA) -- numbers are found with the pattern  (?<!\\^)\\d+\\.\\d+ | (?<!\\^)\\d+  (no sign, no exponent,
    no leading-dot decimals; a digit right after "^" is skipped but the next digit is not), every match is
    converted (int, or float when it has a "."), and the FIRST is taken -- except for the four *_mv tasks
    (depth_prediction_oc_mv, depth_prediction_oo_mv, distance_prediction_oc_mv, distance_prediction_oo_mv),
    which take the LAST, and use -1 when there is none. Units are ignored ("1.5m", "about 1.5 meters" -> 1.5).
    No number on a non-_mv task, or any conversion error, scores 0. The score is the mean relative
    accuracy: mean over θ in linspace(0.5, 0.95, 10) of [|pred − gold| / |gold| <= 1 − θ]; a gold of 0 uses
    |pred − gold| instead.
  * view_change_infer -- gold and reply are both parsed as "key:value,key:value" (split on "," then on ":";
    each item must have exactly one ":" and a float() value, keys are taken raw: no strip, no lower-casing;
    unknown keys are ignored, a repeated key keeps its last value). Any parse error scores 0. Five signed
    components are formed: right−left, up−down, forward−backward (move_*), right−left, up−down (rotate_*),
    missing keys counting 0. Each component is scored with the same mean relative accuracy BUT with the
    arguments swapped -- the official call is mean_relative_accuracy(gt, prediction), so the error is divided
    by the PREDICTED component (and is |gt| when the prediction is 0). The score is the mean of the five.
    E.g. reply move_right:0.4,rotate_left:30 vs gold move_right:0.5,rotate_left:30: move component
    |0.5−0.4|/0.4 = 0.25 -> 6/10; the four others are exact -> (0.6 + 4)/5 = 0.92.
  * aggregation (sparbench_aggregate_results) -- per task: mean of its questions; overall ("Avg") = mean of the
    per-task means over the tasks present; Low/Middle/High = mean of the per-task means of the tasks in each
    list (not a mean over questions). The official level loop recovers the task name from the metric key by
    dropping its last "_" part, which turns "view_change_infer_vci_metric" into "view_change_infer_vci": so
    view_change_infer is in the overall but in NO level (Middle = position_matching + camera_motion_infer).
    We reproduce that. Values are reported in percent (the official code returns overall*100 and logs the
    levels as fractions).
  * SPAR-Bench-MV = the rows with img_type == "multi_view" (dataset card; `is_multi_view` / `SPLIT_MV`).

Level names are the official ones ("Low", "Middle", "High"); our results table prints them as Low/Mid/High.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np

SOURCE = ("fudan-zvg/spar lmms-eval/lmms_eval/tasks/sparbench/utils.py + sparbench.yaml "
          "(and lmms-eval/lmms_eval/api/task.py for the reply strip), commit 167988589c2d862e4b78b7d59d0d1eacfa437f31")

# --- Task lists: utils.py MCA_QUESTION_TYPES / NA_QUESTION_TYPES / SPECIAL_QUESTION_TYPES ----------------------
SELECT_TASKS = (
    "obj_spatial_relation_oo", "obj_spatial_relation_oc_mv", "obj_spatial_relation_oo_mv",
    "spatial_imagination_oc", "spatial_imagination_oo", "spatial_imagination_oc_mv", "spatial_imagination_oo_mv",
    "position_matching", "camera_motion_infer", "distance_infer_center_oo", "distance_infer_center_oo_mv",
)
FILL_TASKS = (
    "depth_prediction_oc", "depth_prediction_oo", "distance_prediction_oc", "distance_prediction_oo",
    "depth_prediction_oc_mv", "depth_prediction_oo_mv", "distance_prediction_oo_mv", "distance_prediction_oc_mv",
)
VIEW_CHANGE_TASKS = ("view_change_infer",)
# utils.py process_na: these four take the last number of the reply (and -1 when there is none).
LAST_NUMBER_TASKS = ("depth_prediction_oc_mv", "depth_prediction_oo_mv",
                     "distance_prediction_oc_mv", "distance_prediction_oo_mv")

# --- Levels: utils.py Low / Middle / High -----------------------------------------------------------------------
CATEGORIES = ("Low", "Middle", "High")
LEVEL_TASKS = {
    "Low": FILL_TASKS,
    "Middle": ("view_change_infer", "position_matching", "camera_motion_infer"),
    "High": ("obj_spatial_relation_oo", "obj_spatial_relation_oc_mv", "obj_spatial_relation_oo_mv",
             "spatial_imagination_oc", "spatial_imagination_oo", "spatial_imagination_oc_mv",
             "spatial_imagination_oo_mv", "distance_infer_center_oo", "distance_infer_center_oo_mv"),
}
_LEVEL_OF = {t: lvl for lvl, ts in LEVEL_TASKS.items() for t in ts}
# utils.py sparbench_aggregate_results: the level of a per-task metric key is looked up after dropping the
# key's last "_" part; only the view_change_infer key ("view_change_infer_vci_metric") comes out wrong, so
# that task never enters a level mean.
_NOT_IN_LEVEL_MEANS = frozenset({"view_change_infer"})

# --- Prompts: sparbench.yaml lmms_eval_specific_kwargs.default and utils.py sparbench_doc_to_text ---------------
POST_PROMPT = "Answer with the option's letter from the given choices directly."  # select tasks
NA_POST_PROMPT = "Please answer the question using a single word or phrase."       # fill (NA) tasks
# utils.py sparbench_doc_to_text: inserted before POST_PROMPT for these two select tasks.
BBOX_NOTE = ("The values represent the bounding box coordinates normalized to a 0-1000 scale, "
             "with the top-left corner as the origin of the image.")
BBOX_NOTE_TASKS = ("position_matching", "camera_motion_infer")
# sparbench.yaml generation_kwargs (some lmms-eval model wrappers override max_new_tokens, e.g. qwen2_5_vl.py
# generates up to 4096 tokens regardless).
GENERATION_KWARGS = {"max_new_tokens": 100, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False}

# --- Mean relative accuracy: utils.py mean_relative_accuracy(start=.5, end=.95, interval=.05) ------------------
# The official code builds the thresholds with np.linspace(start, end, int((end - start) / interval + 2)),
# which is 10 points; the same construction keeps the tolerances 1 − θ bit-identical to theirs.
_THETAS = np.linspace(0.5, 0.95, int((0.95 - 0.5) / 0.05 + 2))
TOLERANCES = tuple(float(1.0 - t) for t in _THETAS)

# utils.py process_na: a run of digits with an optional ".digits" part, not directly after "^".
_NUMBER = re.compile(r"(?<!\^)(?:\d+\.\d+|\d+)")

# utils.py compute_vci_metric: the five signed components (positive key, negative key).
VIEW_CHANGE_AXES = (("move_right", "move_left"), ("move_up", "move_down"), ("move_forward", "move_backward"),
                    ("rotate_right", "rotate_left"), ("rotate_up", "rotate_down"))


def _field(row, key):
    try:
        return row.get(key)
    except Exception:
        return None


def _task(row):
    t = _field(row, "task")
    return t if isinstance(t, str) else None


def answer_type(row) -> str | None:
    """"select", "fill" or "view_change" -- from the official task lists (utils.py sparbench_process_results);
    for a task outside them, from `format_type` ("select" / "fill"); else None."""
    t = _task(row)
    if t in SELECT_TASKS:
        return "select"
    if t in FILL_TASKS:
        return "fill"
    if t in VIEW_CHANGE_TASKS:
        return "view_change"
    ft = _field(row, "format_type")
    return ft if ft in ("select", "fill") else None


def category(row) -> str | None:
    """The official level of the row's task (utils.py Low/Middle/High); None for a task in no list.
    Note: view_change_infer is listed in Middle, but the official level mean leaves it out (see aggregate)."""
    return _LEVEL_OF.get(_task(row))


def is_multi_view(row) -> bool:
    """Whether the row is in SPAR-Bench-MV (img_type == "multi_view", dataset card)."""
    return _field(row, "img_type") == "multi_view"


SPLIT_MV = is_multi_view


def post_prompt(row) -> str:
    """The official instruction for the row's task (utils.py sparbench_doc_to_text, default kwargs)."""
    kind = answer_type(row)
    if kind == "fill":
        return NA_POST_PROMPT
    if kind == "select":
        return POST_PROMPT
    return ""


def official_prompt(row, pre_prompt: str = "") -> str:
    """The text lmms-eval sends (utils.py sparbench_doc_to_text): pre_prompt, question, then for fill tasks the
    NA prompt; for select tasks a line that is BBOX_NOTE for position_matching / camera_motion_infer (else
    empty) and POST_PROMPT; for view_change_infer two empty lines. Lines are joined with "\\n"."""
    question = _field(row, "question")
    question = question if isinstance(question, str) else ""
    kind = answer_type(row)
    if kind == "fill":
        parts = [pre_prompt, question, NA_POST_PROMPT]
    elif kind == "select":
        parts = [pre_prompt, question, BBOX_NOTE if _task(row) in BBOX_NOTE_TASKS else "", POST_PROMPT]
    else:
        parts = [pre_prompt, question, "", ""]
    return "\n".join(parts)


# --- per-question rules ----------------------------------------------------------------------------------------

def mean_relative_accuracy(pred, gold) -> float:
    """utils.py abs_dist_norm + mean_relative_accuracy: the share of tolerances 1 − θ with
    |pred − gold| / |gold| <= 1 − θ (|pred − gold| when gold == 0). NaN never passes."""
    err = abs(pred - gold) if gold == 0.0 else abs((pred - gold) / gold)
    return sum(1 for tol in TOLERANCES if err <= tol) / len(TOLERANCES)


def _official_number(reply: str, task) -> float | None:
    """utils.py process_na then to_float: the number the official code scores, or None where it fails."""
    try:
        # Every match is converted before one is picked (so an over-long integer anywhere fails the reply).
        values = [float(tok) if "." in tok else int(tok) for tok in _NUMBER.findall(reply)]
        if task in LAST_NUMBER_TASKS:
            chosen = values[-1] if values else -1
        elif values:
            chosen = values[0]
        else:
            return None  # official: IndexError -> the worst score
        return float(chosen)  # to_float (an int too large for a float gives None there, then 0)
    except Exception:
        return None


def _to_float(value) -> float | None:
    """utils.py to_float."""
    try:
        return float(value)
    except Exception:
        return None


def _parse_motion(text: str) -> dict:
    """utils.py parse_instruction: "k:v,k:v" -> {k: float(v)}; raises on any malformed item."""
    out = {}
    for item in text.split(","):
        key, value = item.split(":")  # exactly one ":" per item, else ValueError
        out[key] = float(value)
    return out


def _motion_components(d: dict) -> tuple:
    return tuple(d.get(pos, 0) - d.get(neg, 0) for pos, neg in VIEW_CHANGE_AXES)


def view_change_score(reply, gold) -> float:
    """utils.py compute_vci_metric (0 on any error, as sparbench_process_results catches it)."""
    try:
        pred = _motion_components(_parse_motion(reply))
        true = _motion_components(_parse_motion(gold))
        # Official argument order: mean_relative_accuracy(gt, prediction) -- normalised by the prediction.
        parts = [mean_relative_accuracy(t, p) for t, p in zip(true, pred)]
        return sum(parts) / len(parts)
    except Exception:
        return 0.0


def _select_score(reply: str, gold: str) -> float:
    """utils.py exact_match on the stripped reply."""
    p, t = reply.lower(), gold.lower()
    if p == t or p in t:  # an empty reply is "in" every gold
        return 1.0
    return 1.0 if p[0] == t else 0.0


def extract(reply, row):
    """What the official code takes from a reply:
    select -> the reply's first character, upper-cased ("" for an empty reply; note that score() also
              credits a reply that is a substring of the gold, the empty one included);
    fill -> the float it scores (None: no number / conversion error; -1.0 on an _mv task with no number);
    view_change -> the five signed components (right−left, up−down, forward−backward, rotate right−left,
              rotate up−down), None when the reply does not parse; None for a non-string reply."""
    try:
        if not isinstance(reply, str):
            return None
        text = reply.strip()
        kind = answer_type(row)
        if kind == "select":
            return text.lower()[:1].upper()
        if kind == "fill":
            return _official_number(text, _task(row))
        if kind == "view_change":
            try:
                return _motion_components(_parse_motion(text))
            except Exception:
                return None
        return None
    except Exception:
        return None


def score(reply, row) -> float:
    """The official per-question score in [0, 1] (see the module doc); 0.0 for anything it cannot score."""
    try:
        if not isinstance(reply, str):
            return 0.0
        text = reply.strip()  # lmms-eval api/task.py ConfigurableTask.process_results
        kind = answer_type(row)
        gold = _field(row, "answer")
        if kind == "select":
            # the official MCA branch has no try/except; a non-string gold would crash it -- 0 here
            return _select_score(text, gold) if isinstance(gold, str) else 0.0
        if kind == "fill":
            pred = _official_number(text, _task(row))
            target = _to_float(gold)
            if pred is None or target is None:
                return 0.0
            s = mean_relative_accuracy(pred, target)
        elif kind == "view_change":
            if not isinstance(gold, str):
                return 0.0
            s = view_change_score(text, gold)
        else:
            return 0.0
        s = float(s)
        return s if 0.0 <= s <= 1.0 else 0.0
    except Exception:
        return 0.0


# --- aggregation -----------------------------------------------------------------------------------------------

def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def aggregate(pairs) -> dict:
    """utils.py sparbench_aggregate_results over [(row, score), ...], in percent:
    {"categories": {"Low", "Middle", "High": mean of per-task means (None when a level has no task)},
     "Avg": mean of the per-task means (the official "overall"), "per_question": mean over questions,
     "n": questions counted, "tasks": {task: mean}}.
    Rows whose task is in no official list are not counted (the official code raises on them). view_change_infer
    counts in Avg and per_question but in no level (official key-parsing quirk, see module doc)."""
    by_task = defaultdict(list)
    for pair in pairs or ():
        try:
            row, s = pair
            t = _task(row)
            if t not in _LEVEL_OF:
                continue
            s = float(s)
            if not math.isfinite(s):
                s = 0.0
        except Exception:
            continue
        by_task[t].append(s)
    tasks = {t: sum(v) / len(v) for t, v in sorted(by_task.items())}  # groupby order: sorted task names
    levels = {lvl: _mean([m for t, m in tasks.items() if _LEVEL_OF[t] == lvl and t not in _NOT_IN_LEVEL_MEANS])
              for lvl in CATEGORIES}
    scores = [s for v in by_task.values() for s in v]
    pct = lambda x: None if x is None else 100.0 * x  # noqa: E731
    return {
        "categories": {lvl: pct(v) for lvl, v in levels.items()},
        "Avg": pct(_mean(list(tasks.values()))),
        "per_question": pct(_mean(scores)),
        "n": len(scores),
        "tasks": {t: 100.0 * m for t, m in tasks.items()},
    }


# The whole text prompt, as the interface names it (hatch_vlm.scoring.official).
build_prompt = official_prompt
