"""The Python entry points, one per CLI command; the CLI is a thin shell around them.

    from cartfhir import api
    config = api.load_config("config.yaml")
    result = api.run(config)
    df = api.query(config, "select site, count(*) from raw.resources group by site").df()

Every function takes a validated ``Config`` (or paths), returns a result
object, never prints, and raises ``CartfhirError`` subclasses on failure. The
stages themselves (``cartfhir.extract.extract`` and so on) take a ``Store`` and
their own config section; these functions build both from the config.
"""

from __future__ import annotations

import importlib
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from cartfhir import exports
from cartfhir.config import Config, Site, load_config
from cartfhir.errors import DatabaseError, UsageError
from cartfhir.exports import DEFAULT_TABLES, ExportedFile, ExportResult
from cartfhir.multisite.signing import KeyPair
from cartfhir.multisite.signing import generate_keypair as keygen
from cartfhir.progress import Progress
from cartfhir.render import json_columns
from cartfhir.results import ResultDict
from cartfhir.store import Store
from cartfhir.synth import SynthResult, generate
from cartfhir.synth.profiles import available_profiles

# The stages are imported where they run, not here: every CLI command imports this module,
# and the stages pull in pandas, fhir.resources, scipy and matplotlib (~1.5 s of start-up
# that 'cartfhir --version' or 'cartfhir extract' should not pay). The names this module
# re-exports from them load on first use (__getattr__ below); type checkers see them here.
if TYPE_CHECKING:
    import pandas

    from cartfhir.analyze import AnalysisResult
    from cartfhir.expectations import ValidationReport, load_suites
    from cartfhir.extract import ExtractResult
    from cartfhir.multisite.package import PackageResult, SignResult, export_site
    from cartfhir.multisite.package import sign_package as sign
    from cartfhir.multisite.pool import PoolResult, pool
    from cartfhir.preflight import CheckReport
    from cartfhir.transform import TransformResult
    from cartfhir.transform.views import ViewResult

_LAZY: dict[str, tuple[str, str]] = {  # re-exported name: (module, name there)
    "AnalysisResult": ("cartfhir.analyze", "AnalysisResult"),
    "ValidationReport": ("cartfhir.expectations", "ValidationReport"),
    "load_suites": ("cartfhir.expectations", "load_suites"),
    "ExtractResult": ("cartfhir.extract", "ExtractResult"),
    "PackageResult": ("cartfhir.multisite.package", "PackageResult"),
    "SignResult": ("cartfhir.multisite.package", "SignResult"),
    "export_site": ("cartfhir.multisite.package", "export_site"),
    "sign": ("cartfhir.multisite.package", "sign_package"),
    "PoolResult": ("cartfhir.multisite.pool", "PoolResult"),
    "pool": ("cartfhir.multisite.pool", "pool"),
    "CheckReport": ("cartfhir.preflight", "CheckReport"),
    "TransformResult": ("cartfhir.transform", "TransformResult"),
    "ViewResult": ("cartfhir.transform.views", "ViewResult"),
}


