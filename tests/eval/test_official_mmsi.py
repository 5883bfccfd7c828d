"""MMSI-Bench official scoring (hatch_vlm.scoring.official.mmsi) on rows shaped like the real parquet rows.

Every expected value below was worked out by hand from the official rule (InternRobotics/MMSI-Bench README,
"Answer Extraction"): narrow to the first ``…``, then the first `…`, then the first {…}; then take the first
capital A-D between word boundaries that is not followed by one white-space character and a letter.
"""
import math

import pytest
from hypothesis import given, settings, strategies as st

from hatch_vlm.scoring.official import mmsi

EN = "\u2013"
ACTOR = "<action>{from:0,to:1,action:[{turn left: 30 deg}]}</action><answer>C</answer>"
ACTOR_LONG = ("<action>{from:0,to:1,action:[{turn right: 120 deg}{move forward: 1.2 m}{turn left: 150 deg}]}"
              "</action><answer>C. Back, Right</answer>")

QUESTIONS = {
    f"Positional Relationship (Cam.{EN}Obj.)": (
        "The images are taken continuously from a first-person perspective. In the second image, where is the "
        "white chair relative to you?\nOptions: A: Front left, B: Front right, C: Behind you, D: Directly ahead"),
    f"Positional Relationship (Cam.{EN}Cam.)": (
        "The two images are taken by two cameras in the same room. Where is the second camera relative to the "
        "first?\nOptions: A: Left front, B: Right front, C: Behind, D: Directly right"),
    f"Positional Relationship (Obj.{EN}Obj.)": (
        "If the sofa is to the north of the TV, in which direction is the lamp from the sofa?\n"
        "Options: A: North, B: South, C: East, D: West"),
    f"Positional Relationship (Reg.{EN}Reg.)": (
        "Where is the kitchen relative to the living room?\nOptions: A: Left, B: Right, C: Front, D: Behind"),
    f"Positional Relationship (Obj.{EN}Reg.)": (
        "In which part of the bedroom is the wardrobe?\nOptions: A: Near the door, B: By the window, "
        "C: Beside the bed, D: In the corner"),
    f"Positional Relationship (Cam.{EN}Reg.)": (
        "When taking the second photo, where was the dining area relative to you?\n"
        "Options: A: Front, B: Left, C: Right, D: Behind"),
    "Attribute (Meas.)": (
        "What is the approximate height of the table?\nOptions: A: 0.4 m, B: 0.75 m, C: 1.2 m, D: 1.6 m"),
    "Attribute (Appr.)": (
        "What colour is the object that is hidden behind the box in the first image?\n"
        "Options: A: Red, B: Blue, C: Green, D: White"),
    "Motion (Cam.)": (
        "How did the camera move from the first image to the second?\n"
        "Options: A: Turned left, B: Turned right, C: Moved forward, D: Moved backward"),
    "Motion (Obj.)": (
        "In which direction did the white car move between the two frames?\n"
        "Options: A: Towards the camera, B: Away from the camera, C: To the left, D: To the right"),
    "MSR": (
        "You stand where the second photo was taken, walk to the sofa and turn left. What is in front of you?\n"
        "Options: A: The TV, B: The window, C: The bookshelf, D: The door"),
}


def row(answer="C", qtype=f"Positional Relationship (Cam.{EN}Obj.)", id=0):
    return {"id": id, "question_type": qtype, "question": QUESTIONS.get(qtype, QUESTIONS["MSR"]),
            "answer": answer,
            "thought": f"Comparing the two views step by step, the target ends up as option {answer}."}


# ---------------------------------------------------------------------------- constants
def test_post_prompt_is_the_readme_string():
    assert mmsi.POST_PROMPT == ("\nAnswer with the option's letter from the given choices directly. "
                                "Enclose the option's letter within ``.")
    prompt = row()["question"] + mmsi.POST_PROMPT
    assert prompt.endswith("D: Directly ahead\nAnswer with the option's letter from the given choices directly. "
                           "Enclose the option's letter within ``.")


