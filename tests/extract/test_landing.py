"""Landing batches: the write thread, the append path of a first landing, the paused collector."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import duckdb
import pytest

from cartfhir.errors import DatabaseError
from cartfhir.extract import create_tables, landing
from cartfhir.extract.landing import gc_paused, land_folder


def _observation(rid: str, version: int, value: float) -> str:
    return json.dumps({
        "resourceType": "Observation", "id": rid, "status": "final",
        "meta": {"versionId": str(version),
                 "lastUpdated": f"2024-05-0{version}T10:00:00Z"},
        "code": {"text": "Hb"}, "valueQuantity": {"value": value, "unit": "g/dL"},
    })


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(str(tmp_path / "store.duckdb"))
    create_tables(connection)
    yield connection
    connection.close()


def _write_lines(folder: Path, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Observation.ndjson").write_text("\n".join(lines) + "\n")
    return folder


def _stored(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute(
        "SELECT id, version_id, resource->>'$.valueQuantity.value' FROM raw.resources ORDER BY id"
    ).fetchall()


def test_later_batch_replaces_a_key_an_earlier_batch_of_the_same_landing_wrote(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    # 150 new keys in batches of 100, then obs-5 again with a newer version: the
    # first batch is appended (nothing stored), the second must merge into it.
    lines = [_observation(f"obs-{i}", 1, float(i)) for i in range(150)]
    lines.append(_observation("obs-5", 2, 99.0))
    lines.append(_observation("obs-7", 1, 7.0))  # the same copy again: unchanged
    folder = _write_lines(tmp_path / "in", lines)

    landed = land_folder(con, "s", folder, "run-1", validation="structural", batch_size=100)

    counts = landed.counts["Observation"]
    assert (counts["inserted"], counts["replaced"], counts["unchanged"]) == (150, 1, 1)
    stored = _stored(con)
    assert len(stored) == 150  # one row per key: the second batch did not append a twin
    rows = {rid: (version, value) for rid, version, value in stored}
    assert rows["obs-5"] == ("2", "99.0")


def test_relanding_into_a_site_with_rows_merges(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    first = _write_lines(tmp_path / "a", [_observation("obs-1", 1, 1.0)])
    land_folder(con, "s", first, "run-1", validation="structural")
    second = _write_lines(tmp_path / "b", [_observation("obs-1", 2, 2.0),
                                           _observation("obs-2", 1, 3.0)])

    landed = land_folder(con, "s", second, "run-2", validation="structural")

    counts = landed.counts["Observation"]
    assert (counts["inserted"], counts["replaced"]) == (1, 1)
    assert _stored(con) == [("obs-1", "2", "2.0"), ("obs-2", "1", "3.0")]


def _fail_write(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """The write thread's ``call``-th statement fails as a full disk would."""
    calls = 0
    real_run = landing._BatchWriter._run

    def failing_write(self, sql: str, name: str, frame) -> None:
        nonlocal calls
        calls += 1
        if calls == call:
            raise duckdb.IOException("disk full")
        real_run(self, sql, name, frame)

    monkeypatch.setattr(landing._BatchWriter, "_run", failing_write)


