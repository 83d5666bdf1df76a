"""Reading a suite's query in bounded chunks: ``hash(chunk_by) % count``, as pandas frames."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd

from cartfhir.db import quote_name
from cartfhir.errors import ExpectationError

if TYPE_CHECKING:
    from cartfhir.expectations.gx.spec import SuiteSpec

log = logging.getLogger(__name__)

# Ints beyond 2**53 would lose digits as float64; those columns become objects instead.
_EXACT_FLOAT_INT = 2**53


def chunks(con: duckdb.DuckDBPyConnection, suite: SuiteSpec,
           chunk_rows: int) -> Iterator[tuple[int, int, pd.DataFrame]]:
    """Yield (number, count, DataFrame) for ``hash(chunk_by) % count = number - 1``.

    Without ``chunk_by`` the whole row is hashed. (Not ``hash(COLUMNS(*))``: in a
    WHERE clause DuckDB expands that to one condition per column, ANDed, which
    silently drops most rows.) The filter is applied even to a single chunk, so a
    misspelt ``chunk_by`` fails on small data too. Raises ``ExpectationError`` when
    the query fails or returns other rows when read in chunks than when counted.
    """
    body = suite.query.strip().rstrip(";").strip()
    rows_alias = "cartfhir_rows"
    source = f"(\n{body}\n) AS {rows_alias}"
    key = (", ".join(f"{rows_alias}.{quote_name(c)}" for c in suite.chunk_by)
           if suite.chunk_by else rows_alias)
    total = _fetch(con, suite, f"SELECT count(*) FROM {source}").fetchone()[0]
    count = max(1, math.ceil(total / chunk_rows))
    seen = 0
    for number in range(1, count + 1):
        sql = f"SELECT {rows_alias}.* FROM {source} WHERE hash({key}) % {count} = {number - 1}"
        frame = _fetch(con, suite, sql).df()
        seen += len(frame)
        if len(frame) > 2 * chunk_rows:
            log.warning("%s: chunk %d/%d has %d rows for a target of %d; chunk_by %s is skewed",
                        suite.where, number, count, len(frame), chunk_rows, list(suite.chunk_by))
        yield number, count, _numpy_backed(frame)
        del frame
    if seen != total:
        raise ExpectationError(
            f"{suite.where}: its query returned {total} rows when counted but {seen} when read "
            "in chunks; it must return the same rows every time it runs (no random(), now(), "
            "or LIMIT without ORDER BY)"
        )


def _fetch(con: duckdb.DuckDBPyConnection, suite: SuiteSpec, sql: str) -> Any:
    try:
        return con.execute(sql)
    except duckdb.Error as exc:
        raise ExpectationError(
            f"{suite.where}: its query failed in DuckDB: {exc}. Check the query and chunk_by, "
            "or run the stage that builds its tables first"
        ) from exc


def _numpy_backed(frame: pd.DataFrame) -> pd.DataFrame:
    """Swap pandas' masked dtypes (Int32, boolean), which DuckDB gives nullable columns.

    GX's pair and multicolumn checks compare values and stumble on ``pd.NA``
    ("boolean value of NA is ambiguous"); float64 with NaN (ints up to 2**53) or
    objects with None behave like the numpy columns GX was written for.
    """
    for position in range(frame.shape[1]):
        column = frame.iloc[:, position]
        dtype = column.dtype
        if not isinstance(dtype, pd.api.extensions.ExtensionDtype):
            continue
        if pd.api.types.is_string_dtype(dtype) or not (
                pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
            continue
        if pd.api.types.is_float_dtype(dtype) or (
                pd.api.types.is_integer_dtype(dtype)
                and (column.dropna().abs() <= _EXACT_FLOAT_INT).all()):
            replacement = pd.Series(column.to_numpy(dtype="float64", na_value=np.nan),
                                    index=frame.index)
        else:
            replacement = column.astype(object).where(column.notna(), None)
        frame.isetitem(position, replacement)
    return frame
