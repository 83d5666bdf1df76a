"""Direct tests of the SQL-on-FHIR engine beyond the conformance suite.

They pin what the suite does not: unsupported FHIRPath is refused by name,
passthrough columns survive, and a view over many resources is one SQL statement.
"""

from __future__ import annotations

import json

import duckdb
import pytest

from cartfhir.errors import CartfhirError
from cartfhir.transform.sof import (
    UnsupportedFhirPath,
    ViewDefinitionError,
    compile_view,
    run_view,
    validate_view,
)


def _db(resources: list[dict], site: str = "site-a") -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE resources (site VARCHAR, resource_type VARCHAR, id VARCHAR, "
                "resource JSON)")
    con.executemany("INSERT INTO resources VALUES (?, ?, ?, ?)",
                    [(site, r["resourceType"], r["id"], json.dumps(r)) for r in resources])
    return con


def _observation(i: int) -> dict:
    return {
        "resourceType": "Observation", "id": f"o{i}", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": f"{1000 + i % 7}-1"}]},
        "subject": {"reference": f"Patient/p{i % 50}"},
        "effectiveDateTime": f"2025-01-{1 + i % 28:02d}",
        "valueQuantity": {"value": i / 10, "unit": "mg/L"},
        "component": [{"code": {"text": f"c{j}"}, "valueInteger": j} for j in range(i % 3)],
    }


PATIENT_VIEW = {"resource": "Patient", "select": [{"column": [
    {"name": "id", "path": "getResourceKey()", "type": "id"},
    {"name": "family", "path": "name.family.first()", "type": "string"}]}]}


@pytest.mark.parametrize("path, construct", [
    ("descendants()", "descendants()"),
    ("name.aggregate($this + $total, 0)", "aggregate()"),
    ("name.given.lower()", "lower()"),
    ("deceased is boolean", "'is'"),
])
def test_unsupported_fhirpath_is_refused_by_name(path: str, construct: str) -> None:
    view = {"resource": "Patient",
            "select": [{"column": [{"name": "x", "path": path, "type": "string"}]}]}
    with pytest.raises(UnsupportedFhirPath, match=construct.replace("(", r"\(")
                       .replace(")", r"\)")) as info:
        validate_view(view)
    assert isinstance(info.value, ViewDefinitionError)
    assert isinstance(info.value, CartfhirError)
    assert info.value.path == path


def test_validate_view_accepts_a_good_view_and_rejects_a_bad_one() -> None:
    validate_view(PATIENT_VIEW)
    with pytest.raises(ViewDefinitionError, match="resource"):
        validate_view({"select": PATIENT_VIEW["select"]})


def test_passthrough_columns_come_first_and_keep_their_values() -> None:
    con = _db([{"resourceType": "Patient", "id": "p1", "name": [{"family": "Ng"}]},
               {"resourceType": "Observation", "id": "o1"}], site="site-b")
    compiled = compile_view(PATIENT_VIEW, "resources", passthrough=("site",))
    rows = run_view(con, PATIENT_VIEW, "resources", passthrough=("site",))
    assert rows == [{"site": "site-b", "id": "p1", "family": "Ng"}]
    assert [d[0] for d in con.execute(compiled.sql).description] == ["site", "id", "family"]


def test_passthrough_name_clash_is_an_error() -> None:
    view = {"resource": "Patient", "select": [{"column": [
        {"name": "site", "path": "id", "type": "id"}]}]}
    with pytest.raises(ViewDefinitionError, match="clash"):
        compile_view(view, passthrough=("site",))


def test_source_may_be_a_subquery() -> None:
    con = _db([{"resourceType": "Patient", "id": "p1"}])
    source = "(SELECT resource_type, resource FROM resources WHERE id = 'p1')"
    assert run_view(con, PATIENT_VIEW, source) == [{"id": "p1", "family": None}]