def __getattr__(name: str) -> Any:
    """Load a name re-exported from a stage on first use (PEP 562), so importing the API
    stays cheap; it is then cached in this module's namespace."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


__all__ = ["AnalysisResult", "DemoResult", "ExtractResult", "ExportResult", "ExportedFile",
           "QueryResult",
           "RunResult", "TransformResult", "ValidationReport", "analyze", "check", "export",
           "export_raw", "export_site", "pool", "PackageResult", "PoolResult", "KeyPair",
           "SignResult",
           "keygen", "sign", "ViewResult", "demo", "extract", "generate", "load_config",
           "load_suites", "query", "query_to_file", "run", "transform", "validate", "view"]


@dataclass
class RunResult(ResultDict):
    """What ``run`` did, stage by stage (stages arrive with their issues)."""

    extract: ExtractResult
    transform: TransformResult | None = None
    validation: ValidationReport | None = None
    allow_invalid: bool = False
    analysis: AnalysisResult | None = None

    @property
    def status(self) -> str:
        """'invalid' when error expectations failed and that was not allowed."""
        if self.validation is not None and not self.validation.valid and not self.allow_invalid:
            return "invalid"
        return self.extract.status


@dataclass(frozen=True)
class DemoResult(ResultDict):
    synth: SynthResult
    run: RunResult
    duckdb_path: Path

    @property
    def status(self) -> str:
        return self.run.status


def extract(config: Config, site_ids: Sequence[str] | None = None,
            progress: Progress | None = None, command: str = "extract",
            workers: int | None = None, full: bool = False,
            since: str | None = None) -> ExtractResult:
    """Land the selected sites (default: all) into the config's DuckDB file.

    Raises ConfigError for an unknown site id; see ``cartfhir.extract.extract`` for
    the rest (``workers``, ``full``, ``since``, partial and strict runs).
    """
    from cartfhir import extract as extract_stage

    return extract_stage.extract(Store.of(config), _sites(config, site_ids), config.landing,
                                 progress=progress, command=command, workers=workers,
                                 full=full, since=since)


def _sites(config: Config, site_ids: Sequence[str] | None) -> list[Site]:
    if not site_ids:
        return list(config.sites)
    return [config.site(site_id) for site_id in dict.fromkeys(site_ids)]


def transform(config: Config, progress: Progress | None = None,
              command: str = "transform", *, engine: str | None = None) -> TransformResult:
    """Rebuild ref, flat, harmonized, cohort and qa tables: in the config's DuckDB, or with
    Spark (``engine.kind: spark`` or ``engine="spark"``) as Parquet under engine.tables,
    which the DuckDB store then reads as views. ``engine`` overrides the config's."""
    from cartfhir import transform as transform_stage

    chosen = config.engine_for(engine)
    # config problems surface before anything is touched
    reference = transform_stage.load_reference(config)
    if chosen.kind == "spark":
        from cartfhir.spark.transform import spark_transform

        return spark_transform(Store.of(config), reference, config.sites, chosen,
                               progress=progress, command=command, config=config)
    return transform_stage.transform(Store.of(config), reference, config.sites,
                                     progress=progress, command=command)


def validate(config: Config, progress: Progress | None = None,
             command: str = "validate") -> ValidationReport:
    """Run every suite, with the config's rules, against the config's DuckDB."""
    from cartfhir import expectations as expectations_stage

    suites = expectations_stage.load_suites(config)  # config mistakes surface before anything runs
    docs = config.output.folder / "gx" if config.expectations.data_docs else None
    return expectations_stage.validate(
        Store.of(config), suites, config.expectations, docs=docs, progress=progress,
        command=command)


def analyze(config: Config, progress: Progress | None = None, command: str = "analyze",
            invalid_warning: str | None = None) -> AnalysisResult:
    """Compute the analysis tables, the report and the exports into the output folder."""
    from cartfhir import analyze as analysis_stage

    return analysis_stage.analyze(Store.of(config), config.analysis, out=config.output.folder,
                                  study=config.study.name, progress=progress,
                                  command=command, invalid_warning=invalid_warning)


def run(config: Config, progress: Progress | None = None, command: str = "run",
        allow_invalid: bool = False) -> RunResult:
    """Run every stage, in order: extract -> transform -> validate -> (analysis).

    A partial extraction is still transformed and validated (the run stays
    'partial'), so what did arrive can be inspected; a failed one raises. Data that
    fails an 'error' expectation makes the run 'invalid' and stops it before
    analysis, unless ``allow_invalid``. The pre-flight ``check`` runs first: any
    problem raises ConfigError naming every failed item before anything is written.
    """
    check(config).raise_if_failed()
    return _run_stages(config, progress, command, allow_invalid)


def check(config: Config, *, network: bool = True) -> CheckReport:
    """Pre-flight: the config's files, secrets, output, servers and engine (see preflight)."""
    from cartfhir import preflight

    return preflight.check(config, network=network)


def _run_stages(config: Config, progress: Progress | None, command: str,
                allow_invalid: bool) -> RunResult:
    landed = extract(config, progress=progress, command=command)
    built = transform(config, progress=progress, command=command)
    checked = validate(config, progress=progress, command=command)
    result = RunResult(extract=landed, transform=built, validation=checked,
                       allow_invalid=allow_invalid)
    if result.status == "invalid":
        return result  # no analysis of data that failed error expectations
    warning = None if checked.valid else (
        f"the data failed {len(checked.failed_errors)} error expectations (validation run "
        f"{checked.run_id}); analysed anyway because --allow-invalid was given")
    result.analysis = analyze(config, progress=progress, command=command,
                              invalid_warning=warning)
    return result