def test_a_write_failing_in_the_write_thread_stops_landing_and_keeps_nothing_of_it(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _write_lines(tmp_path / "a", [_observation("kept", 1, 1.0)])
    land_folder(con, "s", before, "run-1", validation="structural")
    _fail_write(monkeypatch, call=2)
    lines = [_observation(f"obs-{i}", 1, float(i)) for i in range(350)]
    folder = _write_lines(tmp_path / "b", lines)

    with pytest.raises(DatabaseError, match="site 's'.*disk full"):
        land_folder(con, "s", folder, "run-2", validation="structural", batch_size=100)

    assert _stored(con) == [("kept", "1", "1.0")]  # the failed landing's batches rolled back
    assert threads_named("cartfhir-landing") == []


def threads_named(prefix: str) -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_paused_restores_the_collector_as_it_was(enabled: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        with gc_paused():
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
        with pytest.raises(RuntimeError), gc_paused():
            raise RuntimeError("landing failed")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_an_interrupt_while_a_batch_is_written_keeps_nothing_of_the_landing(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal
    import threading
    import time

    before = _write_lines(tmp_path / "a", [_observation("kept", 1, 1.0)])
    land_folder(con, "s", before, "run-1", validation="structural")
    main = threading.main_thread().ident
    assert main is not None
    calls = 0
    real_run = landing._BatchWriter._run

    def interrupted_second_write(self, sql: str, name: str, frame) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the main thread waits for this batch by now: Ctrl-C reaches it
            time.sleep(0.3)
            signal.pthread_kill(main, signal.SIGINT)
            time.sleep(0.3)
        real_run(self, sql, name, frame)

    monkeypatch.setattr(landing._BatchWriter, "_run", interrupted_second_write)
    lines = [_observation(f"obs-{i}", 1, float(i)) for i in range(350)]
    folder = _write_lines(tmp_path / "b", lines)

    with pytest.raises(KeyboardInterrupt):
        land_folder(con, "s", folder, "run-2", validation="structural", batch_size=100)

    assert threads_named("cartfhir-landing") == []
    assert _stored(con) == [("kept", "1", "1.0")]  # the interrupted landing rolled back


@pytest.mark.parametrize("colliding", [False, True])
def test_a_key_across_batches_of_a_first_landing_is_decided_against_what_was_written(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    colliding: bool,
) -> None:
    """Red team: replaced, re-sent stale, re-sent unchanged and in conflict, each in a
    later batch than the copy it meets; with every key hashing alike too (``_written``
    then rules nothing out, and nothing may be lost or doubled)."""
    if colliding:
        monkeypatch.setattr(landing, "hash", lambda key: 7, raising=False)
    lines = [_observation(f"obs-{i}", 1, float(i)) for i in range(10)]  # batch 1
    lines += [_observation("obs-1", 2, 21.0)] + [  # batch 2: obs-1 replaced
        _observation(f"new-{i}", 1, 0.0) for i in range(9)]
    lines += [_observation("obs-1", 1, 1.0),  # batch 3: the old copy again: stale
              _observation("obs-2", 1, 2.0),  # the same copy: unchanged
              _observation("obs-3", 1, 33.0),  # same version, other content: conflict
              _observation("obs-4", 1, 4.0), _observation("obs-4", 3, 44.0)]  # unchanged, replaced
    folder = _write_lines(tmp_path / "in", lines)

    landed = land_folder(con, "s", folder, "run-1", validation="structural", batch_size=10)

    counts = landed.counts["Observation"]
    assert {k: v for k, v in counts.items() if v} == {
        "received": 25, "inserted": 19, "replaced": 2, "stale": 1, "unchanged": 2,
        "rejected": 1}
    stored = {rid: (version, value) for rid, version, value in _stored(con)}
    assert len(stored) == 19 and len(_stored(con)) == 19  # one row per key
    assert stored["obs-1"] == ("2", "21.0")
    assert stored["obs-3"] == ("1", "3.0")
    assert stored["obs-4"] == ("3", "44.0")
    assert con.execute("SELECT count(*) FROM raw.rejected").fetchone() == (1,)


def test_relanding_the_same_folder_changes_nothing(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    lines = [_observation(f"obs-{i}", 1, float(i)) for i in range(30)]
    folder = _write_lines(tmp_path / "in", lines)
    land_folder(con, "s", folder, "run-1", validation="structural", batch_size=7)
    before = con.execute("SELECT * FROM raw.resources ORDER BY id").fetchall()

    landed = land_folder(con, "s", folder, "run-2", validation="structural", batch_size=7)

    counts = landed.counts["Observation"]
    assert (counts["unchanged"], counts["inserted"], counts["replaced"]) == (30, 0, 0)
    assert con.execute("SELECT * FROM raw.resources ORDER BY id").fetchall() == before


@pytest.mark.parametrize("failing_call", [1, 3])
def test_a_write_failing_in_the_last_batch_surfaces_at_close_and_keeps_nothing(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    failing_call: int,
) -> None:
    """Red team: the last batch's error surfaces at close(commit=True), which has no
    ROLLBACK of its own (closing the cursor must discard the transaction); with the
    first batch failing, the landing's transaction holds nothing else."""
    before = _write_lines(tmp_path / "a", [_observation("kept", 1, 1.0)])
    land_folder(con, "s", before, "run-1", validation="structural")
    _fail_write(monkeypatch, call=failing_call)
    folder = _write_lines(tmp_path / "b", [_observation(f"obs-{i}", 1, float(i))
                                           for i in range(250)])

    with pytest.raises(DatabaseError, match="disk full"):
        land_folder(con, "s", folder, "run-2", validation="structural", batch_size=100)

    assert _stored(con) == [("kept", "1", "1.0")]
    assert threads_named("cartfhir-landing") == []
    # the store takes the next landing as usual
    monkeypatch.undo()
    land_folder(con, "s", folder, "run-3", validation="structural", batch_size=100)
    assert len(_stored(con)) == 251


def test_key_hashes_remember_what_was_added_in_eight_bytes_a_key() -> None:
    import numpy as np

    remembered = landing._KeyHashes()
    asked = np.array([5, -(2**63), 2**63 - 1, 0], dtype=np.int64)
    assert not remembered.seen(asked).any()
    remembered.add(np.array([2**63 - 1, 5, 5], dtype=np.int64))
    remembered.add(np.array([-(2**63)], dtype=np.int64))
    assert remembered.seen(asked).tolist() == [True, True, True, False]
    assert len(remembered) == 3
    assert remembered.nbytes == 3 * 8


def test_key_hashes_add_costs_what_is_added_not_what_is_stored() -> None:
    """One sorted array merged with every batch copies all stored keys per batch
    (quadratic over a landing); sorted runs merged by size copy each key about
    log2(batches) times."""
    import numpy as np

    remembered = landing._KeyHashes()
    rng = np.random.default_rng(3)
    batches, per_batch = 1000, 100
    for _ in range(batches):
        remembered.add(rng.integers(-(2**62), 2**62, per_batch, dtype=np.int64))
    total = batches * per_batch
    assert len(remembered) == total
    assert remembered.copied <= total * (np.log2(batches) + 2)
    assert remembered.runs <= np.log2(batches) + 2
    probe = rng.integers(-(2**62), 2**62, 50, dtype=np.int64)
    remembered.add(probe[:25])
    assert remembered.seen(probe)[:25].all()
    assert len(remembered) == total + 25