def test_interface_constants():
    assert mmsi.CATEGORIES == ("Pos", "Att", "Mot", "MSR")
    assert "InternRobotics/MMSI-Bench" in mmsi.SOURCE
    assert len(mmsi.QUESTION_TYPES) == 11 and len(set(mmsi.QUESTION_TYPES)) == 11


# ---------------------------------------------------------------------------- one test per rule
def test_rule_double_backticks_keep_the_first_pair():
    assert mmsi.extract("The answer is ``C``.") == "C"
    assert mmsi.extract("``A`` or ``C``") == "A"                 # only the first pair counts
    assert mmsi.extract("``C. Back, Right``") == "C"


def test_rule_single_backticks_keep_the_first_pair():
    assert mmsi.extract("`C`") == "C"
    assert mmsi.extract("`B` is wrong, `C` is right") == "B"
    assert mmsi.extract("``C") is None                           # "``" is an empty single-tick pair


def test_rule_braces_keep_the_first_brace_span():
    assert mmsi.extract("\\boxed{C}") == "C"
    assert mmsi.extract("$\\boxed{\\text{C}}$") == "C"            # span is "\text{C"
    assert mmsi.extract('{"answer": "C"}') == "C"
    assert mmsi.extract('{"reason": "see image A.", "answer": "C"}') == "A"


def test_rule_braces_swallow_an_actor_completion():
    # the first {...} of the <action> block is kept: "from:0,to:1,action:[{turn left: 30 deg" has no letter
    assert mmsi.extract(ACTOR) is None
    assert mmsi.score(ACTOR, row("C")) == 0.0
    assert mmsi.extract(ACTOR_LONG) is None
    assert mmsi.extract("<answer>C</answer>") == "C"             # without braces the tag is harmless


def test_rule_a_letter_followed_by_a_word_is_not_an_option():
    assert mmsi.extract("A ball is to the left, so the answer is C.") == "C"
    assert mmsi.extract("C The chair is closer") is None
    assert mmsi.extract("C\nExplanation: the sofa is left of the camera.") is None
    assert mmsi.extract("C D") == "D"                            # " D" is white space + a letter


def test_rule_letters_are_case_sensitive_and_a_to_d_only():
    assert mmsi.extract("a") is None
    assert mmsi.extract("answer: c") is None
    assert mmsi.extract("E") is None
    assert mmsi.extract("\uff23") is None                        # full-width C


def test_rule_the_first_lone_letter_wins():
    assert mmsi.extract("C, not A") == "C"
    assert mmsi.extract("A, B") == "A"
    assert mmsi.extract("A or C") == "C"                         # "A" is followed by " o"


def test_rule_word_boundaries_are_unicode():
    assert mmsi.extract("答案：C") == "C"
    assert mmsi.extract("答案C") is None                         # 案 is a word character: no boundary


def test_rule_score_compares_lowercased_stripped_gold():
    assert mmsi.score("C", row("c")) == 1.0
    assert mmsi.score("C", row(" C\n")) == 1.0
    assert mmsi.score("C", row("D")) == 0.0


def test_rule_failed_extraction_scores_zero_without_a_judge():
    for reply in ("", None, "I cannot determine the answer from the images.", 3, float("nan"), ["C"]):
        assert mmsi.score(reply, row("C")) in (0.0, 1.0)
    assert mmsi.score("", row()) == 0.0
    assert mmsi.score(None, row()) == 0.0
    assert mmsi.score("I cannot determine the answer from the images.", row()) == 0.0


def test_rule_missing_gold_scores_zero():
    assert mmsi.score("C", {"id": 1, "question_type": "MSR"}) == 0.0
    assert mmsi.score("C", {"answer": None}) == 0.0
    assert mmsi.score("C", {"answer": float("nan")}) == 0.0
    assert mmsi.score("C", None) == 0.0


def test_extract_accepts_the_row_argument():
    assert mmsi.extract("``B``", row("B")) == "B"


