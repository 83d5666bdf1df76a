"""Analysis stage: CART1 versus CART2 endpoints, EFS after CART2, count dynamics, the report.

``analyze(store, settings, out=, study=)`` reads ``cohort.*`` and writes:

- ``analysis.endpoint``       the endpoint registry (endpoints.yaml) with the labels this
                              database's windows and thresholds give (ref.window/threshold);
- ``analysis.comparison``     one row per endpoint and site (and ``all``): counts or
                              median/IQR/range per round, unpaired and paired tests;
- ``analysis.efs``            per CART2 patient and EFS definition: time, event, type;
- ``analysis.efs_summary``    Kaplan-Meier median and 95 % CI per site and definition;
- ``analysis.efs_curve``      the Kaplan-Meier steps, for plots;
- ``analysis.count_dynamics`` the registry's blood counts by round and day;
- ``analysis.heterogeneity``  in a pooled database only: CMH and Breslow-Day across sites;

in the order of the build graph's analysis stage (cartfhir/build.yaml),
plus ``<out>/report.html`` (self-contained, figures embedded), its figures as PNG and
SVG in ``<out>/figures/`` and its tables as CSV in ``<out>/tables/``, and CSV/JSON
exports of every table in ``<out>/analysis/``. Counts below ``analysis.small_cell_k`` are
shown as ``<k`` in the report and exports (the DuckDB tables keep the numbers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from cartfhir.catalog.sidecars import load_sidecars
from cartfhir.config import Analysis
from cartfhir.db import quoted
from cartfhir.errors import DatabaseError
from cartfhir.graph import BuildContext, build_node, load_graph
from cartfhir.progress import NullProgress, Progress
from cartfhir.results import ResultDict
from cartfhir.runs import require_complete_transform
from cartfhir.store import Store

if TYPE_CHECKING:  # pandas, and scipy and matplotlib behind compare and report, load in analyze()
    import pandas as pd

    from cartfhir.analyze.registry import Endpoint


@dataclass
class AnalysisResult(ResultDict):
    run_id: str
    tables: dict[str, int] = field(default_factory=dict)
    report: Path | None = None
    exports: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)  # the report's figures, PNG and SVG
    report_tables: list[Path] = field(default_factory=list)  # the report's tables, CSV
    comparison: pd.DataFrame | None = None
    endpoints: tuple[Endpoint, ...] = ()  # as this database renders them (analysis.endpoint)
    warning: str | None = None
    seconds: float = 0.0

    @property
    def status(self) -> str:
        """Always 'success': an analysis that did not finish raises."""
        return "success"


def analyze(store: Store, settings: Analysis, *, out: Path, study: str,
            progress: Progress | None = None, command: str = "analyze",
            invalid_warning: str | None = None) -> AnalysisResult:
    """Compute the analysis tables from the store's cohort.*; write the report and exports.

    ``out`` is the folder for ``report.html`` and ``analysis/``; ``study`` names the
    study in the report; ``settings`` says how results are shown (small-cell
    suppression). The sites are those in the cohort tables, so a pooled database
    needs no site config.
    """
    # Imported here, not at the top: scipy and matplotlib cost every command ~1.5 s of
    # start-up, and only the analysis needs them.
    from cartfhir.analyze import registry as endpoint_registry
    from cartfhir.analyze.compare import read_comparison, suppress_small_cells
    from cartfhir.analyze.report import write_report

    progress = progress or NullProgress()
    started = time.perf_counter()
    with store.run(command, stage="analyze") as run:
        con = run.con
        result = AnalysisResult(run_id=run.run_id, warning=invalid_warning)
        require_complete_transform(con)
        pooled = is_pooled(con)
        # build.yaml: endpoint, comparison, efs, ... (and heterogeneity when pooled)
        steps = load_graph().steps("analysis", pooled=pooled)
        context = BuildContext(run_id=run.run_id, settings=settings)
        with progress.task("analysis", total=len(steps) + 1) as bar:
            try:
                registry = endpoint_registry.effective(con)
                sites = [r[0] for r in con.execute(
                    "SELECT DISTINCT site FROM cohort.patient ORDER BY site").fetchall()]
                for step in steps:  # a builder making several tables is one step
                    result.tables[step[0].table] = build_node(con, step[0], context)
                    for node in step[1:]:
                        result.tables[node.table] = con.execute(
                            f"SELECT count(*) FROM {quoted(node.table)}").fetchone()[0]
                    bar.advance()
            except duckdb.CatalogException as exc:
                raise DatabaseError(f"{exc}; run 'cartfhir transform' first") from None
            k = settings.small_cell_k
            table = read_comparison(con)
            shown = suppress_small_cells(table, k) if k else table
            result.comparison = shown
            result.endpoints = registry.endpoints
            result.exports = _export(con, out / "analysis", shown, k, pooled=pooled)
            report = write_report(con, out / "report.html", shown, registry, study=study,
                                  sites=sites, small_cell_k=k, warning=invalid_warning,
                                  run_id=run.run_id)
            result.report = report.path
            result.figures, result.report_tables = report.figures, report.tables
            bar.advance()
        result.seconds = time.perf_counter() - started
        run.counts = dict(result.tables)
        run.finish("success", invalid_warning)
    return result


def is_pooled(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``con`` is a pooled database (cartfhir pool records its packages)."""
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'meta' "
        "AND table_name = 'pool_package'").fetchone()[0])


def export_tables(*, pooled: bool = False) -> list[str]:
    """The analysis tables exported to ``<out>/analysis/``: build.yaml's analysis stage,
    with the tables only a pooled database has when ``pooled``."""
    return [node.table for node in load_graph().stage("analysis", pooled=pooled)]


def read_in_grain(con: duckdb.DuckDBPyConnection, table: str) -> pd.DataFrame:
    """An analysis table's rows ordered by its grain (its sidecar), so exports repeat."""
    grain = ", ".join(quoted(column) for column in load_sidecars()[table][1].grain)
    return con.execute(f"SELECT * FROM {quoted(table)} ORDER BY {grain}").df()


def _withheld(table: str) -> bool:
    """Whether the table's sidecar keeps it at the site when small cells are suppressed."""
    return load_sidecars()[table][1].small_cells == "withhold"


def _export(con: duckdb.DuckDBPyConnection, folder: Path, shown: pd.DataFrame,
            k: int | None, *, pooled: bool = False) -> list[Path]:
    """CSV and JSON of the analysis tables (the comparison with small cells suppressed)."""
    from cartfhir.analyze.compare import TABLE as COMPARISON

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    frames = {}
    for table in export_tables(pooled=pooled):
        if k and _withheld(table):
            continue
        frames[table.split(".", 1)[1]] = (shown if table == COMPARISON
                                          else read_in_grain(con, table))
    for name, frame in frames.items():
        for suffix, writer in ((".csv", lambda f, p: f.to_csv(p, index=False)),
                               (".json", lambda f, p: f.to_json(p, orient="records",
                                                                date_format="iso",
                                                                indent=1))):
            path = folder / f"{name}{suffix}"
            writer(frame, path)
            written.append(path)
    return written


__all__ = ["AnalysisResult", "analyze", "export_tables", "is_pooled", "read_in_grain"]
