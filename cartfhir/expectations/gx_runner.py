"""Great Expectations engine: validate a DuckDB query in bounded, hash-partitioned chunks.

GX's SQL datasource on DuckDB (through duckdb-engine) fails every expectation with
"list index out of range", so rows are fetched from DuckDB a chunk at a time into
pandas and validated with GX's pandas datasource; a million-row table never sits in
memory at once. Per-chunk results are combined per expectation, which is sound only
for the types in ``ALLOWED_TYPES`` (checked when a ``SuiteSpec`` is built):

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

Bad suites (unknown or disallowed type, bad kwargs, bad severity, unsafe ``chunk_by``)
raise ``ExpectationError`` when the ``SuiteSpec`` is built, before any data is read.
Anything GX raises while validating (a missing column, a comparison pandas refuses)
makes that expectation fail with ``Outcome.error`` set; nothing fails silently.

Two GX 1.24 habits to know when writing suites: bounds on DATE/TIMESTAMP columns must
be ISO datetimes ("2000-01-01T00:00:00", with an offset for TIMESTAMPTZ) because GX
turns a bare date into ``datetime.date``, which pandas will not compare (an error, not
a pass); and ``expect_compound_columns_to_be_unique`` treats NULLs as equal values.
A uniqueness failure counts every row of a duplicate group (one extra row counts 2).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import duckdb
import numpy as np
import pandas as pd

from cartfhir.errors import ExpectationError

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite

log = logging.getLogger(__name__)


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
EXAMPLES = 5
# SUMMARY, not COMPLETE: COMPLETE lists every unexpected value, unbounded on a bad table.
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES}
# Ints beyond 2**53 would lose digits as float64; those columns become objects instead.
_EXACT_FLOAT_INT = 2**53


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


@dataclass
class Outcome:
    """One expectation's verdict over all chunks of its suite's query."""

    suite: str
    expectation: str
    column: str | None
    severity: str
    success: bool
    observed_value: str | None
    unexpected_count: int | None
    element_count: int | None
    unexpected_examples: list
    error: str | None
    kwargs: dict


def validate_suite(con: duckdb.DuckDBPyConnection, suite: SuiteSpec, *, chunk_rows: int = 100_000,
                   docs: DocsSite | None = None) -> list[Outcome]:
    """Validate ``suite`` chunk by chunk; one ``Outcome`` per expectation, in suite order.

    All expectations run in one ``batch.validate`` call per chunk (GX's fixed cost is
    per call). With ``docs``, each chunk's GX result is also stored for Data Docs.
    Raises ``ExpectationError`` when the query fails or returns different rows on
    different passes (it is run once per chunk, so it must be deterministic).
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    engine = _engine()
    gx_suite, ids = _gx_suite(suite)
    tallies = [_Tally.start(suite, spec) for spec in suite.expectations]
    run_time = dt.datetime.now(dt.UTC)
    batch_definition = engine.batch_definition(suite.name)
    try:
        for number, chunks, frame in _chunks(con, suite, chunk_rows):
            try:
                batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
                result = batch.validate(gx_suite, result_format=RESULT_FORMAT)
            except Exception as exc:  # whatever GX raises is a failed check, never a pass
                for tally in tallies:
                    tally.fail(number, chunks, f"GX raised {type(exc).__name__}: {exc}")
                continue
            by_id = {res.expectation_config.id: res for res in result.results}
            for tally, expectation_id in zip(tallies, ids, strict=True):
                tally.add(number, chunks, by_id.get(expectation_id))
            if docs is not None:
                result.meta["cartfhir"] = {"suite": suite.name, "source": suite.source,
                                           "chunk": number, "chunks": chunks, "rows": len(frame)}
                docs.record(suite, result, run_time, number, chunks)
    finally:
        engine.release(suite.name)
    return [tally.outcome() for tally in tallies]


