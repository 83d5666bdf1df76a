"""Extract stage: land raw FHIR resources from each site's source into DuckDB.

``extract`` lands every selected site into ``raw.resources`` (latest version
per resource) and ``raw.rejected`` (lines that could not be landed, with the
reason), recording the run and its counts in ``meta.runs``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import duckdb

from cartfhir.config import Landing, Site
from cartfhir.db import apply_ddl
from cartfhir.errors import DatabaseError, StrictLandingError
from cartfhir.extract import ndjson
from cartfhir.extract.bulk import export_site
from cartfhir.extract.landing import (
    OUTCOMES,
    SQL_PACKAGE,
    SiteCounts,
    auto_workers,
    land_folder,
    make_check_pool,
)
from cartfhir.extract.ndjson import ReadLimits
from cartfhir.extract.rest import pull_site
from cartfhir.progress import NullProgress, Progress
from cartfhir.results import ResultDict
from cartfhir.runs import RunStatus
from cartfhir.store import Store

__all__ = ["ExtractResult", "create_tables", "extract", "land_folder"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractResult(ResultDict):
    """What one ``extract`` call did.

    ``counts`` is {site: {resource_type: {received, inserted, replaced,
    unchanged, stale, rejected}}}, the same object stored in meta.runs.counts.
    """

    run_id: str
    status: RunStatus
    counts: dict[str, SiteCounts] = field(repr=False)
    duckdb_path: Path
    seconds: float
    problems: tuple[str, ...] = ()
    # Per site: kind, status, requests, retries, patients, seconds (the closing summary).
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)
    _derived = ("totals",)

    def totals(self, site: str | None = None) -> dict[str, int]:
        """Counts summed over resource types (and over sites unless ``site`` is given)."""
        sums = dict.fromkeys(OUTCOMES, 0)
        for site_id, by_type in self.counts.items():
            if site is not None and site_id != site:
                continue
            for counts in by_type.values():
                for outcome in OUTCOMES:
                    sums[outcome] += counts.get(outcome, 0)
        return sums


def create_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create raw.resources and raw.rejected if they do not exist."""
    apply_ddl(con, SQL_PACKAGE, "raw_resources", "raw_rejected")


def summarize(totals: dict[str, int]) -> str:
    """'12 lines: 10 inserted, 0 replaced, 1 unchanged, 0 stale, 1 rejected'."""
    return (
        f"{totals['received']} lines: {totals['inserted']} inserted, "
        f"{totals['replaced']} replaced, {totals['unchanged']} unchanged, "
        f"{totals['stale']} stale, {totals['rejected']} rejected"
    )


def _site_totals(counts: SiteCounts) -> dict[str, int]:
    return {o: sum(by_type.get(o, 0) for by_type in counts.values()) for o in OUTCOMES}


