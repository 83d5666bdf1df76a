"""The engine on the command line: ``export --raw`` (the Parquet input of engine.raw),
``--engine`` on ``transform`` and ``view``, and switching the store back to DuckDB after
a Spark run left views in place of its tables. Every test runs the real CLI (run_cli)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from cartfhir import api
from cartfhir.cli import run_cli
from cartfhir.errors import ExitCode
from cartfhir.spark.tables import register_parquet_tables, store_tables, write_layout
from cartfhir.synth import generate
from tests import testbed

SITES = ("site_a", "site_b")


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config file whose store holds raw.resources of two synthetic sites."""
    root = tmp_path_factory.mktemp("engine")
    generate(root / "data", patients=5, seed=11, sites=list(SITES))
    path = testbed.write_config(root, SITES)
    api.extract(api.load_config(path))
    return path


def _raw_rows(con: duckdb.DuckDBPyConnection, source: str) -> list[tuple]:
    return sorted(con.execute(f"SELECT site, resource_type, id, resource::VARCHAR, source_uri, "
                              f"line_no FROM {source}").fetchall())


def test_export_raw_writes_the_layout_spark_reads(extracted: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "raw_export"
    assert run_cli(["export", "--config", str(extracted), "--raw", str(out)]) == 0
    assert sorted(p.name for p in (out / "raw.resources").iterdir()) == [
        f"site={s}" for s in SITES]
    config = api.load_config(extracted)
    with duckdb.connect(str(config.output.duckdb), read_only=True) as con:
        stored = _raw_rows(con, "raw.resources")
        written = _raw_rows(con, f"read_parquet('{out}/raw.resources/**/*.parquet', "
                                 "hive_partitioning = true)")
    assert written == stored and len(stored) > 20
    assert "raw.resources:" in capsys.readouterr().err
    # a second export does not overwrite unless --force
    assert run_cli(["export", "--config", str(extracted), "--raw", str(out)]) == ExitCode.USAGE
    assert "not empty" in capsys.readouterr().err
    assert run_cli(["export", "--config", str(extracted), "--raw", str(out), "--force"]) == 0


@pytest.mark.parametrize("extra", [[], ["--out", "x"], ["--tables", "cohort.*"],
                                   ["--format", "csv"]])
def test_export_raw_takes_no_table_options(extracted: Path, tmp_path: Path,
                                           extra: list[str]) -> None:
    raw = [] if not extra else ["--raw", str(tmp_path / "r")]  # [] names neither
    assert run_cli(["export", "--config", str(extracted), *extra, *raw]) == ExitCode.USAGE
    assert not (tmp_path / "r").exists() and not (tmp_path / "x").exists()


def test_export_raw_without_a_store_says_to_extract(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = testbed.write_config(tmp_path, ["site_a"])
    code = run_cli(["export", "--config", str(path), "--raw", str(tmp_path / "r")])
    assert code not in (0, ExitCode.USAGE)
    err = capsys.readouterr().err
    assert "extract" in err and not (tmp_path / "r").exists()
    key = (tmp_path / "secrets" / "site_a.key").read_text().strip()
    assert key and key not in err  # never prints a secret


def test_transform_on_duckdb_replaces_the_views_a_spark_run_left(extracted: Path,
                                                                 tmp_path: Path) -> None:
    """A Spark transform leaves views over Parquet in place of the store's tables; going
    back to DuckDB (--engine duckdb) must replace them with tables, not fail."""
    config = api.load_config(extracted)
    assert run_cli(["transform", "--config", str(extracted), "--engine", "duckdb"]) == 0
    tables = ["cohort.episode", "harmonized.lab"]
    with duckdb.connect(str(config.output.duckdb)) as con:
        before = {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                  for t in tables}
        write_layout(con, [node.table for node in store_tables()], tmp_path / "parquet")
        con.execute("BEGIN")
        register_parquet_tables(con, tmp_path / "parquet")
        con.execute("COMMIT")
        kinds = dict(con.execute(
            "SELECT table_schema || '.' || table_name, table_type FROM "
            "information_schema.tables").fetchall())
    assert kinds["cohort.episode"] == "VIEW"
    assert run_cli(["transform", "--config", str(extracted), "--engine", "duckdb"]) == 0
    with duckdb.connect(str(config.output.duckdb), read_only=True) as con:
        kinds = dict(con.execute(
            "SELECT table_schema || '.' || table_name, table_type FROM "
            "information_schema.tables").fetchall())
        after = {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                 for t in tables}
    assert {kinds[t] for t in tables} == {"BASE TABLE"}
    assert not [t for t, kind in kinds.items() if kind == "VIEW" and not t.startswith("views.")]
    assert after == before


def test_an_unknown_engine_is_a_usage_error(extracted: Path) -> None:
    assert run_cli(["transform", "--config", str(extracted), "--engine", "sqlite"]) \
        == ExitCode.USAGE
