"""The Parquet table store: DuckDB writes it (write_layout) and reads it back as views
(register_parquet_tables) with every table's rows, columns and types unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from cartfhir.errors import TransformError
from cartfhir.spark.tables import (
    node_columns,
    register_parquet_tables,
    store_tables,
    write_layout,
)
from tests.testbed import transformed_store

SITES = ["site_a", "site_b"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB store after a transform of a small two-site cohort (with bad lines)."""
    return transformed_store(tmp_path_factory.mktemp("tables"), SITES, patients=8, seed=3,
                             bad_rate=0.02)


def _rows(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple]:
    return sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=repr)


def _types(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {table}").fetchall()]


def test_a_store_reads_the_layout_back_unchanged(built: Path, tmp_path: Path) -> None:
    names = [n.table for n in store_tables()]
    with duckdb.connect(str(built), read_only=True) as con:
        written = write_layout(con, names, tmp_path / "parquet")
        before = {t: (_types(con, t), _rows(con, t)) for t in names}
    assert set(written) == set(names)
    assert all(written[t] == len(before[t][1]) for t in names)
    # the layout: site partitions (without the site column) except for ref.*
    lab = tmp_path / "parquet" / "harmonized.lab"
    assert sorted(p.name for p in lab.iterdir()) == [f"site={s}" for s in SITES]
    assert list((lab / "site=site_a").glob("part-*.parquet"))
    with duckdb.connect() as con:
        file = next((lab / "site=site_a").glob("*.parquet"))
        assert "site" not in [r[0] for r in con.execute(
            "DESCRIBE SELECT * FROM read_parquet(?, hive_partitioning = false)",
            [str(file)]).fetchall()]
    assert [p.name for p in (tmp_path / "parquet" / "ref.concept_map").iterdir()] == [
        "part-0.parquet"]

    store = tmp_path / "store.duckdb"
    shutil.copy(built, store)  # the tables of the same names are replaced by views
    with duckdb.connect(str(store)) as con:
        con.execute("BEGIN")
        registered = register_parquet_tables(con, tmp_path / "parquet")
        con.execute("COMMIT")
        assert registered == names
        kinds = dict(con.execute(
            "SELECT table_schema || '.' || table_name, table_type FROM "
            "information_schema.tables").fetchall())
        for table in names:
            assert kinds[table] == "VIEW", table
            assert _types(con, table) == before[table][0], table
            assert _rows(con, table) == before[table][1], table
        # a second registration replaces the views (a later Spark run)
        register_parquet_tables(con, tmp_path / "parquet")
        assert _rows(con, "cohort.episode") == before["cohort.episode"][1]


def test_an_empty_table_reads_as_no_rows_with_its_types(built: Path, tmp_path: Path) -> None:
    names = [n.table for n in store_tables()]
    with duckdb.connect(str(built), read_only=True) as con:
        write_layout(con, names, tmp_path / "parquet")
        types = _types(con, "qa.unmapped_codes")
    # a partitioned table without rows has no partition folders (as Spark writes it)
    shutil.rmtree(tmp_path / "parquet" / "qa.unmapped_codes")
    (tmp_path / "parquet" / "qa.unmapped_codes").mkdir()
    with duckdb.connect() as con:
        register_parquet_tables(con, tmp_path / "parquet")
        assert con.execute("SELECT count(*) FROM qa.unmapped_codes").fetchone()[0] == 0
        assert _types(con, "qa.unmapped_codes") == types


def test_a_missing_table_changes_nothing(built: Path, tmp_path: Path) -> None:
    names = [n.table for n in store_tables()]
    with duckdb.connect(str(built), read_only=True) as con:
        write_layout(con, names, tmp_path / "parquet")
    shutil.rmtree(tmp_path / "parquet" / "cohort.episode")
    with duckdb.connect() as con:
        con.execute("CREATE SCHEMA flat; CREATE TABLE flat.patient AS SELECT 1 AS x")
        with pytest.raises(TransformError, match=r"cohort\.episode is missing"):
            register_parquet_tables(con, tmp_path / "parquet")
        assert con.execute("SELECT x FROM flat.patient").fetchall() == [(1,)]


def test_names_and_paths_are_checked(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "parquet"
    with duckdb.connect(str(built), read_only=True) as con:
        for bad in ["main.nope", "../cohort.episode", "cohort.episode/../../x", "x"]:
            with pytest.raises(TransformError, match="build.yaml"):
                write_layout(con, [bad], out)
        write_layout(con, ["cohort.episode"], out)
        with pytest.raises(TransformError, match="already exists"):
            write_layout(con, ["cohort.episode"], out)
    assert sorted(p.name for p in out.iterdir()) == ["cohort.episode"]
    # a table folder that is a symbolic link is not followed
    shutil.rmtree(out)
    with duckdb.connect(str(built), read_only=True) as con:
        write_layout(con, [n.table for n in store_tables()], out)
    elsewhere = tmp_path / "elsewhere"
    (out / "cohort.episode").rename(elsewhere)
    (out / "cohort.episode").symlink_to(elsewhere)
    with duckdb.connect() as con, pytest.raises(TransformError, match="symbolic link"):
        register_parquet_tables(con, out)


def test_view_columns_follow_the_view_definition() -> None:
    node = next(n for n in store_tables() if n.table == "flat.observation")
    columns = node_columns(node)
    assert columns[0] == ("site", "VARCHAR")
    assert ("observation_id", "VARCHAR") in columns
