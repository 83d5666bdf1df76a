"""The pooled store as Parquet: ``<pooled stem>_parquet/`` beside the pooled database, in the
table-store layout, holding exactly the database's tables, replaced with it and only
with it, and readable by DuckDB and Spark."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from cartfhir import api
from cartfhir.errors import PoolError, UsageError
from cartfhir.multisite.pool import parquet_folder
from cartfhir.spark.tables import partitioned

from .helpers import sha256


@pytest.fixture(scope="module")
def pooled(packaged: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layout") / "pooled.duckdb"
    api.pool(list(packaged["packages"].values()), out, **packaged["pool_kwargs"])
    return out


def _tables(out: Path) -> dict[str, list[str]]:
    with duckdb.connect(str(out), read_only=True) as con:
        found: dict[str, list[str]] = {}
        for schema, table, column in con.execute(
                "SELECT c.table_schema, c.table_name, c.column_name FROM "
                "information_schema.columns c JOIN information_schema.tables t USING "
                "(table_schema, table_name) WHERE t.table_type = 'BASE TABLE' "
                "ORDER BY c.table_schema, c.table_name, c.ordinal_position").fetchall():
            found.setdefault(f"{schema}.{table}", []).append(column)
        return found


def _read(con: duckdb.DuckDBPyConnection, folder: Path, table: str,
          columns: list[str]) -> list[tuple]:
    names = ", ".join(f'"{c}"' for c in columns)
    if partitioned(table, columns):
        source = (f"read_parquet('{folder / table}/site=*/*.parquet', "
                  "hive_partitioning = true, hive_types = {'site': VARCHAR})")
    else:
        source = f"read_parquet('{folder / table}/*.parquet')"
    return sorted(con.execute(f"SELECT {names} FROM {source}").fetchall(), key=repr)


def test_the_layout_holds_every_pooled_table(pooled: Path) -> None:
    folder = parquet_folder(pooled)
    assert folder == pooled.parent / "pooled_parquet"
    tables = _tables(pooled)
    assert {"cohort.episode_endpoints", "harmonized.lab", "ref.window",
            "analysis.comparison", "analysis.heterogeneity"} <= set(tables)
    assert sorted(p.name for p in folder.iterdir()) == sorted(tables)
    assert sorted(p.name for p in (folder / "cohort.episode_endpoints").iterdir()) == [
        "site=site_a", "site=site_c"]
    assert [p.name for p in (folder / "ref.window").iterdir()] == ["part-0.parquet"]
    assert not [p for p in pooled.parent.iterdir() if p.name.startswith(".")]
    with duckdb.connect(str(pooled), read_only=True) as con:
        for table, columns in tables.items():
            names = ", ".join(f'"{c}"' for c in columns)
            expected = sorted(con.execute(f"SELECT {names} FROM {table}").fetchall(), key=repr)
            assert _read(con, folder, table, columns) == expected, table


@pytest.mark.spark
def test_spark_reads_the_layout(spark, pooled: Path) -> None:
    folder = parquet_folder(pooled)
    with duckdb.connect(str(pooled), read_only=True) as con:
        expected = con.execute("SELECT site, count(*) FROM cohort.episode_endpoints "
                               "GROUP BY site ORDER BY site").fetchall()
    frame = spark.read.parquet(str(folder / "cohort.episode_endpoints"))
    got = [tuple(r) for r in frame.groupBy("site").count().orderBy("site").collect()]
    assert got == expected
    assert spark.read.parquet(str(folder / "ref.window")).count() > 0


def test_a_refused_pool_leaves_the_layout_as_it_was(packaged: dict, tmp_path: Path) -> None:
    out = tmp_path / "pooled.duckdb"
    api.pool([packaged["packages"]["site_a"]], out, analyse=False, **packaged["pool_kwargs"])
    folder = parquet_folder(out)
    before = {str(p.relative_to(folder)): sha256(p) for p in folder.rglob("*") if p.is_file()}
    version = tmp_path / "version"
    shutil.copytree(packaged["packages"]["site_a"], version)
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["schema_version"] = "cartfhir-site-package/0"
    (version / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PoolError, match="schema version"):
        api.pool([version], out, analyse=False, **packaged["pool_kwargs"])
    assert {str(p.relative_to(folder)): sha256(p) for p in folder.rglob("*")
            if p.is_file()} == before
    # a failure after the Parquet was written (installing the database) keeps both
    from cartfhir.multisite import pool as pool_module

    def full_disk(store, target) -> None:
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pool_module, "_install", full_disk)
        with pytest.raises(OSError, match="No space"):
            api.pool([packaged["packages"]["site_c"]], out, analyse=False,
                     **packaged["pool_kwargs"])
    assert {str(p.relative_to(folder)): sha256(p) for p in folder.rglob("*")
            if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # a later pool replaces the whole folder: site_c's rows appear
    api.pool([packaged["packages"]["site_c"]], out, analyse=False, **packaged["pool_kwargs"])
    assert sorted(p.name for p in (folder / "harmonized.lab").iterdir()) == [
        "site=site_a", "site=site_c"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_file_in_the_way_is_refused_before_anything(packaged: dict, tmp_path: Path) -> None:
    out = tmp_path / "pooled.duckdb"
    (tmp_path / "pooled_parquet").write_text("not a folder")
    with pytest.raises(UsageError, match="pooled_parquet is a file or a link"):
        api.pool([packaged["packages"]["site_a"]], out, analyse=False,
                 **packaged["pool_kwargs"])
    assert not out.exists()
