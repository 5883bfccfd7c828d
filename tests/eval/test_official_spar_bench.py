"""hatch_vlm.scoring.official.spar_bench against the official SPAR-Bench rules (fudan-zvg/spar
lmms-eval/lmms_eval/tasks/sparbench/utils.py). Every expected value below was worked out by hand from that
code; nothing here imports it.

Tolerances 1 − θ for θ in linspace(0.5, 0.95, 10): 0.50 0.45 0.40 0.35 0.30 0.25 0.20 0.15 0.10 0.05; a
numeric score is (number of tolerances >= the relative error) / 10. The cases avoid relative errors that sit
on a tolerance, except 0.5 (exact in binary), which checks the official `<=`.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from hatch_vlm.scoring.official import spar_bench as sb

VC_GOLD = "move_right:0.5,rotate_left:30"


def row(task, answer, *, img_type=None, format_type=None, question=None, id=0, source="scannet"):
    """A SPAR-Bench row as it ships (without its images)."""
    if format_type is None:
        format_type = "select" if task in sb.SELECT_TASKS else "fill"
    if img_type is None:
        img_type = "multi_view" if (task.endswith("_mv") or task in
                                    ("view_change_infer", "position_matching", "camera_motion_infer")) else "single_view"
    if question is None:
        question = {
            "select": "Where is the chair (red bbox) relative to the table (blue bbox)?\nA. left\nB. right\n"
                      "C. above\nD. below\nYour answer can only include one of options A, B, C or D.",
            "fill": "How far is the lamp (red point) from the camera? Answer in meters.",
        }[format_type]
        if task == "view_change_infer":
            question = ("How did the camera move from the first image to the second? Answer like "
                        "move_right:0.3,rotate_left:15.")
    return {"id": id, "img_type": img_type, "format_type": format_type, "task": task, "source": source,
            "question": question, "answer": answer}


SEL = "obj_spatial_relation_oo"      # a select task
NUM = "depth_prediction_oc"          # a numeric task taking the first number
NUM_MV = "depth_prediction_oc_mv"    # a numeric task taking the last number
VCI = "view_change_infer"

# (reply, task, gold, expected, why) -- all by hand from utils.py exact_match / process_na /
# mean_relative_accuracy / compute_vci_metric, on the reply after lmms-eval's .strip().
TABLE = [
    # --- select: exact_match(pred, gold) = lower-case equal, or pred in gold, or pred[0] == gold
    ("C", SEL, "C", 1.0, "equal"),
    ("c", SEL, "C", 1.0, "equal after lower()"),
    ("C.", SEL, "C", 1.0, "first character 'c'"),
    ("(C)", SEL, "C", 0.0, "first character '('"),
    ("**C**", SEL, "C", 0.0, "first character '*'"),
    ("`C`", SEL, "C", 0.0, "first character '`'"),
    ("\\boxed{C}", SEL, "C", 0.0, "first character '\\'"),
    ("The answer is C", SEL, "C", 0.0, "first character 't'"),
    ("A ball is to the left, so C", SEL, "C", 0.0, "first character 'a', gold c"),
    ("A ball is to the left, so C", SEL, "A", 1.0, "first character 'a' == gold a"),
    ("Answer: C", SEL, "A", 1.0, "first character of 'answer' is 'a'"),
    ("Answer: C", SEL, "C", 0.0, "first character 'a'"),
    ("based on both views, C", SEL, "B", 1.0, "first character 'b'"),
    ("C, D", SEL, "C", 1.0, "several letters: only the first character counts"),
    ("D, C", SEL, "C", 0.0, "first character 'd'"),
    ("CD", SEL, "C", 1.0, "first character 'c'"),
    ("c) right", SEL, "C", 1.0, "first character 'c'"),
    ("C. Left, above, behind", SEL, "C", 1.0, "first character 'c'"),
    ("B", SEL, "C", 0.0, "wrong letter"),
    ("  C \n", SEL, "C", 1.0, "reply is stripped first (lmms-eval api/task.py)"),
    ("", SEL, "C", 1.0, "'' is a substring of every gold"),
    ("  \n ", SEL, "D", 1.0, "whitespace strips to '' -> substring of the gold"),
    ("<answer>C</answer>", SEL, "C", 0.0, "first character '<'"),
    ("<action>{from:0,to:1,rotate:90}</action><answer>C</answer>", SEL, "C", 0.0, "ActoR: first character '<'"),
    ("Ｃ", SEL, "C", 0.0, "full-width C lower-cases to 'ｃ', not 'c'"),
    ("C", "position_matching", "C", 1.0, "position_matching is a select (MCA) task"),
    ("B. (120, 340)", "camera_motion_infer", "B", 1.0, "camera_motion_infer is select: first character 'b'"),
    # --- numeric, first number (non-_mv); relative error |pred - gold| / |gold|
    ("1.5", NUM, "1.5", 1.0, "exact"),
    ("1.5m", NUM, "1.5", 1.0, "unit glued to the number is ignored"),
    ("about 1.5 meters", NUM, "1.5", 1.0, "words around the number are ignored"),
    ("2.25", NUM, "2.0", 0.8, "error 0.125 <= 0.50..0.15 (8 of 10)"),
    ("The depth is 2.25 meters, not 3", NUM, "2.0", 0.8, "first number 2.25"),
    ("3", NUM, "2.0", 0.1, "error 0.5 <= 0.50 only (official <=)"),
    ("1", NUM, "2.0", 0.1, "error 0.5 <= 0.50 only"),
    ("-2.25", NUM, "2.0", 0.8, "no sign in the pattern: 2.25"),
    ("2,25", NUM, "2.0", 1.0, "comma splits: first number 2"),
    ("150 cm", NUM, "1.5", 0.0, "150 read as meters: error 99"),
    (".5", NUM, "0.5", 0.0, "no leading-dot decimals: 5, error 9"),
    ("1.5e3", NUM, "1.5", 1.0, "no exponents: first number 1.5"),
    ("x^2 = 4, so 2", NUM, "2.0", 0.0, "'2' after '^' skipped; first number 4, error 1"),
    ("\\boxed{2.25}", NUM, "2.0", 0.8, "2.25 inside \\boxed"),
    ("The red point is about 2.", NUM, "2.0", 1.0, "truncated sentence: '2' (no digits after the dot)"),
    ("no idea", NUM, "1.5", 0.0, "no number: IndexError -> worst score"),
    ("0", NUM, "0", 1.0, "gold 0: absolute error 0"),
    ("0.12", NUM, "0", 0.8, "gold 0: absolute error 0.12 <= 0.50..0.15"),
    ("0.6", NUM, "0", 0.0, "gold 0: absolute error 0.6"),
    ("١.٥", NUM, "1.5", 1.0, "\\d and float() accept Arabic-Indic digits: 1.5"),
    ("<action>{from:0,to:1}</action><answer>2.25</answer>", NUM, "2.0", 0.0,
     "ActoR: first number is the 0 of from:0, error 1"),
    # --- numeric, last number (the four _mv tasks)
    ("The depth is 2.25 meters, not 3", NUM_MV, "2.0", 0.1, "last number 3, error 0.5"),
    ("2,25", NUM_MV, "2.0", 0.0, "last number 25"),
    ("x^2 = 4, so 2", NUM_MV, "2.0", 1.0, "last number 2"),
    ("no idea", NUM_MV, "1.5", 0.0, "no number -> -1, error 5/3"),
    ("<action>{from:0,to:1}</action><answer>2.25</answer>", "distance_prediction_oo_mv", "2.0", 0.8,
     "ActoR on an _mv task: last number 2.25"),
    ("View 1: 3.1 m, view 2: 1.5 m", "distance_prediction_oc_mv", "1.5", 1.0, "last number 1.5"),
    ("View 1: 3.1 m, view 2: 1.5 m", "distance_prediction_oc", "1.5", 0.4,
     "first number 1 (the view index): error 1/3 passes 0.50, 0.45, 0.40, 0.35"),
    # --- view_change_infer: 5 signed components, each MRA(gt, pred) i.e. error normalised by the PREDICTION
    (VC_GOLD, VCI, VC_GOLD, 1.0, "identical"),
    ("move_right:0.4,rotate_left:30", VCI, VC_GOLD, 0.92, "move |0.5-0.4|/0.4=0.25 -> 0.6; (0.6+4)/5"),
    ("rotate_left:30,move_right:0.5", VCI, VC_GOLD, 1.0, "order does not matter"),
    ("  move_right:0.5,rotate_left:30\n", VCI, VC_GOLD, 1.0, "reply stripped"),
    ("move_right:1.0,rotate_left:30", VCI, VC_GOLD, 0.82, "move |0.5-1|/1 = 0.5 -> 0.1; (0.1+4)/5"),
    ("move_right:0.25,rotate_left:30", VCI, VC_GOLD, 0.8, "move |0.5-0.25|/0.25 = 1 -> 0; 4/5"),
    ("rotate_left:30", VCI, VC_GOLD, 0.82, "move predicted 0: absolute error 0.5 -> 0.1; (0.1+4)/5"),
    ("move_right:0.5", VCI, VC_GOLD, 0.8, "rotation predicted 0: absolute error 30 -> 0; 4/5"),
    ("move_right:0.5, rotate_left:30", VCI, VC_GOLD, 0.8, "key ' rotate_left' (space kept) is unknown"),
    ("Move_Right:0.5,rotate_left:30", VCI, VC_GOLD, 0.82,
     "keys are case-sensitive: move predicted 0, absolute error 0.5 -> 0.1; (0.1+4)/5"),
    ("move_left:0.5,rotate_left:30", VCI, VC_GOLD, 0.8, "move -0.5 vs 0.5: error 2 -> 0; 4/5"),
    ("move_right:0.5,move_right:0.9,rotate_left:30", VCI, VC_GOLD, 0.84,
     "repeated key: last (0.9) wins; |0.5-0.9|/0.9 = 0.44 -> 0.50,0.45 -> 0.2; (0.2+4)/5"),
    ("move_right:0.5,rotate_left:30,rotate_right:30", VCI, VC_GOLD, 0.8, "rotation 30-30 = 0 vs -30 -> 0"),
    ("The camera moves right 0.5 m", VCI, VC_GOLD, 0.0, "no ':' in the item: parse error"),
    ("move_right:0.5m,rotate_left:30", VCI, VC_GOLD, 0.0, "float('0.5m') fails"),
    ("move_right:0.5,rotate_left:30,", VCI, VC_GOLD, 0.0, "trailing ',' leaves an empty item: parse error"),
    ("move_right:0.5,rotate_left:3", VCI, VC_GOLD, 0.8, "rotation |-30+3|/3 = 9 -> 0; 4/5"),
    ("", VCI, VC_GOLD, 0.0, "empty reply: parse error"),
    ("<answer>move_right:0.5,rotate_left:30</answer>", VCI, VC_GOLD, 0.0, "float('30</answer>') fails"),
    # --- anything that is not a string
    (None, SEL, "C", 0.0, "not a string"),
    (3, NUM, "3", 0.0, "not a string"),
]


def test_table_is_big_and_varied():
    assert len(TABLE) >= 40
    assert {t for _, t, _, _, _ in TABLE} >= {SEL, NUM, NUM_MV, VCI}


@pytest.mark.parametrize("reply,task,gold,expected,why", TABLE, ids=[f"{i}:{w[:40]}" for i, (*_, w) in
                                                                     enumerate(TABLE)])
def test_table(reply, task, gold, expected, why):
    assert sb.score(reply, row(task, gold)) == pytest.approx(expected, abs=1e-12), why


def test_first_number_is_view_index():
    # 'View 1: 3.1 m, view 2: 1.5 m': the first number is the view index 1; error |1 - 1.5| / 1.5 = 1/3
    # passes 0.50, 0.45, 0.40, 0.35 -> 0.4. The _mv task takes the last number, 1.5 -> 1.0.
    reply = "View 1: 3.1 m, view 2: 1.5 m"
    assert sb.extract(reply, row("distance_prediction_oc", "1.5")) == 1.0
    assert sb.score(reply, row("distance_prediction_oc", "1.5")) == pytest.approx(0.4)
    assert sb.extract(reply, row("distance_prediction_oc_mv", "1.5")) == 1.5
    assert sb.score(reply, row("distance_prediction_oc_mv", "1.5")) == pytest.approx(1.0)


# --- one test per rule -------------------------------------------------------------------------------------------

def test_levels_are_the_official_lists():
    assert sb.CATEGORIES == ("Low", "Middle", "High")
    low = ["depth_prediction_oc", "depth_prediction_oo", "distance_prediction_oc", "distance_prediction_oo"]
    for t in low + [t + "_mv" for t in low]:
        assert sb.category(row(t, "1.0")) == "Low", t
    for t in ("view_change_infer", "position_matching", "camera_motion_infer"):
        assert sb.category(row(t, "A")) == "Middle", t
    for t in ("obj_spatial_relation_oo", "obj_spatial_relation_oc_mv", "obj_spatial_relation_oo_mv",
              "spatial_imagination_oc", "spatial_imagination_oo", "spatial_imagination_oc_mv",
              "spatial_imagination_oo_mv", "distance_infer_center_oo", "distance_infer_center_oo_mv"):
        assert sb.category(row(t, "A")) == "High", t
    all_tasks = set(sb.SELECT_TASKS) | set(sb.FILL_TASKS) | set(sb.VIEW_CHANGE_TASKS)
    assert len(all_tasks) == 20  # dataset card: 20 tasks
    assert all_tasks == {t for ts in sb.LEVEL_TASKS.values() for t in ts}
    assert sb.category(row("obj_count", "3")) is None
    assert sb.category(None) is None


def test_answer_type_follows_the_official_task_lists():
    # utils.py dispatches on the task name; for the dataset's rows it agrees with format_type.
    for t in sb.SELECT_TASKS:
        assert sb.answer_type(row(t, "A")) == "select"
        assert row(t, "A")["format_type"] == "select"
    for t in sb.FILL_TASKS:
        assert sb.answer_type(row(t, "1.0")) == "fill"
    assert sb.answer_type(row(VCI, VC_GOLD)) == "view_change"
    # a select row with no options inline is still a letter question
    bare = row("distance_infer_center_oo", "B",
               question="Which of the green point or the blue point is farther from the red point?")
    assert sb.score("B", bare) == 1.0
    assert sb.score("2.0", bare) == 0.0
    # a task outside the lists: format_type decides the rule, and the row is not in any level
    assert sb.answer_type(row("obj_count", "A", format_type="select")) == "select"
    assert sb.score("A", row("obj_count", "A", format_type="select")) == 1.0
    assert sb.score("3.0", row("obj_count", "3", format_type="fill")) == 1.0
    assert sb.score("A", {"task": "obj_count", "answer": "A"}) == 0.0


def test_fill_mean_relative_accuracy_uses_le_and_ten_thresholds():
    assert len(sb.TOLERANCES) == 10
    assert sb.TOLERANCES[0] == 0.5 and sb.TOLERANCES[-1] == pytest.approx(0.05)
    r = row(NUM, "2.0")
    assert sb.score("3.0", r) == pytest.approx(0.1)    # error exactly 0.5: counted because of <=
    assert sb.score("3.01", r) == 0.0                  # error 0.505
    assert sb.score("2.15", r) == pytest.approx(0.9)   # error 0.075: 0.50..0.10 pass, 0.05 does not
    assert sb.score("2", r) == 1.0


def test_fill_first_vs_last_number():
    reply = "Image 1 shows it at 2.25 m; overall 2.0"
    for t in ("depth_prediction_oc", "depth_prediction_oo", "distance_prediction_oc", "distance_prediction_oo"):
        assert sb.extract(reply, row(t, "2.0")) == 1.0, t
    for t in sb.LAST_NUMBER_TASKS:
        assert sb.extract(reply, row(t, "2.0")) == 2.0, t
        assert sb.score(reply, row(t, "2.0")) == 1.0
    assert set(sb.LAST_NUMBER_TASKS) == {"depth_prediction_oc_mv", "depth_prediction_oo_mv",
                                         "distance_prediction_oc_mv", "distance_prediction_oo_mv"}


def test_fill_no_number_gold_zero_and_units():
    assert sb.extract("I cannot tell", row(NUM, "1.5")) is None
    assert sb.score("I cannot tell", row(NUM, "1.5")) == 0.0
    assert sb.extract("I cannot tell", row(NUM_MV, "1.5")) == -1.0  # official placeholder
    assert sb.score("I cannot tell", row(NUM_MV, "1.5")) == 0.0
    assert sb.score("0", row(NUM, "0")) == 1.0                      # gold 0: absolute error
    assert sb.score("0.12", row(NUM, "0.0")) == pytest.approx(0.8)
    assert sb.score("1.5m", row(NUM, "1.5")) == 1.0
    assert sb.score("about 1.5 meters", row(NUM, "1.5")) == 1.0
    assert sb.score("150cm", row(NUM, "1.5")) == 0.0                 # no unit conversion
    assert sb.score("1.5", row(NUM, "not a number")) == 0.0           # gold that float() refuses


def test_fill_number_pattern_details():
    r = row(NUM, "3")
    assert sb.extract("2^3", r) == 2.0          # the 3 after '^' is skipped
    assert sb.extract("x^3", r) is None
    assert sb.extract("x^23", r) == 3.0         # only the digit right after '^' is skipped
    assert sb.extract("1.2.3", r) == 1.2
    assert sb.extract("-4", r) == 4.0
    assert sb.extract("1" * 5000 + " 3", row(NUM_MV, "3")) is None   # every match is converted: int() refuses
    assert sb.score("9" * 400, r) == 0.0        # too large for a float


def test_view_change_example_from_the_issue():
    r = row(VCI, VC_GOLD)
    assert sb.score("move_right:0.4,rotate_left:30", r) == pytest.approx(0.92)
    # normalised by the prediction: swapping reply and gold gives a different number
    # (|0.4-0.5|/0.5 = 0.2 passes 0.50..0.20 -> 0.7; (0.7+4)/5 = 0.94)
    assert sb.score(VC_GOLD, row(VCI, "move_right:0.4,rotate_left:30")) == pytest.approx(0.94)
    assert sb.extract("move_right:0.4,rotate_left:30", r) == (0.4, 0, 0, -30.0, 0)
    assert sb.extract("move right 0.4", r) is None
    assert sb.view_change_score("move_up:1,rotate_down:10", "move_up:1,rotate_down:10") == 1.0


def test_view_change_all_components_count():
    r = row(VCI, "move_forward:0.6,rotate_left:10")
    assert sb.score("move_forward:0.6,rotate_left:10", r) == 1.0
    # an extra move_up:1 costs the up component only: gt 0 vs prediction 1, error |0-1|/1 = 1 -> 0; 4/5
    assert sb.score("move_forward:0.6,rotate_left:10,move_up:1", r) == pytest.approx(0.8)
    # any parsable reply earns the three components that are 0 on both sides: forward |0.6| > 0.5 -> 0,
    # rotation |-10| -> 0, right/up/rotate-up exact -> 3/5
    assert sb.score("move_right:0", r) == pytest.approx(0.6)


def test_select_letter_rule():
    r = row(SEL, "C")
    assert sb.score("C", r) == sb.score("c", r) == sb.score("C.", r) == 1.0
    assert sb.score("(C)", r) == sb.score("**C**", r) == sb.score("The answer is C", r) == 0.0
    assert sb.score("A ball is to the left, so C", row(SEL, "A")) == 1.0
    assert sb.score("C D", r) == 1.0 and sb.score("D C", r) == 0.0
    assert sb.score("<action>{from:0,to:1,...}</action><answer>C</answer>", r) == 0.0
    assert sb.score("", r) == 1.0                       # official: '' in 'c'
    assert sb.extract("c. left", r) == "C"
    assert sb.extract("(C)", r) == "("
    assert sb.extract("", r) == ""
    assert sb.score("C", row(SEL, None)) == 0.0         # a broken gold does not raise


def test_score_never_raises_on_odd_inputs():
    odd_rows = [None, {}, [], "row", 3, {"task": None}, {"task": SEL}, {"task": NUM, "answer": None},
                {"task": VCI, "answer": 5}, row(SEL, 3), row(NUM, float("nan")), row(VCI, "garbage")]
    odd_replies = [None, 1, 1.5, b"C", ["C"], "", "\x00", "🙂" * 1000, "C" * 200_000, "9" * 20_000,
                   "1." + "9" * 5000, "move_right:" + "9" * 400, "move_right:nan", "move_right:inf,rotate_left:-inf"]
    for r in odd_rows + [row(SEL, "C"), row(NUM, "1.5"), row(NUM_MV, "1.5"), row(VCI, VC_GOLD)]:
        for reply in odd_replies:
            s = sb.score(reply, r)
            assert isinstance(s, float) and 0.0 <= s <= 1.0
            sb.extract(reply, r)
    assert sb.score("move_right:nan", row(VCI, VC_GOLD)) == pytest.approx(0.6)  # nan component fails, rotation 0


@settings(max_examples=300, deadline=None)
@given(reply=st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=300),
                       st.lists(st.sampled_from(["move_right", "rotate_left", ":", ",", "0.5", "30", "^", "1.",
                                                 "<answer>", "</answer>", "C", " ", "\n", "nan", "-"]),
                                max_size=30).map("".join)),
       task=st.sampled_from(sb.SELECT_TASKS + sb.FILL_TASKS + sb.VIEW_CHANGE_TASKS + ("unknown",)),
       gold=st.one_of(st.sampled_from(["A", "B", "C", "D", "1.5", "0", "0.0", VC_GOLD, "move_forward:0.2"]),
                      st.text(max_size=20), st.none(), st.floats()))
def test_score_property(reply, task, gold):
    s = sb.score(reply, row(task, gold, format_type="select" if task in sb.SELECT_TASKS else "fill"))
    assert isinstance(s, float)
    assert 0.0 <= s <= 1.0


# --- aggregation -------------------------------------------------------------------------------------------------

def test_avg_is_mean_of_task_means_not_question_mean():
    # task A: 2 questions, both right (mean 1.0); task B: 5 questions, 2 right (mean 0.4).
    pairs = [(row(SEL, "C"), 1.0)] * 2 + [(row(NUM, "1.5"), 1.0)] * 2 + [(row(NUM, "1.5"), 0.0)] * 3
    out = sb.aggregate(pairs)
    assert out["Avg"] == pytest.approx(70.0)            # (1.0 + 0.4) / 2
    assert out["per_question"] == pytest.approx(400 / 7)  # 4 / 7 = 57.14
    assert out["n"] == 7
    assert out["tasks"] == {SEL: pytest.approx(100.0), NUM: pytest.approx(40.0)}
    assert out["categories"]["High"] == pytest.approx(100.0)
    assert out["categories"]["Low"] == pytest.approx(40.0)
    assert out["categories"]["Middle"] is None          # no Middle task present


def test_levels_are_means_of_task_means_and_middle_skips_view_change():
    pairs = ([(row("spatial_imagination_oc", "A"), 1.0)] * 9 + [(row("spatial_imagination_oo", "A"), 0.0)]
             + [(row("position_matching", "A"), 1.0)] * 3 + [(row("camera_motion_infer", "A"), 0.5)] * 2
             + [(row(VCI, VC_GOLD), 0.0)] * 4)
    out = sb.aggregate(pairs)
    # High: tasks 1.0 and 0.0 -> 50 (a question mean would be 90)
    assert out["categories"]["High"] == pytest.approx(50.0)
    # Middle: position_matching 1.0, camera_motion_infer 0.5 -> 75; view_change_infer (0.0) is left out
    # (official key 'view_change_infer_vci_metric' -> 'view_change_infer_vci', in no list)
    assert out["categories"]["Middle"] == pytest.approx(75.0)
    # ...but it is in Avg: (1 + 0 + 1 + 0.5 + 0) / 5
    assert out["Avg"] == pytest.approx(50.0)
    assert out["per_question"] == pytest.approx(100 * (9 + 3 + 1) / 19)


def test_aggregate_skips_unknown_tasks_and_bad_pairs():
    pairs = [(row(SEL, "C"), 1.0), ({"task": "obj_count"}, 1.0), (None, 1.0), "junk", (row(NUM, "1"), "x"),
             (row(NUM, "1"), float("nan"))]
    out = sb.aggregate(pairs)
    assert out["n"] == 2
    assert out["tasks"] == {SEL: 100.0, NUM: 0.0}
    empty = sb.aggregate([])
    assert empty["n"] == 0 and empty["Avg"] is None and empty["per_question"] is None


def test_end_to_end_with_score():
    rows = [row(SEL, "C", id=1), row(SEL, "D", id=2), row(NUM, "2.0", id=3), row(VCI, VC_GOLD, id=4)]
    replies = ["C", "(D)", "2.25 m", "move_right:0.4,rotate_left:30"]
    out = sb.aggregate([(r, sb.score(x, r)) for r, x in zip(rows, replies)])
    # task means: select 0.5, numeric 0.8, view change 0.92 -> Avg 74.0; questions (1+0+0.8+0.92)/4 = 68.0
    assert out["Avg"] == pytest.approx(74.0)
    assert out["per_question"] == pytest.approx(68.0)
    assert out["categories"] == {"Low": pytest.approx(80.0), "Middle": None, "High": pytest.approx(50.0)}


# --- split and prompts -------------------------------------------------------------------------------------------

def test_mv_split():
    assert sb.is_multi_view(row(NUM_MV, "1.0")) and sb.SPLIT_MV(row(NUM_MV, "1.0"))
    assert not sb.SPLIT_MV(row(NUM, "1.0"))
    assert sb.SPLIT_MV(row(NUM, "1.0", img_type="multi_view"))  # the field decides, not the task name
    assert not sb.SPLIT_MV({}) and not sb.SPLIT_MV(None)


def test_prompts():
    assert sb.POST_PROMPT == "Answer with the option's letter from the given choices directly."
    assert sb.NA_POST_PROMPT == "Please answer the question using a single word or phrase."
    q = "Where is the chair?\nA. left\nB. right"
    assert sb.official_prompt(row(SEL, "A", question=q)) == "\n" + q + "\n\n" + sb.POST_PROMPT
    assert sb.official_prompt(row("position_matching", "A", question=q)) == (
        "\n" + q + "\n" + sb.BBOX_NOTE + "\n" + sb.POST_PROMPT)
    assert sb.official_prompt(row(NUM, "1", question="How far?")) == "\nHow far?\n" + sb.NA_POST_PROMPT
    assert sb.official_prompt(row(VCI, VC_GOLD, question="How?")) == "\nHow?\n\n"
    assert sb.post_prompt(row(SEL, "A")) == sb.POST_PROMPT
    assert sb.post_prompt(row(VCI, VC_GOLD)) == ""
    assert sb.GENERATION_KWARGS["max_new_tokens"] == 100


def test_interface():
    for name in ("SOURCE", "POST_PROMPT", "CATEGORIES", "category", "extract", "score", "aggregate"):
        assert hasattr(sb, name), name
    assert "fudan-zvg/spar" in sb.SOURCE and "sparbench/utils.py" in sb.SOURCE
    assert isinstance(sb.score("C", row(SEL, "C")), float)
    assert not math.isnan(sb.score("nan", row(NUM, "1")))
