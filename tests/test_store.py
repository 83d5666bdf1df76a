"""The store: connecting with the memory limit, and the run record every stage keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from cartfhir.errors import DatabaseError, TransformError
from cartfhir.store import Store


def _runs(path: Path) -> list[tuple]:
    with Store(path).session(read_only=True) as con:
        return con.execute("SELECT command, stage, status, message, counts::VARCHAR "
                           "FROM meta.runs ORDER BY started").fetchall()


def test_a_block_that_ends_records_success_with_its_counts(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.duckdb", config_hash="abc")
    with store.run("cartfhir analyze", stage="analyze") as run:
        run.con.execute("CREATE TABLE t AS SELECT 1 AS x")
        run.counts["t"] = 1
    assert run.status == "success"
    assert _runs(store.path) == [("cartfhir analyze", "analyze", "success", None, '{"t": 1}')]


def test_a_block_that_raises_records_failed_with_the_reason(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.duckdb")
    with pytest.raises(TransformError), store.run("transform", stage="transform"):
        raise TransformError("cohort.episode could not be built; fix the map")
    assert _runs(store.path) == [("transform", "transform", "failed",
                                  "cohort.episode could not be built; fix the map", "{}")]


def test_a_bug_is_recorded_failed_with_its_type(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.duckdb")
    with pytest.raises(ZeroDivisionError), store.run("validate", stage="validate"):
        _ = 1 / 0
    assert _runs(store.path)[0][2:4] == ("failed", "ZeroDivisionError: division by zero")


def test_ctrl_c_records_interrupted_and_goes_on_up(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.duckdb")
    with pytest.raises(KeyboardInterrupt), store.run("extract", stage="extract"):
        raise KeyboardInterrupt
    status, message = _runs(store.path)[0][2:4]
    assert status == "interrupted" and "Ctrl-C" in message


def test_a_block_that_finishes_its_run_keeps_that_status(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.duckdb")
    with store.run("extract", stage="extract") as run:
        run.finish("partial", "site a: 3 of 5 pages")
    assert _runs(store.path)[0][2:4] == ("partial", "site a: 3 of 5 pages")


def test_a_failed_bookkeeping_write_does_not_hide_the_error_that_stopped_the_run(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "t.duckdb")
    with pytest.raises(TransformError, match="the real reason"), \
            store.run("transform", stage="transform") as run:
        run.con.close()  # a fatal DuckDB error leaves the connection unusable like this
        raise TransformError("the real reason")


def test_a_read_only_session_on_a_missing_file_is_a_database_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "missing.duckdb")
    with pytest.raises(DatabaseError, match="does not exist yet"), \
            store.session(read_only=True):
        pass
    assert not store.path.exists()


def test_connections_get_the_stores_memory_limit(tmp_path: Path) -> None:
    with Store(tmp_path / "t.duckdb", memory_limit="100MB").session() as con:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit in ("95.3 MiB", "100.0 MB", "100MB")


def test_a_database_whose_run_table_cannot_be_made_is_a_database_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.duckdb")
    with store.session() as con:
        con.execute("CREATE SCHEMA meta; CREATE VIEW meta.runs AS SELECT 1 AS x")
    with pytest.raises(DatabaseError, match=r"cannot prepare database .*t\.duckdb"), \
            store.run("extract", stage="extract"):
        pass


def test_a_scratch_store_is_in_memory_with_its_memory_limit(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.chdir(tmp_path)
    with Store.scratch("100MB").session() as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit in ("95.3 MiB", "100.0 MB", "100MB")
    assert list(tmp_path.iterdir()) == []  # nothing written to disk
