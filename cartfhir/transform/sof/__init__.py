"""SQL-on-FHIR v2 ViewDefinitions compiled to one DuckDB (or Spark) SELECT.

``compile_view`` turns a ViewDefinition into SQL over a table of landed
resources (``resource_type VARCHAR``, ``resource JSON``; on Spark ``resource`` is
the JSON text); ``run_view`` / ``run_view_spark`` run it and return dicts;
``validate_view`` checks a view without touching data.

Example::

    compiled = compile_view(view, "raw.resources", passthrough=("site",))
    con.execute(f"CREATE TABLE flat.patient AS {compiled.sql}")
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import orjson

from cartfhir.errors import DatabaseError
from cartfhir.transform.sof.dialect import ERROR_MARK
from cartfhir.transform.sof.errors import UnsupportedFhirPath, ViewDefinitionError
from cartfhir.transform.sof.view import ViewColumn, ViewCompiler

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "DEFAULT_REPEAT_DEPTH",
    "ERROR_MARK",
    "CompiledView",
    "UnsupportedFhirPath",
    "ViewColumn",
    "ViewDefinitionError",
    "compile_view",
    "run_view",
    "run_view_spark",
    "validate_view",
]

# A raise_error() of the compiled SQL reached at run time, as Spark reports it.
_RAISED = re.compile(
    r"\s*\[USER_RAISED_EXCEPTION\] " + re.escape(ERROR_MARK) + r"(.*?)(?: SQLSTATE|$)",
    re.MULTILINE)

# How many levels ``repeat`` follows; deeper data stops the query with an error.
DEFAULT_REPEAT_DEPTH = 10


@dataclass(frozen=True)
class CompiledView:
    """One SELECT for a view: passthrough columns first, then ``columns`` in view order."""

    sql: str
    columns: list[ViewColumn]
    passthrough: tuple[str, ...] = ()
    resource: str = ""


def compile_view(view: dict[str, Any], source: str = "raw.resources", *,
                 passthrough: Sequence[str] = (),
                 repeat_depth: int = DEFAULT_REPEAT_DEPTH,
                 dialect: str = "duckdb") -> CompiledView:
    """Compile a ViewDefinition into one SELECT over ``source`` in ``dialect``.

    ``source`` is a table name or a parenthesised subquery with columns
    ``resource_type`` and ``resource`` (JSON; on Spark its text, parsed once into a
    VARIANT). ``dialect`` is ``"duckdb"`` or ``"spark"``. ``passthrough`` names source
    columns copied into every output row, ahead of the view's columns.
    Raises ``ViewDefinitionError`` (or ``UnsupportedFhirPath``) for a view that
    cannot be compiled exactly.
    """
    compiler = ViewCompiler(view, repeat_depth=repeat_depth, dialect=dialect)
    passthrough = tuple(passthrough)
    sql, columns = compiler.build(source, passthrough)
    return CompiledView(sql, columns, passthrough, compiler.resource_type)


def validate_view(view: dict[str, Any]) -> None:
    """Raise ``ViewDefinitionError`` if the view cannot be compiled; return None if it can.

    Rules that depend on data (one value per non-collection column, boolean
    ``where`` results) are checked when the view runs.
    """
    compile_view(view)


def run_view(con: duckdb.DuckDBPyConnection, view: dict[str, Any],
             source: str = "raw.resources", passthrough: Sequence[str] = ()) -> list[dict]:
    """Compile and run a view; rows as dicts with JSON columns parsed. For tests and small views.

    Rule breaks found while running (several values in a non-collection
    column, a non-boolean ``where``) raise ``ViewDefinitionError``.
    """
    compiled = compile_view(view, source, passthrough=passthrough)
    try:
        cursor = con.execute(compiled.sql)
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    except duckdb.Error as exc:
        message = str(exc)
        if ERROR_MARK in message:
            detail = message.split(ERROR_MARK, 1)[1].splitlines()[0]
            raise ViewDefinitionError(f"view on {compiled.resource}: {detail}") from exc
        raise DatabaseError(f"running the view on {compiled.resource} failed: {message}") from exc
    json_cols = {c.name for c in compiled.columns if c.duckdb_type.startswith("JSON")}
    return [
        {name: _parse_json(value) if name in json_cols else value
         for name, value in zip(names, row, strict=True)}
        for row in rows
    ]


def run_view_spark(spark: SparkSession, view: dict[str, Any], source: str = "raw.resources",
                   passthrough: Sequence[str] = ()) -> list[dict]:
    """``run_view`` on Spark: the same dicts (JSON columns parsed), the same errors.

    A rule break raises on Spark as ``[USER_RAISED_EXCEPTION] <message>``; the
    text after ``ERROR_MARK`` becomes the ``ViewDefinitionError``.
    """
    compiled = compile_view(view, source, passthrough=passthrough, dialect="spark")
    try:
        df = spark.sql(compiled.sql)
        names = df.columns
        rows = [tuple(r) for r in df.collect()]
    except Exception as exc:  # pyspark's errors share no base class worth naming here
        message = str(exc)
        # Only a raise_error() reached at run time is a rule break; an analysis
        # error quotes the SQL, marks and all.
        raised = _RAISED.match(message)
        if raised:
            detail = raised.group(1).rstrip()
            raise ViewDefinitionError(f"view on {compiled.resource}: {detail}") from exc
        raise DatabaseError(
            f"running the view on {compiled.resource} on Spark failed: {message}") from exc
    json_cols = {c.name for c in compiled.columns if c.duckdb_type.startswith("JSON")}
    return [
        {name: _parse_json(value) if name in json_cols else value
         for name, value in zip(names, row, strict=True)}
        for row in rows
    ]


def _parse_json(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, list):
        return [_parse_json(v) for v in value]
    return orjson.loads(value)
