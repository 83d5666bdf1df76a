"""The coordinating center: verify site packages and combine them into one pooled DuckDB.

Every package is hostile input until checked, and checked before anything is written:
only the package's own file names are read (``intake``), the manifest must match its
schema (``manifest``) and carry its site's signature (``signing``), every file its
SHA-256, every table exactly its declared columns and types and only its own site's
rows, and the study definitions (``ref.*``) must equal the other packages' and the
pooled database's. Table and column names in SQL come from the tool's own lists
(``package.POLICY``, ``package.declared_schema``), quoted; file paths go in as
parameters. No package is given twice and no two claim the same site. The pooled
database is built in a copy and moved into place only when everything succeeded, so
a refusal leaves an existing pooled database exactly as it was. A newer package
from a site replaces that site's rows only. The pooled data is then validated with
the cohort suites and analysed pooled and by site, with site-stratified tests and a
test of heterogeneity between sites for the main proportions
(``analysis.heterogeneity``). Every table of the pooled database is also written as
Parquet to ``<pooled stem>_parquet/`` beside it, in the layout of the Spark table store
(``cartfhir.spark.tables``: ``<schema>.<table>/site=<id>/part-*.parquet``), for DuckDB,
Spark or any Parquet engine; it is replaced together with the database.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import stat
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from cartfhir.analyze import AnalysisResult, analyze
from cartfhir.config import POOLED_SITE, Analysis, Expectations, Output
from cartfhir.db import apply_ddl, quoted, write_frame
from cartfhir.errors import DatabaseError, PoolError, UsageError
from cartfhir.expectations import ValidationReport, validate
from cartfhir.expectations.suites import expectation_suites, package_suites
from cartfhir.graph import load_graph, sql_tables
from cartfhir.logs import logged_stage
from cartfhir.multisite import intake, signing
from cartfhir.multisite.manifest import Manifest, parse_manifest
from cartfhir.multisite.package import (
    MANIFEST,
    POLICY,
    SCHEMA_VERSION,
    SIGNATURE,
    STUDY_DEFINITIONS,
    declared_schema,
    file_sha256,
    shown,
    table_file,
)
from cartfhir.results import ResultDict
from cartfhir.spark.tables import write_layout
from cartfhir.store import Store

UNSIGNED = "unsigned (--allow-unsigned)"
PARQUET_SUFFIX = "_parquet"  # <pooled stem>_parquet/: the pooled tables as Parquet
MEMORY_LIMIT: str = Output.model_fields["memory_limit"].default  # as a site's DuckDB
# Rows per table per package: a Parquet file of 100 KB can hold millions of repeated rows,
# so the count is capped from the file's metadata before it is read. 50 million is far
# above any CAR-T cohort (harmonized.lab, the largest table, has ~10^4 rows per patient).
MAX_TABLE_ROWS = 50_000_000


@dataclass
class Package:
    source: Path
    folder: Path  # the private copy made by intake.bring_in, never the source itself
    manifest: Manifest
    manifest_sha256: str
    signed_by: str  # 'ed25519:<key fingerprint>', or UNSIGNED

    @property
    def site(self) -> str:
        return self.manifest.site

    def file(self, table: str) -> Path:
        return self.folder / table_file(table)


@dataclass
class PoolResult(ResultDict):
    path: Path
    sites: list[str]
    rows: dict[str, int] = field(default_factory=dict)
    validation: ValidationReport | None = None
    analysis: AnalysisResult | None = None
    unsigned: list[str] = field(default_factory=list)  # sites pooled with --allow-unsigned

    @property
    def status(self) -> str:
        """'invalid' when the pooled data failed error expectations, else 'success'."""
        return "invalid" if self.validation is not None and not self.validation.valid \
            else "success"


def _signature(package_folder: Path, raw: bytes, manifest: Manifest, where: str,
               keys: Path | None, allow_unsigned: bool) -> str:
    """Who signed the manifest, checked against ``keys/<site>.pub`` (a bad signature is
    refused even with ``allow_unsigned``); UNSIGNED when unsigned packages are allowed."""
    signature = package_folder / SIGNATURE
    if keys is None or (allow_unsigned and not signature.exists()):
        return UNSIGNED
    if not signature.exists():
        raise PoolError(f"{where}: the package is not signed ({SIGNATURE} is missing); ask "
                        f"site {manifest.site!r} to set sites[].signing_key and export again, "
                        "or sign it with 'cartfhir sign'")
    key = signing.public_key(keys, manifest.site)
    signing.verify(raw, signature.read_bytes(), key, manifest.site, where)
    return f"ed25519:{signing.fingerprint(key)}"


def verify(source: Path, work: Path, *, keys: Path | None = None,
           allow_unsigned: bool = False, memory_limit: str | None = MEMORY_LIMIT) -> Package:
    """Read and check one package; raise PoolError saying exactly what is wrong.

    Nothing is read from ``source`` but the package's own file names; the checks run on
    the private copy in ``work``: the manifest's schema, the signature (before anything
    the manifest says is used, and before any table file is copied), every file's
    SHA-256, then each table's content.
    """
    where = str(source)
    folder = intake.bring_in(Path(source), work / f"pkg-{len(list(work.iterdir()))}",
                             (MANIFEST, SIGNATURE))
    path = folder / MANIFEST
    if not path.exists():
        raise PoolError(f"{where}: {MANIFEST} is missing; this is not a cartfhir site package")
    raw = path.read_bytes()
    manifest = parse_manifest(raw, where)
    signed_by = _signature(folder, raw, manifest, where, keys, allow_unsigned)
    # only a package whose signature holds (or an allowed unsigned one) costs more
    intake.bring_in(Path(source), folder, [table_file(t) for t in POLICY])
    for table, entry in manifest.tables.items():
        file = folder / table_file(table)
        if not file.exists():
            raise PoolError(f"{where}: {entry.file} ({table}) is missing from the package")
        if file_sha256(file) != entry.sha256:
            raise PoolError(f"{where}: {entry.file} ({table}) does not match its SHA-256 "
                            "in the manifest: it was changed or damaged after export")
    package = Package(Path(source), folder, manifest, hashlib.sha256(raw).hexdigest(),
                      signed_by)
    _check_content(package, memory_limit)
    return package


def _check_content(package: Package, memory_limit: str | None) -> None:
    """Each table has exactly the declared columns and types, the rows the manifest
    counts, and only rows of the package's own site."""
    with Store.scratch(memory_limit).session() as con:
        for table in POLICY:
            with _reading(package, table):
                _check_table(con, package, table)


