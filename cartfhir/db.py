"""Opening the output DuckDB file and creating the tables a stage owns.

DDL lives in ``.sql`` files next to the code that owns the table; ``apply_ddl``
runs them. Every statement is idempotent (``CREATE ... IF NOT EXISTS``) so any
stage can be run first.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from cartfhir.errors import DatabaseBusyError, DatabaseError

log = logging.getLogger(__name__)


def quote_name(name: str) -> str:
    """One SQL identifier (a column, a schema or a table name) in double quotes.

    Every identifier cartfhir puts into SQL comes from its own lists (the graph, the
    sidecars, a ViewDefinition it validated) and still goes through here, so a name can
    never end the identifier early.
    """
    return '"' + name.replace('"', '""') + '"'


def quoted(name: str) -> str:
    """A ``schema.table`` name (or a plain one) quoted part by part."""
    return ".".join(quote_name(part) for part in name.split("."))


def set_lock_wait(seconds: float) -> None:
    """How long ``connect`` waits for another process's lock when not told (``--wait``)."""
    _lock_wait["seconds"] = max(0.0, float(seconds))


_lock_wait = {"seconds": 0.0}
# DuckDB names the process holding the file: 'Conflicting lock is held in <program> (PID n)'.
_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")
_RETRY_EVERY = 0.25  # seconds between attempts while waiting for a lock


def lock_holder(message: str) -> str | None:
    """'<program> (PID n)' from DuckDB's lock error, or None when it does not say."""
    match = _HOLDER.search(message)
    return None if match is None else f"{match['program']} (PID {match['pid']})"


def connect(path: Path, read_only: bool = False, memory_limit: str | None = None,
            wait: float | None = None) -> duckdb.DuckDBPyConnection:
    """Open the DuckDB file, with errors that say what to do.

    ``memory_limit`` caps DuckDB's buffer pool (its default is 80 % of RAM,
    which lets a large load grow the process far beyond what it needs). ``wait``
    (default: ``set_lock_wait``, the CLI's ``--wait``) is how many seconds to keep
    retrying while another process holds the file's lock, e.g. an analyst's open
    session when the nightly run starts.
    """
    path = Path(path)
    if read_only and not path.exists():
        raise DatabaseError(
            f"database {path} does not exist yet; run 'cartfhir run' or 'cartfhir extract' first"
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    wait = _lock_wait["seconds"] if wait is None else max(0.0, wait)
    deadline = time.monotonic() + wait
    logged = False
    settings = {"memory_limit": memory_limit} if memory_limit else {}
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only, config=settings)
            # UTC whatever the host's zone: a date-only FHIR value is midnight UTC, as on
            # Spark (cartfhir.spark.session fixes the same). Set once connected: the
            # setting needs the ICU extension, which a connect-time setting cannot load.
            con.execute("SET TimeZone = 'UTC'")
            return con
        except duckdb.IOException as exc:
            text = str(exc)
            if "lock" not in text.lower():
                raise DatabaseError(f"cannot open database {path}: {text}") from None
            holder = lock_holder(text)
            if time.monotonic() + _RETRY_EVERY > deadline:
                raise _locked(path, holder, wait) from None
            if not logged:
                log.info("waiting for the lock on %s held by %s (up to %.0f s)", path,
                         holder or "another process", wait,
                         extra={"event": "db.lock_wait", "path": str(path),
                                "holder": holder, "wait_s": wait})
                logged = True
            time.sleep(_RETRY_EVERY)
        except duckdb.Error as exc:
            raise DatabaseError(f"cannot open database {path}: {exc}") from None


def _locked(path: Path, holder: str | None, waited: float) -> DatabaseBusyError:
    who = f"held by {holder}" if holder else "in use by another process"
    after = f" after waiting {waited:g} s" if waited else ""
    return DatabaseBusyError(
        f"database {path} is {who}{after} (DuckDB allows one writer, and no writer while "
        "another process has it open); close that session (or let it finish) and run "
        "again, or give --wait SECONDS to wait for it")


def apply_ddl(con: duckdb.DuckDBPyConnection, package: str, *names: str) -> None:
    """Run the DDL files ``names`` (stems) found in ``package`` (e.g. 'cartfhir.sql')."""
    folder = resources.files(package)
    for name in names:
        sql = folder.joinpath(f"{name}.sql").read_text(encoding="utf-8")
        con.execute(sql)


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, frame: Any) -> Iterator[str]:
    """Make a DataFrame visible to SQL as ``name`` for the block, and only for it.

    Set-based inserts from Python go through here instead of row-by-row executemany.
    """
    con.register(name, frame)
    try:
        yield name
    finally:
        con.unregister(name)


def write_frame(con: duckdb.DuckDBPyConnection, table: str, frame: Any) -> int:
    """CREATE OR REPLACE ``table`` with the rows of ``frame``; return how many."""
    with registered(con, "_write_frame", frame):
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _write_frame")
    return len(frame)
