"""Expectations stage: Great Expectations suites over the landed, flat, harmonized, cohort tables.

``validate(store, suites, settings)`` runs the suites (``load_suites``: the built-in
ones plus the config's rules) with GX's pandas engine on bounded batches read from
DuckDB; GX's SQL path on DuckDB is broken (every expectation fails with "list index
out of range"), so it is never used. Results go to ``qa.validation_result`` and,
optionally, GX Data Docs (``<output>/gx`` for a site). An expectation GX could not
evaluate counts as failed. A run whose ``error`` expectations failed is invalid:
``cartfhir run`` stops before analysis unless ``--allow-invalid`` is given.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from cartfhir.config import Expectations
from cartfhir.db import apply_ddl
from cartfhir.errors import ExpectationError
from cartfhir.expectations.gx import DocsSite, Outcome, SuiteSpec, validate_suite
from cartfhir.expectations.suites import load_suites
from cartfhir.graph import sql_tables
from cartfhir.progress import NullProgress, Progress
from cartfhir.results import ResultDict
from cartfhir.runs import require_complete_transform
from cartfhir.store import Store


@dataclass
class ValidationReport(ResultDict):
    """Every expectation's outcome, and what that means for the run."""

    run_id: str
    outcomes: list[Outcome] = field(default_factory=list)
    docs_index: Path | None = None
    seconds: float = 0.0
    _derived = ("valid", "summary")

    @property
    def status(self) -> str:
        """'invalid' when an 'error' expectation failed (exit code 1), else 'success'."""
        return "success" if self.valid else "invalid"

    @property
    def failed_errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "error"]

    @property
    def failed_warnings(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "warn"]

    @property
    def valid(self) -> bool:
        return not self.failed_errors

    def summary(self) -> dict[str, int]:
        return {"expectations": len(self.outcomes),
                "passed": sum(o.success for o in self.outcomes),
                "failed_error": len(self.failed_errors),
                "failed_warn": len(self.failed_warnings)}


def _require_tables(con: duckdb.DuckDBPyConnection, suites: Sequence[SuiteSpec]) -> None:
    """Refuse a database that lacks a table a suite reads (its query, read with the build
    graph's table scanner): nothing built yet, or built by an older cartfhir."""
    readers: dict[str, list[str]] = {}
    for suite in suites:
        for table in sorted(sql_tables(suite.query)):
            readers.setdefault(table, []).append(suite.name)
    present = {t for (t,) in con.execute(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables").fetchall()}
    missing = {t: names for t, names in readers.items() if t not in present}
    if not missing:
        return
    if len(missing) == len(readers):  # nothing the suites read: never transformed
        raise ExpectationError(f"{', '.join(sorted(missing))} do not exist: run 'cartfhir "
                               "extract' and 'cartfhir transform' (or 'cartfhir run') before "
                               "validating")
    listed = "; ".join(f"{t} (read by {', '.join(names)})" for t, names in sorted(missing.items()))
    raise ExpectationError(f"the database lacks {listed}: it was built by an older cartfhir "
                           "or by a transform that did not finish; run 'cartfhir transform' "
                           "to rebuild its tables, then validate again")


def _suite_failed(suite: SuiteSpec, exc: Exception) -> list[Outcome]:
    """A suite whose rows could not even be read: every expectation in it fails, loudly."""
    return [Outcome(suite=suite.name, expectation=e["type"], column=None,
                    severity=e.get("meta", {}).get("severity", "error"), success=False,
                    observed_value=None, unexpected_count=None, element_count=None,
                    unexpected_examples=[], error=f"suite query failed: {exc}",
                    kwargs=e.get("kwargs", {}))
            for e in suite.expectations]


def store_outcomes(con: duckdb.DuckDBPyConnection, run_id: str,
                   outcomes: list[Outcome]) -> None:
    """Append a run's outcomes to ``qa.validation_result``."""
    apply_ddl(con, "cartfhir.expectations.sql", "qa_validation_result")
    now = datetime.now(UTC)
    index: dict[str, int] = {}
    rows = []
    for o in outcomes:
        i = index[o.suite] = index.get(o.suite, -1) + 1
        rows.append([run_id, o.suite, i, o.expectation, o.column, o.severity, o.success,
                     o.observed_value, o.unexpected_count, o.element_count,
                     json.dumps(o.unexpected_examples, default=str, ensure_ascii=False),
                     o.error, json.dumps(o.kwargs, default=str, ensure_ascii=False), now])
    if rows:
        con.executemany("INSERT INTO qa.validation_result VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def validate(store: Store, suites: Sequence[SuiteSpec], settings: Expectations, *,
             docs: Path | None = None, progress: Progress | None = None,
             command: str = "validate") -> ValidationReport:
    """Run ``suites`` (``load_suites``) against the store; store and return the outcomes.

    ``settings`` gives the batch size; ``docs`` a folder for GX Data Docs (None: none
    written). Nothing else is read from a config, so a pooled database validates too.
    """
    progress = progress or NullProgress()
    started = time.perf_counter()
    with store.session() as con:  # nothing to validate: refused before a run is recorded
        _require_tables(con, suites)
    with store.run(command, stage="validate") as run:
        con = run.con
        report = ValidationReport(run_id=run.run_id)
        require_complete_transform(con)
        site = DocsSite(docs, run_name=run.run_id) if docs is not None else None
        with progress.task("validating", total=len(suites), unit="suites") as bar:
            for suite in suites:
                try:
                    report.outcomes += validate_suite(
                        con, suite, chunk_rows=settings.chunk_rows, docs=site)
                except ExpectationError as exc:  # the suite's rows could not be read
                    report.outcomes += _suite_failed(suite, exc)
                bar.advance()
        if site is not None:
            report.docs_index = site.build(report.outcomes)
        store_outcomes(con, run.run_id, report.outcomes)
        report.seconds = time.perf_counter() - started
        run.counts = report.summary()
        run.finish("success" if report.valid else "failed",
                   None if report.valid else
                   f"{len(report.failed_errors)} error expectations failed")
    return report


__all__ = ["ValidationReport", "load_suites", "validate"]
