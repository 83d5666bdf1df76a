"""cartfhir/logs.py: stage events a scheduler can read, warnings routed, JSON on stderr."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from cartfhir.errors import TransformError
from cartfhir.logs import configure, log_event, logged_stage
from cartfhir.store import Store


@pytest.fixture()
def json_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """stderr as JSON logging writes it (configured fresh, then back to text)."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure("json")
    yield stream
    configure("text")


def _records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_stage_logs_start_and_finish_with_run_id_status_counts_duration(
        tmp_path: Path, json_lines: io.StringIO) -> None:
    store = Store(tmp_path / "t.duckdb")
    with store.run("cartfhir analyze", stage="analyze") as run:
        run.counts["t"] = 3
    start, finish = [r for r in _records(json_lines) if r["event"].startswith("stage.")]
    assert start["event"] == "stage.start" and finish["event"] == "stage.finish"
    assert start["run_id"] == finish["run_id"] == run.run_id
    assert start["stage"] == finish["stage"] == "analyze"
    assert finish["status"] == "success" and finish["counts"] == {"t": 3}
    assert finish["duration_s"] >= 0 and finish["level"] == "info"
    assert finish["command"] == "cartfhir analyze"


def test_a_failed_stage_logs_finish_failed_with_the_error_type(
        tmp_path: Path, json_lines: io.StringIO) -> None:
    store = Store(tmp_path / "t.duckdb")
    with pytest.raises(TransformError), store.run("transform", stage="transform"):
        raise TransformError("model x failed")
    finish = _records(json_lines)[-1]
    assert finish["event"] == "stage.finish" and finish["status"] == "failed"
    assert finish["error_type"] == "TransformError" and finish["level"] == "error"


def test_logged_stage_wraps_a_function_without_a_run_record(json_lines: io.StringIO) -> None:
    class Result:
        status = "success"

        def to_dict(self) -> dict:
            return {"status": "success", "rows": {"cohort.episode": 2}}

    @logged_stage("pool", db=lambda args: args["out"])
    def pool(out: str) -> Result:
        return Result()

    pool("pooled.duckdb")
    start, finish = _records(json_lines)
    assert (start["event"], finish["event"]) == ("stage.start", "stage.finish")
    assert start["db"] == finish["db"] == "pooled.duckdb"
    assert start["command"] == "pool"  # the stage's name when no command line is running
    assert finish["stage"] == "pool" and finish["status"] == "success"
    assert finish["counts"] == {"rows": {"cohort.episode": 2}}


def test_python_warnings_and_other_libraries_log_as_json(json_lines: io.StringIO) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old thing", DeprecationWarning, stacklevel=1)
    logging.getLogger("some.library").warning("careful")
    log_event("custom.event", msg="hello", site="site_a")
    records = _records(json_lines)
    assert any("old thing" in r["msg"] and r["level"] == "warning" for r in records)
    assert any(r["msg"] == "careful" and r["logger"] == "some.library" for r in records)
    assert {"event": "custom.event", "msg": "hello", "site": "site_a"}.items() <= \
        records[-1].items()


def test_json_lines_are_redacted(json_lines: io.StringIO) -> None:
    log_event("x", msg="GET https://user:hunter2secret@fhir.example/Patient")
    assert "hunter2secret" not in json_lines.getvalue()