class DocsSite:
    """GX Data Docs for validation results: a GX file context rooted at ``folder``.

    ``validate_suite(..., docs=site)`` stores every chunk's result; ``build()`` renders
    the HTML. Results accumulate across runs (one GX run per ``validate_suite`` call).
    """

    def __init__(self, folder: Path, run_name: str = "cartfhir") -> None:
        gx = _gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.folder = Path(folder)
        self.run_name = run_name
        try:
            self._context = gx.get_context(mode="file", context_root_dir=str(self.folder))
            self._context.variables.analytics_enabled = False
            self._context.variables.progress_bars = ProgressBarsConfig(
                globally=False, metric_calculations=False)
            self._context.variables.save()
        except Exception as exc:  # GX's own errors, OSError, YAML: all mean "no docs here"
            raise ExpectationError(
                f"cannot open a GX Data Docs folder at {self.folder}: {exc}; "
                "choose an empty folder or one made by cartfhir"
            ) from exc
        self._suites: set[str] = set()

    def record(self, suite: SuiteSpec, result: Any, run_time: dt.datetime, chunk: int,
               chunks: int) -> None:
        """Store one chunk's GX result (and, once per site, the suite it was checked against)."""
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        gx = _gx()
        suite_id = ExpectationSuiteIdentifier(name=suite.name)
        key = ValidationResultIdentifier(
            expectation_suite_identifier=suite_id,
            run_id=RunIdentifier(run_name=self.run_name, run_time=run_time),
            batch_identifier=f"chunk-{chunk:04d}-of-{chunks:04d}",
        )
        try:
            if suite.name not in self._suites:
                meta = {"cartfhir_source": suite.source, "query": suite.query}
                self._context.suites.add_or_update(
                    gx.ExpectationSuite(name=suite.name, expectations=_configs(suite), meta=meta))
                self._suites.add(suite.name)
            self._context.validation_results_store.store_validation_results(result, key, suite_id)
        except Exception as exc:
            raise ExpectationError(
                f"{suite.where}: storing chunk {chunk}/{chunks} for Data Docs in {self.folder} "
                f"failed: {exc}") from exc

    def build(self) -> Path:
        """Render the Data Docs HTML and return the path of its ``index.html``."""
        try:
            urls = self._context.build_data_docs()
        except Exception as exc:
            raise ExpectationError(f"building GX Data Docs in {self.folder} failed: {exc}") from exc
        if not urls:
            raise ExpectationError(f"GX built no Data Docs site in {self.folder}")
        index = Path(unquote(urlparse(next(iter(urls.values()))).path))
        if not index.is_file():
            raise ExpectationError(f"GX reported Data Docs at {index}, but there is no such file")
        return index


# --- checking a suite ---------------------------------------------------------------------


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
    _gx()
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    try:
        ExpectationConfiguration(type=kind, kwargs=kwargs, meta=meta).to_domain_obj()
    except Exception as exc:  # pydantic's ValidationError, GX's own: all mean bad kwargs
        text = " ".join(str(exc).split())
        raise ExpectationError(f"{where}: GX rejects its kwargs: {text}") from exc


# --- running GX ---------------------------------------------------------------------------


@cache
def _gx() -> Any:
    """Import GX on first use (it takes ~2 s), with its analytics switched off first."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations

    return great_expectations


class _Engine:
    """One ephemeral GX context and pandas datasource for the process; an asset per suite."""

    def __init__(self) -> None:
        gx = _gx()
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.datasource = self.context.data_sources.add_pandas("cartfhir")
        self._definitions: dict[str, Any] = {}

    def batch_definition(self, suite_name: str) -> Any:
        if suite_name not in self._definitions:
            asset = self.datasource.add_dataframe_asset(suite_name)
            self._definitions[suite_name] = asset.add_batch_definition_whole_dataframe("chunk")
        return self._definitions[suite_name]

    def release(self, suite_name: str) -> None:
        """Drop GX's reference to the last chunk, which it otherwise keeps until the next."""
        cache = self.datasource.get_execution_engine().batch_manager.batch_data_cache
        cache.pop(f"{self.datasource.name}-{suite_name}", None)


@cache
def _engine() -> _Engine:
    return _Engine()


def _configs(suite: SuiteSpec) -> list[Any]:
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    return [ExpectationConfiguration(type=spec["type"], kwargs=dict(spec.get("kwargs", {})),
                                     meta=dict(spec.get("meta", {})))
            for spec in suite.expectations]


def _gx_suite(suite: SuiteSpec) -> tuple[ExpectationSuite, list[str]]:
    """The GX suite, with our own ids to match results back to expectations.

    Built through the constructor: ``add_expectation_configuration`` upserts by domain,
    so a second ``between`` on the same column would silently replace the first.
    """
    gx = _gx()
    configs = _configs(suite)
    ids = [str(uuid.uuid4()) for _ in configs]
    for config, expectation_id in zip(configs, ids, strict=True):
        config.id = expectation_id
    return gx.ExpectationSuite(name=suite.name, expectations=configs), ids


# --- reading chunks -----------------------------------------------------------------------


def _chunks(con: duckdb.DuckDBPyConnection, suite: SuiteSpec,
            chunk_rows: int) -> Iterator[tuple[int, int, pd.DataFrame]]:
    """Yield (number, count, DataFrame) for ``hash(chunk_by) % count = number - 1``.

    Without ``chunk_by`` the whole row is hashed. (Not ``hash(COLUMNS(*))``: in a
    WHERE clause DuckDB expands that to one condition per column, ANDed, which
    silently drops most rows.) The filter is applied even to a single chunk, so a
    misspelt ``chunk_by`` fails on small data too.
    """
    body = suite.query.strip().rstrip(";").strip()
    rows_alias = "cartfhir_rows"
    source = f"(\n{body}\n) AS {rows_alias}"
    key = (", ".join(f"{rows_alias}.{_quote(c)}" for c in suite.chunk_by)
           if suite.chunk_by else rows_alias)
    total = _fetch(con, suite, f"SELECT count(*) FROM {source}").fetchone()[0]
    chunks = max(1, math.ceil(total / chunk_rows))
    seen = 0
    for number in range(1, chunks + 1):
        sql = f"SELECT {rows_alias}.* FROM {source} WHERE hash({key}) % {chunks} = {number - 1}"
        frame = _fetch(con, suite, sql).df()
        seen += len(frame)
        if len(frame) > 2 * chunk_rows:
            log.warning("%s: chunk %d/%d has %d rows for a target of %d; chunk_by %s is skewed",
                        suite.where, number, chunks, len(frame), chunk_rows, list(suite.chunk_by))
        yield number, chunks, _numpy_backed(frame)
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


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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


