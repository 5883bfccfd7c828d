"""MindCube-Tiny scored by the official rules (mll-lab-nu/MindCube src/evaluation/core/extractors.py,
base_metrics.py, evaluator.py), on rows shaped like the real MindCube_tinybench.jsonl rows.

Every expected value below was worked out by hand from the official extract_answer; the comment on
each row names the stage that decides (1: last "X."; 2: capitalised <Answer> section; 3c: letter
opening a line; 3d: *X* / "X"; 3e: "Answer:? X"; 3f: "my answer is X"; 3h: "answer is X";
5: bottom-up first stand-alone letter).
"""
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from hatch_vlm.scoring.official import mindcube as mc

QUESTION = ("Based on these two views showing the same scene: in which direction is the black sofa from the "
            "plush toy? A. Left B. Right C. Behind D. Front")


def among_row(gt="C", rid="among_group693_q1_5_2"):
    return {
        "id": rid,
        "category": ["perpendicular", "P-P", "meanwhile", "self"],
        "type": "0_frame",
        "meta_info": [["black waist bag", "plush toy", "black sofa", "window", "display shelves"],
                      [None, None, "face", None, None]],
        "question": QUESTION,
        "images": ["other_all_image/among/backpack_002/front_039.jpg",
                   "other_all_image/among/backpack_002/left_123.jpg"],
        "gt_answer": gt,
    }


def around_row(gt="A", rid="aroundnew_group003_q2_1"):
    return {
        "id": rid,
        "category": ["self", "O-O"],
        "type": 1,
        "meta_info": [[3], [3, ["red chair", "desk", "lamp"], ["face", "None", "None"]]],
        "question": ("Given 3 orthogonal perspectives of a scene, they are the front view, left view and right "
                     "view. In the second image, what is behind of the red chair. A. desk B. lamp C. window"),
        "images": ["other_all_image/around/group003/1_frame.png", "other_all_image/around/group003/2_frame.png",
                   "other_all_image/around/group003/3_frame.png"],
        "gt_answer": gt,
    }


def rotation_row(gt="B", rid="rotation_group000_q1_1"):
    return {
        "id": rid,
        "category": ["perpendicular", "PP", "rotation", "self"],
        "type": "three_view",
        "meta_info": ["chair and white board", "door", "two chairs"],
        "question": ("These three images (image 1, 2, and 3) show the same scene from three different viewpoints. "
                     "If you are standing at the viewpoint presented in image 1, what is to your right? "
                     "A. Chair and white board B. Door C. Two chairs"),
        "images": ["other_all_image/rotation/group000/img1.jpg", "other_all_image/rotation/group000/img2.jpg",
                   "other_all_image/rotation/group000/img3.jpg"],
        "gt_answer": gt,
    }


def translation_row(gt="A", rid="translation_group000_q1"):
    return {"id": rid, "category": [], "type": "forward", "meta_info": ["above", "objA", "objB", "objC"],
            "question": "Which direction is objA relative to objC? A. Above B. Below", "images": [],
            "gt_answer": gt}


ACTOR_DOT = "<action>{from:0,to:1,action:[{turn left: 30 deg}]}</action><answer>C. Behind</answer>"
ACTOR_BARE = "<action>{from:0,to:1,action:[{turn left: 30 deg}]}</action><answer>C</answer>"

