"""The Parquet table store: one folder per table, partitioned by site, read by any engine.

Layout (the same for a Spark transform's tables and for a pooled store)::

    <root>/<schema>.<table>/site=<site id>/part-*.parquet   tables with a site column
    <root>/<schema>.<table>/part-*.parquet                  ref.* and tables without one

The partition folders hold every column but ``site`` (the folder names it, Hive-style).
``register_parquet_tables`` makes a DuckDB store read such a folder: one view per table,
named as the table, with the columns in the sidecar's order and types, so validate,
analyze, export-site and pool run on it unchanged. ``write_layout`` writes DuckDB tables
in the layout. Table names come only from the build graph; every path is checked to stay
inside its root.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import duckdb

from cartfhir.db import quote_name, quoted
from cartfhir.errors import TransformError
from cartfhir.graph import Graph, Node, load_graph, read_text

# The stages whose tables a Spark transform writes to the table store. meta.reference_version
# is a history appended to by every run, so it stays a table of the store.
STORE_STAGES = ("ref", "flat", "identity", "harmonized", "cohort", "qa")
KEPT_IN_STORE = ("meta.reference_version",)
PARTITION = "site"


def store_tables(graph: Graph | None = None) -> list[Node]:
    """The graph's tables a Spark transform writes as Parquet, in build order."""
    graph = graph or load_graph()
    return [node for stage in STORE_STAGES for node in graph.stage(stage)
            if node.table not in KEPT_IN_STORE]


def node_columns(node: Node) -> list[tuple[str, str]]:
    """(column, DuckDB type) of a graph table, in order: its sidecar's, or for a view the
    leading ``site`` and the ViewDefinition's columns as the SQL-on-FHIR engine types them."""
    if node.kind == "view":
        from cartfhir.transform.sof import compile_view

        view = json.loads(read_text(node.path))
        return [(PARTITION, "VARCHAR"),
                *((c.name, c.duckdb_type) for c in compile_view(view).columns)]
    from cartfhir.catalog.sidecars import table_columns

    return table_columns(node.table)


def partitioned(table: str, columns: Iterable[str]) -> bool:
    """Whether ``table`` is stored in site partitions: it has a site column and is not
    study knowledge (ref.*, where site may be empty: a default for every site)."""
    return PARTITION in columns and not table.startswith("ref.")


def table_folder(root: Path, table: str) -> Path:
    """``root/<table>``, refused unless it is a real folder name directly inside ``root``."""
    root = Path(root).absolute()
    folder = root / table
    if (not table or "/" in table or "\\" in table or table in (".", "..")
            or table.startswith(".") or folder.parent != root):
        raise TransformError(f"{table!r} is not a table name the store can hold")
    if folder.is_symlink():
        raise TransformError(f"{folder} is a symbolic link; the table store follows none")
    return folder


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _parquet_files(folder: Path, split: bool) -> str | None:
    """The glob of the table's files, or None when the folder holds none (an empty table)."""
    pattern = f"{PARTITION}=*/*.parquet" if split else "*.parquet"
    if not any(p.is_file() and not p.is_symlink() for p in folder.glob(pattern)):
        return None
    return str(folder / pattern)


def view_sql(node: Node, root: Path) -> str:
    """The SELECT of the DuckDB view that reads ``node``'s folder under ``root``."""
    columns = node_columns(node)
    folder = table_folder(root, node.table)
    if not folder.is_dir():
        raise TransformError(f"{folder} is missing: the table store {root} has no "
                             f"{node.table}; run 'cartfhir transform --engine spark' again")
    split = partitioned(node.table, (c for c, _ in columns))
    files = _parquet_files(folder, split)
    select = ", ".join(f"CAST({quote_name(c)} AS {kind}) AS {quote_name(c)}"
                       if files else f"CAST(NULL AS {kind}) AS {quote_name(c)}"
                       for c, kind in columns)
    if files is None:
        return f"SELECT {select} LIMIT 0"
    options = ("hive_partitioning = true, hive_types = {'site': VARCHAR}" if split
               else "hive_partitioning = false")
    return f"SELECT {select} FROM read_parquet({_literal(files)}, {options})"


def _kind(con: duckdb.DuckDBPyConnection, table: str) -> str | None:
    schema, name = table.split(".")
    found = con.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_schema = ? AND "
        "table_name = ?", [schema, name]).fetchone()
    return None if found is None else ("VIEW" if found[0] == "VIEW" else "TABLE")


def drop_table_or_view(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Drop ``table`` whichever it is (DuckDB's DROP TABLE refuses a view and v.v.)."""
    kind = _kind(con, table)
    if kind is not None:
        con.execute(f"DROP {kind} {quoted(table)}")


def register_parquet_tables(con: duckdb.DuckDBPyConnection, tables_dir: Path,
                            graph: Graph | None = None) -> list[str]:
    """Point the store at the table store ``tables_dir``: one view per table, replacing a
    table or view of that name; return the tables. Run it inside the caller's transaction
    (the Spark transform commits the views with its run record)."""
    root = Path(tables_dir).absolute()
    nodes = store_tables(graph)
    statements = [(node, view_sql(node, root)) for node in nodes]  # every check first
    for node, sql in statements:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_name(node.schema)}")
        drop_table_or_view(con, node.table)
        con.execute(f"CREATE VIEW {quoted(node.table)} AS {sql}")
    return [node.table for node in nodes]


def write_layout(con: duckdb.DuckDBPyConnection, tables: Iterable[str],
                 out_dir: Path) -> dict[str, int]:
    """Write each of ``tables`` (graph tables in ``con``) to ``out_dir`` in the layout;
    return the rows of each. A table's folder must not exist yet (nothing is overwritten)."""
    known = set(load_graph().tables)
    root = Path(out_dir).absolute()
    rows: dict[str, int] = {}
    for table in tables:
        if table not in known:
            raise TransformError(f"{table!r} is not a table of cartfhir/build.yaml")
        folder = table_folder(root, table)
        if folder.exists():
            raise TransformError(f"{folder} already exists; the table store writes a table "
                                 "into a new folder only")
        schema, name = table.split(".")
        columns = [r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND "
            "table_name = ? ORDER BY ordinal_position", [schema, name]).fetchall()]
        if not columns:
            raise TransformError(f"{table} does not exist in the database to be written")
        folder.mkdir(parents=True)
        source = f"SELECT * FROM {quoted(table)}"
        if partitioned(table, columns):
            target = _literal(str(folder))
            options = (f"FORMAT parquet, PARTITION_BY ({quote_name(PARTITION)}), "
                       "FILENAME_PATTERN 'part-{i}'")
        else:
            target = _literal(str(folder / "part-0.parquet"))
            options = "FORMAT parquet"
        rows[table] = con.execute(f"COPY ({source}) TO {target} ({options})").fetchone()[0]
    return rows


__all__ = ["STORE_STAGES", "drop_table_or_view", "node_columns", "partitioned",
           "register_parquet_tables", "store_tables", "table_folder", "view_sql",
           "write_layout"]
