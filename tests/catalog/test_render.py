"""The data dictionary and 'cartfhir schema' are generated from the sidecars."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import duckdb
import pytest

from cartfhir.catalog import add_database_tables, find_table, load_catalog, render_markdown

DICTIONARY = Path(__file__).parents[2] / "docs" / "data-dictionary.md"


def test_the_committed_data_dictionary_is_generated_from_the_sidecars() -> None:
    expected = render_markdown(load_catalog())
    assert DICTIONARY.read_text(encoding="utf-8") == expected, (
        "docs/data-dictionary.md is stale: run "
        "'cartfhir schema --format markdown > docs/data-dictionary.md'")


def test_the_dictionary_names_each_table_s_sidecar_and_inputs() -> None:
    text = render_markdown(load_catalog())
    assert ("Made by `cartfhir/transform/models/cohort/episode_window.sql`, described in "
            "`cartfhir/transform/models/cohort/episode_window.yml`. Reads `cohort.episode`, "
            "`ref.window`.") in text
    assert "### analysis.heterogeneity" in text and "### meta.pool_package" in text


def test_schema_command_formats_and_one_table(capsys: pytest.CaptureFixture[str]) -> None:
    from cartfhir.cli import run_cli

    assert run_cli(["schema", "--table", "episode_window", "-f", "json"]) == 0
    [table] = json.loads(capsys.readouterr().out)
    assert table["table"] == "cohort.episode_window"
    assert table["grain"] == "(site, patient_key, round, name)"
    assert table["depends"] == ["cohort.episode", "ref.window"]
    assert [c["name"] for c in table["columns"]][-2:] == ["lo", "hi"]
    assert run_cli(["schema", "-f", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["table", "column", "type", "description"]
    assert ["cohort.patient", "birth_year", "bigint", "year of birth"] in rows
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
