"""The run manifest: one ``meta.runs`` row per command, written at start and end.

A run whose process dies keeps status ``running`` with no ``finished`` time until
the next command opens the database for writing; DuckDB allows one writer, so that
command knows the run is dead and marks it ``interrupted``. Stages that read the
transform's tables ask ``require_complete_transform`` first.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import duckdb

from cartfhir import __version__
from cartfhir.db import apply_ddl
from cartfhir.errors import CartfhirError, IncompleteTransformError
from cartfhir.redact import redact

RunStatus = Literal["running", "success", "partial", "failed", "interrupted"]
Stage = Literal["extract", "transform", "validate", "analyze"]


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@dataclass
class Run:
    """A handle on the run row; ``finish`` closes it."""

    con: duckdb.DuckDBPyConnection
    run_id: str
    command: str
    counts: dict[str, Any] = field(default_factory=dict)
    status: RunStatus | None = None  # set by finish; None while the run is open

    def finish(self, status: RunStatus, message: str | None = None) -> None:
        """Close the run row; the message is redacted (servers echo credentials in errors)."""
        self.status = status
        self.con.execute(
            "UPDATE meta.runs SET finished = ?, status = ?, counts = ?, message = ? "
            "WHERE run_id = ?",
            [datetime.now(UTC), status, json.dumps(self.counts, sort_keys=True),
             message and redact(message), self.run_id],
        )


INTERRUPTED_BY_USER = "interrupted by the user (Ctrl-C) before the run finished"


def is_interrupt(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a Ctrl-C, or was raised while handling one.

    Python raises KeyboardInterrupt, but a SIGINT that arrives inside a DuckDB statement
    comes out as ``RuntimeError('Query interrupted')`` (or ``duckdb.InterruptException``)
    with the KeyboardInterrupt swallowed; a statement run while handling it (say, in an
    aborted transaction) fails with the interrupt as its context.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt | duckdb.InterruptException) or (
                type(exc) is RuntimeError and str(exc) == "Query interrupted"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextmanager
def failed_on_error(run: Run) -> Iterator[Run]:
    """Finish ``run`` as failed (with the reason) or interrupted when the block raises.

    Stages close their own run on success (with their counts and status); this is
    the one place that records how a run ended when it did not get that far. A
    Ctrl-C is not a failure: the run is ``interrupted`` and KeyboardInterrupt goes on
    up (whatever DuckDB turned it into), so the CLI exits 130.
    """
    try:
        yield run
    except BaseException as exc:
        with suppress(duckdb.Error):  # the error that stopped the run says more than this one
            finish_after(run, exc)
        if is_interrupt(exc) and not isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt(INTERRUPTED_BY_USER) from exc
        raise


def finish_after(run: Run, exc: BaseException) -> None:
    """Record how ``run`` ended when ``exc`` stopped it: ``interrupted`` or ``failed``."""
    if is_interrupt(exc):
        run.finish("interrupted", INTERRUPTED_BY_USER)
    else:
        run.finish("failed", str(exc) if isinstance(exc, CartfhirError)
                   else f"{type(exc).__name__}: {exc}")


def start_run(con: duckdb.DuckDBPyConnection, command: str, config_hash: str | None,
              stage: Stage | None = None) -> Run:
    """Record a new run on ``con``, a write connection; first mark dead runs interrupted."""
    apply_ddl(con, "cartfhir.sql", "meta_runs")
    run_id = new_run_id()
    mark_interrupted(con, run_id)
    con.execute(
        "INSERT INTO meta.runs (run_id, started, status, command, config_hash, tool_version, "
        "stage) VALUES (?, ?, 'running', ?, ?, ?, ?)",
        [run_id, datetime.now(UTC), command, config_hash, __version__, stage],
    )
    return Run(con=con, run_id=run_id, command=command)


def mark_interrupted(con: duckdb.DuckDBPyConnection, noticed_by: str) -> list[str]:
    """Mark every run still ``running`` as ``interrupted``; return their ids.

    Only called holding the write connection: DuckDB lets one process write, and
    runs end (success, partial or failed) before their command lets go of it, so a
    ``running`` row here belongs to a process that was killed or crashed.
    """
    rows = con.execute(
        "UPDATE meta.runs SET status = 'interrupted', message = concat_ws('; ', message, "
        "'interrupted: the process ended before the run finished (killed or crashed); "
        "noticed by run ' || ?) WHERE status = 'running' RETURNING run_id",
        [noticed_by]).fetchall()
    return [r[0] for r in rows]


def require_complete_transform(con: duckdb.DuckDBPyConnection) -> None:
    """Refuse when the latest transform did not succeed: its stage's tables are stale.

    A transform is all-or-nothing, so after an interrupted or failed one the tables
    are still those of the last complete transform, consistent but older than the
    raw data; anything validated, analysed or exported from them would silently
    disagree with what was extracted. A database with no transform recorded (a
    pooled one, or one from before runs had a stage) has nothing to refuse.
    """
    try:
        latest = con.execute(
            "SELECT run_id, status, message FROM meta.runs WHERE stage = 'transform' "
            "ORDER BY started DESC LIMIT 1").fetchone()
    except (duckdb.CatalogException, duckdb.BinderException):
        return
    if latest is None or latest[1] == "success":
        return
    run_id, status, message = latest
    complete = con.execute(
        "SELECT run_id FROM meta.runs WHERE stage = 'transform' AND status = 'success' "
        "ORDER BY started DESC LIMIT 1").fetchone()
    what = (f"transform run {run_id} failed ({message})" if status == "failed" else
            f"transform run {run_id} was interrupted before it finished")
    tables = (f"the tables are still those from transform run {complete[0]}, older than the "
              "raw data" if complete else "there are no complete transform tables")
    raise IncompleteTransformError(f"{what}; {tables}. Re-run 'cartfhir transform' (or "
                                   "'cartfhir run') before validating, analysing or exporting")


def transform_since(con: duckdb.DuckDBPyConnection, run_id: str | None) -> str | None:
    """The latest successful transform run if it started after run ``run_id``, else None.

    A stage's results (a validation, the analysis tables) describe the transform tables
    as they were when its run read them; a transform since then replaced those tables,
    so the results no longer describe what would be exported beside them. A run that is
    not recorded (``run_id`` None or unknown) cannot be shown to be newer, so any
    transform counts as since; a database with no transform recorded has none.
    """
    try:
        latest = con.execute(
            "SELECT run_id, started FROM meta.runs WHERE stage = 'transform' "
            "AND status = 'success' ORDER BY started DESC LIMIT 1").fetchone()
    except (duckdb.CatalogException, duckdb.BinderException):
        return None
    if latest is None:
        return None
    seen = None if run_id is None else con.execute(
        "SELECT started FROM meta.runs WHERE run_id = ?", [run_id]).fetchone()
    return None if seen is not None and seen[0] > latest[1] else latest[0]


def latest_success(con: duckdb.DuckDBPyConnection, stage: Stage) -> str | None:
    """The id of the latest successful run of ``stage``, or None (none, or no runs table)."""
    try:
        row = con.execute("SELECT run_id FROM meta.runs WHERE stage = ? AND status = 'success' "
                          "ORDER BY started DESC LIMIT 1", [stage]).fetchone()
    except (duckdb.CatalogException, duckdb.BinderException):
        return None
    return None if row is None else row[0]
