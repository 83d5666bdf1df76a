"""Site packages: what a site sends to the coordinating center, and nothing more.

``export_site(config, site_id, out)`` writes one Parquet file per harmonized and
cohort table (that site's rows only) plus ``manifest.json``: schema version, tool
version, config hash, the terminology files' hashes, row counts, SHA-256 of every
file, the validation summary and the disclosure policy applied. Identifying data
never leaves: the columns in ``POLICY[table]["null"]`` are emptied (the exact
birth date; the birth year too when dates are shifted), record ids are replaced by
HMACs with the site's key, and with ``date_shift_days`` every date of a patient
moves by the same secret number of days, so intervals stay exact. A site whose
data failed an ``error`` expectation cannot export unless forced, and the
manifest says so. With ``sites[].signing_key`` the manifest's bytes are signed
(``manifest.sig``, see ``signing``), so the coordinating center can tell who made it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import numpy as np
import pandas as pd

from cartfhir import __version__
from cartfhir.catalog import DUCKDB_TYPES, find_table, load_catalog
from cartfhir.config import Config
from cartfhir.db import quoted
from cartfhir.errors import PoolError
from cartfhir.logs import logged_stage
from cartfhir.multisite import signing
from cartfhir.results import ResultDict
from cartfhir.runs import latest_success, require_complete_transform, transform_since
from cartfhir.store import Store
from cartfhir.transform.identity import keyed_hash, site_secret

# 3: ref.target and ref.post_event travel (the pooled suites join them), and
# cohort.episode_endpoints' columns are in the table's order (its sidecar's).
# 4: qa.site_completeness travels (the pooled report's data quality by site), and the
# manifest's validation names the transform it covered (transform_run_id/_finished).
# 5: cohort.episode_endpoints gains response_reason (best_response may be NE) and
# anc_nadir_derived; harmonized.lab holds derived values too (its derivation column: an
# ANC from a WBC and a neutrophil percentage).
SCHEMA_VERSION = "cartfhir-site-package/5"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"

# Per table: columns emptied, record-id columns pseudonymized, date/timestamp columns
# shifted with date_shift_days. Tables without patient rows (ref.*) are copied as is: they
# are the study's definitions (windows, thresholds, concepts, grade cut-offs, CAR targets,
# post-event priorities), the same at every site, and the pool refuses packages whose
# definitions differ. Site-level maps stay at the site; the manifest's ``reference`` list
# records their hashes per site.
POLICY: dict[str, dict[str, list[str]]] = {
    "cohort.patient": {"null": ["birth_date"], "ids": [],
                       "dates": ["first_infusion_date", "death_date", "last_contact_date"]},
    "cohort.episode": {"null": [], "ids": ["procedure_ids", "dose_observation_id"],
                       "dates": ["infusion_date", "next_infusion_date", "next_hsct_date",
                                 "death_date"]},
    "cohort.episode_endpoints": {"null": [], "ids": [],
                                 "dates": ["infusion_date", "post_event_date",
                                           "relapse_after_date", "chemotherapy_after_date",
                                           "hsct_after_date", "death_date",
                                           "last_contact_date"]},
    "cohort.episode_window": {"null": [], "ids": [], "dates": []},
    "cohort.lab_daily": {"null": [], "ids": [], "dates": []},
    "cohort.adverse_event": {"null": [], "ids": ["source_id"], "dates": []},
    "harmonized.lab": {"null": [], "ids": ["observation_id", "part_of_procedure_id"],
                       "dates": ["effective_date", "effective_at"]},
    # per-site counts and shares only (no record or patient ids, no dates)
    "qa.site_completeness": {"null": [], "ids": [], "dates": []},
    "ref.threshold": {}, "ref.window": {}, "ref.concept": {}, "ref.grade_cut": {},
    "ref.target": {}, "ref.post_event": {},  # the pooled suites check against them
}
STUDY_DEFINITIONS = tuple(t for t in POLICY if t.startswith("ref."))


def table_file(table: str) -> str:
    """The one naming rule for a table's file in a package."""
    return f"{table}.parquet"


def package_files() -> list[str]:
    """Every name a package may hold: the manifest, its signature and one file per table."""
    return [MANIFEST, SIGNATURE, *(table_file(t) for t in POLICY)]


