"""Are two row sets equal? A DuckDB query's rows against a Spark query's, compared both ways.

The Spark rows reach DuckDB as Parquet in a temporary folder (never through the driver);
both sides are then normalised in DuckDB by one set of rules, so a type that differs only
in spelling between the engines does not count: numbers become DOUBLE rounded to 9
significant digits, timestamps UTC ISO text, dates ISO text, lists and structs canonical
JSON text (their elements normalised the same way), JSON object or array text with sorted
keys (``json_canon``), NULL stays NULL. ``EXCEPT ALL`` both
ways then gives the rows only one side has, duplicates counted.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import orjson

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

EXAMPLES = 5  # rows kept of each side's difference
_NUMBERS = {"tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint",
            "uinteger", "ubigint", "uhugeint", "float", "double", "decimal"}


@dataclass
class TableDiff:
    """The outcome of ``table_diff``: counts, and a few rows only one side has."""

    columns: list[str]
    rows_duckdb: int
    rows_spark: int
    count_only_duckdb: int
    count_only_spark: int
    only_duckdb: list[tuple[Any, ...]] = field(default_factory=list)
    only_spark: list[tuple[Any, ...]] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)  # on one side only

    @property
    def equal(self) -> bool:
        return (not self.missing_columns and self.count_only_duckdb == 0
                and self.count_only_spark == 0)

    def __str__(self) -> str:
        if self.missing_columns:
            return f"columns on one side only: {', '.join(self.missing_columns)}"
        lines = [f"{self.rows_duckdb} rows on DuckDB, {self.rows_spark} on Spark; "
                 f"{self.count_only_duckdb} only on DuckDB, {self.count_only_spark} only on "
                 f"Spark (columns {', '.join(self.columns)})"]
        lines += [f"  only DuckDB: {row}" for row in self.only_duckdb]
        lines += [f"  only Spark:  {row}" for row in self.only_spark]
        return "\n".join(lines)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _norm(expr: str, dtype: duckdb.typing.DuckDBPyType, nested: bool = False) -> str:
    """SQL normalising ``expr`` of type ``dtype``; text inside lists and structs."""
    kind = dtype.id
    if kind in _NUMBERS:
        value = f"CAST({expr} AS DOUBLE)"
        text = f"CASE WHEN {value} = 0 THEN 0.0 ELSE {value} END"  # -0.0 is 0.0
        rounded = f"CAST(printf('%.9g', {text}) AS DOUBLE)"
        return f"CAST({rounded} AS VARCHAR)" if nested else rounded
    if kind in ("timestamp with time zone", "timestamp", "timestamp_ns", "timestamp_ms",
                "timestamp_s"):
        utc = (f"timezone('UTC', {expr})" if kind == "timestamp with time zone"
               else f"CAST({expr} AS TIMESTAMP)")
        return f"strftime({utc}, '%Y-%m-%dT%H:%M:%S.%fZ')"
    if kind == "date":
        return f"strftime({expr}, '%Y-%m-%d')"
    if kind == "blob":
        return f"hex({expr})"
    if kind == "list" or kind == "array":
        child = dtype.children[0][1]
        inner = f"list_transform({expr}, lambda x: {_norm('x', child, True)})"
        return inner if nested else f"CAST(to_json({inner}) AS VARCHAR)"
    if kind == "struct":
        fields = ", ".join(f"{_ident(name)} := {_norm(f'{expr}.{_ident(name)}', child, True)}"
                           for name, child in dtype.children)
        inner = f"CASE WHEN {expr} IS NOT NULL THEN struct_pack({fields}) END"
        return inner if nested else f"CAST(to_json({inner}) AS VARCHAR)"
    if kind == "boolean" and not nested:
        return expr
    return f"{JSON_CANON}(CAST({expr} AS VARCHAR))"


JSON_CANON = "cartfhir_json_canon"


def json_canon(text: str | None) -> str | None:
    """JSON object or array text with its keys sorted; any other text as it is.

    JSON objects are unordered (RFC 8259), and the engines write them differently: DuckDB
    keeps a resource's key order, Spark's VARIANT sorts the keys. Text that is not a JSON
    object or array is compared as written.
    """
    if text is None or not text.lstrip().startswith(("{", "[")):
        return text
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS).decode()
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # e.g. nested past orjson's depth
        return text


def _register_canon(con: duckdb.DuckDBPyConnection) -> None:
    # Made by an earlier diff on this connection or on another cursor of its database.
    with contextlib.suppress(duckdb.NotImplementedException, duckdb.CatalogException):
        con.create_function(JSON_CANON, json_canon, ["VARCHAR"],
                            "VARCHAR", null_handling="special")


def _normalised(rel: duckdb.DuckDBPyRelation, columns: list[str]) -> str:
    """A SELECT list of ``columns`` of ``rel`` normalised, by their lower-case names."""
    types = {name.lower(): dtype for name, dtype in zip(rel.columns, rel.types, strict=True)}
    names = {name.lower(): name for name in rel.columns}
    return ", ".join(f"{_norm(_ident(names[c]), types[c])} AS {_ident(c)}" for c in columns)


def table_diff(con: duckdb.DuckDBPyConnection, duck_sql: str, spark: SparkSession,
               spark_sql: str, *, columns: list[str] | None = None,
               examples: int = EXAMPLES) -> TableDiff:
    """Compare DuckDB's rows of ``duck_sql`` with Spark's of ``spark_sql`` (both ways).

    ``columns`` (default: all DuckDB's) are matched by name, case-insensitively; a column
    missing on either side makes the diff unequal.
    """
    folder = Path(tempfile.mkdtemp(prefix="cartfhir-diff-"))
    key = "spark.sql.parquet.outputTimestampType"
    before = spark.conf.get(key)
    try:
        spark.conf.set(key, "TIMESTAMP_MICROS")  # UTC-adjusted, as DuckDB reads it
        spark.sql(spark_sql).coalesce(1).write.mode("overwrite").parquet(str(folder / "rows"))
    finally:
        spark.conf.set(key, before)
    # A cursor of its own: the caller's connection may hold an unfetched result (DuckDB 2
    # then refuses sql() and create_function() on it), and our UDF and views stay off it.
    con = con.cursor()
    try:
        _register_canon(con)
        duck = con.sql(duck_sql)
        spark_rows = f"read_parquet('{folder / 'rows' / '*.parquet'}')"
        spark_rel = con.sql(f"SELECT * FROM {spark_rows}")
        duck_cols = [c.lower() for c in duck.columns]
        spark_cols = [c.lower() for c in spark_rel.columns]
        wanted = [c.lower() for c in columns] if columns is not None else duck_cols
        missing = sorted({c for c in wanted if c not in duck_cols or c not in spark_cols}
                         | ({*duck_cols} ^ {*spark_cols} if columns is None else set()))
        rows_duck = con.execute(f"SELECT count(*) FROM ({duck_sql})").fetchall()[0][0]
        rows_spark = con.execute(f"SELECT count(*) FROM {spark_rows}").fetchall()[0][0]
        if missing:
            return TableDiff(wanted, rows_duck, rows_spark, 0, 0, missing_columns=missing)
        con.execute(f"CREATE OR REPLACE TEMP VIEW _diff_duck AS SELECT "
                    f"{_normalised(duck, wanted)} FROM ({duck_sql})")
        con.execute(f"CREATE OR REPLACE TEMP VIEW _diff_spark AS SELECT "
                    f"{_normalised(spark_rel, wanted)} FROM {spark_rows}")
        sides = []
        for one, other in (("_diff_duck", "_diff_spark"), ("_diff_spark", "_diff_duck")):
            query = f"SELECT * FROM {one} EXCEPT ALL SELECT * FROM {other}"
            count = con.execute(f"SELECT count(*) FROM ({query})").fetchall()[0][0]
            rows = con.execute(f"{query} ORDER BY ALL LIMIT {int(examples)}").fetchall()
            sides.append((count, rows))
        con.execute("DROP VIEW _diff_duck")
        con.execute("DROP VIEW _diff_spark")
        return TableDiff(wanted, rows_duck, rows_spark, sides[0][0], sides[1][0],
                         sides[0][1], sides[1][1])
    finally:
        con.close()
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["TableDiff", "table_diff"]
