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
            "query", "schema", "export", "export-site", "pool", "keygen", "sign"]


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

    def pool(sources, out, *, keys=None, allow_unsigned=False, memory_limit=None):  # noqa: ANN001, ANN202
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