@contextmanager
def _reading(package: Package, table: str) -> Iterator[None]:
    """A table file DuckDB cannot read (damaged pages, invalid UTF-8, ...) becomes a
    refusal naming the package and the table, wherever in the pool it is read."""
    try:
        yield
    except duckdb.Error as exc:
        raise PoolError(f"{package.source}: {table_file(table)} cannot be read "
                        f"({shown(exc)}); ask site {package.site!r} to export again") from None


def _check_table(con: duckdb.DuckDBPyConnection, package: Package, table: str) -> None:
    file = str(package.file(table))
    where = f"{package.source}: {table_file(table)}"
    declared = con.execute("SELECT sum(num_rows) FROM parquet_file_metadata(?)",
                           [file]).fetchone()[0] or 0
    if declared > MAX_TABLE_ROWS:
        raise PoolError(f"{where} holds {declared} rows, more than the {MAX_TABLE_ROWS} a "
                        "package table may hold (pool.MAX_TABLE_ROWS); refused before reading")
    found = [(r[0], r[1]) for r in con.execute(
        "DESCRIBE SELECT * FROM read_parquet(?)", [file]).fetchall()]
    _check_schema(found, declared_schema(table), where)
    rows = con.execute("SELECT count(*) FROM read_parquet(?)", [file]).fetchone()[0]
    if rows != package.manifest.tables[table].rows:
        raise PoolError(f"{where}: {rows} rows, the manifest says "
                        f"{package.manifest.tables[table].rows}")
    if table in STUDY_DEFINITIONS:
        _check_finite(con, file, table, where)
    if "site" in dict(found):
        other = con.execute(
            "SELECT site, count(*) FROM read_parquet(?) WHERE site IS DISTINCT FROM ? "
            "GROUP BY site ORDER BY count(*) DESC LIMIT 1", [file, package.site]).fetchone()
        if other:
            raise PoolError(f"{package.source}: {table} has {other[1]} row(s) of site "
                            f"{shown(other[0])} in a package of site {package.site!r}; a "
                            "package may hold only its own site's rows")


