"""The store: one DuckDB file, how to open it, and the run record of each stage.

Every stage used to repeat connect -> start_run -> failed_on_error -> finish and to
take the whole ``Config`` for two of its fields. A ``Store`` owns those: a stage takes
the store and its own config section, so ``validate`` and ``analyze`` work on a
pooled database that no site config describes (as Pathling's context object:
read -> view -> write through one handle).

    store = Store.of(config)                  # or Store(Path("pooled.duckdb"))
    with store.run("analyze", stage="analyze") as run:
        run.con.execute(...)
        run.finish("success")                 # or left open: success when the block ends
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from cartfhir.db import connect
from cartfhir.errors import DatabaseError
from cartfhir.logs import stage_events
from cartfhir.runs import Run, Stage, failed_on_error, start_run

if TYPE_CHECKING:
    from cartfhir.config import Config


@dataclass(frozen=True)
class Store:
    """A DuckDB file with the memory limit to open it with and the config it was built by."""

    path: Path
    memory_limit: str | None = None
    config_hash: str | None = None

    @classmethod
    def of(cls, config: Config) -> Store:
        """The store a site config writes to."""
        return cls(Path(config.output.duckdb), config.output.memory_limit, config.config_hash)

    @classmethod
    def scratch(cls, memory_limit: str | None = None) -> Store:
        """An in-memory database (nothing on disk), e.g. for reading Parquet files."""
        return cls(Path(":memory:"), memory_limit)

    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """A connection with the store's memory limit; the caller closes it."""
        return connect(self.path, read_only=read_only, memory_limit=self.memory_limit)

    @contextmanager
    def session(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for the block, closed when it ends (however it ends)."""
        con = self.connect(read_only=read_only)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def run(self, command: str, *, stage: Stage | None = None) -> Iterator[Run]:
        """A recorded run on a write connection, for the block.

        The block may close the run itself (``run.finish(status, message)``) when its
        status depends on what it found; a block that ends without doing so succeeded.
        A block that raises leaves the run ``failed`` with the reason, or
        ``interrupted`` on Ctrl-C (``runs.failed_on_error``). A database the run
        record cannot be written to is a ``DatabaseError`` before the block runs.
        The run's start and end are logged as ``stage.start``/``stage.finish`` events
        with its id, status, counts and duration (``logs.stage_events``).
        """
        with self.session() as con:
            try:
                run = start_run(con, command, self.config_hash, stage=stage)
            except duckdb.Error as exc:
                raise DatabaseError(f"cannot prepare database {self.path}: {exc}") from exc
            with stage_events(stage or command, command, run.run_id,
                              db=str(self.path)) as outcome, failed_on_error(run):
                try:
                    yield run
                    if run.status is None:
                        run.finish("success")
                finally:
                    outcome.status, outcome.counts = run.status, run.counts


__all__ = ["Store"]
