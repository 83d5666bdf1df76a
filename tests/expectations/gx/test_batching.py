"""Chunks: equal keys share one, every row is read once, and a bad query names its suite."""

from __future__ import annotations

import duckdb
import pytest

from cartfhir.errors import ExpectationError
from cartfhir.expectations.gx import SuiteSpec, validate_suite
from cartfhir.expectations.gx.batching import chunks
from tests.expectations.gx.lab import (
    CHUNK_ROWS,
    CLEAN_ROWS,
    QUIET_CONDITION_PARSER,
    insert,
    lab_suite,
)

pytestmark = QUIET_CONDITION_PARSER


def test_duplicate_keys_share_a_chunk_however_far_apart(con) -> None:
    insert(con, patient_key="P00000", round=1)
    read = list(chunks(con, lab_suite(), CHUNK_ROWS))

    assert len(read) == 4  # 1,001 rows in chunks of 300
    assert sum(len(frame) for *_, frame in read) == CLEAN_ROWS + 1
    holding = [n for n, _, frame in read
               if ((frame.patient_key == "P00000") & (frame["round"] == 1)).sum() == 2]
    assert len(holding) == 1


def test_nullable_int_columns_compare_without_gx_errors() -> None:
    # DuckDB hands nullable INTEGERs to pandas as Int32 with pd.NA, on which GX's pair
    # checks raise "boolean value of NA is ambiguous"; the engine passes numpy columns.
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT i AS a, CASE WHEN i = 3 THEN NULL ELSE i END AS b, "
                "CASE WHEN i = 4 THEN NULL ELSE true END AS flag, "
                "CASE WHEN i = 2 THEN NULL ELSE i * 9007199254740993 END AS big "
                "FROM range(10) r(i)")
    suite = SuiteSpec("t", "SELECT * FROM t", (), [
        {"type": "expect_column_pair_values_to_be_equal", "kwargs": {"column_A": "a",
                                                                      "column_B": "b"}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "flag",
                                                                 "value_set": [True]}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "big"}},
    ])
    pair, flag, big = validate_suite(con, suite, chunk_rows=4)

    assert pair.error is None and pair.unexpected_count == 1
    assert flag.success and flag.error is None
    assert big.unexpected_count == 1 and big.error is None


def test_a_query_that_changes_between_passes_is_refused(con) -> None:
    con.execute("CREATE SEQUENCE grows")
    suite = lab_suite(query="SELECT * FROM lab LIMIT (SELECT nextval('grows'))")
    with pytest.raises(ExpectationError, match="same rows every time"):
        list(chunks(con, suite, CHUNK_ROWS))


def test_a_failing_query_names_the_suite(con) -> None:
    with pytest.raises(ExpectationError, match=r"harmonized.lab.*tests/lab.json.*no_table"):
        validate_suite(con, lab_suite(query="SELECT * FROM no_table"))
    with pytest.raises(ExpectationError, match="patient_ky"):
        validate_suite(con, lab_suite(chunk_by=("patient_ky",)))  # even on one chunk