def extract(
    store: Store,
    sites: Sequence[Site],
    landing: Landing,
    *,
    progress: Progress | None = None,
    command: str = "extract",
    workers: int | None = None,
    full: bool = False,
    since: str | None = None,
) -> ExtractResult:
    """Land ``sites`` into the store, recording the run in ``meta.runs``.

    Raises SourceError when a site's folder is missing or empty (checked before
    anything is written), DatabaseError when DuckDB fails, and StrictLandingError
    when ``landing.strict`` is on and any line was rejected (the accepted lines
    stay landed).

    ``workers``: processes that check lines in parallel; None takes
    ``landing.workers`` ('auto' picks by input size and CPUs; 0 = check in this
    process). A pool is started with spawn, so a script calling ``extract`` needs an
    ``if __name__ == "__main__":`` guard.

    FHIR servers (``fhir`` sources): ``full`` ignores the stored watermarks;
    ``since`` (a FHIR instant) pulls what changed after it. A server that sent
    less than it announced, or a search that failed after its retries, makes
    the run ``partial``: everything that did arrive is landed.
    """
    started = time.perf_counter()
    # Fail on a missing or empty folder before the database is touched.
    input_bytes = sum(
        path.stat().st_size for site in sites if site.source.kind == "ndjson"
        for path in ndjson.find_files(site.source.path)
    )
    if workers is None:
        workers = (auto_workers(input_bytes)
                   if landing.workers == "auto" else landing.workers)
    progress = progress or NullProgress()

    with store.run(command, stage="extract") as run:
        con = run.con
        try:
            create_tables(con)
        except duckdb.Error as exc:
            raise DatabaseError(f"cannot prepare database {store.path}: {exc}") from exc
        log.info(
            "run %s: landing %d site(s) into %s (validation %s, %d check worker(s))",
            run.run_id, len(sites), store.path, landing.validation, workers,
            extra={"run_id": run.run_id},
        )
        pool = make_check_pool(workers) if workers > 0 else None
        problems: list[str] = []
        summaries: dict[str, dict[str, Any]] = {}
        try:
            for site in sites:
                site_started = time.perf_counter()
                summary_row: dict[str, Any] = {"kind": site.source.kind, "status": "complete",
                                               "requests": None, "retries": None}
                if site.source.kind in ("fhir", "bulk"):
                    pull = pull_site if site.source.kind == "fhir" else partial(
                        export_site, limits=ReadLimits.of(landing))
                    report = pull(
                        con, site, run.run_id, validation=landing.validation,
                        batch_size=landing.batch_size, full=full, since=since,
                        progress=progress,
                    )
                    counts = report.counts
                    problems += [f"site {site.id}: {p}" for p in report.problems]
                    summary_row.update(status=report.status, requests=report.http_requests,
                                       retries=report.retries)
                    log.info(
                        "site %s: %d patients, %d requests, %d retries, status %s",
                        site.id, report.patients, report.http_requests, report.retries,
                        report.status, extra={"run_id": run.run_id, "site": site.id},
                    )
                else:
                    landed = land_folder(
                        con,
                        site.id,
                        site.source.path,
                        run.run_id,
                        validation=landing.validation,
                        batch_size=landing.batch_size,
                        progress=progress,
                        pool=pool,
                        limits=ReadLimits.of(landing),
                    )
                    counts = landed.counts
                    problems += [f"site {site.id}: {p}" for p in landed.problems]
                    if landed.problems:
                        summary_row["status"] = "partial"
                run.counts[site.id] = counts
                totals = _site_totals(counts)
                summary_row.update(resources=totals["received"],
                                   seconds=round(time.perf_counter() - site_started, 2))
                summaries[site.id] = summary_row
                log.info(
                    "site %s: %s (%.1f s)", site.id, summarize(totals),
                    time.perf_counter() - site_started,
                    extra={"run_id": run.run_id, "site": site.id, "counts": totals},
                )
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

        result = ExtractResult(
            run_id=run.run_id,
            status="partial" if problems else "success",
            problems=tuple(problems),
            sites=summaries,
            counts=run.counts,
            duckdb_path=store.path,
            seconds=time.perf_counter() - started,
        )
        totals = result.totals()
        rejected = totals["rejected"]
        summary = summarize(totals)
        if landing.strict and rejected:
            message = (
                f"{rejected} line(s) were rejected and landing.strict is on; the accepted "
                f"lines are landed. See why with: select * from raw.rejected "
                f"where run_id = '{run.run_id}'"
            )
            raise StrictLandingError(message)  # the store records the run failed with it
        if rejected:
            log.warning(
                "%d line(s) rejected; see why with: select * from raw.rejected "
                "where run_id = '%s'", rejected, run.run_id, extra={"run_id": run.run_id},
            )
        if problems:
            for problem in problems:
                log.error("incomplete: %s", problem, extra={"run_id": run.run_id})
            run.finish("partial", summary + "; INCOMPLETE: " + " | ".join(problems))
        else:
            run.finish("success", summary)
    log.info("run %s: %s", run.run_id, summary, extra={"run_id": run.run_id})
    return result
