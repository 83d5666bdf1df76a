"""The CLI for schedulers: JSON on stderr, one result document with --json, exit codes.

A cron job writes ``cartfhir --log-format json run ... >> cron.jsonl 2>&1``: every line
of that file must parse, say which stage started and finished, and an error must say
its type and exit code. The exit codes are listed once (``errors.ExitCode``); the
help, docs/logging.md and the README must agree with that list.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from cartfhir import api
from cartfhir.cli import run_cli
from cartfhir.errors import ExitCode
from cartfhir.expectations import ValidationReport
from cartfhir.expectations.gx.tally import Outcome
from cartfhir.logs import STAGE_EVENT_KEYS

ROOT = Path(__file__).resolve().parents[1]
# Each stage with the key of its result in ``RunResult.to_dict()``.
STAGES = {"extract": "extract", "transform": "transform", "validate": "validation",
          "analyze": "analysis"}


def _lines(text: str) -> list[dict]:
    """Every line of ``text`` as a JSON object (a line that is not one fails the test)."""
    records = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(r, dict) for r in records)
    return records


@pytest.fixture()
def small_site(tmp_path: Path, config_file: Callable[..., Path]) -> Path:
    """A config over one synthetic NDJSON site of 12 patients (tmp_path/data/site_a)."""
    api.generate(tmp_path / "data", patients=12, seed=7, sites=["site_a"])
    return config_file(["site_a"])


def test_a_json_run_writes_json_lines_on_stderr_and_one_document_on_stdout(
        small_site: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cartfhir", "--log-format", "json", "run", "--json",
         "--config", str(small_site)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**os.environ, "COLUMNS": "80"})
    records = _lines(done.stderr)
    result = json.loads(done.stdout)  # one document, nothing else on stdout
    assert done.returncode == ExitCode.SUCCESS, done.stderr[-2000:]
    assert result["status"] == "success"
    assert result["extract"]["totals"]["received"] > 100
    assert result["transform"]["tables"]["cohort.episode"][0] > 0  # rows, seconds
    assert result["validation"]["valid"] is True
    assert result["analysis"]["report"].endswith("report.html")
    for stage, key in STAGES.items():
        start = [r for r in records if r.get("event") == "stage.start" and r["stage"] == stage]
        finish = [r for r in records if r.get("event") == "stage.finish"
                  and r["stage"] == stage]
        assert len(start) == len(finish) == 1, stage
        assert start[0]["run_id"] == finish[0]["run_id"] == result[key]["run_id"]
        assert finish[0]["status"] == "success" and finish[0]["duration_s"] >= 0
        assert finish[0]["counts"], stage
        assert {"ts", "level", "logger", "msg"} <= finish[0].keys()


def test_json_logs_keep_tables_off_stdout_unless_asked(
        small_site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--log-format", "json", "extract", "--config", str(small_site)]) == 0
    out, err = capsys.readouterr()
    assert out == ""  # stdout is not a terminal here, and --human was not given
    assert [r["event"] for r in _lines(err) if r.get("event", "").startswith("stage.")] == [
        "stage.start", "stage.finish"]
    assert run_cli(["--log-format", "json", "--human", "extract", "--config",
                    str(small_site)]) == 0
    out, err = capsys.readouterr()
    assert "Landed into" in out and _lines(err)


def test_extract_json_prints_the_result_as_one_document(
        small_site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["extract", "--json", "--config", str(small_site)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "success" and result["run_id"]
    assert result["totals"]["received"] == sum(
        c["received"] for c in result["counts"]["site_a"].values()) > 0
    assert result["counts"]["site_a"]["Patient"]["inserted"] == 12


def test_a_bad_config_is_one_json_error_line_with_exit_code_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["--log-format", "json", "run", "--config", str(tmp_path / "nope.yaml")])
    out, err = capsys.readouterr()
    assert code == ExitCode.USAGE == 2 and out == ""
    [record] = _lines(err)
    assert record["level"] == "error" and record["event"] == "error"
    assert record["error_type"] == "ConfigError" and record["exit_code"] == 2
    assert "nope.yaml" in record["msg"]


@pytest.mark.parametrize("argv", [["extract", "--no-such-option"],
                                  ["--no-such-global", "extract"],
                                  ["no-such-command"]])
def test_a_usage_error_is_one_json_error_line(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--log-format", "json", *argv]) == 2
    [record] = _lines(capsys.readouterr().err)
    assert record["event"] == "error" and record["exit_code"] == 2
    assert record["error_type"] == "UsageError"  # whichever of click's usage errors it was


@pytest.mark.parametrize(("raised", "error_type", "code"), [
    (RuntimeError("boom"), "RuntimeError", ExitCode.FAILURE),
    (KeyboardInterrupt(), "KeyboardInterrupt", ExitCode.INTERRUPTED)])
def test_internal_errors_and_interrupts_are_json_error_lines(
        small_site: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], raised: BaseException, error_type: str,
        code: int) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise raised

    monkeypatch.setattr(api, "extract", fail)
    assert run_cli(["--log-format", "json", "extract", "--config", str(small_site)]) == code
    [record] = _lines(capsys.readouterr().err)
    assert record["error_type"] == error_type and record["exit_code"] == code


def test_verbose_puts_the_traceback_in_the_error_record(
        small_site: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "extract", fail)
    assert run_cli(["--log-format", "json", "--verbose", "extract", "--config",
                    str(small_site)]) == ExitCode.FAILURE
    [record] = [r for r in _lines(capsys.readouterr().err) if r.get("event") == "error"]
    assert "Traceback" in record["traceback"] and "boom" in record["traceback"]


def test_invalid_data_is_a_warning_record_in_json_mode(
        small_site: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    failed = Outcome(suite="cohort", expectation="expect_x", column="age", severity="error",
                     success=False, observed_value=None, unexpected_count=2,
                     element_count=10, unexpected_examples=[1, 2], error=None, kwargs={})
    monkeypatch.setattr(api, "validate", lambda *a, **k: ValidationReport(
        run_id="r1", outcomes=[failed]))
    assert run_cli(["--log-format", "json", "validate", "--config", str(small_site)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    records = _lines(err)
    [expectation] = [r for r in records if r.get("event") == "validation.failed_expectation"]
    assert expectation["level"] == "error" and expectation["column"] == "age"
    [invalid] = [r for r in records if r.get("event") == "validation.invalid"]
    assert invalid["level"] == "warning" and invalid["run_id"] == "r1"
    assert "INVALID" in invalid["msg"]
    # and in text mode, the same messages as before on stderr
    assert run_cli(["validate", "--config", str(small_site)]) == 1
    err = capsys.readouterr().err
    assert "ERROR: cohort expect_x [age]: 2 unexpected" in err
    assert err.rstrip().splitlines()[-1].startswith("INVALID: the data failed")


# --- the exit codes: one list (errors.ExitCode), and everyone reads or checks it ---

def _docs_table() -> dict[int, str]:
    text = (ROOT / "docs" / "logging.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| ([^|]+?) \| ([^|]+?) \|$", text, re.M)
    return {int(code): f"{label}|{meaning}" for code, label, meaning in rows}


def test_the_docs_exit_code_table_is_the_enum() -> None:
    assert _docs_table() == {c.value: f"{c.label}|{c.meaning}" for c in ExitCode}


def test_help_and_readme_name_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for code in ExitCode:
        assert f"{code.value} {code.label}" in help_text
        assert f"{code.value} {code.label}" in readme, code


def test_a_busy_database_is_an_error_naming_the_holder_and_wait_gets_through(
        small_site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["extract", "--config", str(small_site)]) == 0
    capsys.readouterr()
    database = tmp_path / "out" / "t.duckdb"  # testbed's output.duckdb
    hold = ("import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
            "print('ready', flush=True); time.sleep(float(sys.argv[2]))")
    for seconds, wait, code in ((60, "0", ExitCode.FAILURE), (1.5, "60", ExitCode.SUCCESS)):
        holder = subprocess.Popen([sys.executable, "-c", hold, str(database), str(seconds)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
            assert run_cli(["--log-format", "json", "--wait", wait, "extract", "--config",
                            str(small_site)]) == code
        finally:
            holder.kill()
            holder.wait()
        records = _lines(capsys.readouterr().err)
        if code == ExitCode.FAILURE:
            [error] = records
            assert error["error_type"] == "DatabaseBusyError"  # a DatabaseError: retry later
            assert f"PID {holder.pid}" in error["msg"]
            assert "--wait" in error["msg"]
        else:
            assert [r["event"] for r in records if r.get("event")][:2] == [
                "db.lock_wait", "stage.start"]


def test_a_reader_that_stops_early_ends_the_command_quietly_with_141(tmp_path: Path) -> None:
    database = tmp_path / "empty.duckdb"
    duckdb.connect(str(database)).close()
    reader = subprocess.Popen(
        [sys.executable, "-m", "cartfhir", "query", "select range from range(3000000)",
         "--db", str(database), "--format", "csv"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    assert reader.stdout is not None and reader.stderr is not None
    assert len(reader.stdout.read(10)) == 10  # like `| head -c 10`
    reader.stdout.close()
    err = reader.stderr.read().decode()
    assert reader.wait(timeout=120) == ExitCode.BROKEN_PIPE == 141
    assert err == ""  # quiet: no 'internal error', no 'Exception ignored'


def test_demo_exits_3_on_a_partial_extraction_as_run_does(
        tmp_path: Path, config_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    real_generate = api.generate

    def generate_with_a_link(folder: Path, **kwargs: object) -> object:
        made = real_generate(folder, **kwargs)  # type: ignore[arg-type]
        (Path(folder) / "site_a" / "elsewhere.ndjson").symlink_to(tmp_path / "nowhere")
        return made  # a symbolic link is not followed: the extraction is partial

    monkeypatch.setattr(api, "generate", generate_with_a_link)
    path = config_file(["site_a"])
    assert run_cli(["demo", "--patients", "12", "--seed", "7", "--config",
                    str(path)]) == ExitCode.PARTIAL
    assert "INCOMPLETE" in capsys.readouterr().err
    assert run_cli(["demo", "--json", "--patients", "12", "--seed", "7", "--config",
                    str(path)]) == ExitCode.PARTIAL
    assert json.loads(capsys.readouterr().out)["run"]["extract"]["status"] == "partial"


# --- every command in JSON mode into files: stderr all JSON, stdout only data ---

VIEW = {"resourceType": "ViewDefinition", "name": "genders", "status": "active",
        "resource": "Patient",
        "select": [{"column": [{"name": "id", "path": "id"}, {"name": "gender",
                                                               "path": "gender"}]}]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small site run end to end, and its package (for pool), shared by the commands."""
    from tests.testbed import write_config

    root = tmp_path_factory.mktemp("every-command")
    api.generate(root / "data", patients=12, seed=7, sites=["site_a"])
    config = write_config(root, ["site_a"])
    cfg = api.load_config(config)
    api.run(cfg)
    api.export_site(cfg, "site_a", root / "site_a.zip")
    (root / "view.json").write_text(json.dumps(VIEW), encoding="utf-8")
    return root