# (reply, gt, extracted, score), gt "C" unless stated; hand-derived from the official extract_answer.
TABLE = [
    ("C", "C", "C", 1.0),                                    # 3c: C at the start, then the end
    ("C.", "C", "C", 1.0),                                   # 1: "C."
    ("(C)", "C", "C", 1.0),                                  # 5: nothing earlier; \bC\b inside the parens
    ("**C**", "C", "C", 1.0),                                # 3d: *C*
    ("`C`", "C", "C", 1.0),                                  # 5: backticks are no marks of 3d
    ("\\boxed{C}", "C", "C", 1.0),                           # 5: \bC\b between { and }
    ("I think it's C.", "C", "C", 1.0),                      # 1: "C."
    ("Based on the two images, C", "C", "C", 1.0),           # 5: "Based" is no stand-alone B; C is
    ("A ball is to the left, so the answer is C.", "C", "C", 1.0),   # 1: "C." beats everything
    ("A ball is to the left, so the answer is C", "C", "A", 0.0),    # 3c: "A " opens the reply
    ("The answer is C", "C", "C", 1.0),                      # 3h: lower-case "answer is C"
    ("The Answer is C", "C", "C", 1.0),                      # 3e needs "Answer:? X" (no "is"); 5: C
    ("Answer: C", "C", "C", 1.0),                            # 3c: "Answer: C" opening the reply
    ("Answer: B", "C", "B", 0.0),                            # 3c: B
    ("Answer:C", "C", "C", 1.0),                             # 3c needs "Answer: "; 3e: "Answer:C"
    ("**Answer: C**", "C", "C", 1.0),                        # 3d fails (" C*"); 3e: Answer: C
    ("Final answer: **C**", "C", "C", 1.0),                  # 3d: *C*
    ("Answer: (C)", "C", "C", 1.0),                          # 3e needs a letter after "Answer: "; 5: C
    ('The answer is "C".', "C", "C", 1.0),                   # 1 fails ('".'); 3d: "C"
    ("My answer is C", "C", "C", 1.0),                       # 3f
    ("c", "C", None, 0.0),                                   # lower case is never read
    ("the answer is c.", "C", None, 0.0),                    # "c." is lower case; nothing else
    ("My answer is b", "C", None, 0.0),                      # lower case
    ("A or C", "C", "A", 0.0),                               # 3c: "A " opens the reply
    ("C or A", "C", "C", 1.0),                               # 3c: "C " opens the reply
    ("D is wrong, C is right", "C", "D", 0.0),               # 3c: "D " opens the reply
    ("Option D is wrong; the answer is C", "C", "C", 1.0),   # 3h: answer is C
    ("The answer is C, not D.", "C", "D", 0.0),              # 1: the last "X." is "D."
    ("C, because the sofa is in front of image A.", "C", "A", 0.0),  # 1: "A." (image A.)
    ("A. Left\nC. Behind", "C", "C", 1.0),                   # 1: last "X." is "C."
    ("C. Behind\nA. Left", "C", "A", 0.0),                   # 1: last "X." is "A."
    ("A. Left B. Right C. Behind D. Front", "C", "D", 0.0),  # 1: an echo of the options ends on "D."
    ("C) Behind", "C", "C", 1.0),                            # 3c needs . / space after C; 5: C
    ("C: Behind", "C", "C", 1.0),                            # 5: C
    ("Behind", "C", None, 0.0),                              # option text alone is not matched
    ("The black sofa is Behind the plush toy.", "C", None, 0.0),     # no stand-alone A-E
    ("E", "C", "E", 0.0),                                    # 3c: E (A-E are all read)
    ("F", "C", None, 0.0),                                   # F is no letter of the extractor
    ("I choose C\n", "C", "C", 1.0),                         # 5: bottom line empty, next has C
    ("Image 2 shows the sofa on the right of the toy.\nC", "C", "C", 1.0),  # 3c: "\nC" at the end
    ("\n\nC", "C", "C", 1.0),                                # 3c
    (" C", "C", "C", 1.0),                                   # 3c fails (space first); 5: C
    ("Based on Image B, the chair is behind. Answer: C", "C", "C", 1.0),  # 3e (no upper "X.")
    ("It is behind the TV stand (see image B)", "C", "B", 0.0),       # 5: first stand-alone is B
    (ACTOR_DOT, "C", "C", 1.0),                              # 1: "C." inside <answer>
    (ACTOR_BARE, "C", "C", 1.0),                             # 5: the only stand-alone upper A-E is C
    ("<think>Image 1 shows the sofa. B is wrong.</think><answer>C</answer>", "C", "B", 0.0),  # 5: B first
    ("<answer>C</answer>\n<answer>A</answer>", "C", "A", 0.0),        # 5: bottom line first
    ("<Answer>C</Answer>", "C", "C", 1.0),                   # 2: capitalised tag, \bC\b
    ("<Answer>The answer is B</Answer> but maybe C", "C", "B", 0.0),  # 2: "The answer is B"
    ("<Answer>my answer is D<br>", "D", "D", 1.0),           # 2: section ends at "<"; my answer is D
    ("Answer: D. Front", "D", "D", 1.0),                     # 1: "D."
    ("C", "c", "C", 0.0),                                    # gt compared with ==: "C" != "c"
    ("C", "C ", "C", 0.0),                                   # gt is not stripped
    ("C", "", "C", 0.0),                                     # empty gt: never correct (row skipped)
    ("", "C", None, 0.0),                                    # empty reply
    ("Let me analyze the views. In image 1 the chair is on the", "C", None, 0.0),  # truncated, no letter
    ("<action>{from:0,to:1,action:[{turn left: 30", "C", None, 0.0),  # truncated ActoR output
]


