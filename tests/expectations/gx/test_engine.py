"""validate_suite: one bad row per expectation fails exactly that expectation, across chunks."""

from __future__ import annotations

import json

import pytest

from cartfhir.expectations.gx import validate_suite
from tests.expectations.gx.lab import (
    CHUNK_ROWS,
    CLEAN_ROWS,
    EXPECTATIONS,
    QUIET_CONDITION_PARSER,
    insert,
    lab_suite,
)

pytestmark = QUIET_CONDITION_PARSER

BAD_ROWS = [  # (expectation index, changes, expected unexpected_count, an expected example)
    (0, {"unit": None}, 1, None),
    # Twin of row 0 (P00000, round 1), 1,000 rows later: never in the same row-number chunk.
    # GX counts every row of a duplicate group, so the pair counts 2.
    (1, {"patient_key": "P00000", "round": 1}, 2, {"patient_key": "P00000", "round": 1}),
    (2, {"response": "XX"}, 1, "XX"),
    (3, {"grade": 9}, 1, 9),
    (4, {"concept": "crp", "value": 900.0}, 1, 900.0),
    (5, {"canonical_unit": "ng/mL"}, 1, ["mg/L", "ng/mL"]),
    (6, {"infusion_date": "1969-12-31"}, 1, ["1969-12-31T00:00:00", "1970-01-01T00:00:00"]),
    (7, {"patient_key": "X123"}, 1, "X123"),
    (8, {"collected_on": "2023-13-45"}, 1, "2023-13-45"),
    (9, {"concept": "sodium"}, 1, "sodium"),
]


def test_the_clean_table_passes_every_expectation(con, capfd) -> None:
    outcomes = validate_suite(con, lab_suite(), chunk_rows=CHUNK_ROWS)

    assert [o.expectation for o in outcomes] == [e["type"] for e in EXPECTATIONS]
    for outcome in outcomes:
        assert outcome.success, outcome
        assert outcome.error is None
        assert outcome.unexpected_count == 0
        assert outcome.unexpected_examples == []
    crp_rows = con.execute("SELECT count(*) FROM lab WHERE concept = 'crp'").fetchone()[0]
    assert [o.element_count for o in outcomes][3:5] == [CLEAN_ROWS, crp_rows]
    assert outcomes[4].severity == "warn" and outcomes[0].severity == "error"
    assert outcomes[5].column == "unit,canonical_unit"
    assert outcomes[1].column == "patient_key,round"
    assert "Calculating Metrics" not in capfd.readouterr().err  # progress bars are off


@pytest.mark.parametrize(("index", "changes", "count", "example"), BAD_ROWS,
                         ids=[f"{i}-{EXPECTATIONS[i]['type']}" for i, *_ in BAD_ROWS])
def test_one_bad_row_fails_exactly_its_expectation(con, index, changes, count, example) -> None:
    insert(con, **changes)
    outcomes = validate_suite(con, lab_suite(), chunk_rows=CHUNK_ROWS)

    failed = [i for i, o in enumerate(outcomes) if not o.success]
    assert failed == [index], [outcomes[i] for i in failed]
    bad = outcomes[index]
    assert bad.error is None
    assert bad.unexpected_count == count
    if example is not None:
        assert example in bad.unexpected_examples
    json.dumps(bad.unexpected_examples)  # examples are plain JSON values
    for outcome in outcomes:
        if outcome is not bad:
            assert outcome.unexpected_count == 0, outcome


def test_an_expectation_gx_cannot_evaluate_fails_with_its_error(con) -> None:
    broken = {"type": "expect_column_values_to_be_in_set",
              "kwargs": {"column": "no_such_column", "value_set": [1]}}
    outcomes = validate_suite(con, lab_suite(expectations=[*EXPECTATIONS, broken]),
                              chunk_rows=CHUNK_ROWS)

    last = outcomes[-1]
    assert not last.success
    assert "no_such_column" in last.error and "4 chunks of 4" in last.error
    assert all(o.success for o in outcomes[:-1])  # one broken check spoils no other


def test_a_bare_date_bound_on_a_date_column_is_an_error_not_a_pass(con) -> None:
    # GX 1.24 parses "2000-01-01" to datetime.date, which pandas will not compare with
    # datetime64; write "2000-01-01T00:00:00" instead.
    bare = {"type": "expect_column_values_to_be_between",
            "kwargs": {"column": "infusion_date", "min_value": "2000-01-01"}}
    iso = {"type": "expect_column_values_to_be_between",
           "kwargs": {"column": "infusion_date", "min_value": "2022-06-01T00:00:00"}}
    bare_outcome, iso_outcome = validate_suite(con, lab_suite(expectations=[bare, iso]))

    assert not bare_outcome.success and "compare" in bare_outcome.error
    assert not iso_outcome.success and iso_outcome.error is None
    assert iso_outcome.unexpected_count == con.execute(
        "SELECT count(*) FROM lab WHERE infusion_date < DATE '2022-06-01'").fetchone()[0]


def test_an_empty_result_still_evaluates(con) -> None:
    empty = validate_suite(con, lab_suite(query="SELECT * FROM lab WHERE false"))
    assert all(o.success and o.element_count == 0 and o.error is None for o in empty)

    columns = {"type": "expect_table_columns_to_match_set",
               "kwargs": {"column_set": ["site", "patient_key"]}}
    (schema,) = validate_suite(con, lab_suite(query="SELECT site, patient_key FROM lab WHERE "
                                                    "false", expectations=[columns]))
    assert schema.success and json.loads(schema.observed_value) == ["patient_key", "site"]

    # "Must not be empty" is a one-row check query.
    not_empty = lab_suite(name="qa.lab_rows", chunk_by=(),
                          query="SELECT count(*) AS row_count FROM lab WHERE false",
                          expectations=[{"type": "expect_column_values_to_be_between",
                                         "kwargs": {"column": "row_count", "min_value": 1}}])
    (rows,) = validate_suite(con, not_empty)
    assert not rows.success and rows.unexpected_count == 1 and rows.unexpected_examples == [0]


def test_a_json_condition_object_works_as_row_condition(con) -> None:
    crp = {"type": "comparison", "column": {"name": "concept"}, "operator": "==",
           "parameter": "crp"}  # GX 1.9+: Column("concept") == "crp", serialized
    expectation = {"type": "expect_column_values_to_be_between",
                   "kwargs": {"column": "value", "max_value": 500, "row_condition": crp}}
    insert(con, concept="crp", value=900.0)
    insert(con, patient_key="P99998", concept="ferritin", value=900.0)
    (outcome,) = validate_suite(con, lab_suite(expectations=[expectation]), chunk_rows=CHUNK_ROWS)

    assert outcome.error is None and outcome.unexpected_count == 1
    assert outcome.element_count == con.execute(
        "SELECT count(*) FROM lab WHERE concept = 'crp'").fetchone()[0]
