"""What a test compares before and after a stage: the transformed tables of a database
and its recorded runs."""

from __future__ import annotations

from pathlib import Path

import duckdb

TRANSFORMED = ("flat", "harmonized", "cohort", "qa", "ref")


def fingerprint(db: Path) -> dict[str, tuple]:
    """Per transformed table: its columns and types, row count and an order-free content hash."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            f"WHERE table_schema IN {TRANSFORMED} OR (table_schema, table_name) IN "
            "(('raw', 'patient_key'), ('meta', 'reference_version')) ORDER BY ALL").fetchall()
        prints = {}
        for schema, table in tables:
            name = f'"{schema}"."{table}"'
            columns = con.execute(f"DESCRIBE {name}").fetchall()
            rows, content = con.execute(
                f"SELECT count(*), sum(hash(t)::HUGEINT) FROM {name} AS t").fetchone()
            prints[f"{schema}.{table}"] = (tuple(c[:2] for c in columns), rows, content)
        return prints
    finally:
        con.close()


def runs(db: Path) -> list[tuple]:
    """meta.runs oldest first: (run_id, stage, status, message)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT run_id, stage, status, message FROM meta.runs "
                           "ORDER BY started").fetchall()
    finally:
        con.close()