def _check_finite(con: duckdb.DuckDBPyConnection, file: str, table: str, where: str) -> None:
    """Study-definition numbers are finite (NaN would never equal itself, inf is no cut-off)."""
    schema = declared_schema(table)
    key = quoted(schema[0][0])
    for column, kind in schema:
        if kind == "DOUBLE":
            bad = con.execute(f"SELECT {key}, {quoted(column)} FROM read_parquet(?) "
                              f"WHERE NOT isfinite({quoted(column)}) LIMIT 1",
                              [file]).fetchone()
            if bad:
                raise PoolError(f"{where}: {column} of {shown(bad[0])} is {bad[1]}, not a "
                                "finite number; study definitions hold finite numbers")


def _check_schema(found: list[tuple[str, str]], expected: tuple[tuple[str, str], ...],
                  where: str) -> None:
    names = {c for c, _ in expected}
    extra = [c for c, _ in found if c not in names]
    if extra:
        raise PoolError(f"{where}: unexpected column(s) {', '.join(map(shown, extra))}; a "
                        "package table holds exactly the columns cartfhir declares for it")
    have = dict(found)
    missing = [c for c, _ in expected if c not in have]
    if missing:
        raise PoolError(f"{where}: missing column(s) {', '.join(missing)}")
    for column, kind in expected:
        if have[column] != kind:
            raise PoolError(f"{where}: column {column} is {shown(have[column])}, "
                            f"expected {kind}")
    if [c for c, _ in found] != [c for c, _ in expected]:
        raise PoolError(f"{where}: the columns are not in the declared order")


def _check_set(packages: list[Package]) -> None:
    seen: dict[str, Package] = {}
    by_site: dict[str, Package] = {}
    for p in packages:
        if p.manifest_sha256 in seen:
            raise PoolError(f"{p.source} and {seen[p.manifest_sha256].source} are the same "
                            "package given twice")
        seen[p.manifest_sha256] = p
        if p.site in by_site:
            raise PoolError(f"{p.source} and {by_site[p.site].source} both claim site "
                            f"{p.site!r}; pool one package per site")
        by_site[p.site] = p
    studies = {p.manifest.study for p in packages}
    if len(studies) > 1:
        raise PoolError(f"the packages come from different studies: {sorted(studies)}")


def _rows(con: duckdb.DuckDBPyConnection, table: str, parquet: Path | None) -> list[tuple]:
    """A study-definition table's rows in a fixed order (from a package file or the pool)."""
    columns = ", ".join(quoted(c) for c, _ in declared_schema(table))
    if parquet is not None:
        return con.execute(f"SELECT {columns} FROM read_parquet(?) ORDER BY ALL",
                           [str(parquet)]).fetchall()
    return con.execute(f"SELECT {columns} FROM {quoted(table)} ORDER BY ALL").fetchall()


def _comparable(row: tuple) -> tuple:
    """A row as compared: NaN equals NaN (IS NOT DISTINCT FROM), unlike in Python's ==."""
    return tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row)


def _same_definitions(table: str, first: tuple[str, list[tuple]],
                      second: tuple[str, list[tuple]]) -> None:
    (a, rows_a), (b, rows_b) = first, second
    if Counter(map(_comparable, rows_a)) == Counter(map(_comparable, rows_b)):
        return
    columns = [c for c, _ in declared_schema(table)]

    def show(rows: list[tuple]) -> str:
        return "; ".join("(" + ", ".join(f"{c}={v!r}" for c, v in zip(columns, r, strict=True))
                         + ")" for r in rows[:3]) or "nothing"

    counts_a, counts_b = Counter(map(_comparable, rows_a)), Counter(map(_comparable, rows_b))
    only_a = [r for r in rows_a if _comparable(r) in counts_a - counts_b]
    only_b = [r for r in rows_b if _comparable(r) in counts_b - counts_a]
    raise PoolError(f"{table} differs: {a} has {show(only_a)} where {b} has {show(only_b)}. "
                    "Study definitions (windows, thresholds, concepts, grade cut-offs) must be "
                    "the same at every site: the sites should transform with one study config "
                    "and export again")


