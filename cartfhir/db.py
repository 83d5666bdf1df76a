"""Opening the output DuckDB file and creating the tables a stage owns.

DDL lives in ``.sql`` files next to the code that owns the table; ``apply_ddl``
runs them. Every statement is idempotent (``CREATE ... IF NOT EXISTS``) so any
stage can be run first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from cartfhir.errors import DatabaseError


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


def connect(path: Path, read_only: bool = False,
            memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """Open the DuckDB file, with errors that say what to do.

    ``memory_limit`` caps DuckDB's buffer pool (its default is 80 % of RAM,
    which lets a large load grow the process far beyond what it needs).
    """
    path = Path(path)
    if read_only and not path.exists():
        raise DatabaseError(
            f"database {path} does not exist yet; run 'cartfhir run' or 'cartfhir extract' first"
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        settings = {"memory_limit": memory_limit} if memory_limit else {}
        return duckdb.connect(str(path), read_only=read_only, config=settings)
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            raise DatabaseError(
                f"database {path} is in use by another process (DuckDB allows one writer); "
                "wait for it to finish or close the other connection"
            ) from None
        raise DatabaseError(f"cannot open database {path}: {text}") from None
    except duckdb.Error as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from None


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
