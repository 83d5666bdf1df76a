"""``engine.raw: ndjson``: the sites' NDJSON folders landed by Spark's executors, row for row
as ``cartfhir extract`` lands them into an empty store.

Why the files are read by extract's own reader on the executors, not ``spark.read.text``:
the rows must be extract's, and Spark's text reader cannot give them. It numbers no lines
(raw.rejected and raw.resources carry ``line_no``), splits on a lone ``\\r`` too, keeps
the byte order mark, reads a line of any length into memory (extract keeps only the start
of a line over ``landing.max_line_bytes``), fails the job on a truncated gzip (or, with
``ignoreCorruptFiles``, silently drops the rest of it, where extract keeps the lines read
and rejects the rest with a reason), knows no ``landing.max_decompressed_bytes`` and
follows symbolic links out of the site's folder. Re-creating all that in Spark would be a
second copy of the rules; so each file is read on an executor by a Python UDTF that streams
it through ``cartfhir.extract.ndjson.read_file`` (O_NOFOLLOW, gzip, the caps, the
numbering), a few lines in memory at a time.

The plan, all on the executors but the file listing:

1. the driver lists each site's files with extract's ``scan_folder`` (the same files, in
   the same order, the same links skipped and logged; no line is read there), spread over
   the cores (one file is read by one task: split very large files to use more cores);
2. the UDTF reads each file's lines and checks them with ``landing.check_for_landing``,
   the check extract runs (JSON, resourceType, id, meta, the FHIR R4B model by
   ``landing.validation``); rejected lines become raw.rejected rows as ``Lander`` makes
   them (``_payload``, then ``redact`` as the batch writer does);
3. the accepted lines are grouped by (site, resource_type, id) and a Python UDF folds each
   group in input order (file, then line) with ``landing.decide``: exactly the decisions
   extract takes landing them one at a time, so the last inserted or replaced copy is the
   row and a same-version copy with other content is a ``conflicts with stored version``
   row.

The result is written as Parquet in the ``cartfhir export --raw`` layout (``raw.py``
registers it). ``run_id`` of the rejected rows is a fresh run id of this landing: there is
no extract run. The executors' Python needs cartfhir installed (the UDFs import it) and
the site folders at the same paths as the driver (a shared file system on a cluster).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cartfhir.config import Config
from cartfhir.errors import ConfigError, SourceError
from cartfhir.extract.checks import Rejected, Validation
from cartfhir.extract.landing import (
    Version,
    _payload,
    check_for_landing,
    decide,
    describe_version,
)
from cartfhir.extract.ndjson import ReadLimits, read_file, scan_folder
from cartfhir.redact import redact
from cartfhir.runs import new_run_id

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["NdjsonFile", "NdjsonLanding", "check_lines", "decide_copies", "land_ndjson",
           "site_files"]

log = logging.getLogger(__name__)

# Tags of the checked lines: a raw.rejected row, or an accepted line waiting for its key.
_REJECTED = "x"
_ACCEPTED = "a"


@dataclass(frozen=True)
class NdjsonFile:
    """One file to land: its site, its place in the site's reading order, its path."""

    site: str
    order: int
    path: str


@dataclass(frozen=True)
class NdjsonLanding:
    """What ``land_ndjson`` wrote: the Parquet folders, the files, what made it incomplete
    (links skipped, files cut short: extract would call its run partial for them)."""

    resources: str
    rejected: str
    files: int
    problems: tuple[str, ...]


def site_files(config: Config) -> tuple[list[NdjsonFile], list[str]]:
    """Every NDJSON file of every site, in extract's order, and the paths skipped.

    Every site must be an NDJSON folder: a FHIR server or Bulk Data site has nothing to
    read here, and leaving it out would lose a site without a word. Raises ConfigError for
    such a site and for a missing folder, SourceError for a folder without NDJSON, before
    Spark runs anything (as extract checks every folder before it writes).
    """
    others = [f"{site.id} ({site.source.kind})" for site in config.sites
              if site.source.kind != "ndjson"]
    if others:
        raise ConfigError(
            "engine.raw: ndjson lands the sites' NDJSON folders, but site(s) "
            f"{', '.join(others)} have none; run 'cartfhir extract' and use engine.raw: "
            "store (or the folder of a 'cartfhir export --raw')")
    files: list[NdjsonFile] = []
    skipped: list[str] = []
    for site in config.sites:
        scan = scan_folder(site.source.path)  # type: ignore[union-attr]
        files += [NdjsonFile(site.id, order, str(path)) for order, path in enumerate(scan.files)]
        skipped += [f"site {site.id}: {why}" for why in scan.skipped]
    return files, skipped


