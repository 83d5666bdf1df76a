"""One SparkSession per process, configured the way cartfhir's SQL expects.

The settings that change results are fixed here, not left to a cluster's defaults:
the session time zone is UTC (timestamps read and written as the DuckDB side does) and
ANSI mode is on (a bad cast fails, as in DuckDB, instead of giving NULL). The others
are defaults for a local session a user's ``engine.conf`` may override (memory,
partitions, the UI); a cluster's session keeps its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cartfhir.errors import ConfigError

if TYPE_CHECKING:  # pyspark is optional: imported only when a session is made
    from pyspark.sql import SparkSession

# Settings that results depend on: a user's conf cannot change them.
FIXED_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "true",
    # Spark's default INT96 loses nothing but is read by DuckDB as a naive timestamp of
    # its own rules; microsecond timestamps are the Parquet type DuckDB reads exactly.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # The generated SQL escapes string literals with backslashes and types timestamps as
    # instants; unreadable or vanished files must fail the run, never drop rows silently.
    "spark.sql.parser.escapedStringLiterals": "false",
    "spark.sql.timestampType": "TIMESTAMP_LTZ",
    "spark.sql.caseSensitive": "false",
    "spark.sql.files.ignoreCorruptFiles": "false",
    "spark.sql.files.ignoreMissingFiles": "false",
}
# Prefixes of settings that change what SQL means (legacy behaviours): refused in
# engine.conf.
FIXED_PREFIXES: tuple[str, ...] = ("spark.sql.legacy.",)
# Settings the compiled views need on any session, local or a cluster's; engine.conf may
# set them otherwise. A view's repeat() unrolls into lambdas nested a dozen deep, which
# Spark's analyzer resolves one level an iteration: its default 100 is too few.
NEEDED_CONF: dict[str, str] = {
    "spark.sql.analyzer.maxIterations": "1000",
}
# Defaults for a small local session (tests, a laptop) that cartfhir starts itself with a
# local[...] master; engine.conf overrides them. A cluster's session (spark-submit, a
# Databricks job, yarn or spark:// masters) keeps its own settings: two shuffle partitions
# and a 1 GB driver would cripple it.
DEFAULT_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.driver.memory": "1g",
    # A short-lived driver: the C1 JIT and the serial GC start in about a third of the
    # time (measured ~8 s instead of ~20 s on 2 cores) and are fast enough for SQL planning.
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    "spark.log.structuredLogging.enabled": "false",
    "spark.sql.sources.partitionOverwriteMode": "static",
}
INSTALL_HINT = ("engine: spark needs pyspark 4.0 and Java 17: pip install 'cartfhir[spark]' "
                "(make test installs it)")


def require_pyspark() -> None:
    """Raise ConfigError naming the install command when pyspark cannot be imported."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


def launched_outside() -> bool:
    """Whether Spark was started by a launcher rather than by us: spark-submit (its JVM
    hands the gateway to Python), pyspark's own submit arguments, a notebook's or a job's
    session already active."""
    from pyspark.sql import SparkSession

    return bool("PYSPARK_GATEWAY_PORT" in os.environ or "PYSPARK_SUBMIT_ARGS" in os.environ
                or SparkSession.getActiveSession())


def local_defaults(master: str, launched: bool) -> bool:
    """Whether DEFAULT_CONF applies: only to a local[...] session cartfhir starts."""
    return not launched and (master == "local" or master.startswith("local["))


def get_spark(master: str = "local[2]", conf: Mapping[str, Any] | None = None,
              app_name: str = "cartfhir") -> SparkSession:
    """The process's SparkSession, created on first use with ``master`` and ``conf``.

    Spark allows one active session per JVM; later calls return it unchanged (and the
    fixed settings are re-applied, since they are session settings). Under
    ``spark-submit`` the master given by the launcher wins over ``master``.
    """
    require_pyspark()
    from pyspark.sql import SparkSession

    launched = launched_outside()
    local = local_defaults(master, launched)
    defaults = DEFAULT_CONF if local else {}
    user = {k: str(v) for k, v in (conf or {}).items()}
    settings = {**defaults, **NEEDED_CONF, **user, **FIXED_CONF}
    builder = SparkSession.builder.appName(app_name)
    if not launched:
        builder = builder.master(master)
        # Python workers of a local session run this interpreter (which has cartfhir),
        # not whatever python3 is first on PATH; a cluster's are the cluster's to set.
        if local:
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in settings.items():
        builder = builder.config(key, value)
    # pyspark 4 logs every failed query with its whole JVM stack trace; the error is
    # raised to the caller anyway, which turns it into a message a user can act on.
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # Java missing or too old, the JVM failing to start
        raise ConfigError(f"could not start Spark ({master}): {exc}. Spark 4.0 needs Java 17 "
                          "or 21 on PATH or JAVA_HOME") from None
    with contextlib.suppress(Exception):  # Spark Connect (Databricks) has no SparkContext
        spark.sparkContext.setLogLevel("ERROR")
    for key, value in {**{k: v for k, v in NEEDED_CONF.items() if k not in user},
                       **FIXED_CONF}.items():
        spark.conf.set(key, value)  # session settings: an attached session gets them too
    return spark