@cache
def declared_schema(table: str) -> tuple[tuple[str, str], ...]:
    """(column, DuckDB type) of a package table, in order, from the catalog (the table's
    sidecar, which also makes ref.* and documents the database): the one statement of what
    a package table holds, used to write it and to check it on arrival."""
    found = find_table(load_catalog(), table)
    if found is None or not found.columns:
        raise PoolError(f"{table} is not documented in the catalog; cannot package it")
    return tuple((c.name, DUCKDB_TYPES.get(c.type or "", (c.type or "").upper()))
                 for c in found.columns)


def shown(value: object) -> str:
    """Package-supplied text as it may appear in a message: quoted, with control and
    other unprintable characters escaped, so a name or value cannot drive the terminal
    (``\\x1b]0;...``) or hide itself. Every message quoting package content uses it."""
    return repr(value if isinstance(value, str) else str(value))


@dataclass(frozen=True)
class PackageResult(ResultDict):
    site: str
    path: Path
    rows: dict[str, int]
    forced: bool
    signed: bool = False
    status = "success"  # a package that cannot be written raises


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pseudonym(secret: str, kind: str, value: str) -> str:
    return keyed_hash(secret, kind, value)[:32]


def _pseudonymize(secret: str, column: str, value: Any) -> Any:
    """A record id (or a list of them) replaced by its HMAC; missing stays missing."""
    if value is None:
        return None
    if isinstance(value, list | tuple | np.ndarray):
        return [_pseudonym(secret, column, str(v)) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return _pseudonym(secret, column, str(value))


def _origin(origin: str) -> str:
    """A reference file's origin without the site's paths: 'package:...' or the file name."""
    return origin if origin.startswith("package:") else Path(origin).name


def _validation(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """Summary of the latest validation run, or None when there was none."""
    try:
        row = con.execute("SELECT run_id FROM qa.validation_result "
                          "ORDER BY validated_at DESC LIMIT 1").fetchone()
    except duckdb.CatalogException:
        return None
    if row is None:
        return None
    counts = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE success), "
        "count(*) FILTER (WHERE NOT success AND severity = 'error'), "
        "count(*) FILTER (WHERE NOT success AND severity = 'warn') "
        "FROM qa.validation_result WHERE run_id = ?", [row[0]]).fetchone()
    return {"run_id": row[0], "expectations": counts[0], "passed": counts[1],
            "failed_error": counts[2], "failed_warn": counts[3]}


