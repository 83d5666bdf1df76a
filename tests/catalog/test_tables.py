"""Every table a run creates against its sidecar: same columns, in order, same types."""

from __future__ import annotations

import duckdb
import pytest

from cartfhir import api
from cartfhir.catalog import DUCKDB_TYPES, database_columns, find_table, load_catalog
from cartfhir.graph import BuildContext, build_node, load_graph
from cartfhir.synth import generate
from tests.testbed import make_config

SITES = ["site_a", "site_b", "site_c"]
# DuckDB's type for a column whose every value was null in a frame written from pandas
# (analysis tables written by cartfhir.analyze; with this tiny cohort some stay empty).
UNTYPED = ('"NULL"', "NULL")


def _same(schema: str, documented: str, actual: str) -> bool:
    """The exact DuckDB type name; only an all-null pandas column of analysis.* passes."""
    return documented == actual or (schema == "analysis" and actual in UNTYPED)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[str, str]]]:
    """Every table of a whole run on a tiny cohort, plus the tables only some runs make
    (bulk extraction, pooling), built from their graph entries."""
    root = tmp_path_factory.mktemp("catalog")
    generate(root / "data", patients=6, seed=3, sites=SITES)
    config = make_config(root, SITES)
    assert api.run(config).status == "success"
    con = duckdb.connect(str(config.output.duckdb))
    try:
        graph = load_graph()
        for node in graph.stage("land", pooled=True):
            build_node(con, node)
        for step in graph.steps("analysis", pooled=True):
            if step[0].when == "pooled":
                build_node(con, step[0], BuildContext())
        return database_columns(con)
    finally:
        con.close()


def test_every_table_of_the_graph_is_made_and_nothing_else(database) -> None:
    assert sorted(database) == sorted(load_graph().tables)


def test_every_sidecar_lists_the_table_s_columns_in_order_with_its_types(database) -> None:
    wrong = {}
    for table in load_catalog():
        actual = database[table.full_name]
        documented = [(c.name, DUCKDB_TYPES.get(c.type or "", c.type)) for c in table.columns]
        pairs = zip(documented, actual, strict=False)
        if [c for c, _ in documented] != [c for c, _ in actual] or not all(
                _same(table.schema, d, a) for (_, d), (_, a) in pairs):
            wrong[table.full_name] = (documented, actual)
    assert wrong == {}


def test_optional_tables_say_why_they_may_be_missing() -> None:
    optional = {t.full_name for t in load_catalog() if t.optional}
    assert optional == {"meta.extract_state", "meta.extract_patient", "meta.extract_request",
                        "meta.bulk_job", "raw.deleted", "raw.export_error"}


def test_every_column_has_a_description_except_ref_lookups() -> None:
    blank = {(t.full_name, c.name) for t in load_catalog() if t.schema != "ref"
             for c in t.columns if not c.description}
    assert blank == set()
    assert all(t.grain and t.description for t in load_catalog())


def test_same_as_copies_the_other_table_s_description_and_type_with_its_note() -> None:
    catalog = load_catalog()
    lab = find_table(catalog, "harmonized.lab")
    origin = find_table(catalog, "harmonized.observation_value")
    assert lab.column("site") == origin.column("site")
    value = origin.column("value")
    assert lab.column("value").description == f"{value.description} (canonical unit)"
    assert lab.column("value").type == value.type == "double"


def test_find_table_by_full_or_unique_short_name() -> None:
    catalog = load_catalog()
    assert find_table(catalog, "episode_window").full_name == "cohort.episode_window"
    assert find_table(catalog, "patient") is None  # flat.patient and cohort.patient
    assert find_table(catalog, "cohort.patient").full_name == "cohort.patient"
