"""Answer extraction on realistic model outputs, for each benchmark format."""
import pytest

from hatch_vlm.scoring.answers import (answer_span, extract_number, reply_letter, score_answer, score_mc,
                                     score_numeric)


@pytest.mark.parametrize("completion, gold, expected", [
    ("<answer>C</answer>", "C", 1.0),
    ("<answer>C.</answer>", "C", 1.0),
    ("<answer>(C)</answer>", "C", 1.0),
    ("<answer>C. Back, Right</answer>", "C", 1.0),
    ("<action>{from:0,to:1,action:[{turn right: 120 deg}]}</action><answer>C. Back, Right</answer>", "C", 1.0),
    ("<answer>B</answer> wait, <answer>D</answer>", "D", 1.0),       # the last answer wins
    ("<answer>B</answer> wait, <answer>D</answer>", "B", 0.0),
    ("The answer is C.", "C", 1.0),                                 # no tags (MindCube / MMSI style)
    ("C", "C", 1.0),
    ("(A) Left", "A", 1.0),
    ("<answer>Back, Right</answer>", "C", 0.0),                     # no letter at all
    ("", "C", 0.0),
    ("<answer></answer>", "A", 0.0),
    ("<answer>c</answer>", "C", 1.0),                               # a lone lower-case letter
    ("<answer>a ball on the left</answer>", "A", 0.0),              # a word, not option A
    ("<answer>C", "C", 1.0),                                        # unclosed tag: text after it
])
def test_multiple_choice(completion, gold, expected):
    assert score_mc(completion, gold) == expected


@pytest.mark.parametrize("text, expected", [
    ("``C``", "C"), ("`C`", "C"), ("**C**", "C"), ("\\boxed{C}", "C"), ("$\\boxed{(C)}$", "C"),
    ("I think it's C.", "C"), ("Based on the two images, C", "C"),
    ("A ball is to the left, so the answer is C.", "C"),      # "A ball" is an article, the phrase wins
    ("The answer is B, not D. Final answer: D", "D"),        # the last phrase
    ("A or C", None), ("So it's D, not A", None),            # hedging: two letters, no phrase
    ("I am not sure", None), ("Answer: **B**", "B"), ("{B}", "B"),
])
def test_letter_rules(text, expected):
    assert reply_letter(text, num_options=4) == expected


def test_letter_outside_the_options_does_not_count():
    assert reply_letter("E", num_options=4) is None
    assert reply_letter("D", num_options=4) == "D"


def test_numeric_rule_matches_spar_bench():
    assert score_numeric("<answer>2.0</answer>", "2.0") == 1.0
    # 10% relative error passes thresholds with 1 - θ > 0.1, i.e. θ in {0.5, ..., 0.85}: 8 of 10
    assert score_numeric("<answer>2.2 m</answer>", 2.0) == pytest.approx(0.8)
    # 49% error passes only θ = 0.5 (1 - 0.5 = 0.5 > 0.49)
    assert score_numeric("<answer>about 2.98</answer>", 2.0) == pytest.approx(0.1)
    assert score_numeric("<answer>4</answer>", 2.0) == 0.0
    assert score_numeric("<answer>no idea</answer>", 2.0) == 0.0
    assert score_numeric("<answer>1.5</answer>", "not a number") == 0.0


def test_spans_and_numbers():
    assert answer_span("think <answer> 3 </answer> junk") == "3"
    assert answer_span("plain text") == "plain text"
    assert extract_number("roughly -1.5e1 metres") == -15.0
    assert extract_number("nan inf") is None


@pytest.mark.parametrize("text", [None, 3, "<answer>", "<<<>>>", "\x00", "<answer>" * 1000])
def test_never_raises(text):
    assert score_answer(text, "A", "mc") in (0.0, 1.0)
    assert 0.0 <= score_answer(text, "2", "numeric") <= 1.0
