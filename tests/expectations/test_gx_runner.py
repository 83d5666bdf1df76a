"""The GX engine: one bad row per expectation fails exactly that expectation, across chunks.

The lab-like table has 1,000 clean rows and is read in chunks of 300, so every
case crosses chunk boundaries; the duplicate key is placed 1,000 rows after its
twin, where row-number chunks would separate them.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from cartfhir.errors import ExpectationError
from cartfhir.expectations.gx_runner import (
    ALLOWED_TYPES,
    DocsSite,
    Outcome,
    SuiteSpec,
    _chunks,
    validate_suite,
)

# The brief asks for GX's string row_condition with the pandas parser; GX 1.9+ calls it
# deprecated (removed in GX 2.0) and warns on every chunk. The JSON Condition form is
# tested below as the way forward.
pytestmark = pytest.mark.filterwarnings(
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

# A clean row for a patient of its own; each case changes what breaks one expectation.
GOOD_ROW = {"site": "site_a", "patient_key": "P99999", "round": 1, "concept": "ferritin",
            "value": 42.0, "unit": "mg/L", "canonical_unit": "mg/L", "grade": 1,
            "response": "CR", "infusion_date": "2023-01-01", "birth_date": "1970-01-01",
            "collected_on": "2023-01-02"}
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


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """GX must never phone home (analytics, version checks): any internet socket fails the test."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access attempted: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture()
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute(CLEAN_LAB)
    yield con
    con.close()


def lab_suite(**changes: object) -> SuiteSpec:
    spec = {"name": "harmonized.lab", "query": "SELECT * FROM lab", "chunk_by": ("patient_key",),
            "expectations": EXPECTATIONS, "source": "tests/lab.json"} | changes
    return SuiteSpec(**spec)


def insert(con: duckdb.DuckDBPyConnection, **changes: object) -> None:
    row = GOOD_ROW | changes
    names = ", ".join(row)
    con.execute(f"INSERT INTO lab ({names}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()))


def by_type(outcomes: list[Outcome], kind: str) -> Outcome:
    (outcome,) = [o for o in outcomes if o.expectation == kind]
    return outcome


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


def test_duplicate_keys_share_a_chunk_however_far_apart(con) -> None:
    insert(con, patient_key="P00000", round=1)
    suite = lab_suite()
    chunks = [(n, of, frame) for n, of, frame in _chunks(con, suite, CHUNK_ROWS)]

    assert len(chunks) == 4  # 1,001 rows in chunks of 300
    assert sum(len(frame) for *_, frame in chunks) == CLEAN_ROWS + 1
    holding = [n for n, _, frame in chunks
               if ((frame.patient_key == "P00000") & (frame["round"] == 1)).sum() == 2]
    assert len(holding) == 1


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


def test_an_empty_result_still_evaluates(con) -> None:
    empty = validate_suite(con, lab_suite(query="SELECT * FROM lab WHERE false"))
    assert all(o.success and o.element_count == 0 and o.error is None for o in empty)

    columns = {"type": "expect_table_columns_to_match_set",
               "kwargs": {"column_set": ["site", "patient_key"]}}
    (schema,) = validate_suite(con, lab_suite(query="SELECT site, patient_key FROM lab WHERE "
                                                    "false", expectations=[columns]))
    assert schema.success and json.loads(schema.observed_value) == ["patient_key", "site"]

    # "Must not be empty" is a one-row check query.
    not_empty = SuiteSpec("qa.lab_rows", "SELECT count(*) AS row_count FROM lab WHERE false", (),
                          [{"type": "expect_column_values_to_be_between",
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


def test_a_query_that_changes_between_passes_is_refused(con) -> None:
    con.execute("CREATE SEQUENCE grows")
    suite = lab_suite(query="SELECT * FROM lab LIMIT (SELECT nextval('grows'))")
    with pytest.raises(ExpectationError, match="same rows every time"):
        validate_suite(con, suite)


def test_a_failing_query_names_the_suite(con) -> None:
    with pytest.raises(ExpectationError, match=r"harmonized.lab.*tests/lab.json.*no_table"):
        validate_suite(con, lab_suite(query="SELECT * FROM no_table"))
    with pytest.raises(ExpectationError, match="patient_ky"):
        validate_suite(con, lab_suite(chunk_by=("patient_ky",)))  # even on one chunk


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


def test_data_docs_show_the_suite(con, tmp_path: Path) -> None:
    site = DocsSite(tmp_path / "gx")
    insert(con, response="XX")
    outcomes = validate_suite(con, lab_suite(), chunk_rows=CHUNK_ROWS, docs=site)
    index = site.build()

    assert not all(o.success for o in outcomes)
    assert index.name == "index.html" and index.is_file()
    assert "harmonized.lab" in index.read_text(encoding="utf-8")
    results = list((tmp_path / "gx").rglob("chunk-*-of-0004.json"))
    assert len(results) == 4
