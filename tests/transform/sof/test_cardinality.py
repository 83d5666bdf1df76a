"""FHIR cardinality in the compiled SQL: elements that occur at most once are read as one value.

A path whose every step FHIR allows at most once (``status``, ``subject.reference``,
``valueQuantity.value``, ``effective.ofType(dateTime)``) needs no per-row test for
arrays. Landed data is checked only structurally, so such a path may meet an array,
an object or the wrong JSON type: it then reads as empty (NULL) on both engines,
never an error. Repeating elements keep FHIRPath's list handling. A view ``where``
of the form ``component.exists()`` skips rows by a text test on the raw JSON first
on Spark (where it saves parsing), which may only drop rows the real filter drops too.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pytest

from cartfhir.transform.sof import compile_view, run_view, run_view_spark

SINGLE_VIEW = {"resource": "Observation", "select": [{"column": [
    {"name": "id", "path": "getResourceKey()", "type": "string"},
    {"name": "patient_id", "path": "subject.getReferenceKey(Patient)", "type": "string"},
    {"name": "status", "path": "status", "type": "code"},
    {"name": "code_text", "path": "code.text", "type": "string"},
    {"name": "effective", "path": "effective.ofType(dateTime)", "type": "dateTime"},
    {"name": "start", "path": "effective.ofType(Period).start", "type": "dateTime"},
    {"name": "issued", "path": "issued", "type": "instant"},
    {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
    {"name": "unit", "path": "value.ofType(Quantity).unit", "type": "string"},
    {"name": "value_integer", "path": "value.ofType(integer)", "type": "integer"},
    {"name": "has_value", "path": "value.ofType(Quantity).exists()", "type": "boolean"},
]}]}

GOOD = {"resourceType": "Observation", "id": "good", "status": "final",
        "subject": {"reference": "Patient/p1"}, "code": {"text": 'Glucose "fasting" \\ é'},
        "effectiveDateTime": "2025-01-02", "issued": "2025-01-03T00:00:00Z",
        "valueQuantity": {"value": 5.5, "unit": "mmol/L"}}
GOOD_ROW = {"id": "good", "patient_id": "p1", "status": "final",
            "code_text": 'Glucose "fasting" \\ é',
            "effective": "2025-01-02", "start": None, "issued": "2025-01-03T00:00:00Z",
            "value": 5.5, "unit": "mmol/L", "value_integer": None, "has_value": True}
# Every singleton element in a shape FHIR does not allow.
HOSTILE = {"resourceType": "Observation", "id": 7, "status": ["final"],
           "subject": [{"reference": "Patient/p1"}], "code": [{"text": "Glucose"}],
           "effectiveDateTime": {"value": "2025-01-02"}, "effectivePeriod": [{"start": "x"}],
           "issued": ["2025-01-03T00:00:00Z"], "valueQuantity": {"value": "5.5", "unit": 3},
           "valueInteger": 1.5}
HOSTILE_ROW = {"id": None, "patient_id": None, "status": None, "code_text": None,
               "effective": None, "start": None, "issued": None, "value": None,
               "unit": None, "value_integer": None, "has_value": True}
# The quantity itself sent as a list: the whole path reads as empty.
LISTED = {"resourceType": "Observation", "id": "listed",
          "valueQuantity": [{"value": 1, "unit": "mg"}]}
LISTED_ROW = {**dict.fromkeys(GOOD_ROW), "id": "listed", "has_value": False}
# An integer out of the INTEGER column's range: NULL, not a failed cast.
BIG = {"resourceType": "Observation", "id": "big", "valueInteger": 3000000000}
BIG_ROW = {**dict.fromkeys(GOOD_ROW), "id": "big", "has_value": False}

COMPONENT_VIEW = {"resource": "Observation",
                  "select": [{"column": [{"name": "id", "path": "id", "type": "id"}]}],
                  "where": [{"path": "component.exists()"}]}
# "component" only inside a string, as an empty list, and as a key written with escapes.
COMPONENT_CASES = [
    ({"resourceType": "Observation", "id": "text", "note": [{"text": '"component": [1]'}]}, False),
    ({"resourceType": "Observation", "id": "empty", "component": []}, False),
    ({"resourceType": "Observation", "id": "real", "component": [{"code": {"text": "a"}}]}, True),
]
ESCAPED_KEY = '{"resourceType": "Observation", "id": "escaped", "comp\\u006fnent": [{"id": "c"}]}'


def _duckdb(texts: list[str]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE resources (resource_type VARCHAR, resource JSON)")
    con.executemany("INSERT INTO resources VALUES ('Observation', ?)", [[t] for t in texts])
    return con


def _run(engine: str, view: dict[str, Any], texts: list[str],
         request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    if engine == "duckdb":
        return run_view(_duckdb(texts), view, "resources")
    spark = request.getfixturevalue("spark")
    df = spark.createDataFrame([("Observation", t) for t in texts],
                               "resource_type STRING, resource STRING")
    df.createOrReplaceTempView("cardinality_resources")
    return run_view_spark(spark, view, "cardinality_resources")


ENGINES = ["duckdb", pytest.param("spark", marks=pytest.mark.spark)]


def _column_sql(sql: str) -> str:
    """The compiled SQL without its innermost scan (where the paths are listed)."""
    return sql.split("FROM (SELECT", 1)[0]


def test_singleton_paths_have_no_per_row_array_test() -> None:
    sql = _column_sql(compile_view(SINGLE_VIEW, "resources").sql)
    assert "'ARRAY'" not in sql
    assert "list_filter" not in sql and "::JSON[]" not in sql


def test_singleton_paths_read_only_their_own_values() -> None:
    """Only the leaves are extracted: no parent object (``$.code``) is serialised for a fallback."""
    sql = compile_view(SINGLE_VIEW, "resources").sql
    assert "'$.\"code\"'" not in sql and "'$.\"effectivePeriod\"'" not in sql
    assert "'$.\"code\".\"text\"'" in sql


def test_repeating_elements_keep_list_handling() -> None:
    view = {"resource": "Observation", "select": [{"column": [
        {"name": "codes", "path": "code.coding.code", "type": "code", "collection": True}]}]}
    con = _duckdb([json.dumps({"resourceType": "Observation", "id": "o",
                               "code": {"coding": [{"code": "a"}, {"code": "b"}]}})])
    assert run_view(con, view, "resources") == [{"codes": ["a", "b"]}]


@pytest.mark.parametrize("engine", ENGINES)
def test_non_conformant_singletons_read_as_empty(engine: str,
                                                 request: pytest.FixtureRequest) -> None:
    resources = (GOOD, HOSTILE, LISTED, BIG)
    rows = _run(engine, SINGLE_VIEW, [json.dumps(r) for r in resources], request)
    expected = [GOOD_ROW, HOSTILE_ROW, LISTED_ROW, BIG_ROW]
    assert sorted(rows, key=repr) == sorted(expected, key=repr)


def test_exists_where_has_a_text_prefilter_on_spark() -> None:
    """Spark skips parsing the rows the text test drops; DuckDB reads the key as fast."""
    sql = compile_view(COMPONENT_VIEW, "resources", dialect="spark").sql
    assert "contains(_src.resource, '\"component\"')" in sql
    assert "'\"component\"'" not in compile_view(COMPONENT_VIEW, "resources").sql


@pytest.mark.parametrize("engine", ENGINES)
def test_text_prefilter_drops_only_rows_the_filter_drops(engine: str,
                                                         request: pytest.FixtureRequest) -> None:
    texts = [json.dumps(r) for r, _ in COMPONENT_CASES] + [ESCAPED_KEY]
    rows = _run(engine, COMPONENT_VIEW, texts, request)
    kept = sorted(r["id"] for r in rows)
    assert kept == sorted([r["id"] for r, keep in COMPONENT_CASES if keep] + ["escaped"])
