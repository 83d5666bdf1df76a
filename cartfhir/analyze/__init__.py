"""Analysis stage: CART1 versus CART2 endpoints, EFS after CART2, count dynamics, the report.

``analyze(store, settings, out=, study=)`` reads ``cohort.*`` and writes:

- ``analysis.comparison``     one row per endpoint and site (and ``all``): counts or
                              median/IQR/range per round, unpaired and paired tests;
- ``analysis.efs``            per CART2 patient and EFS definition: time, event, type;
- ``analysis.efs_summary``    Kaplan-Meier median and 95 % CI per site and definition;
- ``analysis.efs_curve``      the Kaplan-Meier steps, for plots;
- ``analysis.count_dynamics`` ANC, hemoglobin and platelets by round and day 0-30;

plus ``<out>/report.html`` (self-contained, figures embedded) and CSV/JSON exports
of every table in ``<out>/analysis/``. Counts below ``analysis.small_cell_k`` are
shown as ``<k`` in the report and exports (the DuckDB tables keep the numbers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import duckdb
import pandas as pd

from cartfhir.analyze.compare import comparison, endpoint_sql, load_endpoints, suppress_small_cells
from cartfhir.analyze.efs import patient_events, summaries
from cartfhir.analyze.report import write_report
from cartfhir.config import Analysis
from cartfhir.db import write_frame
from cartfhir.errors import DatabaseError
from cartfhir.progress import NullProgress, Progress
from cartfhir.runs import require_complete_transform
from cartfhir.store import Store

ROUNDS = (1, 2)


@dataclass
class AnalysisResult:
    run_id: str
    tables: dict[str, int] = field(default_factory=dict)
    report: Path | None = None
    exports: list[Path] = field(default_factory=list)
    comparison: pd.DataFrame | None = None
    warning: str | None = None
    seconds: float = 0.0


def analyze(store: Store, settings: Analysis, *, out: Path, study: str,
            progress: Progress | None = None, command: str = "analyze",
            invalid_warning: str | None = None) -> AnalysisResult:
    """Compute the analysis tables from the store's cohort.*; write the report and exports.

    ``out`` is the folder for ``report.html`` and ``analysis/``; ``study`` names the
    study in the report; ``settings`` says how results are shown (small-cell
    suppression). The sites are those in the cohort tables, so a pooled database
    needs no site config.
    """
    progress = progress or NullProgress()
    started = time.perf_counter()
    endpoints, sections = load_endpoints()
    with store.run(command, stage="analyze") as run:
        con = run.con
        result = AnalysisResult(run_id=run.run_id, warning=invalid_warning)
        require_complete_transform(con)
        with progress.task("analysis", total=4) as bar:
            try:
                episodes = con.execute(endpoint_sql(endpoints, ROUNDS)).df()
                cart2 = con.execute(
                    "SELECT * FROM cohort.episode_endpoints WHERE round = 2").df()
                sites = [r[0] for r in con.execute(
                    "SELECT DISTINCT site FROM cohort.patient ORDER BY site").fetchall()]
            except duckdb.CatalogException as exc:
                raise DatabaseError(f"{exc}; run 'cartfhir transform' first") from None
            con.execute("CREATE SCHEMA IF NOT EXISTS analysis")
            table = comparison(episodes, endpoints, ROUNDS)
            result.tables["analysis.comparison"] = write_frame(
                con, "analysis.comparison", table)
            bar.advance()
            events = patient_events(cart2)
            summary, curve = summaries(events)
            result.tables["analysis.efs"] = write_frame(con, "analysis.efs", events)
            result.tables["analysis.efs_summary"] = write_frame(
                con, "analysis.efs_summary", summary)
            result.tables["analysis.efs_curve"] = write_frame(
                con, "analysis.efs_curve", curve)
            bar.advance()
            sql = resources.files("cartfhir.analyze").joinpath("dynamics.sql").read_text(
                "utf-8")
            con.execute(f"CREATE OR REPLACE TABLE analysis.count_dynamics AS {sql}")
            result.tables["analysis.count_dynamics"] = con.execute(
                "SELECT count(*) FROM analysis.count_dynamics").fetchone()[0]
            bar.advance()
            k = settings.small_cell_k
            shown = suppress_small_cells(table, k) if k else table
            result.comparison = shown
            result.exports = _export(con, out / "analysis", shown, k)
            result.report = write_report(con, out / "report.html", shown, endpoints,
                                         sections, study=study, sites=sites,
                                         small_cell_k=k, warning=invalid_warning)
            bar.advance()
        result.seconds = time.perf_counter() - started
        run.counts = dict(result.tables)
        run.finish("success", invalid_warning)
    return result


def _export(con: duckdb.DuckDBPyConnection, folder: Path, shown: pd.DataFrame,
            k: int | None) -> list[Path]:
    """CSV and JSON of every analysis table (the comparison with small cells suppressed)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    frames = {"comparison": shown}
    for name in ("efs", "efs_summary", "count_dynamics"):
        frames[name] = con.execute(f"SELECT * FROM analysis.{name}").df()
    if k:  # per-patient EFS rows would reveal small cells: only summaries leave with k set
        frames.pop("efs")
    for name, frame in frames.items():
        for suffix, writer in ((".csv", lambda f, p: f.to_csv(p, index=False)),
                               (".json", lambda f, p: f.to_json(p, orient="records",
                                                                date_format="iso",
                                                                indent=1))):
            path = folder / f"{name}{suffix}"
            writer(frame, path)
            written.append(path)
    return written


__all__ = ["AnalysisResult", "analyze"]