def _check_study(con: duckdb.DuckDBPyConnection, packages: list[Package], pooled: str) -> None:
    """The packages' study is the one the pooled database already holds (if any)."""
    exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE "
                         "table_schema = 'meta' AND table_name = 'pool_package'").fetchone()[0]
    if not exists:
        return
    older = con.execute(
        "SELECT json_extract_string(manifest, '$.schema_version') AS version, "
        "string_agg(site, ', ' ORDER BY site) FROM meta.pool_package WHERE version IS DISTINCT "
        "FROM ? GROUP BY ALL ORDER BY 1 LIMIT 1", [SCHEMA_VERSION]).fetchone()
    if older is not None:  # its tables and study definitions are that format's
        raise PoolError(f"the pooled database {pooled} holds packages of schema version "
                        f"{shown(older[0])} (sites {shown(older[1])}), this cartfhir pools "
                        f"{SCHEMA_VERSION!r}; pool the sites' current packages into a new "
                        "database")
    studies = [r[0] for r in con.execute(
        "SELECT DISTINCT json_extract_string(manifest, '$.study') FROM meta.pool_package "
        "ORDER BY 1").fetchall()]
    for p in packages:
        if studies and p.manifest.study not in studies:
            raise PoolError(f"{p.source} (site {p.site}) is of study {shown(p.manifest.study)}, "
                            f"the pooled database {pooled} holds study "
                            f"{', '.join(map(shown, studies))}; pool each study into its own "
                            "database")


def _check_definitions(con: duckdb.DuckDBPyConnection, packages: list[Package],
                       pooled: str) -> None:
    """Every package's study definitions equal each other's and the pooled database's."""
    for table in STUDY_DEFINITIONS:
        reference = None
        exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE "
                             "table_schema = ? AND table_name = ?",
                             table.split(".")).fetchone()[0]
        if exists and con.execute(f"SELECT count(*) FROM {quoted(table)}").fetchone()[0]:
            reference = (f"the pooled database {pooled}", _rows(con, table, None))
        for p in packages:
            with _reading(p, table):
                current = (f"{p.source} (site {p.site})", _rows(con, table, p.file(table)))
            if reference is None:
                reference = current
            else:
                _same_definitions(table, reference, current)


def _ensure_table(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """The pooled table with the declared columns, or a refusal if it has others."""
    schema = declared_schema(table)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted(table.split('.')[0])}")
    con.execute(f"CREATE TABLE IF NOT EXISTS {quoted(table)} ("
                + ", ".join(f"{quoted(c)} {kind}" for c, kind in schema) + ")")
    found = tuple((r[0], r[1]) for r in con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? "
        "AND table_name = ? ORDER BY ordinal_position", table.split(".")).fetchall())
    if found != schema:
        raise PoolError(f"the pooled database's {table} has other columns than this cartfhir "
                        "declares; pool into a new database")


