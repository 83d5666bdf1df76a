"""The harmonized, cohort and qa models on Spark: the same SQL files as DuckDB.

A model is ``models/<schema>/<name>.sql`` in the SQL both engines accept; where it must
differ, ``<name>.spark.sql`` beside it is Spark's text (the base file stays DuckDB's). The
functions the models share are ``models/macros.sql`` (DuckDB macros) and
``models/macros.spark.sql`` (Spark SQL functions of the same names and arguments).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from cartfhir.errors import TransformError
from cartfhir.graph import Node, _package, read_text

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ENGINES = ("duckdb", "spark")
SPARK_MACROS = "transform/models/macros.spark.sql"
# Spark SQL noise that may hold a ';': string literals (backslash escapes, '' doubling),
# line and block comments. Leftmost first, as in graph._NOISE.
_SPARK_NOISE = re.compile(r"'(?:[^'\\]|\\.|'')*'|--[^\n]*|/\*.*?\*/", re.S)


def override_path(node: Node) -> str | None:
    """The path of ``node``'s Spark override (``<name>.spark.sql``) when the file exists."""
    if node.kind != "sql" or node.path is None or not node.path.endswith(".sql"):
        return None
    path = node.path[: -len(".sql")] + ".spark.sql"
    return path if _package().joinpath(path).is_file() else None


def model_sql(node: Node, engine: str) -> str:
    """The SELECT that makes ``node``'s table on ``engine`` (Spark's override when it has one)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
    if node.kind != "sql" or node.path is None:
        raise ValueError(f"{node.table} is made by a {node.kind}, not a SQL model")
    path = override_path(node) if engine == "spark" else None
    return read_text(path or node.path)


def split_statements(text: str) -> list[str]:
    """The statements of a Spark SQL file: split at ';' outside strings and comments."""
    statements, start, pos = [], 0, 0
    while True:
        semicolon = text.find(";", pos)
        noise = _SPARK_NOISE.search(text, pos)
        if semicolon < 0:
            break
        if noise and noise.start() < semicolon:
            pos = noise.end()
            continue
        statements.append(text[start:semicolon])
        start = pos = semicolon + 1
    statements.append(text[start:])
    return [s.strip() for s in statements if _SPARK_NOISE.sub("", s).strip()]


def create_functions(spark: SparkSession) -> None:
    """Define the shared functions (``macros.spark.sql``) as temporary functions."""
    for statement in split_statements(read_text(SPARK_MACROS)):
        spark.sql(statement)


def build_model(spark: SparkSession, node: Node, location: str | None = None) -> int:
    """Make ``node``'s table on Spark as Parquet; return its rows.

    Replaces the table (and the files at ``location``, when given, as CREATE OR REPLACE
    would); a table with a ``site`` column is partitioned by site. The database is created
    when missing. ``create_functions`` must have run in this session.
    """
    from pyspark.errors import PySparkException

    from cartfhir.spark.catalog import OWNED, drop_own_table

    sql = model_sql(node, "spark")
    try:
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {node.schema}")
        columns = [c.lower() for c in spark.sql(sql).columns]
        drop_own_table(spark, node.table)
        if location is not None:
            _delete_path(spark, location)
        clauses = ["USING parquet"]
        if "site" in columns:
            clauses.append("PARTITIONED BY (site)")
        if location is not None:
            clauses.append(f"LOCATION {_string(location)}")
        clauses.append(OWNED)
        spark.sql(f"CREATE TABLE {node.table} {' '.join(clauses)} AS\n{sql}")
    except PySparkException as exc:
        raise TransformError(f"model {node.table} ({node.source}) failed on Spark: "
                             f"{str(exc).splitlines()[0]}") from None
    return spark.table(node.table).count()


def _delete_path(spark: SparkSession, location: str) -> None:
    """Remove ``location`` (any Hadoop file system) so a table can be written there."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(location)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if fs.exists(path):
        fs.delete(path, True)


def _string(text: str) -> str:
    """A Spark SQL string literal (backslash escapes are on by default in Spark)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


__all__ = ["build_model", "create_functions", "model_sql", "override_path", "split_statements"]