def _transform(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """The latest successful transform, whose tables the package holds: its run id and
    when it finished (the pooled report shows it per site)."""
    run_id = latest_success(con, "transform")
    finished = None if run_id is None else con.execute(
        "SELECT finished FROM meta.runs WHERE run_id = ?", [run_id]).fetchone()[0]
    return {"transform_run_id": run_id,
            "transform_finished": None if finished is None else str(finished)}


def _validation_problem(con: duckdb.DuckDBPyConnection,
                        validation: dict[str, Any] | None) -> str | None:
    """Why ``validation`` does not vouch for the tables being exported, or None when it does.

    It must exist, have no failed error expectation, and be newer than the latest
    successful transform: one since then rebuilt the tables it checked.
    """
    if validation is None:
        return "no validation has been run"
    if validation["failed_error"]:
        return (f"{validation['failed_error']} error expectations failed in validation run "
                f"{validation['run_id']}")
    since = transform_since(con, validation["run_id"])
    if since is not None:
        return (f"validation run {validation['run_id']} is older than transform run {since}, "
                "so it did not check the tables being exported")
    return None


def _export_table(con: duckdb.DuckDBPyConnection, table: str, site: str, secret: str,
                  shift_days: int, target: Path, memory_limit: str | None) -> int:
    policy = POLICY[table]
    schema = declared_schema(table)
    columns = ", ".join(quoted(c) for c, _ in schema)
    if "site" in dict(schema):
        frame = con.execute(f"SELECT {columns} FROM {quoted(table)} WHERE site = ?",
                            [site]).df()
    else:
        frame = con.execute(f"SELECT {columns} FROM {quoted(table)}").df()
    for column in policy.get("null", []):
        frame[column] = None
    if shift_days and table == "cohort.patient":
        frame["birth_year"] = None  # the year would reveal the shift
    for column in policy.get("ids", []):
        frame[column] = [_pseudonymize(secret, column, v) for v in frame[column]]
    if shift_days and policy.get("dates") and "patient_key" in frame:
        shifts = {k: int(_pseudonym(secret, "date-shift", k), 16) % (2 * shift_days + 1)
                  - shift_days for k in frame["patient_key"].unique()}
        offset = pd.to_timedelta(frame["patient_key"].map(shifts), unit="D")
        for column in policy["dates"]:
            frame[column] = (pd.to_datetime(frame[column]) + offset).dt.date \
                if column != "effective_at" else frame[column] + offset
    with Store.scratch(memory_limit).session() as out:
        out.register("frame", frame)
        casts = ", ".join(f"CAST({quoted(c)} AS {kind}) AS {quoted(c)}" for c, kind in schema)
        path = str(target).replace("'", "''")
        out.execute(f"COPY (SELECT {casts} FROM frame) TO '{path}' (FORMAT parquet)")
    return len(frame)


@logged_stage("export-site", db=lambda args: args["config"].output.duckdb)
def export_site(config: Config, site_id: str, out: Path, *, force: bool = False,
                date_shift_days: int = 0) -> PackageResult:
    """Write the site's package to ``out``: a new or empty folder, or a zip when it ends
    in .zip (and is not an existing folder)."""
    site = config.site(site_id)
    secret = site_secret(site)
    key = None if site.signing_key is None else signing.load_private_key(
        site.signing_key.resolve(), f"sites[{site_id}].signing_key "
                                    f"({site.signing_key.describe()})")
    out = Path(out)
    if out.exists() and (out.is_file() or any(out.iterdir())):
        raise PoolError(f"{out} already exists; choose a new path (packages are never "
                        "overwritten)")
    store = Store.of(config)
    with store.session(read_only=True) as con:
        require_complete_transform(con)
        validation = _validation(con)
        transform = _transform(con)
        problem = _validation_problem(con, validation)
        invalid = problem is not None
        if invalid and not force:
            raise PoolError(f"site {site_id} cannot export: {problem}. Run 'cartfhir validate' "
                            "and fix the data, or pass --force (the manifest records it)")
        episodes = con.execute("SELECT count(*) FROM cohort.episode WHERE site = ?",
                               [site_id]).fetchone()[0]
        if not episodes:
            raise PoolError(f"site {site_id} has no episodes in {config.output.duckdb}; "
                            "run the pipeline for it first")
        folder = Path(tempfile.mkdtemp(prefix="cartfhir-package-"))
        tables: dict[str, dict[str, Any]] = {}
        for table in POLICY:
            name = table_file(table)
            rows = _export_table(con, table, site_id, secret, date_shift_days, folder / name,
                                 store.memory_limit)
            tables[table] = {"file": name, "rows": rows, "sha256": file_sha256(folder / name)}
        reference = con.execute(
            "SELECT name, origin, sha256 FROM meta.reference_version WHERE run_id = "
            "(SELECT run_id FROM meta.reference_version ORDER BY rowid DESC LIMIT 1)").fetchall()
    manifest = {
        "schema_version": SCHEMA_VERSION, "tool_version": __version__, "site": site_id,
        "study": config.study.name, "config_hash": config.config_hash,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "reference": [{"name": n, "origin": _origin(o), "sha256": h} for n, o, h in reference],
        "tables": tables,
        "validation": {**(validation or {}), **transform, "forced": bool(invalid and force),
                       **({"problem": problem} if problem else {})},
        "disclosure": {
            "patient_key": "HMAC-SHA256 of site and patient id with the site's secret key",
            "record_ids": "HMAC-SHA256 with the site's secret key",
            "emptied_columns": {t: p["null"] + (["birth_year"] if date_shift_days and
                                                t == "cohort.patient" else [])
                                for t, p in POLICY.items() if p.get("null")},
            "date_shift_days": date_shift_days,
            "date_shift": "per patient, the same secret offset for all of a patient's dates"
                          if date_shift_days else "none",
        },
    }
    text = json.dumps(manifest, indent=2).encode("utf-8")
    (folder / MANIFEST).write_bytes(text)
    if key is not None:
        (folder / SIGNATURE).write_bytes(signing.sign(text, key))
    if out.is_dir():  # an existing empty folder (checked above): the files go into it
        for path in sorted(folder.iterdir()):
            shutil.move(str(path), str(out / path.name))
        folder.rmdir()
    elif out.suffix == ".zip":
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.iterdir()):
                zf.write(path, path.name)
        shutil.rmtree(folder)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(out))
    return PackageResult(site_id, out, {t: v["rows"] for t, v in tables.items()},
                         bool(invalid and force), site.signing_key is not None)


