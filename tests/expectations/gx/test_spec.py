"""SuiteSpec refuses, before reading data, what chunked validation cannot judge soundly."""

from __future__ import annotations

import pytest

from cartfhir.errors import ExpectationError
from cartfhir.expectations.gx import ALLOWED_TYPES, SuiteSpec, expectation_column


@pytest.mark.parametrize(("expectation", "chunk_by", "message"), [
    ({"type": "expect_column_max_to_be_between", "kwargs": {"column": "value", "max_value": 1}},
     ("patient_key",), "type not allowed.*expect_column_values_to_be_between.*check query"),
    ({"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
     ("patient_key",), "type not allowed"),
    ({"type": "expect_nothing_in_particular", "kwargs": {}}, (), "type not allowed"),
    ({"type": "expect_column_values_to_not_be_null", "kwargs": {"colum": "unit"}}, (),
     "GX rejects its kwargs.*colum"),
    ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "unit"},
      "meta": {"severity": "fatal"}}, (), "severity"),
    ({"type": "expect_column_values_to_be_unique", "kwargs": {"column": "site"}},
     ("patient_key",), "chunk_by"),
    ({"type": "expect_compound_columns_to_be_unique",
      "kwargs": {"column_list": ["patient_key", "round"]}}, (), "chunk_by"),
])
def test_unsound_or_broken_suites_are_refused_when_built(expectation, chunk_by, message) -> None:
    with pytest.raises(ExpectationError, match=message) as caught:
        SuiteSpec("harmonized.lab", "SELECT * FROM lab", chunk_by, [expectation],
                  source="tests/lab.json")
    assert "tests/lab.json" in str(caught.value) and "#1" in str(caught.value)


def test_allowed_types_exist_in_gx() -> None:
    from great_expectations.expectations.registry import get_expectation_impl

    for kind in ALLOWED_TYPES:
        assert get_expectation_impl(kind) is not None


@pytest.mark.parametrize(("kwargs", "column"), [
    ({"column": "unit"}, "unit"),
    ({"column_A": "unit", "column_B": "canonical_unit"}, "unit,canonical_unit"),
    ({"column_list": ["patient_key", "round"]}, "patient_key,round"),
    ({"column_set": ["site"]}, None),
])
def test_expectation_column_names_what_is_checked(kwargs, column) -> None:
    assert expectation_column(kwargs) == column