# ---- on the executors -----------------------------------------------------------------

# One checked line: a raw.rejected row (kind 'x') or an accepted line (kind 'a').
CHECKED = ("kind STRING, site STRING, ord INT, source_uri STRING, line_no BIGINT, "
           "resource_type STRING, id STRING, version_id STRING, last_updated_us BIGINT, "
           "content_hash STRING, resource STRING, reason STRING, payload STRING, "
           "file_cut BOOLEAN")
# What deciding the copies of one resource gives: the stored copy, or a conflict.
DECIDED = ("array<struct<kind: STRING, source_uri: STRING, line_no: BIGINT, "
           "version_id: STRING, last_updated_us: BIGINT, resource: STRING, reason: STRING, "
           "payload: STRING>>")


def _rejected(site: str, order: int, uri: str, line_no: int, resource_type: str | None,
              reason: str, payload: str, file_cut: bool = False) -> tuple[Any, ...]:
    """A raw.rejected row, redacted as extract's batch writer stores it."""
    return (_REJECTED, site, order, redact(uri), line_no, resource_type, None, None, None,
            None, None, redact(reason), redact(payload), file_cut)


def check_lines(site: str, order: int, path: str, limits: ReadLimits,
                validation: Validation) -> Iterator[tuple[Any, ...]]:
    """The lines of one file read by extract's ``read_file`` and checked as ``Lander``
    checks them (``check_for_landing``), as ``CHECKED`` rows, a few in memory at a time."""
    for line in read_file(Path(path), limits=limits):
        if line.error is not None:  # found while reading: too long, or the file cut here
            yield _rejected(site, order, line.source_uri, line.line_no, None, line.error,
                            _payload(line.raw), line.file_cut)
            continue
        result = check_for_landing(line.raw, validation)
        if isinstance(result, Rejected):
            yield _rejected(site, order, line.source_uri, line.line_no, result.resource_type,
                            result.reason, _payload(line.raw))
            continue
        version = result.version
        yield (_ACCEPTED, site, order, line.source_uri, line.line_no, result.resource_type,
               result.id, version.version_id, version.last_updated_us, version.content_hash,
               result.text, None, None, False)


def decide_copies(resource_type: str, rid: str,
                  copies: Iterable[Any]) -> list[tuple[Any, ...]]:
    """The copies of one resource (rows of order, line_no, version_id, last_updated_us,
    content_hash, resource, source_uri) decided in input order with extract's ``decide``:
    the copy stored last, and a rejected row for each conflicting copy (``DECIDED``)."""
    current: Version | None = None
    stored: Any = None
    out: list[tuple[Any, ...]] = []
    for copy in sorted(copies, key=lambda c: (c[0], c[1])):
        _, line_no, version_id, last_updated_us, content_hash, text, uri = copy
        version = Version(version_id, last_updated_us, content_hash)
        outcome = decide(version, current)
        if outcome == "conflict":
            assert current is not None
            # The reason landing._BatchWriter._write gives a conflict (kept in step by
            # tests/spark/test_ndjson.py, which compares both).
            reason = (f"conflicts with stored version ({describe_version(current)}) of "
                      f"{resource_type}/{rid} (same version, different content)")
            out.append((_REJECTED, redact(uri), line_no, None, None, None, redact(reason),
                        redact(_payload(text))))
        elif outcome in ("inserted", "replaced"):
            current, stored = version, copy
    if stored is not None:
        _, line_no, version_id, last_updated_us, _, text, uri = stored
        out.append((_ACCEPTED, uri, line_no, version_id, last_updated_us, text, None, None))
    return out


# ---- on the driver --------------------------------------------------------------------

def _parallelism(spark: SparkSession) -> int:
    try:
        return max(spark.sparkContext.defaultParallelism, 1)
    except Exception:  # Spark Connect
        return max(int(spark.conf.get("spark.sql.shuffle.partitions") or 1), 1)


