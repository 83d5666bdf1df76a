"""What the report says about the data behind it: run ids, validation, data quality.

Read from the database: meta.runs (the transform run the cohort comes from, the latest
validation and its outcome), qa.validation_result (that validation's expectations),
and per site the lines rejected on landing (raw.rejected), the records quarantined
(qa.quarantine) and the codes left unmapped (qa.unmapped_codes). A pooled database
has no raw.* (and may lack others): a missing table is reported as such, not as zero.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from cartfhir.analyze.report_tables import Table

ABSENT = "not in this database"


def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    schema, name = table.split(".", 1)
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? "
        "AND table_name = ?", [schema, name]).fetchone()[0])


def _latest_run(con: duckdb.DuckDBPyConnection, stage: str) -> tuple | None:
    if not _exists(con, "meta.runs"):
        return None
    return con.execute("SELECT run_id, status, finished FROM meta.runs WHERE stage = ? "
                       "ORDER BY started DESC LIMIT 1", [stage]).fetchone()


def runs(con: duckdb.DuckDBPyConnection, analysis_run_id: str) -> Table:
    """This analysis run, the transform run it read, and the latest validation's outcome."""
    rows = [["analysis", analysis_run_id, "running (this report)", ""]]
    for stage in ("transform", "validate"):
        run = _latest_run(con, stage)
        if run is None:
            rows.append([stage, "–", "no run recorded", ""])
            continue
        run_id, status, _ = run
        detail = ""
        if stage == "validate" and _exists(con, "qa.validation_result"):
            total, failed_error, failed_warn = con.execute(
                "SELECT count(*), count(*) FILTER (WHERE NOT success AND severity = 'error'), "
                "count(*) FILTER (WHERE NOT success AND severity <> 'error') "
                "FROM qa.validation_result WHERE run_id = ?", [run_id]).fetchone()
            detail = (f"{total} expectations: {total - failed_error - failed_warn} passed, "
                      f"{failed_error} failed (error), {failed_warn} failed (warning)")
        rows.append([stage, run_id, status, detail])
    return Table("runs", "Runs and validation",
                 pd.DataFrame(rows, columns=["stage", "run id", "status", "detail"]))


QUALITY_SQL = {  # column -> (table, per-site count)
    "lines rejected on landing": ("raw.rejected", "count(*)"),
    "records quarantined": ("qa.quarantine", "count(*)"),
    "unmapped codes": ("qa.unmapped_codes", "count(*)"),
    "records with unmapped codes": ("qa.unmapped_codes", "sum(count)"),
}


def data_quality(con: duckdb.DuckDBPyConnection, sites: list[str]) -> Table:
    """Per site: rejected lines, quarantined records and unmapped codes (or ABSENT)."""
    columns: dict[str, dict[str, object]] = {}
    found = set(sites)
    for column, (table, count) in QUALITY_SQL.items():
        if not _exists(con, table):
            columns[column] = {}
            continue
        columns[column] = dict(con.execute(
            f"SELECT site, {count} FROM {table} GROUP BY site").fetchall())
        found |= set(columns[column])
    rows = []
    for site in sorted(found):
        row: list[object] = [site]
        for column, (table, _) in QUALITY_SQL.items():
            row.append(int(columns[column].get(site) or 0) if _exists(con, table) else ABSENT)
        rows.append(row)
    return Table("data_quality", "Data quality by site",
                 pd.DataFrame(rows, columns=["site", *QUALITY_SQL]))
