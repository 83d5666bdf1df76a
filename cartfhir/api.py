"""The Python entry points, one per CLI command; the CLI is a thin shell around them.

    from cartfhir import api
    config = api.load_config("config.yaml")
    result = api.run(config)
    df = api.query(config, "select site, count(*) from raw.resources group by site").df()

Every function takes a validated ``Config`` (or paths), returns a result
object, never prints, and raises ``CartfhirError`` subclasses on failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas

from cartfhir.config import Config, load_config
from cartfhir.db import connect
from cartfhir.errors import DatabaseError, UsageError
from cartfhir.extract import ExtractResult, extract
from cartfhir.progress import Progress
from cartfhir.synth import SynthResult, generate
from cartfhir.synth.profiles import available_profiles

__all__ = ["DemoResult", "QueryResult", "RunResult", "demo", "extract", "generate",
           "load_config", "query", "run"]


@dataclass(frozen=True)
class RunResult:
    """What ``run`` did, stage by stage (stages arrive with their issues)."""

    extract: ExtractResult

    @property
    def status(self) -> str:
        return self.extract.status


@dataclass(frozen=True)
class DemoResult:
    synth: SynthResult
    run: RunResult
    duckdb_path: Path


def run(config: Config, progress: Progress | None = None, command: str = "run") -> RunResult:
    """Run every stage that exists, in order: extract (land) -> ..."""
    return RunResult(extract=extract(config, progress=progress, command=command))


def demo(config: Config, patients: int = 40, seed: int = 42,
         progress: Progress | None = None) -> DemoResult:
    """Generate the synthetic cohort into the config's NDJSON site folders, then run.

    Each site's id must name a synthetic profile (see ``cartfhir synth --help``)
    and its source must be an NDJSON folder; existing files there are replaced.
    """
    profiles = available_profiles()
    for site in config.sites:
        if site.id not in profiles or site.source.kind != "ndjson":
            raise UsageError(
                f"demo generates data only for NDJSON sites named after a synthetic profile "
                f"({', '.join(profiles)}); site {site.id!r} is not one. Use the example "
                "config.yaml, or 'cartfhir synth' + 'cartfhir run' for your own layout."
            )
    folders = {site.source.path.parent for site in config.sites}
    if len(folders) != 1 or any(s.source.path.name != s.id for s in config.sites):
        raise UsageError("demo needs the sites' folders to be <one folder>/<site id>, "
                         "as in the example config.yaml")
    synth = generate(folders.pop(), patients=patients, seed=seed,
                     sites=[s.id for s in config.sites], overwrite=True, progress=progress)
    result = run(config, progress=progress, command="demo")
    return DemoResult(synth=synth, run=result, duckdb_path=config.output.duckdb)


@dataclass
class QueryResult:
    """Columns and a stream of rows from a read-only connection, closed when consumed."""

    columns: list[str]
    _con: duckdb.DuckDBPyConnection

    def rows(self, batch: int = 10_000) -> Iterator[tuple]:
        try:
            while chunk := self._con.fetchmany(batch):
                yield from chunk
        finally:
            self._con.close()

    def df(self) -> pandas.DataFrame:
        try:
            return self._con.fetchdf()
        finally:
            self._con.close()


def query(config: Config | None, sql: str, db: Path | None = None) -> QueryResult:
    """Run SQL on a read-only connection to the output DuckDB (or ``db``)."""
    path = db if db is not None else config.output.duckdb if config else None
    if path is None:
        raise UsageError("give a config or a database path")
    con = connect(path, read_only=True)
    try:
        con.execute(sql)
    except duckdb.Error as exc:
        con.close()
        raise DatabaseError(f"query failed on {path}: {exc}") from None
    columns = [d[0] for d in con.description] if con.description else []
    return QueryResult(columns=columns, _con=con)