def _write(frame: DataFrame, path: str, partitions: list[str]) -> None:
    """``frame`` as Parquet in ``path`` partitioned by ``partitions``; no rows: one empty
    file with every column, so the folder still has a schema to read (as export_raw)."""
    frame.write.mode("overwrite").partitionBy(*partitions).parquet(path)
    if not any(Path(path).rglob("*.parquet")):
        frame.limit(0).write.mode("overwrite").parquet(path)


def _failure(exc: Exception) -> SourceError | None:
    """extract's SourceError when an executor raised one (a file that vanished or was
    swapped for a link after the listing), else None."""
    marker = "cartfhir.errors.SourceError: "
    for line in str(exc).splitlines():
        if marker in line:
            return SourceError(line.split(marker, 1)[1].strip())
    return None


def land_ndjson(spark: SparkSession, config: Config, out: Path,
                run_id: str | None = None) -> NdjsonLanding:
    """Land every site's NDJSON folder with Spark into ``out/raw.resources/site=/
    resource_type=/`` and ``out/raw.rejected/site=/`` (Parquet, replaced), the rows
    ``cartfhir extract`` lands into an empty store from the same files.

    Lines are read, checked and decided on the executors (a Python UDTF and UDF calling
    extract's code); the driver sees file paths only. One file is read by one task.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.functions import udf, udtf

    files, skipped = site_files(config)
    run_id = run_id or new_run_id()
    limits = ReadLimits.of(config.landing)
    validation = config.landing.validation

    class ReadNdjson:
        """One row per line of the file of each input row (site, ord, path)."""

        def eval(self, row: Any) -> Iterator[tuple[Any, ...]]:
            yield from check_lines(row["site"], row["ord"], row["path"], limits, validation)

    reader = udtf(ReadNdjson, returnType=CHECKED)
    decider = udf(decide_copies, DECIDED)
    view = f"_cartfhir_ndjson_files_{run_id.replace('-', '_')}"
    function = f"_cartfhir_read_ndjson_{run_id.replace('-', '_')}"
    spark.udtf.register(function, reader)
    (spark.createDataFrame([(f.site, f.order, f.path) for f in files], "site STRING, ord INT, "
                           "path STRING")
     .repartition(min(_parallelism(spark), len(files))).createOrReplaceTempView(view))
    checked = spark.sql(f"SELECT * FROM {function}(TABLE({view}))")
    checked.persist(StorageLevel.MEMORY_AND_DISK)
    copies = F.collect_list(F.struct("ord", "line_no", "version_id", "last_updated_us",
                                     "content_hash", "resource", "source_uri"))
    decided = (checked.where(F.col("kind") == _ACCEPTED)
               .groupBy("site", "resource_type", "id").agg(copies.alias("copies"))
               .select("site", "resource_type", "id", F.explode(
                   decider("resource_type", "id", "copies")).alias("d"))
               .select("site", "resource_type", "id", "d.*"))
    decided.persist(StorageLevel.MEMORY_AND_DISK)
    resources = decided.where(F.col("kind") == _ACCEPTED).select(
        "site", "resource_type", "id", "version_id",
        F.timestamp_micros("last_updated_us").alias("last_updated"), "resource", "source_uri",
        "line_no")
    rejected_columns = ["site", "source_uri", "line_no", "resource_type", "reason", "payload"]
    rejected = (checked.where(F.col("kind") == _REJECTED).select(*rejected_columns)
                .unionByName(decided.where(F.col("kind") == _REJECTED)
                             .select(*rejected_columns))
                .withColumn("run_id", F.lit(run_id))
                .withColumn("rejected_at", F.current_timestamp()))
    resources_dir = str(Path(out) / "raw.resources")
    rejected_dir = str(Path(out) / "raw.rejected")
    try:
        _write(resources, resources_dir, ["site", "resource_type"])
        _write(rejected, rejected_dir, ["site"])
        cut = [f"site {r[0]}: {r[1]} from line {r[2]}: {r[3]}" for r in checked.where(
            "file_cut").select("site", "source_uri", "line_no", "reason").collect()]
    except Exception as exc:  # pyspark's errors share no base class worth naming
        error = _failure(exc)
        if error is None:
            raise
        raise error from None
    finally:
        checked.unpersist()
        decided.unpersist()
        spark.catalog.dropTempView(view)
    problems = tuple(skipped + sorted(cut))
    for problem in problems:
        log.warning("incomplete NDJSON input: %s", problem)
    return NdjsonLanding(resources_dir, rejected_dir, len(files), problems)
