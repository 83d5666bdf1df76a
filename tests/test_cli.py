"""The command line: help that reads well, exit codes, data on stdout, logs on stderr."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cartfhir.cli import cli, run_cli

COMMANDS = ["synth", "extract", "transform", "view", "validate", "analyze", "run", "demo",
            "query", "schema", "export", "export-site", "pool", "keygen", "sign", "check", "init"]


def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(COMMANDS) <= set(cli.commands)
    for command in COMMANDS:
        assert run_cli([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "Example: cartfhir " + command in out, command


def test_top_level_help_names_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--help"]) == 0
    assert "Exit codes: 0 success, 1 failure, 2 bad config or usage" in capsys.readouterr().out


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["extract", "--no-such-option"]) == 2
    assert "No such option" in capsys.readouterr().err


def test_missing_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["extract", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_invalid_config_exits_2_naming_the_key(
        config_file: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(["site_a", "site_b"], landing={"validation": "sometimes"})
    assert run_cli(["run", "--config", str(path)]) == 2
    assert "landing.validation: input should be 'full' or 'structural'" in capsys.readouterr().err


def test_missing_source_folder_exits_2(
        config_file: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(["site_a", "site_b"])
    assert run_cli(["extract", "--config", str(path)]) == 2
    assert "does not exist; check sites[].source.path" in capsys.readouterr().err


def test_synth_extract_query_roundtrip(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(["site_a", "site_b"])
    assert run_cli(["synth", "--out", str(tmp_path / "data"), "--patients", "4"]) == 0
    capsys.readouterr()
    assert run_cli(["extract", "--config", str(path)]) == 0
    assert "success" in capsys.readouterr().out

    sql = "select site, count(*) as n from raw.resources group by site order by site"
    assert run_cli(["query", sql, "--config", str(path), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["site"] for r in rows] == ["site_a", "site_b"]
    assert all(int(r["n"]) > 100 for r in rows)
    assert err == ""  # data on stdout only

    assert run_cli(["query", sql, "--config", str(path), "--format", "json"]) == 0
    assert [r["site"] for r in json.loads(capsys.readouterr().out)] == ["site_a", "site_b"]

    # Timestamps with time zones come back to Python (meta.runs.started is TIMESTAMPTZ).
    assert run_cli(["query", "select run_id, started, status from meta.runs", "--config",
                    str(path), "--format", "json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert len(runs) == 1 and runs[0]["status"] == "success" and runs[0]["started"]

    assert run_cli(["query", "select 1 as one", "--db",
                    str(tmp_path / "out" / "t.duckdb")]) == 0
    assert "one" in capsys.readouterr().out


def test_query_is_read_only(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(["site_a"])
    run_cli(["synth", "--out", str(tmp_path / "data"), "--patients", "1", "--sites", "site_a"])
    assert run_cli(["extract", "--config", str(path)]) == 0
    capsys.readouterr()
    assert run_cli(["query", "delete from raw.resources", "--config", str(path)]) == 1
    assert "read-only" in capsys.readouterr().err
    assert run_cli(["query", "select count(*) from raw.resources", "--config", str(path),
                    "-f", "csv"]) == 0
    assert int(capsys.readouterr().out.splitlines()[1]) > 0


def test_query_errors_exit_1(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(["site_a", "site_b"])
    assert run_cli(["query", "select 1", "--config", str(path)]) == 1
    assert "does not exist yet" in capsys.readouterr().err
    assert run_cli(["query", "select * from nowhere", "--db", str(tmp_path / "x.duckdb")]) == 1


def test_demo_generates_and_lands(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(["site_a", "site_b"], write_keys=False)
    assert run_cli(["demo", "--config", str(path), "--patients", "4"]) == 0
    out = capsys.readouterr().out
    assert "DuckDB file:" in out and str(tmp_path / "out" / "t.duckdb") in out
    assert (tmp_path / "data" / "site_a" / "manifest.json").exists()
    assert "records quarantined (qa.quarantine)" in out
    key = tmp_path / "secrets" / "site_a.key"  # the demo made a random key, readable by us only
    assert len(key.read_text().strip()) == 64 and key.stat().st_mode & 0o077 == 0


def test_transform_and_view_commands(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(["site_b"], write_keys=False)  # the demo makes the key
    assert run_cli(["demo", "--config", str(path), "--patients", "3"]) == 0
    capsys.readouterr()
    assert run_cli(["transform", "--config", str(path)]) == 0
    assert "site_b" in capsys.readouterr().out
    view = tmp_path / "v.json"
    view.write_text(json.dumps({
        "resourceType": "ViewDefinition", "name": "pt", "status": "active",
        "resource": "Patient", "select": [{"column": [
            {"name": "id", "path": "getResourceKey()"}, {"name": "gender", "path": "gender"}]}]}))
    assert run_cli(["view", str(view), "--config", str(path), "--out",
                    str(tmp_path / "pt.csv")]) == 0
    assert "3 rows" in capsys.readouterr().out
    assert (tmp_path / "pt.csv").read_text().splitlines()[0] == "site,id,gender"
    assert run_cli(["view", str(view), "--config", str(path)]) == 0
    assert "views.pt" in capsys.readouterr().out
    view.write_text("{not json")
    assert run_cli(["view", str(view), "--config", str(path)]) == 1
    assert "not valid JSON" in capsys.readouterr().err


def test_demo_refuses_sites_it_cannot_generate(
        config_file: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(["site_x"])
    assert run_cli(["demo", "--config", str(path)]) == 2
    assert "site 'site_x' is not one" in capsys.readouterr().err


def test_json_logs(
        tmp_path: Path, config_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    path = config_file(["site_a"])
    run_cli(["synth", "--out", str(tmp_path / "data"), "--patients", "1", "--sites", "site_a"])
    capsys.readouterr()
    assert run_cli(["--log-format", "json", "extract", "--config", str(path)]) == 0
    err_lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert err_lines, "extract logs what it does"
    records = [json.loads(x) for x in err_lines]
    assert all({"ts", "level", "msg"} <= r.keys() for r in records)


def test_real_process_exit_codes(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    ok = subprocess.run([sys.executable, "-m", "cartfhir", "--version"], capture_output=True,
                        text=True, env=env)
    assert ok.returncode == 0 and ok.stdout.startswith("cartfhir ")
    bad = subprocess.run([sys.executable, "-m", "cartfhir", "run", "--config",
                          str(tmp_path / "none.yaml")], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "not found" in bad.stderr and bad.stdout == ""


# --- the CLI goes through cartfhir.api (it parses, calls api, renders) ---

def test_query_to_a_file_goes_through_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    from click.testing import CliRunner

    from cartfhir import api
    from cartfhir.exports import ExportedFile

    calls = []

    def query_to_file(config, sql, out, fmt, db=None):  # noqa: ANN001, ANN202
        calls.append((config, sql, out, fmt, db))
        return ExportedFile("query", out, 7)

    monkeypatch.setattr(api, "query_to_file", query_to_file)
    out = tmp_path / "rows.csv"
    result = CliRunner().invoke(cli, ["query", "select 1", "--db", str(tmp_path / "x.duckdb"),
                                      "-f", "csv", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert calls == [(None, "select 1", out, "csv", tmp_path / "x.duckdb")]
    assert f"7 rows -> {out}" in result.stderr


def test_export_goes_through_api(
        tmp_path: Path, config_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from cartfhir import api
    from cartfhir.exports import ExportResult

    calls = []

    def export(config, out, fmt, tables, *, force=False):  # noqa: ANN001, ANN202
        calls.append((config.output.duckdb.name, out, fmt, tables, force))
        return ExportResult(out=out, format=fmt)

    monkeypatch.setattr(api, "export", export)
    config = config_file(["site_a", "site_b"])
    result = CliRunner().invoke(cli, ["export", "-c", str(config), "-o", str(tmp_path / "s"),
                                      "--tables", "cohort.episode, analysis.*", "--force"])
    assert result.exit_code == 0, result.output
    assert calls == [("t.duckdb", tmp_path / "s", "parquet",
                      ["cohort.episode", "analysis.*"], True)]


def test_pool_takes_a_memory_limit_defaulting_to_the_sites(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from cartfhir import api
    from cartfhir.config import Output
    from cartfhir.multisite.pool import PoolResult

    limits = []

    def pool(sources, out, *, keys=None, allow_unsigned=False, memory_limit=None,  # noqa: ANN001, ANN202
             report_dir=None):
        limits.append(memory_limit)
        return PoolResult(path=out, sites=["site_a"])

    monkeypatch.setattr(api, "pool", pool)
    args = ["pool", "pkg", "--out", str(tmp_path / "p.duckdb"), "--allow-unsigned"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert CliRunner().invoke(cli, [*args, "--memory-limit", "2GB"]).exit_code == 0
    assert limits == [Output.model_fields["memory_limit"].default, "2GB"]


def test_a_malformed_pool_memory_limit_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["pool", "pkg", "--out", str(tmp_path / "p.duckdb"), "--allow-unsigned",
                    "--memory-limit", "lots"]) == 2
    err = capsys.readouterr().err
    assert "--memory-limit" in err and "'lots'" in err and "No such option" not in err, err
    assert not (tmp_path / "p.duckdb").exists()


# --- query and view: the analyst's commands ---

@pytest.fixture
def analyst_db(tmp_path: Path) -> Path:
    """A database with a wide table, a long value and meta.runs.counts as JSON."""
    import duckdb

    path = tmp_path / "a.duckdb"
    con = duckdb.connect(str(path))
    columns = ", ".join(f"'value_{i}' AS column_{i}" for i in range(12))
    con.execute(f"CREATE TABLE wide AS SELECT {columns}, repeat('x', 300) AS long_text")
    con.execute("CREATE SCHEMA meta")
    con.execute("""CREATE TABLE meta.runs AS SELECT 'r1' AS run_id,
                   '{"site_a": {"inserted": 3}}'::JSON AS counts""")
    con.close()
    return path


def _query(db: Path, *args: str) -> list[str]:
    return ["query", *args, "--db", str(db)]


def test_query_fits_a_wide_result_to_the_width_columns_sets(
        analyst_db: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    assert run_cli(_query(analyst_db, "select * from wide")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 60
    assert "│ … │" in lines[1] and "column_0" in lines[1]
    assert lines[-1].startswith("1 row  13 columns (")


def test_query_into_a_pipe_cuts_nothing_and_an_empty_result_has_its_header(
        analyst_db: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert run_cli(_query(analyst_db, "select * from wide")) == 0
    out = capsys.readouterr().out
    assert "x" * 300 in out and "column_6" in out and "…" not in out
    assert run_cli(_query(analyst_db, "select run_id, counts from meta.runs where false",
                          "--types")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "run_id" in lines[1] and "counts" in lines[1]
    assert "varchar" in lines[2] and "json" in lines[2]
    assert lines[-1] == "0 rows"


def test_query_refuses_several_statements(
        analyst_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(_query(analyst_db, "select 1; select 2")) == 2
    assert "query takes one SQL statement; got 2" in capsys.readouterr().err
    assert run_cli(_query(analyst_db, "select 1; select 2", "-o", "x.csv")) == 2
    assert run_cli(_query(analyst_db, "select ';' as semicolon;", "-f", "csv")) == 0
    assert capsys.readouterr().out == "semicolon\n;\n"  # DuckDB's parser, not a split on ';'


def test_query_writes_json_columns_as_objects(
        analyst_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = [{"run_id": "r1", "counts": {"site_a": {"inserted": 3}}}]
    assert run_cli(_query(analyst_db, "select * from meta.runs", "-f", "json")) == 0
    assert json.loads(capsys.readouterr().out) == expected
    assert run_cli(_query(analyst_db, "select * from meta.runs", "-o",
                          str(tmp_path / "runs.json"))) == 0
    assert json.loads((tmp_path / "runs.json").read_text()) == expected


def test_query_out_takes_its_format_from_the_suffix(
        analyst_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import duckdb

    sql = "select run_id from meta.runs"
    assert run_cli(_query(analyst_db, sql, "-o", str(tmp_path / "r.csv"))) == 0
    assert (tmp_path / "r.csv").read_text() == "run_id\nr1\n"
    assert run_cli(_query(analyst_db, sql, "-o", str(tmp_path / "r.parquet"))) == 0
    assert duckdb.sql(f"select * from '{tmp_path / 'r.parquet'}'").fetchall() == [("r1",)]
    capsys.readouterr()
    assert run_cli(_query(analyst_db, sql, "-o", str(tmp_path / "r.txt"))) == 2
    assert ".csv (csv), .json (json), .parquet (parquet)" in capsys.readouterr().err
    assert run_cli(_query(analyst_db, sql, "-f", "json", "-o", str(tmp_path / "r2.csv"))) == 2
    assert "is a csv file but --format says json" in capsys.readouterr().err
    assert not (tmp_path / "r.txt").exists() and not (tmp_path / "r2.csv").exists()


def test_view_refuses_a_missing_database_as_query_does_and_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    view = tmp_path / "v.json"
    view.write_text(json.dumps({
        "resourceType": "ViewDefinition", "name": "pt", "status": "active",
        "resource": "Patient", "select": [{"column": [{"name": "id", "path": "id"}]}]}))
    missing = tmp_path / "none" / "x.duckdb"
    assert run_cli(["query", "select 1", "--db", str(missing)]) == 1
    refused = capsys.readouterr().err
    assert "does not exist yet" in refused
    assert run_cli(["view", str(view), "--db", str(missing)]) == 1
    assert capsys.readouterr().err == refused.replace("select 1", "")
    assert run_cli(["view", str(view), "--db", str(missing), "--out",
                    str(tmp_path / "pt.parquet")]) == 1
    assert not missing.exists() and not missing.parent.exists()
    assert not (tmp_path / "pt.parquet").exists()


def test_view_out_takes_its_format_as_query_out_does(
        analyst_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    view = tmp_path / "v.json"
    view.write_text(json.dumps({
        "resourceType": "ViewDefinition", "name": "pt", "status": "active",
        "resource": "Patient", "select": [{"column": [{"name": "id", "path": "id"}]}]}))
    assert run_cli(["view", str(view), "--db", str(analyst_db), "--out",
                    str(tmp_path / "pt.txt")]) == 2
    assert "name the file with one of .csv (csv), .parquet (parquet)" in capsys.readouterr().err
