"""cartfhir/db.py: identifiers quoted once, in one place; the file lock waited for or named."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from cartfhir.db import connect, quote_name, quoted
from cartfhir.errors import DatabaseBusyError, DatabaseError, ExitCode


def test_a_name_with_quotes_and_dots_stays_one_identifier() -> None:
    con = duckdb.connect()
    name = 'a"b.c; DROP TABLE x --'
    con.execute(f"CREATE TABLE {quote_name(name)} ({quote_name('v')} INTEGER)")
    assert con.execute("SELECT table_name FROM information_schema.tables").fetchone() == (name,)


def test_a_table_name_is_quoted_part_by_part() -> None:
    con = duckdb.connect()
    con.execute(f"CREATE SCHEMA {quote_name('cohort')}")
    con.execute(f"CREATE TABLE {quoted('cohort.episode')} (x INTEGER)")
    assert con.execute("SELECT table_schema, table_name FROM information_schema.tables"
                       ).fetchone() == ("cohort", "episode")
    assert quoted('ref."x"') == '"ref"."""x"""'


# --- the lock: an analyst's open session must not make a nightly run fail blindly ---

HOLD = ("import duckdb, sys, time; con = duckdb.connect(sys.argv[1], read_only=True); "
        "print('ready', flush=True); time.sleep(float(sys.argv[2]))")


def _hold(path: Path, seconds: float) -> subprocess.Popen[str]:
    """A second process with a read-only connection open on ``path`` for ``seconds``."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    return holder


@pytest.fixture()
def database(tmp_path: Path) -> Path:
    path = tmp_path / "cartfhir.duckdb"
    duckdb.connect(str(path)).close()
    return path


def test_a_held_lock_is_refused_naming_the_holder(database: Path) -> None:
    holder = _hold(database, 30)
    try:
        with pytest.raises(DatabaseError) as caught:
            connect(database, wait=0)
    finally:
        holder.kill()
        holder.wait()
    message = str(caught.value)
    assert f"PID {holder.pid}" in message
    assert "--wait" in message and str(database) in message


def test_wait_gets_the_lock_once_the_holder_exits(
        database: Path, caplog: pytest.LogCaptureFixture) -> None:
    holder = _hold(database, 1.5)
    try:
        with caplog.at_level(logging.INFO, logger="cartfhir"):
            started = time.monotonic()
            con = connect(database, wait=30)
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
        con.close()
        assert 0.5 < time.monotonic() - started < 25
    finally:
        holder.kill()
        holder.wait()
    waits = [r for r in caplog.records if getattr(r, "event", None) == "db.lock_wait"]
    assert waits and f"PID {holder.pid}" in waits[0].getMessage()
    assert "waiting for the lock on" in waits[0].getMessage()


def test_wait_gives_up_at_the_deadline(database: Path) -> None:
    holder = _hold(database, 30)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseError, match=r"after waiting 0\.6 s"):
            connect(database, wait=0.6)
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()


WRITE_HOLD = ("import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
              "print('ready', flush=True); time.sleep(float(sys.argv[2]))")


def test_a_read_only_connect_waits_for_a_writer_and_is_busy_at_the_deadline(
        database: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", WRITE_HOLD, str(database), "30"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        started = time.monotonic()
        with pytest.raises(DatabaseBusyError, match=rf"PID {holder.pid}\b"):
            connect(database, read_only=True, wait=0.8)
        assert time.monotonic() - started >= 0.5
    finally:
        holder.kill()
        holder.wait()
    assert DatabaseBusyError("x").exit_code == ExitCode.FAILURE


def test_the_store_reads_time_in_utc_whatever_the_hosts_zone(tmp_path: Path) -> None:
    # A date-only FHIR value is midnight UTC on both engines; a host in Berlin or New York
    # must not move it (DuckDB's session zone defaults to the host's).
    script = ("import sys; from pathlib import Path; from cartfhir.db import connect; "
              "con = connect(Path(sys.argv[1])); "
              "print(con.execute(\"SELECT current_setting('TimeZone'), "
              "CAST(CAST('2021-06-01' AS TIMESTAMPTZ) AS VARCHAR)\").fetchall())")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "t.duckdb")],
                         env={**os.environ, "TZ": "Europe/Berlin"}, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[('UTC', '2021-06-01 00:00:00+00')]"
