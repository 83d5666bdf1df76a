"""The project's ViewDefinitions (``views/*.json``) materialized as ``flat.*`` tables.

Each view compiles to one set-based DuckDB query over ``raw.resources`` (see
``cartfhir.transform.sof``); the table name is the view's ``name``. The same code
runs any analyst's ViewDefinition (``cartfhir view FILE.json``).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from cartfhir.db import connect
from cartfhir.errors import TransformError
from cartfhir.render import file_format
from cartfhir.transform.sof import ERROR_MARK, compile_view

PACKAGE = "cartfhir.transform"
RAW = "raw.resources"


def project_views() -> list[dict[str, Any]]:
    """The package's ViewDefinitions, in file-name order."""
    folder = resources.files(PACKAGE).joinpath("views")
    return [json.loads(f.read_text(encoding="utf-8"))
            for f in sorted(folder.iterdir(), key=lambda f: f.name) if f.name.endswith(".json")]


def read_view(path: Path) -> dict[str, Any]:
    try:
        view = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TransformError(f"cannot read view {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise TransformError(f"view {path} is not valid JSON: {exc}") from None
    if not isinstance(view, dict) or view.get("resourceType") != "ViewDefinition":
        raise TransformError(f"{path} is not a ViewDefinition (resourceType must be "
                             "'ViewDefinition')")
    return view


def materialize(con: duckdb.DuckDBPyConnection, view: dict[str, Any], table: str,
                source: str = RAW) -> tuple[int, float]:
    """CREATE OR REPLACE ``table`` from ``view`` (with a leading ``site`` column); rows, seconds."""
    started = time.perf_counter()
    compiled = compile_view(view, source, passthrough=("site",))
    try:
        con.execute(f"CREATE OR REPLACE TABLE {table} AS\n{compiled.sql}")
    except duckdb.Error as exc:
        message = str(exc)
        if ERROR_MARK in message:
            message = message.split(ERROR_MARK, 1)[1].splitlines()[0]
        raise TransformError(f"view {view.get('name', '?')} -> {table} failed: {message}") \
            from None
    rows = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return rows, time.perf_counter() - started


def require_raw(con: duckdb.DuckDBPyConnection) -> None:
    """The project views read raw.resources; without it there is nothing to transform."""
    if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw' "
                       "AND table_name = 'resources'").fetchone()[0]:
        raise TransformError("raw.resources does not exist: run 'cartfhir extract' first")


@dataclass(frozen=True)
class ViewResult:
    """Where a user view's rows went and how many there were."""

    rows: int
    columns: list[str]
    target: str  # a table name or a file path
    seconds: float


_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")


def run_view_file(db: Path, view_file: Path, *, out: Path | None = None,
                  table: str | None = None, memory_limit: str | None = None) -> ViewResult:
    """Run ``view_file`` over ``db``'s raw.resources into ``out`` (.parquet/.csv) or a table.

    Without ``out`` the rows go to the table ``table`` (default ``views.<view name>``).
    """
    view = read_view(view_file)
    started = time.perf_counter()
    if out is not None and table is not None:
        raise TransformError("give either an output file or a table, not both")
    if out is not None:
        fmt = file_format(out, ("parquet", "csv"))  # the rule 'query --out' follows
        compiled = compile_view(view, RAW, passthrough=("site",))
        con = connect(db, read_only=True, memory_limit=memory_limit)
        try:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            options = "FORMAT parquet" if fmt == "parquet" else "FORMAT csv, HEADER true"
            quoted = str(out).replace("'", "''")
            try:
                # COPY answers with the rows it wrote: the view runs once, not twice.
                rows = con.execute(f"COPY ({compiled.sql}) TO '{quoted}' ({options})"
                                   ).fetchone()[0]
            except duckdb.Error as exc:
                raise TransformError(f"view {view.get('name', '?')} failed: {exc}") from None
        finally:
            con.close()
        return ViewResult(rows, ["site", *(c.name for c in compiled.columns)], str(out),
                          time.perf_counter() - started)
    name = table or f"views.{view.get('name') or Path(view_file).stem}"
    if not _TABLE_NAME.match(name):
        raise TransformError(f"table name {name!r} must look like schema.table")
    con = connect(db, memory_limit=memory_limit)
    try:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {name.split('.')[0]}")
        rows, seconds = materialize(con, view, name)
        columns = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
    finally:
        con.close()
    return ViewResult(rows, columns, name, seconds)
