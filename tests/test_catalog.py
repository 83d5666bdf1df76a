"""The catalog against the code and a real database: docs/data-dictionary.md cannot drift."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import duckdb
import pytest

from cartfhir import api
from cartfhir.catalog import (
    DUCKDB_TYPES,
    OPTIONAL,
    add_database_tables,
    find_table,
    load_catalog,
    parse_sql_header,
    render_markdown,
)
from cartfhir.db import apply_ddl
from cartfhir.synth import generate
from tests.transform.conftest import make_config

DICTIONARY = Path(__file__).parent.parent / "docs" / "data-dictionary.md"
SITES = ["site_a", "site_b", "site_c"]

# Header comments that are wrong or incomplete today (reported to whoever owns the SQL).
# Each entry must still be a gap: fix the header, then delete the entry here.
UNDOCUMENTED: set[tuple[str, str]] = set()  # (table, column) in DuckDB but not documented
TYPE_MISMATCHES: dict[tuple[str, str], str] = {}  # (table, column): DuckDB type, if it differs
UNTYPED: dict[tuple[str, str], str] = {}  # columns whose header line gives no type
UNDESCRIBED: set[tuple[str, str]] = set()  # columns whose header says nothing about them
FHIR_TYPES = {"string": "VARCHAR", "code": "VARCHAR", "uri": "VARCHAR", "id": "VARCHAR",
              "dateTime": "VARCHAR", "date": "VARCHAR", "instant": "VARCHAR",
              "decimal": "DOUBLE", "integer": "INTEGER", "boolean": "BOOLEAN",
              "Coding[]": "JSON[]"}
WHOLE_NUMBERS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"}


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Every table and column (with its DuckDB type) a whole run creates on a tiny cohort."""
    root = tmp_path_factory.mktemp("catalog")
    generate(root / "data", patients=6, seed=3, sites=SITES)
    config = make_config(root, SITES)
    assert api.run(config).status == "success"
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    try:
        rows = con.execute("SELECT table_schema || '.' || table_name, column_name, data_type "
                           "FROM information_schema.columns ORDER BY ALL").fetchall()
    finally:
        con.close()
    tables: dict[str, dict[str, str]] = {}
    for table, column, kind in rows:
        tables.setdefault(table, {})[column] = kind
    return tables


def test_the_committed_data_dictionary_is_generated_from_the_catalog() -> None:
    expected = render_markdown(load_catalog())
    assert DICTIONARY.read_text(encoding="utf-8") == expected, (
        "docs/data-dictionary.md is stale: run "
        "'cartfhir schema --format markdown > docs/data-dictionary.md'")


def test_every_table_a_run_creates_is_documented_column_by_column(database) -> None:
    catalog = {t.full_name: t for t in load_catalog()}
    assert sorted(set(database) - set(catalog)) == []
    undocumented = {(name, c) for name, columns in database.items() for c in columns
                    if catalog[name].column(c) is None}
    assert undocumented == UNDOCUMENTED
    missing_tables = sorted(set(catalog) - set(database))
    assert missing_tables == sorted(OPTIONAL)
    documented_not_there = [(name, c.name) for name, t in catalog.items() if name in database
                            for c in t.columns if c.name not in database[name]]
    assert documented_not_there == []


def test_optional_tables_are_documented_as_their_ddl_creates_them() -> None:
    con = duckdb.connect()
    apply_ddl(con, "cartfhir.extract.sql", "extract_state", "extract_patient",
              "extract_request", "bulk_job", "raw_export_error", "raw_deleted")
    actual: dict[str, list[str]] = {}
    for table, column in con.execute("SELECT table_schema || '.' || table_name, column_name "
                                     "FROM information_schema.columns "
                                     "ORDER BY table_name, ordinal_position").fetchall():
        actual.setdefault(table, []).append(column)
    catalog = load_catalog()
    assert set(actual) == set(OPTIONAL)
    for name, columns in actual.items():
        assert [c.name for c in find_table(catalog, name).columns] == columns, name


