"""Columns without ``type`` get the SQL type of the FHIR element their path ends on."""

from __future__ import annotations

import gzip
import json
from importlib import resources
from typing import Any

import duckdb
import pytest

from cartfhir.transform.sof import compile_view
from cartfhir.transform.sof.fhir_types_build import build

PATIENTS = [
    {"resourceType": "Patient", "id": "p1", "birthDate": "1988-05", "active": True,
     "multipleBirthInteger": 2, "gender": "female",
     "name": [{"family": "Berg", "given": ["Anna", "Maria"]}],
     "extension": [{"url": "http://example.org/ethnicity", "valueString": "x-1"}]},
    {"resourceType": "Patient", "id": "p2", "birthDate": "1971-03-09", "active": False,
     "name": [{"family": "Lund", "given": ["Per"]}]},
]
OBSERVATIONS = [
    {"resourceType": "Observation", "id": "o1", "status": "final",
     "code": {"coding": [{"system": "http://loinc.org", "code": "1988-5", "display": "CRP"}]},
     "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-02-01T08:30:00+01:00",
     "valueQuantity": {"value": 12.5, "unit": "mg/L"}},
    {"resourceType": "Observation", "id": "o2", "status": "final",
     "code": {"coding": [{"system": "http://loinc.org", "code": "26464-8"}]},
     "subject": {"reference": "Patient/p2"}, "effectiveDateTime": "2024-02",
     "valueQuantity": {"value": 4, "unit": "10*9/L"}},
]


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE res (resource_type VARCHAR, resource JSON)")
    for r in PATIENTS + OBSERVATIONS:
        con.execute("INSERT INTO res VALUES (?, ?)", [r["resourceType"], json.dumps(r)])
    return con


def _table(con: duckdb.DuckDBPyConnection, view: dict[str, Any]) -> dict[str, str]:
    """Materialise the view as table v; its DuckDB column types by name."""
    con.execute(f"CREATE OR REPLACE TABLE v AS {compile_view(view, 'res').sql}")
    return {r[0]: r[1] for r in con.execute("DESCRIBE v").fetchall()}


def _view(resource: str, columns: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"resource": resource, "select": [{"column": columns}], **extra}


def test_patient_columns_typed_from_the_structure(con: duckdb.DuckDBPyConnection) -> None:
    view = _view("Patient", [
        {"name": "id", "path": "getResourceKey()"},
        {"name": "birth_date", "path": "birthDate"},
        {"name": "active", "path": "active"},
        {"name": "multiple_birth", "path": "multipleBirth.ofType(integer)"},
        {"name": "multiple_birth_direct", "path": "multipleBirthInteger"},
        {"name": "gender", "path": "gender"},
        {"name": "family", "path": "name.first().family"},
        {"name": "given", "path": "name.given.join(' ')"},
        {"name": "n_given", "path": "name.given.count()"},
        {"name": "has_name", "path": "name.exists()"},
        {"name": "ethnicity",
         "path": "extension('http://example.org/ethnicity').value.ofType(string)"},
    ])
    types = _table(con, view)
    assert types == {
        "id": "VARCHAR", "birth_date": "VARCHAR", "active": "BOOLEAN",
        "multiple_birth": "INTEGER", "multiple_birth_direct": "INTEGER", "gender": "VARCHAR",
        "family": "VARCHAR", "given": "VARCHAR", "n_given": "INTEGER", "has_name": "BOOLEAN",
        "ethnicity": "VARCHAR",
    }
    rows = con.execute("SELECT * FROM v ORDER BY id").fetchall()
    assert rows == [
        ("p1", "1988-05", True, 2, 2, "female", "Berg", "Anna Maria", 2, True, "x-1"),
        ("p2", "1971-03-09", False, None, None, None, "Lund", "Per", 1, True, None),
    ]