# ---------------------------------------------------------------------------- table (official score)
TABLE = [
    # reply, gold, official score  -- why
    ("``C``", "C", 1.0),                                   # double-tick pair -> "C"
    ("`C`", "C", 1.0),                                     # single-tick pair -> "C"
    ("**C**", "C", 1.0),                                   # * is not a word char: \bC\b
    ("\\boxed{C}", "C", 1.0),                              # brace span -> "C"
    ("C", "C", 1.0),                                       # the letter itself
    ("C.", "C", 1.0),                                      # "." after C is fine
    ("(C)", "C", 1.0),                                     # brackets are boundaries
    ("The answer is C.", "C", 1.0),                        # no other lone A-D before C
    ("I think it's C.", "C", 1.0),                         # "I" is not A-D
    ("Based on the two images, C", "C", 1.0),              # the B of "Based" is inside a word
    ("A ball is to the left, so the answer is C.", "C", 1.0),  # "A" + " b" skipped, then C
    ("A", "A", 1.0),                                       # lone A
    ("A", "C", 0.0),                                       # lone A, gold C
    ("a", "A", 0.0),                                       # lower case never matches
    ("A or C", "C", 1.0),                                  # "A" + " o" skipped -> C
    ("A or C", "A", 0.0),                                  # ... so it is not A
    ("C, not A", "C", 1.0),                                # first lone letter C
    ("C, not A", "A", 0.0),                                # first lone letter C, gold A
    (ACTOR, "C", 0.0),                                     # brace span of <action> has no letter
    (ACTOR_LONG, "C", 0.0),                                # same with a three-step action
    ("<action>{from:0,to:1,action:[{turn right: 120 deg}{move forward: 1.2 m}", "C", 0.0),  # truncated ActoR
    ("Let me look at the two images. The sofa in the first image is", "C", 0.0),  # truncated prose: no letter
    ("``C", "C", 0.0),                                     # truncated ticks: empty `` pair -> ""
    ("", "C", 0.0),                                        # empty
    ("{C}", "C", 1.0),                                     # brace span -> "C"
    ("``C``.", "C", 1.0),                                  # tick pair -> "C"
    ("The answer is ``B``", "B", 1.0),                     # tick pair -> "B"
    ("``C. Back, Right``", "C", 1.0),                      # pair -> "C. Back, Right" -> C
    ("C. Back, Right", "C", 1.0),                          # C followed by "."
    ("C The chair is closer", "C", 0.0),                   # C + " T" skipped, nothing else
    ("answer: c", "C", 0.0),                               # lower case
    ("Option C", "C", 1.0),                                # "Option" is a word, C stands alone
    ("E", "C", 0.0),                                       # only A-D are letters
    ("The correct option is (D).", "D", 1.0),              # D in brackets
    ("B and C", "C", 1.0),                                 # "B" + " a" skipped -> C
    ("A, B", "A", 1.0),                                    # A followed by ","
    ("``A`` or ``C``", "C", 0.0),                          # first pair "A"
    ("`B` is wrong, `C` is right", "C", 0.0),              # first single-tick pair "B"
    ('{"answer": "C"}', "C", 1.0),                         # brace span '"answer": "C"'
    ('{"reason": "see image A.", "answer": "C"}', "C", 0.0),  # A followed by "." comes first
    ("CD", "C", 0.0),                                      # one word, no boundary inside
    ("C D", "D", 1.0),                                     # C + " D" skipped -> D
    ("C D", "C", 0.0),                                     # ... so not C
    ("Based on the images, the answer is:\n\nC", "C", 1.0),  # C at the end
    ("C\nExplanation: the sofa is left of the camera.", "C", 0.0),  # C + "\nE" skipped, no other
    ("C)\nExplanation: the sofa is left of the camera.", "C", 1.0),  # C followed by ")"
    ("<answer>C</answer>", "C", 1.0),                      # ">C<" stands alone
    ("<think>Image A shows the door.</think><answer>C</answer>", "C", 1.0),  # "A" + " s" skipped
    ("<think>In image 2 the lamp is at B.</think><answer>C</answer>", "C", 0.0),  # B. comes first
    ("$\\boxed{\\text{C}}$", "C", 1.0),                    # brace span "\text{C" -> C
    ("**Answer:** C", "C", 1.0),                           # C at the end
    ("The answer is D. A is incorrect because the chair is on the right.", "D", 1.0),  # D first
    ("I cannot determine the answer from the images.", "C", 0.0),  # "I" only
    ("\uff23", "C", 0.0),                                  # full-width C is not [A-D]
    ("Answer: ``", "C", 0.0),                              # empty tick pair -> ""
    ("Answer: B\n\nReason: A bike is parked there.", "B", 1.0),  # B + "\n\n" is not white space + letter
    ("A.", "A", 1.0),                                      # A followed by "."
    ("(B) The lamp", "B", 1.0),                            # B followed by ")"
    ("B The lamp", "B", 0.0),                              # B + " T" skipped
    ("The answer is b", "B", 0.0),                         # lower case
    ("Answer: (D)", "D", 1.0),                             # bracketed D
    ("答案：C", "C", 1.0),                                 # full-width colon is a boundary
    ("答案C", "C", 0.0),                                   # CJK characters are word characters
    ("Final answer: C\nA is wrong.", "C", 0.0),            # C + "\nA" and A + " i" both skipped
    ("Final answer: C.\nA is wrong.", "C", 1.0),           # C followed by "."
    ("<action>{from:0,to:1,action:[{turn left: 30 deg}]}</action>\nThe answer is C.", "C", 0.0),  # braces
]


