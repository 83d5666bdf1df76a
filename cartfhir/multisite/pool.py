"""The coordinating center: verify site packages and combine them into one pooled DuckDB.

Every package is verified before anything is written: the manifest's schema
version, every file's SHA-256, and that no package is given twice and no two
claim the same site. The pooled database is built in a copy and moved into place
only when everything succeeded, so a refusal leaves an existing pooled database
exactly as it was. Adding a newer package from a site replaces that site's rows
only. The pooled data is then validated with the cohort suites and analysed
pooled and by site, with site-stratified tests and a test of heterogeneity
between sites for the main proportions (``analysis.heterogeneity``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from cartfhir.analyze import analyze
from cartfhir.config import Config, parse_config
from cartfhir.db import write_frame
from cartfhir.errors import PoolError
from cartfhir.expectations import store
from cartfhir.expectations.gx_runner import validate_suite
from cartfhir.expectations.suites import package_suites, suite_spec
from cartfhir.multisite.package import MANIFEST, POLICY, SCHEMA_VERSION, file_sha256

POOLED_SUITES = ("harmonized.lab", "cohort.patient", "cohort.episode",
                 "cohort.episode_endpoints", "cohort.lab_daily", "cohort.adverse_event")
HETEROGENEITY_ENDPOINTS = ("crs_any", "cres_any", "early_infection", "late_infection",
                           "severe_neutropenia", "cr", "mrd_negative_cr")


@dataclass
class Package:
    source: Path
    folder: Path
    manifest: dict[str, Any]
    manifest_sha256: str

    @property
    def site(self) -> str:
        return str(self.manifest["site"])


@dataclass
class PoolResult:
    path: Path
    sites: list[str]
    rows: dict[str, int] = field(default_factory=dict)
    validation: Any = None
    analysis: Any = None


def _open(source: Path, work: Path) -> Path:
    if source.is_dir():
        return source
    if source.suffix == ".zip" and source.is_file():
        target = work / f"pkg-{len(list(work.iterdir()))}"
        try:
            with zipfile.ZipFile(source) as zf:
                zf.extractall(target)
        except zipfile.BadZipFile as exc:
            raise PoolError(f"{source}: not a readable zip file ({exc})") from None
        return target
    raise PoolError(f"{source}: no such package (expected a folder or a .zip file)")


def verify(source: Path, work: Path) -> Package:
    """Read and check one package; raise PoolError saying exactly what is wrong."""
    folder = _open(Path(source), work)
    path = folder / MANIFEST
    if not path.exists():
        raise PoolError(f"{source}: {MANIFEST} is missing; this is not a cartfhir site package")
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PoolError(f"{source}: {MANIFEST} is not valid JSON ({exc})") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise PoolError(f"{source}: schema version {manifest.get('schema_version')!r}, this "
                        f"cartfhir pools {SCHEMA_VERSION!r}; re-export the package with a "
                        "matching cartfhir version")
    tables = manifest.get("tables") or {}
    missing = sorted(set(POLICY) - set(tables))
    if missing:
        raise PoolError(f"{source}: the manifest lists no {', '.join(missing)}")
    for table, entry in tables.items():
        file = folder / entry["file"]
        if not file.exists():
            raise PoolError(f"{source}: {entry['file']} ({table}) is missing from the package")
        if file_sha256(file) != entry["sha256"]:
            raise PoolError(f"{source}: {entry['file']} ({table}) does not match its SHA-256 "
                            "in the manifest: it was changed or damaged after export")
    return Package(Path(source), folder, manifest, hashlib.sha256(raw).hexdigest())


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


def _load(con: duckdb.DuckDBPyConnection, package: Package) -> dict[str, int]:
    """Replace this site's rows in every pooled table with the package's."""
    con.execute("CREATE SCHEMA IF NOT EXISTS meta")
    con.execute("CREATE TABLE IF NOT EXISTS meta.pool_package (site VARCHAR PRIMARY KEY, "
                "created VARCHAR, manifest_sha256 VARCHAR, manifest JSON, source VARCHAR)")
    previous = con.execute("SELECT created FROM meta.pool_package WHERE site = ?",
                           [package.site]).fetchone()
    if previous and previous[0] > package.manifest["created"]:
        raise PoolError(f"{package.source}: site {package.site!r} was pooled from a newer "
                        f"package ({previous[0]}) than this one ({package.manifest['created']})")
    rows = {}
    for table, entry in package.manifest["tables"].items():
        file = str(package.folder / entry["file"]).replace("'", "''")
        schema = table.split(".")[0]
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE "
                             "table_schema || '.' || table_name = ?", [table]).fetchone()[0]
        if not exists:
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_parquet('{file}') LIMIT 0")
        columns = [c[0] for c in con.execute(f"DESCRIBE {table}").fetchall()]
        if "site" in columns:
            con.execute(f"DELETE FROM {table} WHERE site = ?", [package.site])
            try:
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet('{file}')")
            except duckdb.Error as exc:
                raise PoolError(f"{package.source}: {table} does not fit the pooled table "
                                f"({exc})") from None
        else:  # study parameters (ref.*): the same for every site of one study
            con.execute(f"DELETE FROM {table}")
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet('{file}')")
        rows[table] = entry["rows"]
    con.execute("INSERT OR REPLACE INTO meta.pool_package VALUES (?, ?, ?, ?, ?)",
                [package.site, package.manifest["created"], package.manifest_sha256,
                 json.dumps(package.manifest), str(package.source)])
    return rows


def pooled_config(path: Path, report_dir: Path, sites: list[str], study: str) -> Config:
    """A config for analysing the pooled file (no sources: the packages were the sources)."""
    return parse_config({"study": {"name": f"{study} (pooled)"},
                         "sites": [{"id": s, "source": {"kind": "ndjson", "path": "."}}
                                   for s in sites],
                         "output": {"duckdb": str(path), "dir": str(report_dir)},
                         "expectations": {"data_docs": False}}, base_dir=path.parent)


def _finite(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def heterogeneity(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Site-stratified CART1 vs CART2 odds ratio (Mantel-Haenszel) and Breslow-Day test."""
    from statsmodels.stats.contingency_tables import StratifiedTable

    rows = []
    table = con.execute("SELECT * FROM analysis.comparison WHERE site <> 'all' AND kind = "
                        "'proportion'").df()
    for endpoint in HETEROGENEITY_ENDPOINTS:
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
    return pd.DataFrame(rows)