COMMANDS = {
    "synth": ["synth", "--out", "{w}/synth", "--patients", "6", "--sites", "site_a"],
    "extract": ["extract", "--config", "{w}/config.yaml"],
    "transform": ["transform", "--config", "{w}/config.yaml"],
    "validate": ["validate", "--config", "{w}/config.yaml"],
    "analyze": ["analyze", "--config", "{w}/config.yaml"],
    "run": ["run", "--config", "{w}/config.yaml"],
    "run --json": ["run", "--json", "--config", "{w}/config.yaml"],
    "demo": ["demo", "--patients", "12", "--seed", "7", "--config", "{w}/config.yaml"],
    "export": ["export", "--config", "{w}/config.yaml", "--out", "{w}/export"],
    "export-site": ["export-site", "--config", "{w}/config.yaml", "--site", "site_a",
                    "--out", "{w}/again.zip"],
    "pool": ["pool", "{w}/site_a.zip", "--out", "{w}/pooled.duckdb", "--allow-unsigned"],
    "view": ["view", "{w}/view.json", "--config", "{w}/config.yaml", "--out", "{w}/view.csv"],
    "check": ["check", "--config", "{w}/config.yaml", "--no-network"],
    "init": ["init", "--kind", "ndjson", "--out", "{w}/init/config.yaml"],
    "query to a file": ["query", "select 42 as answer", "--config", "{w}/config.yaml",
                        "--out", "{w}/answer.csv"],
}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_in_json_mode_writes_json_on_stderr_and_only_data_on_stdout(
        name: str, workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.format(w=workspace) for a in COMMANDS[name]]
    code = run_cli(["--log-format", "json", *args])
    out, err = capsys.readouterr()
    records = _lines(err)  # every stderr line is one JSON object
    assert code == ExitCode.SUCCESS, records[-3:]
    if "--json" in args:
        assert json.loads(out)["status"] == "success"
    else:
        assert out == "", out[:500]
    # nothing is said twice (e.g. the unsigned pool as a record and again as a line)
    said = [r["msg"] for r in records if r.get("event", "").split(".")[0] not in ("stage", "")]
    assert len(said) == len(set(said)), said


