"""Ctrl-C is the user stopping a run, not a bug: exit 130, the run recorded ``interrupted``.

DuckDB turns a SIGINT that arrives inside a statement into ``RuntimeError('Query
interrupted')`` and swallows the KeyboardInterrupt; before, that reached the CLI as
an internal error (exit 1) and the run was recorded ``failed``. The first test sends
a real SIGINT to ``cartfhir transform`` when it logs that it is building a table whose
statement is among the longest; the second lands one inside a statement for certain.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import duckdb
import pytest

from cartfhir.api import extract, transform
from cartfhir.config import load_config
from cartfhir.runs import failed_on_error, start_run
from cartfhir.synth import generate
from tests.snapshots import fingerprint, runs
from tests.stopping import signal_transform_at
from tests.testbed import write_config

INTERRUPT_AT = "harmonized.observation_value"  # one long statement, most of the models after it


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transformed one-site database large enough that a statement takes a while."""
    root = tmp_path_factory.mktemp("interrupt")
    generate(root / "data", patients=40, seed=5, sites=["site_a"])
    path = write_config(root, ["site_a"])
    config = load_config(path)
    extract(config)
    transform(config)
    return path


def test_ctrl_c_during_a_transform_exits_130_and_records_the_run_interrupted(
        site: Path) -> None:
    db = site.parent / "out" / "t.duckdb"
    before = fingerprint(db)
    code, err = signal_transform_at(site, INTERRUPT_AT, signal.SIGINT)

    assert code == 130, f"exit {code}; stderr:\n{err}"
    assert "internal error" not in err and "please report it" not in err, err
    assert "interrupted" in err
    records = [json.loads(line) for line in err.splitlines()]  # JSON logs: every line parses
    finish = [r for r in records if r.get("event") == "stage.finish"]
    assert [(r["stage"], r["status"], r["level"]) for r in finish] == [
        ("transform", "interrupted", "warning")]
    assert records[-1]["event"] == "error" and records[-1]["exit_code"] == 130
    assert records[-1]["error_type"] == "KeyboardInterrupt"
    last = runs(db)[-1]
    assert last[1:3] == ("transform", "interrupted"), last
    assert finish[0]["run_id"] == last[0]
    assert "Ctrl-C" in last[3]
    assert fingerprint(db) == before  # rolled back: every table as it was


def test_an_interrupt_inside_a_statement_marks_the_run_interrupted(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    run = start_run(con, "transform", None, stage="transform")
    timer = threading.Timer(0.3, os.kill, [os.getpid(), signal.SIGINT])
    try:
        with pytest.raises(KeyboardInterrupt), failed_on_error(run):
            timer.start()  # the statement below takes far longer than 0.3 s
            con.execute("SELECT sum(hash(i)) FROM range(20000000000) r(i)").fetchall()
    finally:
        timer.cancel()
    status, message = con.execute("SELECT status, message FROM meta.runs WHERE run_id = ?",
                                  [run.run_id]).fetchone()
    con.close()
    assert status == "interrupted" and "Ctrl-C" in message


def test_ctrl_c_during_an_extract_records_the_run_interrupted(
        site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """extract keeps its own bookkeeping; a Ctrl-C there is 'interrupted' too, not 'failed'."""
    import cartfhir.extract as extract_stage

    def ctrl_c(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(extract_stage, "land_folder", ctrl_c)
    config = load_config(site)
    with pytest.raises(KeyboardInterrupt):
        extract(config)
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    status, message = con.execute("SELECT status, message FROM meta.runs WHERE stage = "
                                  "'extract' ORDER BY started DESC LIMIT 1").fetchone()
    con.close()
    assert status == "interrupted" and "Ctrl-C" in message