@pytest.mark.parametrize("reply, gold, expected", TABLE)
def test_official_score_table(reply, gold, expected):
    assert mmsi.score(reply, row(gold)) == expected


def test_table_is_large_and_varied():
    assert len(TABLE) >= 40
    assert len({r for r, _, _ in TABLE}) >= 40


# ---------------------------------------------------------------------------- the other toolkits' rules
ALTERNATIVES = [
    # reply, official (README), mmsi_vlmeval (repo code, no braces), lmms_eval (>= v0.7), vlmevalkit (EASI)
    (ACTOR, None, "C", None, "C"),           # braces step; VLMEvalKit reads the <answer> block
    ("\\boxed{C}", "C", "C", "C", "C"),      # without braces: "{C}" still stands alone
    ("a", None, None, "A", "A"),             # lmms: any case; VLMEvalKit: a line that is one letter
    ("the answer is b", None, None, "B", "B"),  # VLMEvalKit: the answer phrase, case-insensitive
    ("E", None, None, "E", "E"),             # both newer rules accept A-F
    ("A or C", "C", "C", "C", None),         # VLMEvalKit: two distinct capitals -> no answer
    ("C, not A", "C", "C", "C", None),       # same
    ("C\nExplanation: the sofa is left.", None, None, None, "C"),  # VLMEvalKit: the line "C"
    ("<answer>Back, Right</answer>", None, None, None, "B"),  # VLMEvalKit: first letter of the block
    ("A ball is to the left, so the answer is C.", "C", "C", "C", "C"),  # VLMEvalKit: the phrase
    ("``C``", "C", "C", "C", "C"),
    ("", None, None, None, None),
]


@pytest.mark.parametrize("reply, official, repo, lmms, vlmevalkit", ALTERNATIVES)
def test_alternative_rules(reply, official, repo, lmms, vlmevalkit):
    assert mmsi.extract(reply) == official
    assert mmsi.extract_mmsi_vlmeval(reply) == repo
    assert mmsi.extract_lmms_eval(reply) == lmms
    assert mmsi.extract_vlmevalkit(reply) == vlmevalkit
    for rule, letter in (("official", official), ("mmsi_vlmeval", repo), ("lmms_eval", lmms),
                         ("vlmevalkit", vlmevalkit)):
        for gold in "ABCD":
            assert mmsi.score_under(rule, reply, row(gold)) == (1.0 if letter == gold else 0.0)