@dataclass(frozen=True)
class SignResult:
    site: str
    path: Path


MAX_MANIFEST_BYTES = 1024**2


def _manifest_site(raw: bytes, where: str) -> str:
    from cartfhir.multisite.manifest import load_json  # manifest imports this module

    data = load_json(raw, where)
    site = data.get("site") if isinstance(data, dict) else None
    if not isinstance(site, str):
        raise PoolError(f"{where}: {MANIFEST} is not a site package manifest (no 'site')")
    return site


def sign_package(path: Path, key_file: Path) -> SignResult:
    """Sign a package folder or zip made or rebuilt elsewhere: write its ``manifest.sig``.

    Only the manifest is read (size-capped, never through a symlink); a zip is rewritten
    next to itself with the new signature and then moved over the old one.
    """
    key = signing.read_private_key(key_file)
    path = Path(path)
    if path.is_dir():
        manifest = path / MANIFEST
        if manifest.is_symlink() or not manifest.is_file():
            raise PoolError(f"{path}: {MANIFEST} is missing or not a regular file")
        raw = manifest.read_bytes()[:MAX_MANIFEST_BYTES + 1]
        if len(raw) > MAX_MANIFEST_BYTES:
            raise PoolError(f"{path}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
        site = _manifest_site(raw, str(path))
        if (path / SIGNATURE).is_symlink():
            raise PoolError(f"{path}: {SIGNATURE} is a symbolic link; remove it and sign again")
        with _fresh_file(path, f".{SIGNATURE}.") as (fh, partial):
            fh.write(signing.sign(raw, key))
            os.fchmod(fh.fileno(), 0o644)  # mkstemp makes 0600; a signature is public
        partial.replace(path / SIGNATURE)
        return SignResult(site, path)
    if not (path.suffix == ".zip" and path.is_file()):
        raise PoolError(f"{path}: no such package (expected a folder or a .zip file)")
    try:
        with zipfile.ZipFile(path) as zf, _fresh_file(path.parent, f".{path.name}.") as (
                target, partial):
            with zf.open(MANIFEST) as fh:
                raw = fh.read(MAX_MANIFEST_BYTES + 1)
            if len(raw) > MAX_MANIFEST_BYTES:
                raise PoolError(f"{path}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
            site = _manifest_site(raw, str(path))
            with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
                for info in zf.infolist():
                    if info.filename != SIGNATURE:
                        with zf.open(info) as src, out.open(info, "w") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
                info = zipfile.ZipInfo(SIGNATURE, datetime.now(UTC).timetuple()[:6])
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                out.writestr(info, signing.sign(raw, key), zipfile.ZIP_DEFLATED)
            os.fchmod(target.fileno(), stat.S_IMODE(path.stat().st_mode))  # keep the zip's
    except KeyError:
        raise PoolError(f"{path}: {MANIFEST} is missing; this is not a cartfhir site "
                        "package") from None
    except zipfile.BadZipFile as exc:
        raise PoolError(f"{path}: not a readable zip file ({shown(exc)})") from None
    partial.replace(path)
    return SignResult(site, path)


@contextmanager
def _fresh_file(folder: Path, prefix: str) -> Iterator[tuple[BinaryIO, Path]]:
    """A new file of a random name in ``folder`` (O_CREAT|O_EXCL: never an existing file
    or a planted symlink), removed again unless the caller moved it into place."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".partial", dir=folder)
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh, partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
