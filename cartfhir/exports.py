"""Tables and query results to Parquet or CSV files that any engine can read directly.

``export_tables`` writes chosen tables to ``<out>/<schema>/<table>/``, split by site
into hive-style ``site=<id>/`` folders (a table without a ``site`` column is one file);
``write_query`` writes one query's rows to a file. Both read the store on a read-only
connection (with its memory limit), refuse to overwrite unless told to, and return
what they wrote.
"""

from __future__ import annotations

import fnmatch
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from cartfhir.db import quote_name
from cartfhir.errors import DatabaseError, StaleResultError, UsageError
from cartfhir.render import render_rows
from cartfhir.runs import latest_success, require_complete_transform, transform_since
from cartfhir.store import Store

DEFAULT_TABLES = ("cohort.*", "analysis.*")
TABLE_FORMATS = ("parquet", "csv")
QUERY_FORMATS = ("parquet", "csv", "json")
PARTITION_COLUMN = "site"
ANALYSIS_SCHEMA = "analysis"


@dataclass(frozen=True)
class ExportedFile:
    """One file written: the table it holds (part of), its site partition, and its rows."""

    table: str
    path: Path
    rows: int
    site: str | None = None


@dataclass
class ExportResult:
    """What ``export_tables`` wrote: rows per table and every file."""

    out: Path
    format: str
    tables: dict[str, int] = field(default_factory=dict)
    files: list[ExportedFile] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


def _quote_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _copy_options(fmt: str, partition: bool = False) -> str:
    options = ["FORMAT parquet"] if fmt == "parquet" else ["FORMAT csv", "HEADER true"]
    if partition:
        options.append(f"PARTITION_BY ({PARTITION_COLUMN})")
    return ", ".join(options)