def test_score_under_official_is_score():
    for reply, gold, expected in TABLE:
        assert mmsi.score_under("official", reply, row(gold)) == expected
    with pytest.raises(KeyError):
        mmsi.score_under("nonsense", "C", row())


# ---------------------------------------------------------------------------- never raises
_replies = st.one_of(
    st.text(),
    st.lists(st.sampled_from(list("ABCDEFabcd `{}()<>/\n.:,*\\") + ["answer", "think", "action"])).map("".join),
    st.none(), st.integers(), st.floats(allow_nan=True), st.binary(), st.lists(st.text(max_size=3)),
)
_rows = st.one_of(
    st.fixed_dictionaries({"id": st.integers(), "answer": st.one_of(st.sampled_from("ABCD"), st.text(),
                                                                      st.none(), st.floats()),
                           "question_type": st.one_of(st.sampled_from(mmsi.QUESTION_TYPES), st.text(), st.none())}),
    st.none(), st.text(), st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
)


@settings(max_examples=400, deadline=None)
@given(_replies, _rows)
def test_score_never_raises_and_is_in_unit_interval(reply, r):
    s = mmsi.score(reply, r)
    assert isinstance(s, float) and 0.0 <= s <= 1.0
    for rule in mmsi.EXTRACTORS:
        assert 0.0 <= mmsi.score_under(rule, reply, r) <= 1.0
        letter = mmsi.EXTRACTORS[rule](reply, r)
        assert letter is None or letter in "ABCDEFGHIJ"
    assert mmsi.category(r) in (None, *mmsi.CATEGORIES)


# ---------------------------------------------------------------------------- categories
TYPE_TO_COLUMN = [
    ("Positional Relationship (Cam.{}Cam.)", "Pos"),
    ("Positional Relationship (Cam.{}Obj.)", "Pos"),
    ("Positional Relationship (Cam.{}Reg.)", "Pos"),
    ("Positional Relationship (Obj.{}Obj.)", "Pos"),
    ("Positional Relationship (Obj.{}Reg.)", "Pos"),
    ("Positional Relationship (Reg.{}Reg.)", "Pos"),
    ("Attribute (Meas.)", "Att"),
    ("Attribute (Appr.)", "Att"),
    ("Motion (Cam.)", "Mot"),
    ("Motion (Obj.)", "Mot"),
    ("MSR", "MSR"),
]


@pytest.mark.parametrize("dash", [EN, "-"], ids=["en-dash", "hyphen"])
@pytest.mark.parametrize("template, column", TYPE_TO_COLUMN)
def test_question_type_maps_to_column(template, column, dash):
    qtype = template.format(dash)
    assert mmsi.category(row(qtype=qtype)) == column
    assert mmsi.question_type(row(qtype=qtype)) == template.format(EN)


def test_all_eleven_types_are_known():
    assert {t.format(EN) for t, _ in TYPE_TO_COLUMN} == set(mmsi.QUESTION_TYPES)


@pytest.mark.parametrize("qtype", ["Positional Relationship", "Motion", "motion (cam.)", "Spatial", "",
                                   "Positional Relationship (Cam.\u2014Obj.)", None, 3])
def test_unknown_question_types_have_no_column(qtype):
    assert mmsi.category({"id": 1, "question_type": qtype, "answer": "A"}) is None


def test_category_of_odd_rows():
    assert mmsi.category(None) is None
    assert mmsi.category("MSR") is None
    assert mmsi.category({}) is None
    assert mmsi.category({"category": "Pos-Cam-Obj"}) == "Pos"      # VLMEvalKit TSV short names
    assert mmsi.category({"category": "Attr-Appr"}) == "Att"
    assert mmsi.category({"question_type": " Motion (Obj.) "}) == "Mot"


