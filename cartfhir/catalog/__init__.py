"""Every DuckDB table cartfhir writes, with its grain and column descriptions.

The tables are the entries of ``cartfhir/build.yaml``; each is described once, in its
sidecar (``sidecars``). ``tables`` turns them into the catalog, ``database`` compares it
with a real database, ``render`` makes ``cartfhir schema`` and ``docs/data-dictionary.md``.
"""

from __future__ import annotations

from cartfhir.catalog.database import add_database_tables, database_columns
from cartfhir.catalog.render import LAYER_NOTES, as_json, column_rows, render_markdown
from cartfhir.catalog.sidecars import (
    DUCKDB_TYPES,
    Sidecar,
    load_sidecars,
    parse_sidecar,
    table_columns,
    table_ddl,
)
from cartfhir.catalog.tables import LAYERS, Column, Table, find_table, load_catalog

__all__ = ["DUCKDB_TYPES", "LAYERS", "LAYER_NOTES", "Column", "Sidecar", "Table",
           "add_database_tables", "as_json", "column_rows", "database_columns", "find_table",
           "load_catalog", "load_sidecars", "parse_sidecar", "render_markdown",
           "table_columns", "table_ddl"]