def _load(con: duckdb.DuckDBPyConnection, package: Package) -> dict[str, int]:
    """Replace this site's rows in every pooled table with the package's."""
    apply_ddl(con, "cartfhir.multisite.sql", "pool_package")
    previous = con.execute("SELECT created, signed_by FROM meta.pool_package WHERE site = ?",
                           [package.site]).fetchone()
    created = package.manifest.created
    if previous and previous[1] not in (None, UNSIGNED) and package.signed_by == UNSIGNED:
        raise PoolError(f"{package.source}: site {package.site!r} was pooled from a signed "
                        "package; an unsigned package cannot replace its rows (pool it with "
                        "--keys and the site's signature)")
    if previous and _moment(previous[0]) > _moment(created):
        raise PoolError(f"{package.source}: site {package.site!r} was pooled from a newer "
                        f"package ({previous[0]}) than this one ({created})")
    rows = {}
    for table in POLICY:
        _ensure_table(con, table)
        columns = ", ".join(quoted(c) for c, _ in declared_schema(table))
        insert = (f"INSERT INTO {quoted(table)} ({columns}) SELECT {columns} "
                  "FROM read_parquet(?)")
        with _reading(package, table):
            if table in STUDY_DEFINITIONS:  # equal everywhere (checked): loaded once
                if not con.execute(f"SELECT count(*) FROM {quoted(table)}").fetchone()[0]:
                    con.execute(insert, [str(package.file(table))])
            else:
                con.execute(f"DELETE FROM {quoted(table)} WHERE site = ?", [package.site])
                con.execute(insert, [str(package.file(table))])
        rows[table] = package.manifest.tables[table].rows
    con.execute("INSERT OR REPLACE INTO meta.pool_package (site, created, manifest_sha256, "
                "manifest, source, signed_by) VALUES (?, ?, ?, ?, ?, ?)",
                [package.site, created, package.manifest_sha256,
                 package.manifest.model_dump_json(), str(package.source), package.signed_by])
    return rows


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _wal(database: Path) -> Path:
    return database.with_name(database.name + ".wal")


def pooled_suite_names() -> list[str]:
    """The suites a pooled database can run: those whose rows come only from tables that
    travel in site packages (the others read raw, flat or site-only tables)."""
    return [suite["name"] for suite in package_suites()
            if sql_tables(suite["meta"]["query"]) <= set(POLICY)]


def _install(store: Store, out: Path) -> None:
    """Move the built database to ``out`` atomically: checkpointed (no WAL of its own),
    copied next to ``out`` under a fresh name, renamed over it, and the old file's WAL
    removed, which would otherwise be replayed into the new file."""
    with store.session() as con:
        con.execute("CHECKPOINT")
    building = store.path
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    staged = Path(name)
    try:
        with os.fdopen(fd, "wb") as target, building.open("rb") as source:
            shutil.copyfileobj(source, target, 1 << 20)
            os.fchmod(target.fileno(), stat.S_IMODE(out.stat().st_mode) if out.exists()
                      else 0o644)  # mkstemp makes 0600
        os.replace(staged, out)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    _wal(out).unlink(missing_ok=True)


def parquet_folder(out: Path) -> Path:
    """Where the pooled tables go as Parquet: ``<out stem>_parquet`` beside ``out``."""
    return Path(out).absolute().parent / f"{Path(out).stem}{PARQUET_SUFFIX}"


def _check_parquet_folder(out: Path, packages: list[Path] | tuple[Path, ...]) -> Path:
    """The Parquet folder, refused before anything is read when something else is there
    (a file, a link) or when it is, or lies inside, a package being pooled."""
    folder = parquet_folder(out)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise UsageError(f"{folder} is a file or a link, and pool writes the pooled tables "
                         "as Parquet into a folder of that name; move it away")
    real = folder.resolve()
    for package in packages:
        path = Path(package).absolute().resolve()
        if real == path or real.is_relative_to(path):
            raise UsageError(f"{folder}, where pool writes the pooled tables as Parquet, is "
                             f"or lies inside the site package {package}; pool into another "
                             "folder")
    return folder


def _write_parquet(store: Store, folder: Path) -> Path:
    """Every graph table of the built database in the table-store layout, in a new folder
    beside ``folder`` (moved over it by ``_install_parquet``); return the new folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial",
                                   dir=folder.parent))
    try:
        with store.session(read_only=True) as con:
            present = {f"{r[0]}.{r[1]}" for r in con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_type = 'BASE TABLE'").fetchall()}
            write_layout(con, [t for t in load_graph().tables if t in present], staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def _install_parquet(staged: Path, folder: Path) -> None:
    """Put ``staged`` in place of ``folder`` (the previous one removed after the move)."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old",
                                    dir=folder.parent)) / folder.name
        os.replace(folder, old)
    os.replace(staged, folder)
    if old is not None:
        shutil.rmtree(old.parent, ignore_errors=True)


