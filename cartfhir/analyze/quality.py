"""What the report says about the data behind it: run ids, validation, data quality.

Read from the database: meta.runs (the transform run the cohort comes from, the latest
validation and its outcome), qa.validation_result (that validation's expectations),
and per site the lines rejected on landing (raw.rejected), the records quarantined
(qa.quarantine) and the codes left unmapped (qa.unmapped_codes). A pooled database
has none of those detail tables: its per-site counts come from qa.site_completeness,
which travels in each site package, and its run history from each package's manifest
(meta.pool_package). A count no table holds is reported as such, not as zero.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import duckdb
import pandas as pd

from cartfhir.analyze.report_tables import Table
from cartfhir.runs import transform_since

ABSENT = "not in this database"
THIS_RUN = "this run"  # the analysis writing the report: it finishes after the report


def when(value: object) -> str:
    """A time as the report writes every time: ``2026-02-01 10:00 UTC``.

    Times come from DuckDB (naive, in UTC) and from site manifests (ISO 8601 text in any
    offset, and hostile): text that is no time is shown as written, never guessed.
    """
    if value is None or value == "":
        return ""
    moment = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    if not isinstance(moment, datetime):
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    schema, name = table.split(".", 1)
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? "
        "AND table_name = ?", [schema, name]).fetchone()[0])


def _latest_run(con: duckdb.DuckDBPyConnection, stage: str) -> tuple | None:
    if not exists(con, "meta.runs"):
        return None
    return con.execute("SELECT run_id, status, started, finished FROM meta.runs WHERE stage = ? "
                       "ORDER BY started DESC LIMIT 1", [stage]).fetchone()


def stale_validation(con: duckdb.DuckDBPyConnection) -> str | None:
    """Why the latest validation does not describe the tables analysed, or None.

    A successful transform after the latest validation replaced the tables it checked, so
    its outcome belongs to an earlier transform (runs.transform_since decides "after").
    """
    validation = _latest_run(con, "validate")
    if validation is None:
        return None
    since = transform_since(con, validation[0])
    if since is None:
        return None
    return (f"not validated since the last transform (validation {validation[0]} at "
            f"{when(validation[2])} covered an earlier transform; the tables come "
            f"from transform {since})")


def runs(con: duckdb.DuckDBPyConnection, analysis_run_id: str) -> Table:
    """This analysis run, the latest extract (landing) and transform runs, and the latest
    validation's outcome, flagged when a later transform made it stale."""
    rows = [["analysis", analysis_run_id, THIS_RUN, "the run writing this report"]]
    stale = stale_validation(con)
    for stage in ("extract", "transform", "validate"):
        run = _latest_run(con, stage)
        if run is None:
            at_sites = stage != "validate" and exists(con, "meta.pool_package")
            rows.append([stage, "–", "run at each site: see the site packages" if at_sites
                         else "no run recorded", ""])
            continue
        run_id, status, _, finished = run
        detail = f"finished {when(finished)}" if finished is not None else ""
        if stage == "validate" and exists(con, "qa.validation_result"):
            total, failed_error, failed_warn = con.execute(
                "SELECT count(*), count(*) FILTER (WHERE NOT success AND severity = 'error'), "
                "count(*) FILTER (WHERE NOT success AND severity <> 'error') "
                "FROM qa.validation_result WHERE run_id = ?", [run_id]).fetchone()
            detail = (f"{total} expectations: {total - failed_error - failed_warn} passed, "
                      f"{failed_error} failed (error), {failed_warn} failed (warning)")
        if stage == "validate" and stale:
            status = f"{status}; {stale}"
        rows.append([stage, run_id, status, detail])
    return Table("runs", "Runs and validation",
                 pd.DataFrame(rows, columns=["stage", "run id", "status", "detail"]))


def site_runs(con: duckdb.DuckDBPyConnection) -> Table | None:
    """A pooled database's packages: each site's validation (run id, outcome, forced or not),
    the transform it exported and when; None for a site database."""
    if not exists(con, "meta.pool_package"):
        return None
    rows = []
    for site, created, manifest in con.execute(
            "SELECT site, created, manifest FROM meta.pool_package ORDER BY site").fetchall():
        validation = (json.loads(manifest) or {}).get("validation") or {}
        if not validation.get("run_id"):
            outcome = "no validation"
        elif validation.get("problem") or validation.get("failed_error"):
            outcome = str(validation.get("problem")
                          or f"{validation['failed_error']} error expectations failed")
        else:
            outcome = "passed"
        if validation.get("forced"):
            outcome = f"forced export: {outcome}"
        rows.append([site, validation.get("run_id") or "–", outcome,
                     validation.get("transform_run_id") or "not in the package",
                     when(validation.get("transform_finished")), when(created)])
    return Table("site_runs", "Site packages: validation and transform at each site",
                 pd.DataFrame(rows, columns=["site", "validation run", "validation",
                                             "transform run", "transform finished",
                                             "exported"]))


QUALITY_SQL = {  # column -> (table, per-site count)
    "lines rejected on landing": ("raw.rejected", "count(*)"),
    "records quarantined": ("qa.quarantine", "count(*)"),
    "unmapped codes": ("qa.unmapped_codes", "count(*)"),
    "records with unmapped codes": ("qa.unmapped_codes", "sum(count)"),
}
# column -> per-site count in qa.site_completeness, the summary a site package carries:
# what a pooled database knows of each site when the detail tables stayed at the site.
SUMMARY = "qa.site_completeness"
SUMMARY_SQL = {
    "lines rejected on landing": "sum(rejected)",
    "records quarantined": "sum(quarantined)",
    "records with unmapped codes": "sum(unmapped + out_of_scope)",
}


def _counts(con: duckdb.DuckDBPyConnection, column: str) -> dict[str, object] | None:
    """Per-site counts for ``column`` from its detail table, else from SUMMARY, else None."""
    table, count = QUALITY_SQL[column]
    if exists(con, table):
        sql = f"SELECT site, {count} FROM {table} GROUP BY site"
    elif column in SUMMARY_SQL and exists(con, SUMMARY):
        sql = f"SELECT site, {SUMMARY_SQL[column]} FROM {SUMMARY} GROUP BY site"
    else:
        return None
    return dict(con.execute(sql).fetchall())


def data_quality(con: duckdb.DuckDBPyConnection, sites: list[str]) -> Table:
    """Per site: rejected lines, quarantined records and unmapped codes (or ABSENT)."""
    columns = {column: _counts(con, column) for column in QUALITY_SQL}
    found = set(sites).union(*(c for c in columns.values() if c is not None))
    rows = [[site, *(ABSENT if counts is None else int(counts.get(site) or 0)
                     for counts in columns.values())] for site in sorted(found)]
    caption = "Data quality by site"
    if any(not exists(con, table) for table, _ in QUALITY_SQL.values()) \
            and exists(con, SUMMARY):
        caption += f" (counts a site's detail tables did not send: from {SUMMARY})"
    return Table("data_quality", caption,
                 pd.DataFrame(rows, columns=["site", *QUALITY_SQL]))
