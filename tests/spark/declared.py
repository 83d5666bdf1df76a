"""Spark DDL for the tables a test moves from DuckDB: an empty table has no Parquet file
for Spark to take its columns from, so they are declared."""

from __future__ import annotations

import duckdb

_SPARK_TYPES = {"VARCHAR": "STRING", "JSON": "STRING", "INTEGER": "INT", "BIGINT": "BIGINT",
                "DOUBLE": "DOUBLE", "BOOLEAN": "BOOLEAN", "DATE": "DATE",
                "TIMESTAMP WITH TIME ZONE": "TIMESTAMP"}


def spark_columns(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """The column list of a DuckDB table in Spark's DDL."""
    columns = []
    for name, kind in con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {table})"
                                  ).fetchall():
        spark = (f"ARRAY<{_SPARK_TYPES[kind[:-2]]}>" if kind.endswith("[]")
                 else _SPARK_TYPES[kind])
        columns.append(f"`{name}` {spark}")
    return f"({', '.join(columns)})"


def empty_tables(con: duckdb.DuckDBPyConnection, tables: list[str]) -> dict[str, str]:
    """The Spark column list of each of ``tables`` that has no rows (so no Parquet file)."""
    return {t: spark_columns(con, t) for t in tables
            if con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == 0}