def _finite(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def heterogeneity(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Site-stratified CART1 vs CART2 odds ratio (Mantel-Haenszel) and Breslow-Day test.

    For the endpoints analysis.endpoint flags (endpoints.yaml ``heterogeneity``).
    """
    from statsmodels.stats.contingency_tables import StratifiedTable

    rows = []
    table = con.execute("SELECT * FROM analysis.comparison WHERE site <> ? AND kind = "
                        "'proportion'", [POOLED_SITE]).df()
    tested = [r[0] for r in con.execute("SELECT key FROM analysis.endpoint WHERE heterogeneity "
                                        "ORDER BY position").fetchall()]
    for endpoint in tested:
        part = table[table["endpoint"] == endpoint]
        strata = [[[r.cart1_events, r.cart1_n - r.cart1_events],
                   [r.cart2_events, r.cart2_n - r.cart2_events]]
                  for r in part.itertuples() if r.cart1_n and r.cart2_n]
        entry: dict[str, Any] = {"endpoint": endpoint, "sites": len(strata),
                                 "mh_odds_ratio": None, "cmh_p_value": None,
                                 "breslow_day_p_value": None}
        if len(strata) >= 2:
            st = StratifiedTable([[[float(x) for x in row] for row in s] for s in strata])
            try:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")  # zero cells: the statistic says inf/nan
                    entry["mh_odds_ratio"] = _finite(st.oddsratio_pooled)
                    entry["cmh_p_value"] = _finite(st.test_null_odds(correction=False).pvalue)
                    entry["breslow_day_p_value"] = _finite(st.test_equal_odds().pvalue)
            except (ZeroDivisionError, ValueError, FloatingPointError):
                pass  # a degenerate stratum set: the row stays empty rather than wrong
        rows.append(entry)
    return pd.DataFrame(rows, columns=["endpoint", "sites", "mh_odds_ratio", "cmh_p_value",
                                       "breslow_day_p_value"])


def build_heterogeneity(con: duckdb.DuckDBPyConnection, context: Any = None) -> int:
    """Builder of analysis.heterogeneity (pooled databases only)."""
    return write_frame(con, "analysis.heterogeneity", heterogeneity(con))


def report_folder(out: Path, report_dir: Path | None = None,
                  packages: list[Path] | tuple[Path, ...] = ()) -> Path:
    """Where a pool's report and exports go: ``report_dir``, else ``<out stem>_report``
    beside the pooled database ``out`` (absolute, so a changed working folder cannot move it).

    Checked before anything is read or written: the folder may not be the pooled database
    or its WAL (nor lie inside them), since the database is installed there after the
    report is written; nor be or lie inside one of ``packages``, since the report must
    never write into a package it is verifying. Symbolic links are followed for the
    comparison, so a link cannot smuggle the folder into either.
    """
    folder = Path(report_dir) if report_dir is not None else out.parent / f"{out.stem}_report"
    folder = folder.absolute()
    given = (f"--report-dir {report_dir}" if report_dir is not None
             else f"the report folder {folder}")
    real = folder.resolve()
    for target, what in [(out, "the pooled database (--out)"),
                         (_wal(out), "the pooled database's WAL file")]:
        if real == target.resolve() or real.is_relative_to(target.resolve()):
            raise UsageError(f"{given}: {folder} is or lies inside {target}, {what}; name a "
                             "different folder for the pooled report and its exports")
    for package in packages:
        path = Path(package).absolute().resolve()
        if real == path or real.is_relative_to(path):
            raise UsageError(f"{given}: {folder} is or lies inside the site package {package} "
                             "being pooled, and the report never writes into a package; name "
                             "a folder outside the packages")
    if folder.exists() and not folder.is_dir():
        if report_dir is None:
            raise UsageError(f"{folder} is a file, and the pooled report goes into a folder "
                             "of that name by default; move the file or give --report-dir DIR")
        raise UsageError(f"--report-dir {report_dir}: {folder} is a file; name a folder for "
                         "the pooled report and its exports")
    return folder


@logged_stage("pool", db=lambda args: Path(args["out"]).absolute())
def pool(sources: list[Path], out: Path, *, keys: Path | None = None,
         allow_unsigned: bool = False, analyse: bool = True,
         memory_limit: str | None = MEMORY_LIMIT,
         report_dir: Path | None = None) -> PoolResult:
    """Verify the packages, pool them into ``out`` (atomically), validate and analyse.

    ``keys`` is the folder of the sites' public keys (``<site>.pub``); every package must
    be signed by its own site's key unless ``allow_unsigned`` (local testing), which the
    pooled database (meta.pool_package.signed_by) and the report record. Every DuckDB
    connection is opened with ``memory_limit``. The report and exports (``report.html``,
    ``analysis/``) go to ``report_dir``, by default the folder ``<out stem>_report`` next to
    ``out``: beside the database they describe, as a site's go to its output folder, and
    never into the work folder this function deletes before it returns.
    """
    if keys is None and not allow_unsigned:
        raise UsageError("give --keys DIR (the sites' public keys, <site>.pub) to verify the "
                         "packages' signatures, or --allow-unsigned for local testing")
    if keys is not None and not Path(keys).is_dir():
        raise UsageError(f"--keys {keys}: no such folder")
    out = Path(out).absolute()  # the report goes next to it, not into the work folder
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give the path of the pooled DuckDB file")
    report = report_folder(out, report_dir, sources)
    parquet = _check_parquet_folder(out, sources)
    work = Path(tempfile.mkdtemp(prefix="cartfhir-pool-"))
    try:
        packages = [verify(Path(s), work, keys=keys, allow_unsigned=allow_unsigned,
                           memory_limit=memory_limit) for s in sources]
        if not packages:
            raise PoolError("give at least one site package")
        _check_set(packages)
        store = Store(work / "pooled.duckdb", memory_limit)
        if out.exists():  # with its WAL: changes not yet checkpointed live only there
            shutil.copy2(out, store.path)
            if _wal(out).exists():
                shutil.copy2(_wal(out), _wal(store.path))
        try:
            con = store.connect()
        except DatabaseError as exc:  # name the user's file, not our copy of it
            raise PoolError(f"{out} is not a DuckDB database "
                            f"({str(exc).replace(str(store.path), str(out))})") from None
        try:
            _check_study(con, packages, str(out))
            _check_definitions(con, packages, str(out))
            rows: dict[str, int] = {}
            for package in packages:
                for table, n in _load(con, package).items():
                    rows[table] = rows.get(table, 0) + n
            sites = [r[0] for r in con.execute(
                "SELECT site FROM meta.pool_package ORDER BY site").fetchall()]
            unsigned = [r[0] for r in con.execute(
                "SELECT site FROM meta.pool_package WHERE signed_by IS NULL OR signed_by = ? "
                "ORDER BY site", [UNSIGNED]).fetchall()]
        finally:
            con.close()
        result = PoolResult(path=out, sites=sites, rows=rows, unsigned=unsigned)
        if analyse:
            _analyse(store, result, study=packages[0].manifest.study, report=report)
        staged = _write_parquet(store, parquet)
        try:
            _install(store, out)  # only now is the old pooled file replaced
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        _install_parquet(staged, parquet)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _analyse(store: Store, result: PoolResult, *, study: str, report: Path) -> None:
    """Validate the pooled data with the cohort suites, analyse it pooled and by site."""
    settings = Expectations()  # the defaults: a pool has no site config
    checked = validate(store, expectation_suites(settings, names=pooled_suite_names()),
                       settings, command="pool")
    result.validation = checked
    warnings_ = [f"the pooled data failed {len(checked.failed_errors)} error expectations"] \
        if not checked.valid else []
    if result.unsigned:
        warnings_.append(f"the packages of {', '.join(result.unsigned)} were pooled without "
                         "signature verification (--allow-unsigned)")
    result.analysis = analyze(store, Analysis(), out=report, study=f"{study} (pooled)",
                              command="pool", invalid_warning="; ".join(warnings_) or None)
    with store.session() as con:
        build_heterogeneity(con)