def database_tables(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Every table of the database as 'schema.table' -> its columns, in order."""
    tables: dict[str, list[str]] = {}
    for table, column in con.execute(
            "SELECT table_schema || '.' || table_name, column_name "
            "FROM information_schema.columns WHERE table_catalog = current_database() "
            "ORDER BY table_schema, table_name, ordinal_position").fetchall():
        tables.setdefault(table, []).append(column)
    return tables


def select_tables(available: list[str], patterns: list[str]) -> list[str]:
    """The tables matching any of the glob patterns ('cohort.*'); each pattern must match."""
    chosen = []
    for pattern in patterns:
        matched = [t for t in sorted(available) if fnmatch.fnmatchcase(t, pattern)]
        if not matched:
            schemas = sorted({t.split(".", 1)[0] for t in available})
            raise UsageError(f"--tables: {pattern!r} matches no table in the database (its "
                             f"schemas: {', '.join(schemas) or 'none'}); 'cartfhir schema' "
                             "lists the tables, and the stage that builds one must run first")
        chosen += [t for t in matched if t not in chosen]
    return chosen


def _check_out_folder(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; --out must name a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"{out} is not empty; choose another folder, or pass --force to "
                         "replace the exported tables in it")


def _file_rows(con: duckdb.DuckDBPyConnection, folder: Path, fmt: str) -> dict[Path, int]:
    """Rows per written file, read back from the files themselves."""
    pattern = _quote_path(folder / "**" / f"*.{fmt}")
    if fmt == "parquet":
        sql = f"SELECT file_name, num_rows FROM parquet_file_metadata({pattern})"
    else:
        sql = (f"SELECT filename, count(*) FROM read_csv({pattern}, filename = true, "
               "hive_partitioning = false, all_varchar = true) GROUP BY ALL")
    counts = {Path(name).absolute(): int(n) for name, n in con.execute(sql).fetchall()}
    for path in folder.rglob(f"*.{fmt}"):  # a CSV holding only its header has no rows
        counts.setdefault(path, 0)
    return counts


def _site_of(path: Path, folder: Path) -> str | None:
    for part in path.relative_to(folder).parts[:-1]:
        if part.startswith(f"{PARTITION_COLUMN}="):
            return part.split("=", 1)[1]
    return None


def _require_current_analysis(con: duckdb.DuckDBPyConnection, chosen: list[str]) -> None:
    """Refuse analysis tables computed before the latest successful transform.

    They were computed from cohort tables that transform has since replaced, so written
    beside the new cohort tables they would disagree without saying so.
    """
    analysis = [t for t in chosen if t.startswith(f"{ANALYSIS_SCHEMA}.")]
    if not analysis:
        return
    analyzed = latest_success(con, "analyze")
    since = transform_since(con, analyzed)
    if since is not None:
        made = f"analyze run {analyzed}" if analyzed else "no recorded analyze run"
        raise StaleResultError(f"{', '.join(analysis)} are from {made}, older than transform run "
                         f"{since}; run 'cartfhir analyze' first, or leave them out "
                         "(--tables 'cohort.*')")


def export_tables(store: Store, out: Path, fmt: str = "parquet",
                  patterns: list[str] | tuple[str, ...] = DEFAULT_TABLES, *,
                  force: bool = False) -> ExportResult:
    """Write each chosen table to ``out/<schema>/<table>/``, by site where it has a site column.

    Refuses a non-empty ``out`` unless ``force``; then only the folders of the tables
    being written are replaced, nothing else in ``out``.
    """
    if fmt not in TABLE_FORMATS:
        raise UsageError(f"format must be one of {', '.join(TABLE_FORMATS)}, not {fmt!r}")
    out = Path(out).absolute()
    _check_out_folder(out, force)
    with store.session(read_only=True) as con:
        require_complete_transform(con)
        available = database_tables(con)
        chosen = select_tables(list(available), list(patterns))
        _require_current_analysis(con, chosen)
        result = ExportResult(out=out, format=fmt)
        for table in chosen:
            schema, name = table.split(".", 1)
            folder = out / schema / name
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            partition = PARTITION_COLUMN in available[table]
            target = folder if partition else folder / f"{name}.{fmt}"
            try:
                written = con.execute(
                    f"COPY (SELECT * FROM {quote_name(schema)}.{quote_name(name)}) TO "
                    f"{_quote_path(target)} ({_copy_options(fmt, partition)})").fetchone()[0]
            except duckdb.Error as exc:
                raise DatabaseError(f"exporting {table} to {folder} failed: {exc}") from None
            result.tables[table] = int(written)
            result.files += [ExportedFile(table, path, rows, _site_of(path, folder))
                             for path, rows in sorted(_file_rows(con, folder, fmt).items())]
        return result


def one_statement(sql: str) -> str:
    """``sql`` when it is one statement; a usage error naming how many it holds otherwise.

    DuckDB's own parser counts them (a ';' inside a string or a comment is no boundary);
    run one by one, all but the last statement's rows would be lost without a word. SQL
    the parser rejects is returned as it is, for the query to report the error with its
    position.
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error:
        return sql
    if len(statements) != 1:
        raise UsageError(f"query takes one SQL statement; got {len(statements)}"
                         + ("; run them one at a time" if statements else ""))
    return sql


def write_query(store: Store, sql: str, out: Path, fmt: str) -> ExportedFile:
    """Write the rows of one query to ``out`` as Parquet, CSV or JSON; return rows written.

    CSV and JSON look exactly like ``cartfhir query``'s stdout (values converted by their
    DuckDB type: ``cartfhir.render.json_value``); Parquet keeps DuckDB's types.
    """
    if fmt not in QUERY_FORMATS:
        raise UsageError(f"--out writes {', '.join(QUERY_FORMATS)}, not {fmt!r}")
    if out.is_dir():
        raise UsageError(f"{out} is a folder; --out must name a file")
    sql = one_statement(sql)
    con = store.connect(read_only=True)  # a missing database is refused before --out is made
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            select = sql.strip().rstrip(";")
            rows = con.execute(f"COPY ({select}\n) TO {_quote_path(out)} "
                               f"({_copy_options(fmt)})").fetchone()[0]
        else:
            con.execute(sql)
            description = con.description or []
            columns = [d[0] for d in description]
            with out.open("w", encoding="utf-8", newline="") as fh:
                rows = render_rows(columns, _stream(con), fmt=fmt, out=fh,  # type: ignore[arg-type]
                                   types=[d[1] for d in description])
    except duckdb.Error as exc:
        raise DatabaseError(f"query failed on {store.path}: {exc}") from None
    finally:
        con.close()
    return ExportedFile("query", out, int(rows))


def _stream(con: duckdb.DuckDBPyConnection, batch: int = 10_000):
    while chunk := con.fetchmany(batch):
        yield from chunk


__all__ = ["DEFAULT_TABLES", "ExportResult", "ExportedFile", "database_tables", "export_tables",
           "one_statement", "select_tables", "write_query"]