def pool(sources: list[Path], out: Path, *, analyse: bool = True) -> PoolResult:
    """Verify the packages, pool them into ``out`` (atomically), validate and analyse."""
    out = Path(out)
    work = Path(tempfile.mkdtemp(prefix="cartfhir-pool-"))
    try:
        packages = [verify(Path(s), work) for s in sources]
        if not packages:
            raise PoolError("give at least one site package")
        _check_set(packages)
        studies = {p.manifest["study"] for p in packages}
        if len(studies) > 1:
            raise PoolError(f"the packages come from different studies: {sorted(studies)}")
        building = work / "pooled.duckdb"
        if out.exists():
            shutil.copy2(out, building)
        con = duckdb.connect(str(building))
        try:
            rows: dict[str, int] = {}
            for package in packages:
                for table, n in _load(con, package).items():
                    rows[table] = rows.get(table, 0) + n
            sites = [r[0] for r in con.execute(
                "SELECT site FROM meta.pool_package ORDER BY site").fetchall()]
        finally:
            con.close()
        result = PoolResult(path=out, sites=sites, rows=rows)
        config = pooled_config(building, out.parent / f"{out.stem}_report", sites, studies.pop())
        if analyse:
            con = duckdb.connect(str(building))
            try:
                outcomes = []
                for suite in package_suites():
                    if suite["name"] in POOLED_SUITES:
                        outcomes += validate_suite(con, suite_spec(suite))
                con.execute("CREATE SCHEMA IF NOT EXISTS qa")
                store(con, "pool", outcomes)
            finally:
                con.close()
            result.validation = outcomes
            failed = [o for o in outcomes if not o.success and o.severity == "error"]
            warning = (f"the pooled data failed {len(failed)} error expectations"
                       if failed else None)
            result.analysis = analyze(config, command="pool", invalid_warning=warning)
            con = duckdb.connect(str(building))
            try:
                write_frame(con, "analysis.heterogeneity", heterogeneity(con))
            finally:
                con.close()
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(building), str(out))  # only now is the old pooled file replaced
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
