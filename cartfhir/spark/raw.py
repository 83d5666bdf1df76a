"""Spark's raw input: ``raw.resources`` (and ``raw.rejected``) registered on Spark from Parquet.

Three sources, by ``engine.raw``: ``store`` (the DuckDB store's raw.resources, written to
Parquet by DuckDB, then read by Spark), the folder of a ``cartfhir export --raw``
(``<dir>/raw.resources/site=<id>/resource_type=<type>/*.parquet``) or ``ndjson`` (the
sites' NDJSON folders, landed by Spark's executors into that layout with extract's own
reader, checks and version rules: ``cartfhir.spark.ndjson``). Either way Spark's
executors read the files; resources never pass through the driver.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from cartfhir.config import (
    SITE_ID_PATTERN,
    Config,
    DuckdbEngine,
    SparkEngine,
    is_uri,
)
from cartfhir.errors import ConfigError, DatabaseError, UsageError
from cartfhir.spark.catalog import OWNED, drop_own_table

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["RAW_TABLE", "RawInput", "export_raw", "register_raw"]

log = logging.getLogger(__name__)

RAW_TABLE = "raw.resources"
# The export layout (contract): <dir>/raw.resources/site=<id>/resource_type=<type>/
RESOURCES_FOLDER = "raw.resources"
REJECTED_FOLDER = "raw.rejected"  # <dir>/raw.rejected/site=<id>/ (qa.site_completeness)
REJECTED_TABLE = "raw.rejected"
# Written last by export_raw, so a folder without it holds no complete export.
MANIFEST = "raw.export.json"
# Where engine.raw 'store' puts raw.resources for Spark, under engine.tables.
STAGING = "_raw"
# The columns every source gives raw.resources on Spark, with their Spark types.
RESOURCE_COLUMNS = (("site", "STRING"), ("resource_type", "STRING"), ("id", "STRING"),
                    ("version_id", "STRING"), ("last_updated", "TIMESTAMP"),
                    ("resource", "STRING"), ("source_uri", "STRING"), ("line_no", "BIGINT"))
REJECTED_COLUMNS = (("site", "STRING"), ("source_uri", "STRING"), ("line_no", "BIGINT"),
                    ("resource_type", "STRING"), ("reason", "STRING"), ("payload", "STRING"),
                    ("run_id", "STRING"), ("rejected_at", "TIMESTAMP"))
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")


@dataclass(frozen=True)
class RawInput:
    """What ``register_raw`` registered: the source kind and the Parquet folder Spark
    reads raw.resources from."""

    source: str  # store | folder | ndjson
    location: str


# ---- export (DuckDB) --------------------------------------------------------------------

def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def export_raw(con: duckdb.DuckDBPyConnection, out_dir: Path, *, force: bool = False) -> int:
    """Write the store's raw.resources to ``out_dir/raw.resources/site=/resource_type=/``
    and raw.rejected (which qa.site_completeness counts) to ``out_dir/raw.rejected/site=/``.

    Refuses a non-empty ``out_dir`` unless ``force`` (then only its raw.resources and
    raw.rejected folders are replaced) and a symbolic link as ``out_dir``. Partition
    values are checked first (site ids, resource type names), so every file lands inside
    ``out_dir``. Returns the raw.resources rows written.

    All or nothing: both folders are written into a hidden staging folder inside
    ``out_dir`` and moved into place; ``MANIFEST`` (the row counts and the time) goes in
    last, so a reader can tell a complete export from one a crash cut short.
    """
    out_dir = Path(out_dir).absolute()
    if out_dir.is_symlink():
        raise UsageError(f"{out_dir} is a symbolic link; name a real folder for the raw export")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file; name a folder for the raw export")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise UsageError(f"{out_dir} is not empty; choose another folder, or pass --force to "
                         "replace raw.resources and raw.rejected in it")
    try:
        found = con.execute("SELECT DISTINCT site, resource_type FROM raw.resources").fetchall()
    except duckdb.CatalogException:
        raise DatabaseError("raw.resources does not exist: run 'cartfhir extract' first") \
            from None
    try:
        found += [(site, "Patient") for (site,) in con.execute(
            "SELECT DISTINCT site FROM raw.rejected").fetchall()]
    except duckdb.CatalogException:
        raise DatabaseError("raw.rejected does not exist: run 'cartfhir extract' first") \
            from None
    for site, resource_type in found:
        if not re.fullmatch(SITE_ID_PATTERN, site or "") \
                or not _RESOURCE_TYPE.fullmatch(resource_type or ""):
            raise DatabaseError(f"raw.resources holds a row with site {site!r} and resource "
                                f"type {resource_type!r}, which cannot name a folder; not "
                                "exported")
    columns = ", ".join("resource::VARCHAR AS resource" if name == "resource" else name
                        for name, _ in RESOURCE_COLUMNS)
    rejected = ", ".join(name for name, _ in REJECTED_COLUMNS)
    staging = out_dir / f".raw-export-{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    try:
        rows = _copy(con, f"SELECT {columns} FROM raw.resources "
                     "ORDER BY site, resource_type, id",
                     staging / RESOURCES_FOLDER, "site, resource_type")
        rejected_rows = _copy(con, f"SELECT {rejected} FROM raw.rejected "
                              "ORDER BY site, source_uri, line_no",
                              staging / REJECTED_FOLDER, "site")
        (staging / MANIFEST).write_text(json.dumps(
            {"resources": rows, "rejected": rejected_rows,
             "exported_at": datetime.now(UTC).isoformat(timespec="seconds")}) + "\n",
            encoding="utf-8")
        for name in (MANIFEST, RESOURCES_FOLDER, REJECTED_FOLDER):  # the manifest goes first
            _remove(out_dir / name)
        for name in (RESOURCES_FOLDER, REJECTED_FOLDER, MANIFEST):  # and comes back last
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rows


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _copy(con: duckdb.DuckDBPyConnection, select: str, target: Path, partitions: str) -> int:
    """``select`` as Parquet partitioned by ``partitions`` into ``target`` (replaced). No
    rows: one empty file with the columns, so Spark still knows the schema."""
    _remove(target)
    target.mkdir(parents=True)
    try:
        if not con.execute(f"SELECT count(*) FROM ({select})").fetchone()[0]:
            con.execute(f"COPY ({select}) TO {_quote(target / 'empty.parquet')} "
                        "(FORMAT parquet)")
            return 0
        rows = con.execute(f"COPY ({select}) TO {_quote(target)} (FORMAT parquet, "
                           f"PARTITION_BY ({partitions}), OVERWRITE_OR_IGNORE)").fetchone()[0]
    except duckdb.Error as exc:
        raise DatabaseError(f"exporting {target.name} to {target} failed: {exc}") from None
    return int(rows)


# ---- registration (Spark) ---------------------------------------------------------------

def register_raw(spark: SparkSession, config: Config | None, store_path: Path | None,
                 engine: SparkEngine | None = None, *, run_id: str | None = None
                 ) -> RawInput:
    """Register ``raw.resources`` and ``raw.rejected`` on Spark from ``engine.raw`` (default:
    the config's engine, made Spark when it is not): a ``cartfhir export --raw`` folder as
    it is, (``store``) the DuckDB store at ``store_path`` exported under ``engine.tables``
    first, or (``ndjson``) the config's sites' NDJSON folders landed by Spark under
    ``engine.tables`` first, giving the rows ``cartfhir extract`` would land in an empty
    store (``store_path`` is not read; what made the input incomplete is logged), its
    raw.rejected rows carrying ``run_id``.
    """
    if engine is None or isinstance(engine, DuckdbEngine):
        if config is None:
            raise UsageError("register_raw needs the config or a Spark engine")
        engine = config.engine_for("spark")  # type: ignore[assignment]
    assert isinstance(engine, SparkEngine)
    kind = engine.raw_kind
    if kind == "folder":
        base = str(engine.raw).rstrip("/")
        for folder in (RESOURCES_FOLDER, REJECTED_FOLDER):
            if not is_uri(base) and not Path(f"{base}/{folder}").is_dir():
                raise ConfigError(f"engine.raw {engine.raw} holds no {folder} folder; write "
                                  "it with 'cartfhir export --raw DIR'")
        if not is_uri(base):
            manifest = Path(base) / MANIFEST
            if not manifest.is_file():
                raise ConfigError(f"engine.raw {engine.raw} holds no complete export (no "
                                  f"{MANIFEST}: it was cut short or not made by cartfhir); "
                                  "write it again with 'cartfhir export --raw DIR --force'")
            log.info("raw input: the export of %s", _exported_at(manifest))
        _register_both(spark, base)
        return RawInput("folder", f"{base}/{RESOURCES_FOLDER}")
    if kind == "ndjson":
        if config is None:
            raise UsageError("engine.raw: ndjson reads the sites of the config, which was "
                             "not given")
        if engine.tables is None:
            raise ConfigError("engine.raw: ndjson stages raw.resources under engine.tables, "
                              "which is not set")
        from cartfhir.spark.ndjson import land_ndjson

        staging = _staging(engine.tables)
        landed = land_ndjson(spark, config, staging, run_id=run_id)
        _register_both(spark, str(staging))
        return RawInput("ndjson", landed.resources)
    if kind != "store":
        raise ConfigError(f"engine.raw: {engine.raw} is not supported; use store or the "
                          "folder of a 'cartfhir export --raw'")
    if store_path is None or not Path(store_path).exists():
        raise ConfigError(f"engine.raw: store reads raw.resources from the DuckDB file "
                          f"{store_path}, which does not exist; run 'cartfhir extract' first")
    if engine.tables is None:
        raise ConfigError("engine.raw: store stages raw.resources under engine.tables, "
                          "which is not set")
    staging = _staging(engine.tables)
    from cartfhir.db import connect

    con = connect(Path(store_path), read_only=True,
                  memory_limit=config.output.memory_limit if config else None)
    try:
        export_raw(con, staging, force=True)
    finally:
        con.close()
    _register_both(spark, str(staging))
    return RawInput("store", str(staging / RESOURCES_FOLDER))


def _register_both(spark: SparkSession, base: str) -> None:
    _register(spark, RAW_TABLE, f"{base}/{RESOURCES_FOLDER}", RESOURCE_COLUMNS)
    _register(spark, REJECTED_TABLE, f"{base}/{REJECTED_FOLDER}", REJECTED_COLUMNS)


def _staging(tables: str) -> Path:
    if is_uri(tables):
        raise ConfigError(f"engine.raw: store stages raw.resources under engine.tables, "
                          f"which must then be a local folder, not {tables}; give engine.raw "
                          "the folder of a 'cartfhir export --raw' instead")
    return Path(tables) / STAGING


def _exported_at(manifest: Path) -> str:
    try:
        return str(json.loads(manifest.read_text(encoding="utf-8"))["exported_at"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ConfigError(f"{manifest} is not an export manifest; write the export again "
                          "with 'cartfhir export --raw DIR --force'") from None


def _register(spark: SparkSession, table: str, location: str,
              columns: tuple[tuple[str, str], ...]) -> None:
    """``table`` as a view over the Parquet folder ``location``, columns cast to ``columns``
    (the partition columns site and resource_type come from the folder names)."""
    schema = table.split(".", 1)[0]
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {schema}")
    select = ", ".join(f"CAST({name} AS {kind}) AS {name}" for name, kind in columns)
    path = location.replace("\\", "\\\\").replace("`", "``")
    drop_own_table(spark, table)
    spark.sql(f"CREATE VIEW {table} {OWNED} AS SELECT {select} FROM parquet.`{path}`")