# --- combining chunk results --------------------------------------------------------------


@dataclass
class _Tally:
    """Running combination of one expectation's results over the chunks."""

    suite: str
    kind: str
    kwargs: dict
    severity: str
    all_passed: bool = True
    errors: dict[str, list[int]] = field(default_factory=dict)  # message -> chunk numbers
    chunks: int = 0
    unexpected: int | None = None
    elements: int | None = None
    missing: int | None = None
    examples: list = field(default_factory=list)
    observed: Any = None
    observed_from_failure: bool = False

    @classmethod
    def start(cls, suite: SuiteSpec, spec: dict) -> _Tally:
        severity = spec.get("meta", {}).get("severity", "error")
        return cls(suite=suite.name, kind=spec["type"], kwargs=dict(spec.get("kwargs", {})),
                   severity=severity)

    def fail(self, chunk: int, chunks: int, message: str) -> None:
        self.all_passed = False
        self.chunks = chunks
        self.errors.setdefault(message, []).append(chunk)

    def add(self, chunk: int, chunks: int, result: Any) -> None:
        if result is None:
            self.fail(chunk, chunks, "GX returned no result for this expectation")
            return
        raised = _raised(result.exception_info)
        if raised:
            self.fail(chunk, chunks, raised)
            return
        if result.success is not True:
            self.all_passed = False
        details = result.result or {}
        self.unexpected = _add(self.unexpected, details.get("unexpected_count"))
        self.elements = _add(self.elements, details.get("element_count"))
        self.missing = _add(self.missing, details.get("missing_count"))
        room = EXAMPLES - len(self.examples)
        if room > 0:
            self.examples.extend(_jsonable(v) for v in details.get("partial_unexpected_list") or [])
            del self.examples[EXAMPLES:]
        if "observed_value" in details and (
                self.observed is None or (not result.success and not self.observed_from_failure)):
            self.observed = details["observed_value"]
            self.observed_from_failure = not result.success

    def outcome(self) -> Outcome:
        success = self.all_passed and not self.errors
        mostly = self.kwargs.get("mostly")
        if not self.errors and mostly is not None and self.unexpected is not None:
            # Chunks each meeting `mostly` is neither necessary nor sufficient: redo GX's
            # rule on the sums (rows considered = elements minus missing ones).
            considered = (self.elements or 0) - (self.missing or 0)
            success = considered == 0 or (considered - self.unexpected) / considered >= mostly
        return Outcome(
            suite=self.suite,
            expectation=self.kind,
            column=expectation_column(self.kwargs),
            severity=self.severity,
            success=success,
            observed_value=(None if self.observed is None
                            else json.dumps(_jsonable(self.observed))),
            unexpected_count=self.unexpected,
            element_count=self.elements,
            unexpected_examples=list(self.examples),
            error=self.error_text(),
            kwargs=dict(self.kwargs),
        )


    def error_text(self) -> str | None:
        """Each distinct GX error once, with the chunks it happened in."""
        if not self.errors:
            return None
        parts = []
        for message, chunks in self.errors.items():
            where = f"chunk {chunks[0]}" if len(chunks) == 1 else f"{len(chunks)} chunks"
            parts.append(f"{message} (in {where} of {self.chunks})")
        return "; ".join(parts)


def _add(total: int | None, value: Any) -> int | None:
    if value is None:
        return total
    return (total or 0) + int(value)


def _raised(info: Any) -> str | None:
    """GX's exception text, from either its flat or its per-metric ``exception_info``."""
    if not isinstance(info, dict):
        return None
    entries = [info] if "raised_exception" in info else list(info.values())
    messages = [str(entry.get("exception_message") or "GX raised an exception")
                for entry in entries if isinstance(entry, dict) and entry.get("raised_exception")]
    return "; ".join(dict.fromkeys(messages)) or None


def expectation_column(kwargs: dict) -> str | None:
    """The column(s) an expectation checks: 'a', or 'a,b' for pairs and compounds."""
    if "column" in kwargs:
        return str(kwargs["column"])
    if "column_A" in kwargs and "column_B" in kwargs:
        return f"{kwargs['column_A']},{kwargs['column_B']}"
    if kwargs.get("column_list"):
        return ",".join(str(c) for c in kwargs["column_list"])
    return None


def _jsonable(value: Any) -> Any:
    """Plain JSON values for GX's numpy, pandas and datetime values (NaN/NaT -> None)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):  # np.float64 is a float subclass: make it a plain float
        return None if math.isnan(value) else (float(value) if math.isfinite(value)
                                               else str(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=str)
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, Decimal):
        return float(value)
    return str(value)
