"""Combining chunks: ``mostly`` is judged on the totals, not chunk by chunk."""

from __future__ import annotations

from cartfhir.expectations.gx import Outcome, validate_suite
from tests.expectations.gx.lab import CHUNK_ROWS, CLEAN_ROWS, lab_suite


def test_mostly_is_judged_on_the_totals_of_all_chunks(con) -> None:
    def grade_at_most_4(mostly: float) -> Outcome:
        expectation = {"type": "expect_column_values_to_be_between",
                       "kwargs": {"column": "grade", "min_value": 0, "max_value": 4,
                                  "mostly": mostly}}
        (outcome,) = validate_suite(con, lab_suite(expectations=[expectation]),
                                    chunk_rows=CHUNK_ROWS)
        return outcome

    fives = con.execute("SELECT count(*) FROM lab WHERE grade = 5").fetchone()[0]
    share_ok = 1 - fives / CLEAN_ROWS  # about 5/6
    passing = grade_at_most_4(round(share_ok - 0.01, 2))
    assert passing.success and passing.unexpected_count == fives
    failing = grade_at_most_4(round(share_ok + 0.01, 2))
    assert not failing.success and failing.unexpected_count == fives
