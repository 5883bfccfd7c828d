"""LazyRows: a sample that cannot be made into a row is replaced by the next one, counted, and logged once."""
import logging

import pytest

from hatch_vlm.actor.formatting import LazyRows
from hatch_vlm.pipeline.runner import _substitutions


def make_row(sample):
    if sample < 0:
        raise ValueError(f"sample {sample}: open-ended answer, no ActoR row")
    return {"x": sample}


def test_bad_samples_are_replaced_counted_and_logged_once(caplog):
    rows = LazyRows([0, -1, -2, 3], make_row)
    with caplog.at_level(logging.WARNING, logger="hatch_vlm.actor.formatting"):
        assert [r["x"] for r in rows] == [0, 3, 3, 3]
    assert rows.problems == {"ValueError": 3}          # -1 once, -2 twice (from index 1 and 2)
    warnings = [r for r in caplog.records if "cannot be made" in r.getMessage()]
    assert len(warnings) == 1 and "row 1" in warnings[0].getMessage() and "open-ended" in warnings[0].getMessage()
    assert _substitutions(rows, workers=0) == {"rows_substituted": 3, "rows_substituted_by": {"ValueError": 3}}
    assert "rows_substituted_note" in _substitutions(rows, workers=2)
    assert _substitutions(LazyRows([1], make_row), workers=0) == {}


def test_too_many_bad_samples_in_a_row_raise():
    rows = LazyRows([-1] * 5 + [1], make_row, max_substitutes=3)
    with pytest.raises(ValueError, match="3 samples in a row from index 0 cannot be made into make_row"):
        rows[0]
    with pytest.raises(IndexError, match="out of range"):
        rows[6]
