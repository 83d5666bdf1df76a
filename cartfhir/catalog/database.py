"""What a DuckDB database actually holds, beside what the catalog says it should."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import duckdb

from cartfhir.catalog.sidecars import TYPE_NAMES
from cartfhir.catalog.tables import Column, Table, _layer


def database_columns(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, str]]]:
    """Every table of the database: (column, DuckDB type) in column order."""
    rows = con.execute(
        "SELECT table_schema || '.' || table_name, column_name, data_type "
        "FROM information_schema.columns WHERE table_catalog = current_database() "
        "ORDER BY table_schema, table_name, ordinal_position").fetchall()
    found: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        found.setdefault(table, []).append((column, kind))
    return found


def add_database_tables(tables: list[Table], db: Path) -> list[Table]:
    """The catalog plus every table the database ``db`` holds that it does not document.

    Such tables (views.* written by 'cartfhir view', tables made by hand) get their DuckDB
    types and no descriptions. A database that does not exist yet adds nothing.
    """
    if not Path(db).exists():
        return tables
    from cartfhir.db import connect

    con = connect(Path(db), read_only=True)
    try:
        found = database_columns(con)
    finally:
        con.close()
    known = {t.full_name for t in tables}
    extra = [replace(Table(*name.split(".", 1), "", "Not in the catalog (not made by "
                           "cartfhir's stages)."),
                     columns=[Column(c, TYPE_NAMES.get(k, k.lower()), "") for c, k in columns])
             for name, columns in found.items() if name not in known]
    return sorted(tables + extra, key=_layer)


__all__ = ["add_database_tables", "database_columns"]