def view(config: Config | None, view_file: Path, *, db: Path | None = None,
         out: Path | None = None, table: str | None = None,
         engine: str | None = None) -> ViewResult:
    """Run any ViewDefinition over raw.resources; write a table, Parquet or CSV.

    On Spark (the config's engine, or ``engine="spark"``) the view is compiled to Spark
    SQL over engine.raw and written as a Parquet folder ``out`` partitioned by site.
    """
    chosen = config.engine_for(engine) if config is not None else None
    if engine == "spark" and config is None:
        raise UsageError("--engine spark reads the config's engine and output; give "
                         "--config instead of --db")
    if chosen is not None and chosen.kind == "spark":
        if db is not None or table is not None:
            raise UsageError("on Spark a view is written as Parquet: give --out FOLDER, "
                             "not --db or --table")
        if out is None:
            raise UsageError("on Spark give --out FOLDER for the view's Parquet files")
        from cartfhir.spark.transform import spark_view

        return spark_view(config, chosen, view_file, out)  # type: ignore[arg-type]
    from cartfhir.transform.views import run_view_file

    path = db if db is not None else config.output.duckdb if config else None
    if path is None:
        raise UsageError("give a config or --db to say which DuckDB file holds raw.resources")
    if not Path(path).exists():  # refused as 'query' refuses it, before a write creates it
        Store(Path(path)).connect(read_only=True)
    return run_view_file(path, view_file, out=out, table=table,
                         memory_limit=config.output.memory_limit if config else None)


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
    _demo_keys(config)
    synth = generate(folders.pop(), patients=patients, seed=seed,
                     sites=[s.id for s in config.sites], overwrite=True, progress=progress)
    check(config).raise_if_failed()
    result = _run_stages(config, progress, "demo", allow_invalid=False)
    return DemoResult(synth=synth, run=result, duckdb_path=config.output.duckdb)


def _demo_keys(config: Config) -> None:
    """Create random pseudonym key files the demo config names but that do not exist yet."""
    for site in config.sites:
        ref = site.pseudonym_key
        if ref is not None and ref.file is not None and not ref.file.exists():
            ref.file.parent.mkdir(parents=True, exist_ok=True)
            ref.file.write_text(secrets.token_hex(32) + "\n", encoding="utf-8")
            ref.file.chmod(0o600)


@dataclass
class QueryResult:
    """Columns, their DuckDB types and a stream of rows from a read-only connection,
    closed when consumed."""

    columns: list[str]
    _con: duckdb.DuckDBPyConnection
    types: list[str] = field(default_factory=list)  # e.g. 'BIGINT', 'JSON', 'VARCHAR[]'

    @property
    def json_columns(self) -> set[str]:
        """Columns of DuckDB type JSON: their values are JSON text, to be read as objects."""
        return json_columns(self.columns, self.types)

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


def _store(config: Config | None, db: Path | None) -> Store:
    """The config's store, or the DuckDB file ``db`` (with the config's memory limit, if any)."""
    if db is None and config is None:
        raise UsageError("give a config or a database path")
    if config is None:
        return Store(Path(db))  # type: ignore[arg-type]
    return Store(Path(db) if db is not None else config.output.duckdb,
                 config.output.memory_limit, config.config_hash)


def query(config: Config | None, sql: str, db: Path | None = None) -> QueryResult:
    """Run one SQL statement on a read-only connection to the output DuckDB (or ``db``).

    More than one statement is a UsageError: only the last one's rows would come back.
    """
    sql = exports.one_statement(sql)
    store = _store(config, db)
    con = store.connect(read_only=True)
    try:
        con.execute(sql)
    except duckdb.Error as exc:
        con.close()
        raise DatabaseError(f"query failed on {store.path}: {exc}") from None
    description = con.description or []
    return QueryResult(columns=[d[0] for d in description], _con=con,
                       types=[str(d[1]) for d in description])


def query_to_file(config: Config | None, sql: str, out: Path, fmt: str,
                  db: Path | None = None) -> ExportedFile:
    """Write one query's rows to ``out`` as csv, json or parquet (read-only connection)."""
    return exports.write_query(_store(config, db), sql, Path(out), fmt)


def export_raw(config: Config, out: Path, *, force: bool = False) -> int:
    """Write the store's raw.resources as Parquet to ``out/raw.resources/site=/resource_type=/``
    (what ``engine.raw: <folder>`` reads on Spark); return the rows written."""
    from cartfhir.spark.raw import export_raw as write_raw

    with Store.of(config).session(read_only=True) as con:
        return write_raw(con, Path(out), force=force)


def export(config: Config, out: Path, fmt: str = "parquet",
           tables: Sequence[str] = DEFAULT_TABLES, *, force: bool = False) -> ExportResult:
    """Write the chosen tables (names or patterns like 'cohort.*') to ``out``, split by site."""
    return exports.export_tables(Store.of(config), Path(out), fmt, list(tables), force=force)