# ---------------------------------------------------------------------------- aggregation
def test_aggregate_is_over_questions():
    pairs = [
        (row("C", f"Positional Relationship (Cam.{EN}Obj.)", 1), 1.0),
        (row("A", "Positional Relationship (Cam.-Cam.)", 2), 0.0),    # hyphen form: same column and type
        (row("B", f"Positional Relationship (Cam.{EN}Cam.)", 3), 1.0),
        (row("D", "Attribute (Meas.)", 4), 0.0),
        (row("C", "Motion (Cam.)", 5), 1.0),
        (row("A", "MSR", 6), 1.0),
        (row("B", "MSR", 7), 0.0),
        (row("B", "MSR", 8), 0.0),
        ({"id": 9, "question_type": "Something new", "answer": "A"}, 1.0),  # counted overall, no column
    ]
    out = mmsi.aggregate(pairs)
    assert out["n"] == 9
    assert out["Avg"] == pytest.approx(100 * 5 / 9)                 # over questions, not over columns
    assert out["per_question"] == pytest.approx(100 * 5 / 9)
    assert out["categories"] == pytest.approx({"Pos": 200 / 3, "Att": 0.0, "Mot": 100.0, "MSR": 100 / 3})
    assert list(out["categories"]) == ["Pos", "Att", "Mot", "MSR"]
    assert out["types"][f"Positional Relationship (Cam.{EN}Cam.)"] == pytest.approx(50.0)
    assert "Positional Relationship (Cam.-Cam.)" not in out["types"]


def test_aggregate_reproduces_the_paper_average_from_its_columns():
    # MMSI-Bench's 1,000 questions per type; Qwen2.5-VL-3B in the HATCH paper: 27.8 / 19.2 / 23.3 / 25.8 -> 25.6
    counts = {f"Positional Relationship (Cam.{EN}Cam.)": 93, f"Positional Relationship (Obj.{EN}Obj.)": 94,
              f"Positional Relationship (Reg.{EN}Reg.)": 81, f"Positional Relationship (Cam.{EN}Obj.)": 86,
              f"Positional Relationship (Obj.{EN}Reg.)": 85, f"Positional Relationship (Cam.{EN}Reg.)": 83,
              "Attribute (Meas.)": 64, "Attribute (Appr.)": 66, "Motion (Cam.)": 74, "Motion (Obj.)": 76,
              "MSR": 198}
    correct = {"Pos": 145, "Att": 25, "Mot": 35, "MSR": 51}
    pairs, left = [], dict(correct)
    for qtype, n in counts.items():
        col = mmsi.category({"question_type": qtype})
        for _ in range(n):
            hit = 1.0 if left[col] > 0 else 0.0
            left[col] -= int(hit)
            pairs.append((row("A", qtype, len(pairs)), hit))
    out = mmsi.aggregate(pairs)
    assert out["n"] == 1000
    assert {c: round(v, 1) for c, v in out["categories"].items()} == {"Pos": 27.8, "Att": 19.2, "Mot": 23.3,
                                                                       "MSR": 25.8}
    assert round(out["Avg"], 1) == 25.6
    assert round(sum(out["categories"].values()) / 4, 1) != 25.6        # not the mean of the columns


def test_aggregate_empty_and_scores_from_score():
    empty = {"Pos": None, "Att": None, "Mot": None, "MSR": None}
    assert mmsi.aggregate([]) == {"categories": empty, "Avg": 0.0, "per_question": 0.0, "n": 0, "types": {}}
    rows = [row("C", "MSR", 1), row("A", "Motion (Obj.)", 2)]
    out = mmsi.aggregate((r, mmsi.score(reply, r)) for r, reply in zip(rows, ["``C``", ACTOR]))
    assert out["categories"] == {"Pos": None, "Att": None, "Mot": 0.0, "MSR": 100.0}   # None: no questions
    assert out["Avg"] == 50.0 and not math.isnan(out["Avg"])


def test_aggregate_tolerates_bad_pairs():
    out = mmsi.aggregate([(row("C", "MSR"), 1.0), (row("C", "MSR"), float("nan")), "junk", (row(),),
                          (row("C", "MSR"), "x")])
    assert out["n"] == 2 and out["Avg"] == 50.0 and out["categories"]["MSR"] == 50.0
