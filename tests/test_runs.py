"""The run manifest: dead runs become 'interrupted', an incomplete transform is refused."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from cartfhir.errors import IncompleteTransformError
from cartfhir.runs import require_complete_transform, start_run


def _open(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(tmp_path / "t.duckdb"))


def _statuses(con: duckdb.DuckDBPyConnection) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in con.execute(
        "SELECT run_id, stage, status, finished, message FROM meta.runs").fetchall()}


def test_a_run_left_running_by_a_dead_process_is_marked_interrupted_by_the_next_start(
        tmp_path: Path) -> None:
    con = _open(tmp_path)
    done = start_run(con, "cartfhir extract", None, stage="extract")
    done.finish("success")
    dead = start_run(con, "cartfhir transform", None, stage="transform")
    con.close()  # the process that held 'dead' is gone; nothing finished it

    con = _open(tmp_path)
    after = start_run(con, "cartfhir validate", None, stage="validate")
    runs = _statuses(con)
    con.close()
    assert runs[dead.run_id][:3] == ("transform", "interrupted", None)
    assert f"noticed by run {after.run_id}" in runs[dead.run_id][3]
    assert runs[done.run_id][1] == "success"  # finished runs are left alone
    assert runs[after.run_id][:2] == ("validate", "running")


def test_a_database_from_before_runs_had_a_stage_gets_the_column(tmp_path: Path) -> None:
    con = _open(tmp_path)
    con.execute("CREATE SCHEMA meta")
    con.execute("CREATE TABLE meta.runs (run_id VARCHAR PRIMARY KEY, started TIMESTAMPTZ NOT "
                "NULL, finished TIMESTAMPTZ, status VARCHAR NOT NULL, command VARCHAR NOT NULL, "
                "config_hash VARCHAR, tool_version VARCHAR NOT NULL, counts JSON, "
                "message VARCHAR)")
    con.execute("INSERT INTO meta.runs VALUES ('old', now(), now(), 'success', 'cartfhir run', "
                "NULL, '0.1', NULL, NULL)")
    require_complete_transform(con)  # no stage recorded: nothing to refuse
    run = start_run(con, "cartfhir transform", None, stage="transform")
    runs = _statuses(con)
    con.close()
    assert runs["old"][:2] == (None, "success")
    assert runs[run.run_id][:2] == ("transform", "running")


@pytest.mark.parametrize(("history", "refused"), [
    ([], None),
    ([("extract", "success")], None),
    ([("transform", "success")], None),
    ([("transform", "failed"), ("transform", "success")], None),
    ([("transform", "success"), ("transform", "failed")], "failed (a model broke)"),
    ([("transform", "success"), ("transform", "interrupted")], "was interrupted"),
    ([("transform", "interrupted")], "there are no complete transform tables"),
    ([("transform", "success"), ("transform", "interrupted"), ("analyze", "success")],
     "was interrupted"),
])
def test_only_a_database_whose_latest_transform_succeeded_is_complete(
        tmp_path: Path, history: list[tuple[str, str]], refused: str | None) -> None:
    con = _open(tmp_path)
    ids = []
    for stage, status in history:
        run = start_run(con, f"cartfhir {stage}", None, stage=stage)  # type: ignore[arg-type]
        run.finish(status, "a model broke" if status == "failed" else None)  # type: ignore[arg-type]
        ids.append((stage, status, run.run_id))
    if refused is None:
        require_complete_transform(con)
        con.close()
        return
    with pytest.raises(IncompleteTransformError) as caught:
        require_complete_transform(con)
    con.close()
    message = str(caught.value)
    transforms = [(s, r) for stage, s, r in ids if stage == "transform"]
    assert f"transform run {transforms[-1][1]} " in message
    assert refused in message
    earlier = [r for s, r in transforms if s == "success"]
    if earlier:
        assert f"still those from transform run {earlier[-1]}" in message
    assert "Re-run 'cartfhir transform'" in message