@pytest.mark.parametrize("reply, gt, letter, expected", TABLE)
def test_table_of_replies(reply, gt, letter, expected):
    row = among_row(gt=gt)
    assert mc.extract(reply, row) == letter
    assert mc.score(reply, row) == expected


def test_table_is_large_and_varied():
    assert len(TABLE) >= 40
    assert {e for *_, e in TABLE} == {0.0, 1.0}


# --- one test per rule -------------------------------------------------------------------------------

def test_stage1_last_letter_dot_wins_over_everything():
    row = among_row("C")
    assert mc.extract("<Answer>A</Answer> The answer is B. Final: C.", row) == "C"
    assert mc.extract("Answer: A\nthe answer is B\nimage D.", row) == "D"


def test_stage2_capitalised_answer_tag_only():
    row = among_row("B")
    assert mc.extract("<Answer>B</Answer>\nA", row) == "B"            # the tag section decides
    assert mc.extract("<answer>B</answer>\nA", row) == "A"            # lower-case tag: no stage 2 -> 3c
    assert mc.extract("<Answer>nothing here</Answer>\nA", row) == "A"  # empty section falls through


def test_stage3_letter_opening_a_line():
    row = among_row("B")
    assert mc.extract("Looking at it again\nB\nthat is all", row) == "B"
    assert mc.extract("A lamp\nB\n", row) == "B"                       # last match of the pattern


def test_stage3_marks_and_answer_phrases():
    row = among_row("C")
    assert mc.extract('so "C" it is', row) == "C"
    assert mc.extract("so *C* it is", row) == "C"
    assert mc.extract("so the Answer C it is", row) == "C"
    assert mc.extract("hmm, my answer is C", row) == "C"
    assert mc.extract("hmm, the answer is C", row) == "C"


def test_stage5_bottom_up_first_lone_letter():
    row = among_row("C")
    assert mc.extract("first C\nthen B or D", row) == "B"              # bottom line, its first letter
    assert mc.extract("pick C\nno idea", row) == "C"                    # bottom line has none


def test_upper_case_a_to_e_only():
    row = among_row("C")
    for reply in ("c", "c.", "answer is c", "F", "(f)", "I"):
        assert mc.extract(reply, row) is None


def test_no_option_text_matching():
    row = among_row("C")
    assert mc.extract("Behind", row) is None
    assert mc.score("It is behind.", row) == 0.0


@pytest.mark.parametrize("reply", [None, 3, 2.5, b"C", ["C"], {"a": 1}, "", "\x00", "<<>>", "<Answer>"])
def test_non_text_and_odd_replies(reply):
    assert mc.score(reply, among_row("C")) in (0.0, 1.0)