def test_many_observations_run_as_one_statement() -> None:
    n = 3000
    con = _db([_observation(i) for i in range(n)])
    view = {
        "resource": "Observation",
        "where": [{"path": "status = 'final' and value.ofType(Quantity).value >= 0"}],
        "select": [
            {"column": [
                {"name": "id", "path": "getResourceKey()", "type": "id"},
                {"name": "patient_id", "path": "subject.getReferenceKey(Patient)", "type": "id"},
                {"name": "code", "path": "code.coding.where(system = 'http://loinc.org').code"
                 ".first()", "type": "code"},
                {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
            ]},
            {"forEachOrNull": "component", "column": [
                {"name": "component_index", "path": "%rowIndex", "type": "integer"},
                {"name": "component_value", "path": "value.ofType(integer)", "type": "integer"},
            ]},
        ],
    }
    compiled = compile_view(view, "resources", passthrough=("site",))
    statements = con.extract_statements(compiled.sql)
    assert [s.type for s in statements] == [duckdb.StatementType.SELECT]
    # Observation i has i % 3 components, and forEachOrNull keeps one row when it has none.
    expected = sum(max(1, i % 3) for i in range(n))
    count = con.execute(f"SELECT count(*) FROM ({compiled.sql})").fetchone()[0]
    assert count == expected
    row = con.execute(
        f"SELECT * FROM ({compiled.sql}) WHERE id = 'o5' ORDER BY component_index").fetchall()
    assert row == [("site-a", "o5", "p5", "1005-1", 0.5, 0, 0),
                   ("site-a", "o5", "p5", "1005-1", 0.5, 1, 1)]


def test_repeat_deeper_than_the_limit_fails_instead_of_dropping_rows() -> None:
    item: dict = {"linkId": "leaf"}
    for depth in range(5):
        item = {"linkId": f"l{depth}", "item": [item]}
    con = _db([{"resourceType": "QuestionnaireResponse", "id": "q1", "item": [item]}])
    view = {"resource": "QuestionnaireResponse", "select": [
        {"repeat": ["item"], "column": [{"name": "link", "path": "linkId", "type": "string"}]}]}
    compiled = compile_view(view, "resources", repeat_depth=3)
    with pytest.raises(duckdb.Error, match="nests deeper than 3"):
        con.execute(compiled.sql).fetchall()
    assert len(run_view(con, view, "resources")) == 6


def test_run_time_rule_breaks_become_view_errors() -> None:
    con = _db([{"resourceType": "Patient", "id": "p1", "name": [{"family": "A"},
                                                                {"family": "B"}]}])
    view = {"resource": "Patient", "select": [{"column": [
        {"name": "family", "path": "name.family", "type": "string"}]}]}
    with pytest.raises(ViewDefinitionError, match="collection: true"):
        run_view(con, view, "resources")


def test_fhirpath_operators_and_functions() -> None:
    con = _db([{"resourceType": "Patient", "id": "p1", "gender": "female",
                "name": [{"given": ["Ann", "Bo"], "family": "Ng"}, {"family": "Ng"}]}])
    paths = {
        "union": ("(name.family | name.given).count()", "integer", 3),
        "membership": ("'Bo' in name.given", "boolean", True),
        "contains": ("name.given contains 'Zed'", "boolean", False),
        "concat": ("name.given.first() & ' ' & name.family.first()", "string", "Ann Ng"),
        "iif": ("iif(gender = 'female', 'F', 'other')", "string", "F"),
        "all": ("name.all(family = 'Ng')", "boolean", True),
        "implies": ("(gender = 'male') implies name.exists()", "boolean", True),
        "arith": ("(7 div 2) + (7 mod 2) * 10 - -1", "integer", 14),
        "last": ("name.given.last()", "string", "Bo"),
        "select": ("name.select(given).count()", "integer", 2),
        "index": ("name.given[1]", "string", "Bo"),
    }
    view = {"resource": "Patient", "select": [{"column": [
        {"name": name, "path": path, "type": fhir_type}
        for name, (path, fhir_type, _) in paths.items()]}]}
    assert run_view(con, view, "resources") == [
        {name: value for name, (_, _, value) in paths.items()}]


def test_of_type_filters_plain_primitives_and_refuses_to_guess_complex_types() -> None:
    con = _db([{"resourceType": "Patient", "id": "p1", "name": [{"given": ["Ann"]}],
                "contact": [{"name": {"family": "Ng"}}]}])
    view = {"resource": "Patient", "select": [{"column": [
        {"name": "strings", "path": "name.given.ofType(string)", "type": "string",
         "collection": True},
        {"name": "ints", "path": "name.given.ofType(integer)", "type": "integer",
         "collection": True}]}]}
    assert run_view(con, view, "resources") == [{"strings": ["Ann"], "ints": []}]
    complex_view = {"resource": "Patient", "select": [{"column": [
        {"name": "n", "path": "contact.name.ofType(HumanName)", "collection": True}]}]}
    with pytest.raises(ViewDefinitionError, match="not a choice element"):
        run_view(con, complex_view, "resources")


def test_project_observation_view_fits_in_a_small_memory_limit(tmp_path) -> None:
    """Regression: each path step used to re-parse the whole resource, and the
    Observation view over ~200k Observations ran out of memory at 256MB."""
    from cartfhir.transform import views

    view = next(v for v in views.project_views() if v["resource"] == "Observation"
                and v["name"] == "observation")
    n = 200_000
    con = duckdb.connect(str(tmp_path / "big.duckdb"),
                         config={"memory_limit": "256MB", "threads": 2})
    con.execute("CREATE SCHEMA raw")
    con.execute("""
        CREATE TABLE raw.resources AS
        SELECT 'site-a' AS site, 'Observation' AS resource_type, json_object(
            'resourceType', 'Observation', 'id', 'obs-' || i::VARCHAR,
            'meta', json_object('versionId', '1', 'lastUpdated', '2025-01-02T03:04:05Z'),
            'status', 'final',
            'category', json_array(json_object('coding', json_array(json_object(
                'system', 'http://terminology.hl7.org/CodeSystem/observation-category',
                'code', 'laboratory')))),
            'code', json_object('coding', json_array(json_object(
                'system', 'http://loinc.org', 'code', (1000 + i % 7)::VARCHAR || '-1',
                'display', 'Lab test number ' || (i % 7)::VARCHAR)),
                'text', 'Lab test number ' || (i % 7)::VARCHAR),
            'subject', json_object('reference', 'Patient/pat-' || (i % 500)::VARCHAR),
            'effectiveDateTime', '2025-01-02T03:04:05-05:00',
            'issued', '2025-01-02T09:04:05Z',
            'valueQuantity', json_object('value', i / 10, 'unit', 'mg/L',
                                         'system', 'http://unitsofmeasure.org', 'code', 'mg/L'),
            'referenceRange', json_array(json_object(
                'low', json_object('value', 1, 'unit', 'mg/L', 'code', 'mg/L'),
                'high', json_object('value', 9, 'unit', 'mg/L', 'code', 'mg/L')))
        ) AS resource
        FROM range(?) AS r(i)
    """, [n])
    rows, _ = views.materialize(con, view, "flat_observation")
    assert rows == n
    row = con.execute("SELECT observation_id, patient_id FROM flat_observation "
                      "WHERE observation_id = 'obs-12'").fetchone()
    assert row == ("obs-12", "pat-12")
    con.close()


def test_fast_paths_keep_fhirpath_semantics_on_odd_shapes() -> None:
    """join() over nested arrays and getReferenceKey() read odd JSON shapes as FHIRPath does."""
    shapes = [
        ([{"coding": [{"code": "a"}, {"code": "b"}]}, {"coding": [{"code": "c"}]}],
         "Patient/p1", "a,b,c", "p1"),
        ({"coding": {"code": "x"}}, "http://h/fhir/Patient/p2/_history/3", "x", "p2"),
        ([None, {"text": "t"}, {"coding": [None, {"code": None}, {"code": "y"}]}],
         "Group/g1", "y", None),
        (None, "Patient/", "", None),
        ([{"coding": [{"code": ["p", "q"]}]}, "s"], "Patient/a/b", "p,q", None),
        ([], "xPatient/p3", "", None),
        ([{"coding": [{"code": "z"}]}], "Patient/Patient", "z", "Patient"),
    ]
    resources = []
    for i, (category, reference, _, _) in enumerate(shapes):
        obs = {"resourceType": "Observation", "id": f"o{i}", "subject": {"reference": reference}}
        if category is not None:
            obs["category"] = category
        resources.append(obs)
    view = {"resourceType": "ViewDefinition", "resource": "Observation", "select": [{"column": [
        {"name": "id", "path": "getResourceKey()"},
        {"name": "category", "path": "category.coding.code.join(',')", "type": "string"},
        {"name": "patient_id", "path": "subject.getReferenceKey(Patient)", "type": "string"},
    ]}]}
    rows = {r["id"]: r for r in run_view(_db(resources), view, "resources")}
    for i, (_, _, category, patient) in enumerate(shapes):
        assert (rows[f"o{i}"]["category"], rows[f"o{i}"]["patient_id"]) == (category, patient)