def test_observation_columns_and_sql_where_on_a_code(con: duckdb.DuckDBPyConnection) -> None:
    view = _view("Observation", [
        {"name": "id", "path": "id"},
        {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
        {"name": "code", "path": "code.coding.first().code"},
        {"name": "system", "path": "code.coding.system.first()"},
        {"name": "value", "path": "value.ofType(Quantity).value"},
        {"name": "value_direct", "path": "valueQuantity.value"},
        {"name": "unit", "path": "valueQuantity.unit"},
        {"name": "effective", "path": "effective.ofType(dateTime)"},
        {"name": "code_cc", "path": "code"},
    ])
    types = _table(con, view)
    assert types == {
        "id": "VARCHAR", "patient": "VARCHAR", "code": "VARCHAR", "system": "VARCHAR",
        "value": "DOUBLE", "value_direct": "DOUBLE", "unit": "VARCHAR", "effective": "VARCHAR",
        "code_cc": "JSON",  # a CodeableConcept stays JSON
    }
    # The analysts' query: a code compared as text (a JSON column raised "Malformed JSON").
    rows = con.execute("SELECT id, patient, value, unit, effective FROM v "
                       "WHERE code = '1988-5'").fetchall()
    assert rows == [("o1", "p1", 12.5, "mg/L", "2024-02-01T08:30:00+01:00")]
    other = con.execute("SELECT id, value, effective FROM v WHERE code = '26464-8'").fetchall()
    assert other == [("o2", 4.0, "2024-02")]


def test_view_where_on_a_code(con: duckdb.DuckDBPyConnection) -> None:
    view = _view("Observation", [{"name": "id", "path": "id"},
                                 {"name": "code", "path": "code.coding.code.first()"}],
                 where=[{"path": "code.coding.where(code = '1988-5').exists()"}])
    _table(con, view)
    assert con.execute("SELECT id, code FROM v").fetchall() == [("o1", "1988-5")]


def test_unknowns_choices_and_collections_stay_json(con: duckdb.DuckDBPyConnection) -> None:
    view = _view("Observation", [
        {"name": "id", "path": "id"},
        {"name": "value_any", "path": "value"},  # a choice not narrowed by ofType
        {"name": "made_up", "path": "notAnElement"},
        {"name": "codes", "path": "code.coding.code", "collection": True},
        {"name": "declared", "path": "status", "type": "string"},
    ])
    types = _table(con, view)
    assert types == {"id": "VARCHAR", "value_any": "JSON", "made_up": "JSON",
                     "codes": "JSON[]", "declared": "VARCHAR"}


def test_for_each_scope_and_union_all(con: duckdb.DuckDBPyConnection) -> None:
    view = {"resource": "Patient", "select": [
        {"column": [{"name": "id", "path": "id"}]},
        {"forEach": "name", "column": [{"name": "family", "path": "family"}]},
        {"unionAll": [
            {"column": [{"name": "x", "path": "birthDate"}]},
            {"column": [{"name": "x", "path": "active"}]},  # date vs boolean: JSON
        ]},
    ]}
    types = _table(con, view)
    assert types == {"id": "VARCHAR", "family": "VARCHAR", "x": "JSON"}
    assert con.execute("SELECT id, family FROM v ORDER BY id, x").fetchall()[0] == ("p1", "Berg")


def test_element_table_matches_a_fresh_build() -> None:
    """The shipped table is what the build script writes from the installed models."""
    shipped = resources.files("cartfhir.transform.sof").joinpath("fhir_types.json.gz")
    assert json.loads(gzip.decompress(shipped.read_bytes())) == build()


def test_a_resource_fhir_does_not_define_is_refused_by_name() -> None:
    from cartfhir.transform.sof import ViewDefinitionError
    for name in ("NotAResource", "Quantity", "patient", "DomainResource"):
        with pytest.raises(ViewDefinitionError,
                           match=f"resource '{name}' is not a FHIR R4B resource"):
            compile_view(_view(name, [{"name": "id", "path": "id"}]), "res")


def test_of_type_with_a_type_fhir_does_not_define_is_refused_by_name() -> None:
    from cartfhir.transform.sof import ViewDefinitionError
    for path in ("value.ofType(Foo)", "value.ofType(FHIR.Foo).value", "value.ofType(quantity)"):
        with pytest.raises(ViewDefinitionError, match=r"ofType\((FHIR\.)?(Foo|quantity)\).*"
                                                      r"not a FHIR type"):
            compile_view(_view("Observation", [{"name": "v", "path": path}]), "res")
    # every real type is still taken, primitive or complex, plain or qualified
    for path in ("value.ofType(Quantity).value", "value.ofType(FHIR.string)",
                 "value.ofType(System.String)", "value.ofType(integer)"):
        compile_view(_view("Observation", [{"name": "v", "path": path}]), "res")


def test_a_declared_type_wins_over_the_other_branches_of_a_union(
        con: duckdb.DuckDBPyConnection) -> None:
    view = {"resource": "Observation", "select": [
        {"column": [{"name": "id", "path": "id"}]},
        {"unionAll": [
            {"column": [{"name": "v", "path": "code.coding.first().code", "type": "string"}]},
            {"column": [{"name": "v", "path": "valueQuantity.value"}]},  # decimal, inferred
        ]},
    ]}
    assert _table(con, view) == {"id": "VARCHAR", "v": "VARCHAR"}
    assert sorted(con.execute("SELECT id, v FROM v").fetchall()) == [
        ("o1", "12.5"), ("o1", "1988-5"), ("o2", "26464-8"), ("o2", "4")]
    clash = {"resource": "Observation", "select": [{"unionAll": [
        {"column": [{"name": "v", "path": "id", "type": "string"}]},
        {"column": [{"name": "v", "path": "valueQuantity.value", "type": "decimal"}]},
    ]}]}
    from cartfhir.transform.sof import ViewDefinitionError
    with pytest.raises(ViewDefinitionError, match=r"'v'.*decimal, string"):
        compile_view(clash, "res")


def test_resource_type_is_a_string(con: duckdb.DuckDBPyConnection) -> None:
    view = _view("Observation", [{"name": "id", "path": "id"},
                                 {"name": "kind", "path": "resourceType"},
                                 {"name": "kind2", "path": "%resource.resourceType"}])
    assert _table(con, view) == {"id": "VARCHAR", "kind": "VARCHAR", "kind2": "VARCHAR"}
    assert con.execute("SELECT DISTINCT kind, kind2 FROM v").fetchall() == [
        ("Observation", "Observation")]