def test_actor_reply():
    row = among_row("C")
    assert mc.extract(ACTOR_DOT, row) == "C" and mc.score(ACTOR_DOT, row) == 1.0
    assert mc.extract(ACTOR_BARE, row) == "C" and mc.score(ACTOR_BARE, row) == 1.0
    # the action's digits and braces never read as options; an upper-case word letter would
    noisy = "<action>{from:0,to:1,action:[{turn left: 30 deg, see B}]}</action><answer>C</answer>"
    assert mc.extract(noisy, row) == "B"


def test_score_compares_exactly():
    assert mc.score("C", among_row("C")) == 1.0
    assert mc.score("C", among_row("c")) == 0.0
    assert mc.score("C", among_row(" C")) == 0.0
    assert mc.score("C", {"id": "among_group1_q1"}) == 0.0              # no gt_answer
    assert mc.score("C", None) == 0.0


# --- settings ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rid, official, column", [
    ("among_group693_q1_5_2", "among", "Among"),
    ("among_group002_q0_1_1", "among", "Among"),
    ("aroundnew_group003_q2_1", "around", "Around"),
    ("around_d254259ad5be1ec58a5591aa18011ee766c05bf76fd1ea4cd17fe994e6e7707c_q1_2", "around", "Around"),
    ("rotation_group000_q1_1", "rotation", "Rotation"),
    ("rotation_group002_qfirst_5", "rotation", "Rotation"),
    ("translation_group000_q1", "translation", None),
    ("AROUND_group1_q1", "around", "Around"),                 # lower-cased first
    ("among_rotation_group1", "rotation", "Rotation"),        # substring priority: rotation > among
    ("rotation_around_1", "around", "Around"),                # around first of all
    ("translation_among_1", "translation", None),             # translation > among
    ("scene017_q2", "other", None),                           # names no setting
    ("", "other", None),
])
def test_setting_priority(rid, official, column):
    row = among_row(rid=rid)
    assert mc.setting(row) == official
    assert mc.category(row) == column


def test_missing_or_odd_id():
    assert mc.setting({"question": "x"}) == "other"
    assert mc.setting({"id": None}) == "other"
    assert mc.setting({"id": 42}) == "other"
    assert mc.setting(None) == "other"


def test_categories_in_official_order():
    assert mc.CATEGORIES == ("Around", "Rotation", "Among")
    order = [s for s in mc.OFFICIAL_SETTINGS if s.capitalize() in mc.CATEGORIES]
    assert tuple(s.capitalize() for s in order) == mc.CATEGORIES
    assert mc.IN_OVERALL["translation"] is False and mc.IN_OVERALL["other"] is True


# --- aggregation ---------------------------------------------------------------------------------------

def test_aggregate_pools_over_questions_and_drops_translation():
    pairs = ([(among_row(rid=f"among_group{k}_q1_5_2"), 1.0) for k in range(3)]
             + [(among_row(rid="among_group9_q1_5_2"), 0.0)]           # among 3/4
             + [(around_row(rid="aroundnew_group003_q2_1"), 1.0)]      # around 1/1
             + [(rotation_row(rid=f"rotation_group00{k}_q1_1"), 0.0) for k in range(5)]  # rotation 0/5
             + [(translation_row(), 1.0)] * 7)                          # excluded from the overall
    out = mc.aggregate(pairs)
    assert out["categories"] == {"Around": 100.0, "Rotation": 0.0, "Among": 75.0}
    assert list(out["categories"]) == list(mc.CATEGORIES)
    assert out["n"] == 10
    assert out["Avg"] == pytest.approx(40.0)            # 4 / 10, not mean(100, 0, 75) = 58.3
    assert out["per_question"] == pytest.approx(40.0)


def test_aggregate_counts_other_and_skips_rows_without_gt():
    pairs = [(among_row(), 1.0), (among_row(rid="scene017_q2"), 0.0),   # "other": in the overall
             (among_row(gt=""), 1.0), ({"id": "among_x"}, 1.0)]         # no gt: skipped entirely
    out = mc.aggregate(pairs)
    assert out["n"] == 2 and out["Avg"] == pytest.approx(50.0)
    assert out["categories"]["Among"] == 100.0


