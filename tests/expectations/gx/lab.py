"""A lab-like table of 1,000 clean rows and a suite over it, read in chunks of 300.

Every case crosses chunk boundaries; a duplicate key can be placed 1,000 rows after
its twin, where row-number chunks would separate them.
"""

from __future__ import annotations

import duckdb
import pytest

from cartfhir.expectations.gx import SuiteSpec

# The brief asks for GX's string row_condition with the pandas parser; GX 1.9+ calls it
# deprecated (removed in GX 2.0) and warns on every chunk. The JSON Condition form is
# tested in test_engine as the way forward.
QUIET_CONDITION_PARSER = pytest.mark.filterwarnings(
    "ignore:.*(condition_parser|row_condition).*deprecated:DeprecationWarning")

CHUNK_ROWS = 300
CLEAN_ROWS = 1000

CLEAN_LAB = f"""
CREATE TABLE lab AS
SELECT
    ['site_a', 'site_b', 'site_c'][i % 3 + 1]                 AS site,
    'P' || lpad(CAST(i // 2 AS VARCHAR), 5, '0')              AS patient_key,
    i % 2 + 1                                                 AS round,
    ['ferritin', 'crp', 'il6', 'ldh'][i % 4 + 1]              AS concept,
    CASE WHEN i % 4 = 1 THEN (i * 7) % 500 ELSE (i * 37) % 9000 END + 0.5 AS value,
    'mg/L'                                                    AS unit,
    'mg/L'                                                    AS canonical_unit,
    i % 6                                                     AS grade,
    ['CR', 'PR', 'SD', 'PD'][i % 4 + 1]                       AS response,
    DATE '2022-01-01' + CAST(i % 365 AS INTEGER)              AS infusion_date,
    DATE '1960-01-01' + CAST(i * 11 % 9000 AS INTEGER)        AS birth_date,
    strftime(DATE '2022-01-01' + CAST(i % 365 AS INTEGER), '%Y-%m-%d') AS collected_on
FROM range({CLEAN_ROWS}) AS r(i)
"""

EXPECTATIONS = [
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "unit"}},
    {"type": "expect_compound_columns_to_be_unique",
     "kwargs": {"column_list": ["patient_key", "round"]}},
    {"type": "expect_column_values_to_be_in_set",
     "kwargs": {"column": "response", "value_set": ["CR", "PR", "SD", "PD"]}},
    {"type": "expect_column_values_to_be_between",
     "kwargs": {"column": "grade", "min_value": 0, "max_value": 5}},
    {"type": "expect_column_values_to_be_between",
     "kwargs": {"column": "value", "min_value": 0, "max_value": 500,
                "row_condition": 'concept=="crp"', "condition_parser": "pandas"},
     "meta": {"severity": "warn"}},
    {"type": "expect_column_pair_values_to_be_equal",
     "kwargs": {"column_A": "unit", "column_B": "canonical_unit",
                "ignore_row_if": "either_value_is_missing"}},
    {"type": "expect_column_pair_values_a_to_be_greater_than_b",
     "kwargs": {"column_A": "infusion_date", "column_B": "birth_date"}},
    {"type": "expect_column_values_to_match_regex",
     "kwargs": {"column": "patient_key", "regex": r"^P\d{5}$"}},
    {"type": "expect_column_values_to_match_strftime_format",
     "kwargs": {"column": "collected_on", "strftime_format": "%Y-%m-%d"}},
    {"type": "expect_column_values_to_be_in_set",
     "kwargs": {"column": "concept", "value_set": ["ferritin", "crp", "il6", "ldh"]}},
]

# A clean row for a patient of its own; a test changes what breaks one expectation.
GOOD_ROW = {"site": "site_a", "patient_key": "P99999", "round": 1, "concept": "ferritin",
            "value": 42.0, "unit": "mg/L", "canonical_unit": "mg/L", "grade": 1,
            "response": "CR", "infusion_date": "2023-01-01", "birth_date": "1970-01-01",
            "collected_on": "2023-01-02"}


def clean_lab() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding the clean ``lab`` table."""
    con = duckdb.connect()
    con.execute(CLEAN_LAB)
    return con


def lab_suite(**changes: object) -> SuiteSpec:
    spec = {"name": "harmonized.lab", "query": "SELECT * FROM lab", "chunk_by": ("patient_key",),
            "expectations": EXPECTATIONS, "source": "tests/lab.json"} | changes
    return SuiteSpec(**spec)


def insert(con: duckdb.DuckDBPyConnection, **changes: object) -> None:
    """Add one clean row, changed by ``changes``."""
    row = GOOD_ROW | changes
    names = ", ".join(row)
    con.execute(f"INSERT INTO lab ({names}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()))
