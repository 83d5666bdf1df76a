"""Exports: tables as site-partitioned Parquet/CSV any engine reads back, queries to files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import pytest

from cartfhir.cli import run_cli
from cartfhir.errors import UsageError
from cartfhir.exports import export_tables, write_query
from cartfhir.store import Store
from cartfhir.synth import generate
from tests.testbed import write_config

EPISODE_COLUMNS = "site, patient_key, round, infusion_date, procedure_ids, dose"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A small database shaped like a real one: per-site cohort and analysis tables, meta."""
    path = tmp_path / "out" / "t.duckdb"
    path.parent.mkdir()
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA cohort; CREATE SCHEMA analysis; CREATE SCHEMA meta")
    con.execute("""CREATE TABLE cohort.episode AS
        SELECT 'site_' || chr((97 + i % 3)::INTEGER) AS site, 'p' || (i // 2) AS patient_key,
               (i % 2 + 1)::BIGINT AS round, DATE '2024-01-01' + i::INTEGER AS infusion_date,
               ['proc' || i] AS procedure_ids, CASE WHEN i % 4 = 0 THEN NULL ELSE i / 10 END
               AS dose
        FROM range(10) t(i)""")
    con.execute("""CREATE TABLE analysis.comparison AS
        SELECT s AS site, 'crs_any' AS endpoint, 3::BIGINT AS cart1_n, 0.5 AS p_value
        FROM (VALUES ('all'), ('site_a')) v(s)""")
    con.execute("CREATE TABLE analysis.note AS SELECT 'no site column here' AS text")
    con.execute("CREATE TABLE meta.runs AS SELECT 'r1' AS run_id, 'success' AS status")
    con.close()
    return path


def _rows(con: duckdb.DuckDBPyConnection, source: str, columns: str = EPISODE_COLUMNS) -> list:
    return con.execute(f"SELECT {columns} FROM {source} ORDER BY ALL").fetchall()


