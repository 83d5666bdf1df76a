"""The run manifest: one ``meta.runs`` row per command, written at start and end.

A run that dies mid-way keeps status ``running`` with no ``finished`` time,
which is the honest record of what happened.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import duckdb

from cartfhir import __version__
from cartfhir.db import apply_ddl
from cartfhir.errors import CartfhirError

RunStatus = Literal["running", "success", "partial", "failed"]


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@dataclass
class Run:
    """A handle on the run row; ``finish`` closes it."""

    con: duckdb.DuckDBPyConnection
    run_id: str
    command: str
    counts: dict[str, Any] = field(default_factory=dict)

    def finish(self, status: RunStatus, message: str | None = None) -> None:
        self.con.execute(
            "UPDATE meta.runs SET finished = ?, status = ?, counts = ?, message = ? "
            "WHERE run_id = ?",
            [datetime.now(UTC), status, json.dumps(self.counts, sort_keys=True), message,
             self.run_id],
        )


@contextmanager
def failed_on_error(run: Run) -> Iterator[Run]:
    """Finish ``run`` as failed, with the reason, when the block raises; then re-raise.

    Stages close their own run on success (with their counts and status); this is
    the one place that records how a run ended when it did not get that far.
    """
    try:
        yield run
    except CartfhirError as exc:
        run.finish("failed", str(exc))
        raise
    except BaseException as exc:
        run.finish("failed", f"{type(exc).__name__}: {exc}")
        raise


def start_run(con: duckdb.DuckDBPyConnection, command: str, config_hash: str | None) -> Run:
    apply_ddl(con, "cartfhir.sql", "meta_runs")
    run_id = new_run_id()
    con.execute(
        "INSERT INTO meta.runs (run_id, started, status, command, config_hash, tool_version) "
        "VALUES (?, ?, 'running', ?, ?, ?)",
        [run_id, datetime.now(UTC), command, config_hash, __version__],
    )
    return Run(con=con, run_id=run_id, command=command)