def _matches(documented: str, actual: str, flat: bool) -> bool:
    if flat:
        return FHIR_TYPES.get(documented, documented) == actual or documented == "text"
    expected = DUCKDB_TYPES.get(documented, documented)
    if expected in WHOLE_NUMBERS:
        return actual in WHOLE_NUMBERS
    return expected == actual


def test_documented_types_are_the_database_types(database) -> None:
    wrong, untyped = {}, {}
    for table in load_catalog():
        for column in table.columns:
            actual = database.get(table.full_name, {}).get(column.name)
            key = (table.full_name, column.name)
            if column.type is None:
                untyped[key] = ""
            elif actual not in (None, '"NULL"', "NULL") and not _matches(
                    column.type, actual, table.schema == "flat"):
                wrong[key] = actual
    assert wrong == TYPE_MISMATCHES
    assert untyped == UNTYPED


def test_every_column_has_a_description_except_ref_lookups() -> None:
    blank = {(t.full_name, c.name) for t in load_catalog() if t.schema != "ref"
             for c in t.columns if not c.description}
    assert blank == UNDESCRIBED
    assert all(t.grain and t.description for t in load_catalog())


def test_analysis_comparison_columns_are_the_analysis_code_s() -> None:
    from cartfhir.analyze.compare import COLUMNS

    assert [c.name for c in find_table(load_catalog(), "analysis.comparison").columns] == COLUMNS


def test_header_parser_reads_shared_names_continuations_and_per_name_types() -> None:
    table = parse_sql_header(
        "-- s.t: what it is. Grain: (a, b). More about it.\n"
        "--   a, b  text: the key\n"
        "--   c / d (mg)     double: a value\n"
        "--                  that goes on\n"
        "--   e, f,\n"
        "--   g: as in s.other\n"
        "--   h   double, i text: both\n"
        "--   j\n"
        "--                  integer: names first, type below\n"
        "SELECT 1\n")
    assert table is not None and table.grain == "(a, b)"
    assert table.description == "What it is. More about it."
    assert [(c.name, c.type, c.description) for c in table.columns] == [
        ("a", "text", "the key"), ("b", "text", "the key"),
        ("c", "double", "a value that goes on"), ("d", "double", "a value that goes on (mg)"),
        ("e", None, "as in s.other"), ("f", None, "as in s.other"),
        ("g", None, "as in s.other"),
        ("h", "double", "both"), ("i", "text", "both"),
        ("j", "integer", "names first, type below")]
    assert parse_sql_header("-- Append one batch of rows.\nINSERT INTO x SELECT 1") is None


def test_schema_command_formats_and_one_table(capsys: pytest.CaptureFixture[str]) -> None:
    from cartfhir.cli import run_cli

    assert run_cli(["schema", "--table", "episode_window", "-f", "json"]) == 0
    [table] = json.loads(capsys.readouterr().out)
    assert table["table"] == "cohort.episode_window"
    assert table["grain"] == "(site, patient_key, round, name)"
    assert [c["name"] for c in table["columns"]][-2:] == ["lo", "hi"]
    assert run_cli(["schema", "-f", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["table", "column", "type", "description"]
    assert ["cohort.patient", "birth_year", "integer", "year of birth"] in rows
    assert run_cli(["schema", "--table", "episod"]) == 2
    assert "did you mean cohort.episode" in capsys.readouterr().err


def test_schema_with_a_database_adds_the_tables_it_does_not_document(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA views; CREATE TABLE views.my_view (site VARCHAR, n BIGINT)")
    con.close()
    tables = add_database_tables(load_catalog(), path)
    mine = find_table(tables, "views.my_view")
    assert mine is not None and [(c.name, c.type) for c in mine.columns] == [
        ("site", "text"), ("n", "bigint")]
    assert len(tables) == len(load_catalog()) + 1
    assert add_database_tables(load_catalog(), tmp_path / "none.duckdb") == load_catalog()
