"""A suite as the engine runs it (``SuiteSpec``), and which expectation types are sound.

Per-chunk results can be combined only for these types (checked when a ``SuiteSpec``
is built, before any data is read; a bad suite raises ``ExpectationError``):

* row-wise types (``ROW_TYPES``): each row is judged alone, so counts add up;
* uniqueness types (``UNIQUENESS_TYPES``): rows are partitioned by
  ``hash(chunk_by) % n``, so ``chunk_by`` must be a non-empty subset of every
  uniqueness key in the suite (equal keys then always share a chunk);
* schema types (``SCHEMA_TYPES``): the columns are the same in every chunk.

Column aggregates (max, mean, distinct values, row count, ...) are rejected: judged
chunk by chunk they would be wrong. Write them as a check query that returns one row,
e.g. ``SELECT count(*) AS row_count FROM cohort.episode`` with
``expect_column_values_to_be_between`` on ``row_count``.

An empty result is validated as an empty DataFrame with the query's columns: row-wise
and uniqueness expectations pass (GX's rule: nothing to violate), schema expectations
still check the columns, and "must not be empty" is the one-row check query above.

Two GX 1.24 habits to know when writing suites: bounds on DATE/TIMESTAMP columns must
be ISO datetimes ("2000-01-01T00:00:00", with an offset for TIMESTAMPTZ) because GX
turns a bare date into ``datetime.date``, which pandas will not compare (an error, not
a pass); and ``expect_compound_columns_to_be_unique`` treats NULLs as equal values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import Any

from cartfhir.errors import ExpectationError

ROW_TYPES = frozenset({
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_null",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_not_be_in_set",
    "expect_column_values_to_be_between",
    "expect_column_value_lengths_to_be_between",
    "expect_column_value_lengths_to_equal",
    "expect_column_values_to_match_regex",
    "expect_column_values_to_not_match_regex",
    "expect_column_values_to_match_regex_list",
    "expect_column_values_to_not_match_regex_list",
    "expect_column_values_to_match_strftime_format",
    "expect_column_values_to_be_dateutil_parseable",
    "expect_column_values_to_be_json_parseable",
    "expect_column_values_to_match_json_schema",
    "expect_column_pair_values_to_be_equal",
    "expect_column_pair_values_a_to_be_greater_than_b",
    "expect_column_pair_values_to_be_in_set",
    "expect_multicolumn_sum_to_equal",
    "expect_select_column_values_to_be_unique_within_record",
})
UNIQUENESS_TYPES = frozenset({
    "expect_column_values_to_be_unique",
    "expect_compound_columns_to_be_unique",
})
SCHEMA_TYPES = frozenset({
    "expect_column_to_exist",
    "expect_table_columns_to_match_set",
    "expect_table_columns_to_match_ordered_list",
    "expect_table_column_count_to_equal",
    "expect_table_column_count_to_be_between",
})
ALLOWED_TYPES = ROW_TYPES | UNIQUENESS_TYPES | SCHEMA_TYPES
SEVERITIES = ("error", "warn")


@dataclass(frozen=True)
class SuiteSpec:
    """One suite: a DuckDB query and the GX 1.x expectation configs its rows must meet.

    Building one checks everything that does not need data (see the module docstring)
    and raises ``ExpectationError`` naming the source file and expectation.
    """

    name: str
    query: str
    chunk_by: tuple[str, ...]
    expectations: list[dict]
    source: str = ""

    def __post_init__(self) -> None:
        _check_suite(self)

    @property
    def where(self) -> str:
        """The suite as a message names it: its file when known."""
        return f"suite {self.name!r}" + (f" ({self.source})" if self.source else "")

    def gx_configs(self) -> list[Any]:
        """GX's ``ExpectationConfiguration`` for each expectation, in suite order."""
        gx()
        from great_expectations.expectations.expectation_configuration import (
            ExpectationConfiguration,
        )

        return [ExpectationConfiguration(type=spec["type"], kwargs=dict(spec.get("kwargs", {})),
                                         meta=dict(spec.get("meta", {})))
                for spec in self.expectations]


def expectation_column(kwargs: dict) -> str | None:
    """The column(s) an expectation checks: 'a', or 'a,b' for pairs and compounds."""
    if "column" in kwargs:
        return str(kwargs["column"])
    if "column_A" in kwargs and "column_B" in kwargs:
        return f"{kwargs['column_A']},{kwargs['column_B']}"
    if kwargs.get("column_list"):
        return ",".join(str(c) for c in kwargs["column_list"])
    return None


@cache
def gx() -> Any:
    """Import GX on first use (it takes ~2 s), with its analytics switched off first."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations

    return great_expectations


def _check_suite(suite: SuiteSpec) -> None:
    """Reject, before any data is read, what cannot be validated soundly chunk by chunk."""
    if not suite.name:
        raise ExpectationError(f"a suite from {suite.source or '<unknown>'} has no name")
    if not suite.query.strip():
        raise ExpectationError(f"{suite.where} has an empty query")
    if not isinstance(suite.chunk_by, tuple) or not all(
            isinstance(c, str) and c for c in suite.chunk_by):
        raise ExpectationError(f"{suite.where}: chunk_by must be a tuple of column names")
    for number, spec in enumerate(suite.expectations, start=1):
        _check_expectation(suite, number, spec)


def _check_expectation(suite: SuiteSpec, number: int, spec: Any) -> None:
    where = f"{suite.where}, expectation #{number}"
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ExpectationError(f"{where}: must be an object with a 'type' and 'kwargs'")
    kind = spec["type"]
    where = f"{where} ({kind})"
    if kind not in ALLOWED_TYPES:
        raise ExpectationError(
            f"{where}: type not allowed; chunked validation supports only "
            f"{', '.join(sorted(ALLOWED_TYPES))}. For an aggregate (row count, max, mean...), "
            "write a check query returning one row and use expect_column_values_to_be_between"
        )
    kwargs, meta = spec.get("kwargs", {}), spec.get("meta", {})
    if not isinstance(kwargs, dict) or not isinstance(meta, dict):
        raise ExpectationError(f"{where}: 'kwargs' and 'meta' must be objects")
    if meta.get("severity", "error") not in SEVERITIES:
        raise ExpectationError(
            f"{where}: meta.severity is {meta.get('severity')!r}; "
            f"use one of {', '.join(SEVERITIES)}")
    if "result_format" in kwargs:
        raise ExpectationError(f"{where}: remove 'result_format'; the engine sets it")
    if kind in UNIQUENESS_TYPES:
        key = [kwargs["column"]] if "column" in kwargs else list(kwargs.get("column_list") or [])
        if not suite.chunk_by or not set(suite.chunk_by) <= set(key):
            raise ExpectationError(
                f"{where}: uniqueness of {key} is only sound if rows with equal keys share a "
                f"chunk; set the suite's chunk_by to a non-empty subset of {key} (now "
                f"{list(suite.chunk_by)}), or move this check to a suite of its own"
            )
    gx()
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    try:
        ExpectationConfiguration(type=kind, kwargs=kwargs, meta=meta).to_domain_obj()
    except Exception as exc:  # pydantic's ValidationError, GX's own: all mean bad kwargs
        text = " ".join(str(exc).split())
        raise ExpectationError(f"{where}: GX rejects its kwargs: {text}") from exc