def test_aggregate_empty():
    assert mc.aggregate([]) == {"categories": {"Around": 0.0, "Rotation": 0.0, "Among": 0.0},
                                "Avg": 0.0, "per_question": 0.0, "n": 0}


def test_aggregate_of_scores_end_to_end():
    rows = [among_row("C"), among_row("A"), around_row("A"), rotation_row("B"), translation_row("A")]
    replies = ["<answer>C. Behind</answer>", "B", "<answer>A. desk</answer>", "Answer: C", "A"]
    out = mc.aggregate([(r, mc.score(t, r)) for r, t in zip(rows, replies)])
    assert out["categories"] == {"Around": 100.0, "Rotation": 0.0, "Among": 50.0}
    assert out["Avg"] == pytest.approx(50.0) and out["n"] == 4


# --- prompt and images ----------------------------------------------------------------------------------

def test_official_prompt_layout():
    row = among_row()
    prompt = mc.build_prompt(row)
    assert prompt.startswith("[Task]\nYour task is to analyze the spatial arrangement")
    assert prompt.endswith("'<answer>A. Above</answer>'.\n\n[Question]\n" + QUESTION)
    assert mc.POST_PROMPT == mc.RAW_QA_INSTRUCTION == mc.PRE_PROMPT
    assert "<answer>A. Above</answer>" in mc.POST_PROMPT


def test_image_root_is_the_jsonl_grandparent(tmp_path):
    jsonl = tmp_path / "data" / "raw" / "MindCube_tinybench.jsonl"
    assert mc.image_root(jsonl) == tmp_path / "data"
    assert mc.image_root("data/raw/MindCube_tinybench.jsonl") == Path("data")
    rel = among_row()["images"][0]
    expected = tmp_path / "data" / "other_all_image/among/backpack_002/front_039.jpg"
    assert mc.resolve_image(rel, mc.image_root(jsonl)) == expected
    assert "grandparent" in mc.IMAGE_ROOT_RULE


def test_resolve_image_like_the_official_loader():
    root = "./data/"
    assert mc.resolve_image("./data/other_all_image/a.jpg", root) == Path("./data/other_all_image/a.jpg")
    assert mc.resolve_image("/mnt/x/MindCube_image/other_all_image/among/g/a.jpg", root) == \
        Path("data/other_all_image/among/g/a.jpg")
    assert mc.resolve_image("D:/data/other_all_image/around/g/1_frame.png", root) == \
        Path("data/other_all_image/around/g/1_frame.png")
    assert mc.resolve_image("/tmp/elsewhere/pic.png", root) == Path("data/pic.png")


def test_source_and_interface():
    assert "mll-lab-nu/MindCube" in mc.SOURCE and "extractors.py" in mc.SOURCE
    for name in ("SOURCE", "POST_PROMPT", "CATEGORIES", "category", "extract", "score", "aggregate"):
        assert hasattr(mc, name)


# --- property ----------------------------------------------------------------------------------------------

_ALPHABET = st.sampled_from(list("ABCDEFabcde .:*\"()<>/{}[]\n\t0123") + ["<Answer>", "<answer>", "</answer>",
                                                                           "Answer: ", "answer is ", "\x00", "é"])


@settings(max_examples=400, deadline=None)
@given(reply=st.one_of(st.text(), st.lists(_ALPHABET, max_size=40).map("".join), st.none(), st.integers()),
       gt=st.one_of(st.sampled_from(["A", "B", "C", "D", "E", "c", "", " C"]), st.none(), st.integers()),
       rid=st.one_of(st.text(max_size=30), st.none()))
def test_score_never_raises_and_stays_in_unit_interval(reply, gt, rid):
    row = {"id": rid, "question": QUESTION, "gt_answer": gt}
    value = mc.score(reply, row)
    assert value in (0.0, 1.0)
    letter = mc.extract(reply, row)
    assert letter is None or letter in "ABCDE"
    if value == 1.0:
        assert letter == gt
