"""Transform stage: SQL-on-FHIR v2 views on DuckDB, harmonization, cohort tables.

``transform(store, reference, sites)`` rebuilds, from ``raw.resources`` alone, the
stages ``ref`` .. ``qa`` of ``cartfhir/build.yaml`` in its order:

1. ``ref.*``      value sets, code maps, units, windows, thresholds, CTCAE cut-offs
                  (package defaults + the config's site and study additions);
2. ``flat.*``     the project's ViewDefinitions (``views/*.json``);
3. ``raw.patient_key``  HMAC pseudonyms (raw ids never leave the raw schema);
4. ``harmonized.*``, ``cohort.*``, ``qa.*``  the SQL models (``models/<schema>/*.sql``).

Everything is rebuilt from raw each time, so a transform after an incremental
extraction gives exactly the tables of a full rebuild.

The rebuild is all-or-nothing: it is one DuckDB transaction, and the run is marked
``success`` inside it. A transform that fails is rolled back; one that is killed never
committed: DuckDB logs a transaction to the WAL only at commit, and the row groups it
had already written to the file are unreferenced blocks that the file reuses (checked
with SIGKILL on DuckDB 2.0, tests/transform/test_atomic.py). Either way every ref, flat,
harmonized, cohort and qa table (and ``raw.patient_key``, ``meta.reference_version``) is
exactly what the last complete transform left, and the run is recorded as failed or, by
the next command, as interrupted.

One transaction rather than staging schemas swapped at the end: the models name each
other by schema (``harmonized.lab`` in ``cohort/*.sql``), so staging would mean
rewriting every model's SQL, while DuckDB writes a large transaction's new row groups to
the database file as it goes, so memory does not grow with it (bench/transform.py, 300k
Observations, memory_limit 512MB: peak RSS 553 MB in one transaction, 557 MB committing
table by table). The old tables' blocks are freed only at commit, so the file briefly
holds both versions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import duckdb

from cartfhir.config import Site
from cartfhir.errors import DatabaseError
from cartfhir.graph import BuildContext, build_node, create_macros, load_graph
from cartfhir.progress import NullProgress, Progress
from cartfhir.results import ResultDict
from cartfhir.store import Store
from cartfhir.transform.reference import Reference, load_reference, reference_hash

# The stages of cartfhir/build.yaml a transform rebuilds, all in one transaction.
STAGES = ("ref", "flat", "identity", "harmonized", "cohort", "qa")


@dataclass
class TransformResult(ResultDict):
    """What a transform built: rows and seconds per table, and the cohort's shape."""

    run_id: str
    tables: dict[str, tuple[int, float]] = field(default_factory=dict)
    episodes: list[tuple[str, int, int]] = field(default_factory=list)  # site, round, n
    quarantined: int = 0
    unmapped_codes: int = 0
    reference_hash: str = ""
    seconds: float = 0.0

    @property
    def status(self) -> str:
        """Always 'success': a transform that did not finish raises (all or nothing)."""
        return "success"

    def summary(self) -> dict[str, Any]:
        return {"tables": {k: v[0] for k, v in self.tables.items()},
                "episodes": [list(e) for e in self.episodes], "quarantined": self.quarantined,
                "unmapped_codes": self.unmapped_codes, "reference_hash": self.reference_hash}


def transform(store: Store, reference: Reference, sites: Sequence[Site], *,
              progress: Progress | None = None, command: str = "transform") -> TransformResult:
    """Rebuild ref, flat, harmonized, cohort and qa tables in the store.

    ``reference`` is the study's definitions (``load_reference``: package defaults plus
    the config's additions); ``sites`` give each site's pseudonym key.
    """
    progress = progress or NullProgress()
    started = time.perf_counter()
    with store.run(command, stage="transform") as run:
        con = run.con
        # Tables here are sets (every model says its grain); not keeping insertion order
        # lets DuckDB stream large CREATE TABLE AS statements within the memory limit.
        con.execute("SET preserve_insertion_order = false")
        result = TransformResult(run_id=run.run_id, reference_hash=reference_hash(reference))
        with all_or_nothing(con):
            graph = load_graph()
            steps = [step for stage in STAGES for step in graph.steps(stage)]
            context = BuildContext(run_id=run.run_id, reference=reference, sites=list(sites))
            with progress.task("transform", total=len(steps)) as bar:
                create_macros(con, graph)
                _drop_parquet_views(con, [node.table for step in steps for node in step])
                for step in steps:
                    step_started = time.perf_counter()
                    rows = build_node(con, step[0], context)
                    if step[0].kind != "builder":  # a view's or model's own table
                        result.tables[step[0].table] = (
                            rows, time.perf_counter() - step_started)
                    bar.advance()
            result.episodes = [tuple(r) for r in con.execute(
                "SELECT site, round, count(*) FROM cohort.episode GROUP BY ALL ORDER BY ALL"
            ).fetchall()]
            result.quarantined = result.tables["qa.quarantine"][0]
            result.unmapped_codes = result.tables["qa.unmapped_codes"][0]
            result.seconds = time.perf_counter() - started
            run.counts = result.summary()
            run.finish("success")  # inside the transaction: committed with the tables
    return result


def _drop_parquet_views(con: duckdb.DuckDBPyConnection, tables: Sequence[str]) -> None:
    """Drop the views a Spark transform left in place of ``tables`` (``CREATE OR REPLACE
    TABLE`` refuses to replace a view), so switching engine back to duckdb just works;
    inside the run's transaction, so a failed build puts them back."""
    from cartfhir.spark.tables import drop_table_or_view

    views = {f"{schema}.{name}" for schema, name in con.execute(
        "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal "
        "AND database_name = current_database()").fetchall()}
    for table in tables:
        if table in views:
            drop_table_or_view(con, table)


@contextmanager
def all_or_nothing(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run the block in one transaction: committed if it ends, rolled back if it raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        with suppress(duckdb.Error):  # a fatal DuckDB error has already ended it
            con.execute("ROLLBACK")
        raise
    try:
        con.execute("COMMIT")
    except duckdb.Error as exc:  # e.g. the disk filled while writing the WAL
        raise DatabaseError(f"the transform could not be committed ({exc}); the tables are "
                            "unchanged. Free space if needed and run 'cartfhir transform' "
                            "again") from None


__all__ = ["TransformResult", "load_reference", "transform"]
