"""SPAR-Bench-SI: the single-view rows of SPAR-Bench (the paper's Table 4), scored with SPAR-Bench's official
per-row rules (hatch_vlm.scoring.official.spar_bench, fudan-zvg/spar lmms-eval/lmms_eval/tasks/sparbench/utils.py).

The official code never filters by `img_type`: the split is ours to make (rows with img_type == "single_view").
Its single-view tasks are Low = depth_prediction_oc/oo, distance_prediction_oc/oo (numeric: the FIRST number of
the reply) and High = obj_spatial_relation_oo, spatial_imagination_oc/oo, distance_infer_center_oo (select:
`exact_match`); no Middle task is single-view, hence Low / High only.

Two averages, each named:
  * "Avg": the official aggregation, the mean of the per-task means (and Low / High are task means too);
  * "Avg (question-weighted)": the mean over questions, which is what the paper's Table 4 Avg fits
    (Qwen2.5-VL-3B: Low 16.0, High 32.5, Avg 23.9 = 0.52 * 16.0 + 0.48 * 32.5 with Low ~ 52 % of the SI rows;
    the task mean of the two levels would be 24.25).
"""
from __future__ import annotations

from . import spar_bench
from .spar_bench import POST_PROMPT, answer_type, build_prompt, extract, score  # noqa: F401  (the same rules)

SOURCE = spar_bench.SOURCE + "; the single-view split: rows with img_type == 'single_view' (dataset card)"
CATEGORIES = ("Low", "High")
LEVEL_TASKS = {
    "Low": ("depth_prediction_oc", "depth_prediction_oo", "distance_prediction_oc", "distance_prediction_oo"),
    "High": ("obj_spatial_relation_oo", "spatial_imagination_oc", "spatial_imagination_oo",
             "distance_infer_center_oo"),
}
TASKS = LEVEL_TASKS["Low"] + LEVEL_TASKS["High"]
WEIGHTED_NAME = "Avg (question-weighted)"


def is_single_view(row) -> bool:
    """Whether a row is in SPAR-Bench-SI (img_type == "single_view")."""
    try:
        return row.get("img_type") == "single_view"
    except Exception:
        return False


def category(row) -> str | None:
    """Low / High of a single-view task (the official level lists); None for any other task (not counted)."""
    task = row.get("task") if isinstance(row, dict) else None
    return next((lvl for lvl, ts in LEVEL_TASKS.items() if task in ts), None)


def aggregate(pairs) -> dict:
    """SPAR-Bench's official aggregation over the SI tasks' rows, in percent: {"categories": {"Low", "High"}
    (task means), "Avg" (task mean, official), "per_question" (question mean), "n", "tasks",
    "also": {WEIGHTED_NAME: question mean}}. Rows of a task that is not single-view are not counted."""
    pairs = [(row, s) for row, s in (pairs or ()) if category(row) is not None]
    agg = spar_bench.aggregate(pairs)
    return {"categories": {lvl: agg["categories"].get(lvl) for lvl in CATEGORIES}, "Avg": agg["Avg"],
            "per_question": agg["per_question"], "n": agg["n"], "tasks": agg["tasks"],
            "also": {WEIGHTED_NAME: agg["per_question"]}}