def _documented_stage_keys() -> dict[str, tuple[str, ...]]:
    """The required keys of each stage event in docs/logging.md's table (before any ';')."""
    text = (ROOT / "docs" / "logging.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(stage\.\w+)` \| [^|]+ \| [^|]+ \| ([^|]+) \|$", text, re.M)
    return {event: tuple(re.findall(r"`(\w+)`", keys.split(";")[0])) for event, keys in rows}


def test_the_docs_stage_event_keys_are_the_ones_logs_defines() -> None:
    assert _documented_stage_keys() == STAGE_EVENT_KEYS


@pytest.mark.parametrize("name", ["export-site", "pool", "transform"])
def test_every_stage_event_carries_the_documented_keys(
        name: str, workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.format(w=workspace) for a in COMMANDS[name]]
    args = [a.replace("again.zip", "third.zip").replace("pooled.duckdb", "keys.duckdb")
            for a in args]
    argv = ["--log-format", "json", *args]
    assert run_cli(argv) == ExitCode.SUCCESS
    stages = [r for r in _lines(capsys.readouterr().err)
              if r.get("event") in STAGE_EVENT_KEYS]
    assert stages
    for record in stages:
        missing = [k for k in STAGE_EVENT_KEYS[record["event"]] if k not in record]
        assert missing == [], record
        assert record["command"] == "cartfhir " + shlex.join(argv)
    pooled = str(workspace / "keys.duckdb")
    expected_db = pooled if name == "pool" else str(workspace / "out" / "t.duckdb")
    assert {r["db"] for r in stages} == {expected_db}
    if name == "pool":  # its validate and analyze name the pool's private copy apart
        inner = [r for r in stages if r["stage"] != "pool"]
        assert {r["stage"] for r in inner} == {"validate", "analyze"}
        assert all(r["work_db"].endswith("pooled.duckdb") and r["work_db"] != pooled
                   for r in inner)


def test_query_says_what_is_read_only(capsys: pytest.CaptureFixture[str]) -> None:
    """The database file is; the SQL still has the user's own file access (COPY TO,
    read_csv), so neither --help nor the README may promise more."""
    assert run_cli(["query", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "cannot change its tables" in help_text and "your own file access" in help_text
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "one SQL statement, read-only" not in readme
    assert "the SQL runs with your own file access" in readme