def test_parquet_export_is_partitioned_by_site_and_reads_back_equal(db: Path,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "store"
    result = export_tables(Store(db), out)
    assert result.tables == {"cohort.episode": 10, "analysis.comparison": 2, "analysis.note": 1}
    assert {f.path.relative_to(out.absolute()).as_posix() for f in result.files} == {
        "cohort/episode/site=site_a/data_0.parquet", "cohort/episode/site=site_b/data_0.parquet",
        "cohort/episode/site=site_c/data_0.parquet",
        "analysis/comparison/site=all/data_0.parquet",
        "analysis/comparison/site=site_a/data_0.parquet", "analysis/note/note.parquet"}
    assert {(f.site, f.rows) for f in result.files if f.table == "cohort.episode"} == {
        ("site_a", 4), ("site_b", 3), ("site_c", 3)}
    con = duckdb.connect(str(db), read_only=True)
    try:
        back = f"read_parquet('{out}/cohort/episode/**/*.parquet', hive_partitioning = true)"
        assert _rows(con, back) == _rows(con, "cohort.episode")
        assert con.execute(f"SELECT typeof(infusion_date), typeof(procedure_ids) FROM {back} "
                           "LIMIT 1").fetchone() == ("DATE", "VARCHAR[]")
        back = f"read_parquet('{out}/analysis/comparison/**/*.parquet', hive_partitioning=true)"
        assert _rows(con, back, "site, endpoint, cart1_n, p_value") == _rows(
            con, "analysis.comparison", "site, endpoint, cart1_n, p_value")
        assert con.execute(f"SELECT * FROM '{out}/analysis/note/note.parquet'").fetchall() == [
            ("no site column here",)]
    finally:
        con.close()
    assert not (out / "meta").exists()  # only cohort.* and analysis.* by default


def test_csv_export_of_chosen_tables_reads_back(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "csv"
    result = export_tables(Store(db), out, "csv", ["cohort.episode", "meta.*"])
    assert result.tables == {"cohort.episode": 10, "meta.runs": 1}
    assert (out / "meta" / "runs" / "runs.csv").read_text().splitlines() == [
        "run_id,status", "r1,success"]
    con = duckdb.connect(str(db), read_only=True)
    try:
        back = f"read_csv('{out}/cohort/episode/**/*.csv', hive_partitioning = true)"
        assert _rows(con, back, "site, patient_key, round, infusion_date") == _rows(
            con, "cohort.episode", "site, patient_key, round, infusion_date")
    finally:
        con.close()


def test_export_refuses_a_non_empty_folder_unless_forced(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    export_tables(Store(db), out, patterns=["cohort.*"])
    (out / "README.txt").write_text("mine")
    with pytest.raises(UsageError, match="is not empty.*--force"):
        export_tables(Store(db), out, patterns=["cohort.*"])
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM cohort.episode WHERE site = 'site_c'")
    con.close()
    result = export_tables(Store(db), out, patterns=["cohort.*"], force=True)
    assert result.tables == {"cohort.episode": 7}
    assert not (out / "cohort" / "episode" / "site=site_c").exists()  # replaced, not merged
    assert (out / "README.txt").read_text() == "mine"  # the rest of the folder is left alone


def test_a_pattern_that_matches_nothing_is_a_usage_error(db: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="'harmonized.\\*' matches no table"):
        export_tables(Store(db), tmp_path / "x", patterns=["cohort.*", "harmonized.*"])
    assert not (tmp_path / "x").exists()


def test_write_query_to_parquet_csv_and_json(db: Path, tmp_path: Path) -> None:
    sql = "select site, count(*) as n from cohort.episode group by site order by site;"
    written = write_query(Store(db), sql, tmp_path / "q" / "n.parquet", "parquet")
    assert written.rows == 3
    assert duckdb.sql(f"SELECT * FROM '{written.path}'").fetchall() == [
        ("site_a", 4), ("site_b", 3), ("site_c", 3)]
    assert write_query(Store(db), sql, tmp_path / "n.csv", "csv").rows == 3
    assert list(csv.reader((tmp_path / "n.csv").open()))[:2] == [["site", "n"], ["site_a", "4"]]
    write_query(Store(db), sql, tmp_path / "n.json", "json")
    assert json.loads((tmp_path / "n.json").read_text())[0] == {"site": "site_a", "n": 4}


def test_cli_query_out_and_export(db: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path, ["site_a"], output={"duckdb": str(db)}))
    sql = "select * from meta.runs"
    assert run_cli(["query", sql, "-c", config, "-f", "parquet"]) == 2
    assert "give --out" in capsys.readouterr().err
    assert run_cli(["query", sql, "-c", config, "-f", "parquet", "-o",
                    str(tmp_path / "r.parquet")]) == 0
    assert capsys.readouterr().out == ""  # the rows went to the file; the count to stderr
    assert duckdb.sql(f"SELECT run_id FROM '{tmp_path / 'r.parquet'}'").fetchall() == [("r1",)]
    assert run_cli(["query", sql, "--db", str(db), "-f", "csv", "-o",
                    str(tmp_path / "r.csv")]) == 0
    assert (tmp_path / "r.csv").read_text() == "run_id,status\nr1,success\n"

    out = tmp_path / "store"
    assert run_cli(["export", "-c", config, "--out", str(out), "--tables", "cohort.*"]) == 0
    captured = capsys.readouterr()
    assert "cohort/episode/site=site_a/data_0.parquet" in captured.out
    assert "1 tables, 10 rows, 3 files (parquet)" in captured.err
    assert run_cli(["export", "-c", config, "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert run_cli(["export", "-c", config, "--out", str(out), "--force", "-f", "csv"]) == 0
    assert (out / "analysis" / "comparison" / "site=all" / "data_0.csv").exists()


def test_new_commands_help_ends_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("schema", "export"):
        assert run_cli([command, "--help"]) == 0
        assert "Example: cartfhir " + command in capsys.readouterr().out


def test_export_refuses_analysis_tables_older_than_the_latest_transform(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """cohort.* from a new transform beside analysis.* from an earlier analyze would disagree
    silently: export refuses and says to run analyze; cohort.* alone still exports."""
    generate(tmp_path / "data", patients=3, seed=8, sites=["site_a"])
    config = write_config(tmp_path, ["site_a"])
    c = str(config)
    for command in ("extract", "transform", "analyze", "transform"):
        assert run_cli([command, "-c", c]) == 0, capsys.readouterr().err
    capsys.readouterr()

    assert run_cli(["export", "-c", c, "--out", str(tmp_path / "store")]) == 1
    err = capsys.readouterr().err
    assert "older than transform run" in err and "run 'cartfhir analyze'" in err, err
    assert not (tmp_path / "store").exists()
    assert run_cli(["export", "-c", c, "--out", str(tmp_path / "store"),
                    "--tables", "cohort.*"]) == 0, capsys.readouterr().err

    assert run_cli(["analyze", "-c", c]) == 0, capsys.readouterr().err
    assert run_cli(["export", "-c", c, "--out", str(tmp_path / "store"), "--force"]) == 0
    assert (tmp_path / "store" / "analysis" / "comparison").is_dir()


def test_write_query_json_and_csv_convert_values_as_stdout_does(
        db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_render import EXPECTED, HOSTILE, strict_json
    write_query(Store(db), HOSTILE, tmp_path / "h.json", "json")
    assert strict_json((tmp_path / "h.json").read_text()) == [EXPECTED]
    write_query(Store(db), HOSTILE, tmp_path / "h.csv", "csv")
    assert run_cli(["query", HOSTILE, "--db", str(db), "--format", "csv"]) == 0
    assert (tmp_path / "h.csv").read_text() == capsys.readouterr().out
