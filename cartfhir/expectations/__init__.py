"""Expectations stage: Great Expectations suites over the landed, flat, harmonized, cohort tables.

``validate(config)`` runs every suite (``suites/*.json`` plus the config's rules)
with GX's pandas engine on bounded batches read from DuckDB; GX's SQL path on
DuckDB is broken (every expectation fails with "list index out of range"), so it
is never used. Results go to ``qa.validation_result`` and, optionally, GX Data
Docs in ``<output>/gx``. An expectation GX could not evaluate counts as failed.
A run whose ``error`` expectations failed is invalid: ``cartfhir run`` stops
before analysis unless ``--allow-invalid`` is given.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from cartfhir.config import Config
from cartfhir.db import apply_ddl, connect
from cartfhir.errors import ExpectationError
from cartfhir.expectations.gx import DocsSite, Outcome, SuiteSpec, validate_suite
from cartfhir.expectations.suites import load_suites
from cartfhir.progress import NullProgress, Progress
from cartfhir.runs import failed_on_error, require_complete_transform, start_run


@dataclass
class ValidationReport:
    """Every expectation's outcome, and what that means for the run."""

    run_id: str
    outcomes: list[Outcome] = field(default_factory=list)
    docs_index: Path | None = None
    seconds: float = 0.0

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


def _inputs(con: duckdb.DuckDBPyConnection, config: Config) -> None:
    """Temp tables the check queries read: the configured sites and the ceilings."""
    con.execute("CREATE OR REPLACE TEMP TABLE configured_site (site VARCHAR)")
    con.executemany("INSERT INTO configured_site VALUES (?)", [[s.id] for s in config.sites])
    con.execute("CREATE OR REPLACE TEMP TABLE expectation_parameter (name VARCHAR, value DOUBLE)")
    con.executemany("INSERT INTO expectation_parameter VALUES (?, ?)", [
        ["max_quarantine_share", config.expectations.max_quarantine_share],
        ["max_unmapped_share", config.expectations.max_unmapped_share],
        ["max_rejected_share", config.expectations.max_rejected_share]])


def _require_tables(con: duckdb.DuckDBPyConnection) -> None:
    have = {f"{s}.{t}" for s, t in con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables").fetchall()}
    for needed in ("raw.resources", "cohort.episode_endpoints"):
        if needed not in have:
            raise ExpectationError(f"{needed} does not exist: run 'cartfhir extract' and "
                                   "'cartfhir transform' (or 'cartfhir run') before validating")


def _suite_failed(suite: SuiteSpec, exc: Exception) -> list[Outcome]:
    """A suite whose rows could not even be read: every expectation in it fails, loudly."""
    return [Outcome(suite=suite.name, expectation=e["type"], column=None,
                    severity=e.get("meta", {}).get("severity", "error"), success=False,
                    observed_value=None, unexpected_count=None, element_count=None,
                    unexpected_examples=[], error=f"suite query failed: {exc}",
                    kwargs=e.get("kwargs", {}))
            for e in suite.expectations]


def store(con: duckdb.DuckDBPyConnection, run_id: str, outcomes: list[Outcome]) -> None:
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


def validate(config: Config, progress: Progress | None = None,
             command: str = "validate") -> ValidationReport:
    """Run every suite against the config's DuckDB; store and return the outcomes."""
    progress = progress or NullProgress()
    started = time.perf_counter()
    suites = load_suites(config)  # config mistakes surface before anything runs
    con = connect(config.output.duckdb, memory_limit=config.output.memory_limit)
    try:
        _require_tables(con)
        run = start_run(con, command, config.config_hash, stage="validate")
        report = ValidationReport(run_id=run.run_id)
        with failed_on_error(run):
            require_complete_transform(con)
            _inputs(con, config)
            docs = DocsSite(config.output.folder / "gx") if config.expectations.data_docs \
                else None
            with progress.task("validating", total=len(suites), unit="suites") as bar:
                for suite in suites:
                    try:
                        report.outcomes += validate_suite(
                            con, suite, chunk_rows=config.expectations.chunk_rows, docs=docs)
                    except ExpectationError as exc:  # the suite's rows could not be read
                        report.outcomes += _suite_failed(suite, exc)
                    bar.advance()
            if docs is not None:
                report.docs_index = docs.build()
            store(con, run.run_id, report.outcomes)
            report.seconds = time.perf_counter() - started
            run.counts = report.summary()
            run.finish("success" if report.valid else "failed",
                       None if report.valid else
                       f"{len(report.failed_errors)} error expectations failed")
    finally:
        con.close()
    return report


__all__ = ["ValidationReport", "load_suites", "validate"]
