"""The GX context (ephemeral, pandas datasource) and ``validate_suite``, which drives it.

All expectations of a suite run in one ``batch.validate`` call per chunk (GX's fixed
cost is per call). Anything GX raises while validating (a missing column, a comparison
pandas refuses) makes that expectation fail with ``Outcome.error`` set; nothing fails
silently.
"""

from __future__ import annotations

import datetime as dt
import uuid
from functools import cache
from typing import TYPE_CHECKING, Any

import duckdb

from cartfhir.expectations.gx.batching import chunks
from cartfhir.expectations.gx.spec import SuiteSpec, gx
from cartfhir.expectations.gx.tally import EXAMPLES, Outcome, Tally

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite

    from cartfhir.expectations.gx.docs import DocsSite

# SUMMARY, not COMPLETE: COMPLETE lists every unexpected value, unbounded on a bad table.
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES}


def validate_suite(con: duckdb.DuckDBPyConnection, suite: SuiteSpec, *, chunk_rows: int = 100_000,
                   docs: DocsSite | None = None) -> list[Outcome]:
    """Validate ``suite`` chunk by chunk; one ``Outcome`` per expectation, in suite order.

    With ``docs``, each chunk's GX result is also stored for Data Docs. Raises
    ``ExpectationError`` when the query fails or returns different rows on different
    passes (it is run once per chunk, so it must be deterministic).
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    engine = _engine()
    gx_suite, ids = _gx_suite(suite)
    tallies = [Tally.start(suite, spec) for spec in suite.expectations]
    run_time = dt.datetime.now(dt.UTC)
    batch_definition = engine.batch_definition(suite.name)
    try:
        for number, count, frame in chunks(con, suite, chunk_rows):
            try:
                batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
                result = batch.validate(gx_suite, result_format=RESULT_FORMAT)
            except Exception as exc:  # whatever GX raises is a failed check, never a pass
                for tally in tallies:
                    tally.fail(number, count, f"GX raised {type(exc).__name__}: {exc}")
                continue
            by_id = {res.expectation_config.id: res for res in result.results}
            for tally, expectation_id in zip(tallies, ids, strict=True):
                tally.add(number, count, by_id.get(expectation_id))
            if docs is not None:
                result.meta["cartfhir"] = {"suite": suite.name, "source": suite.source,
                                           "chunk": number, "chunks": count, "rows": len(frame)}
                docs.record(suite, result, run_time, number, count)
    finally:
        engine.release(suite.name)
    return [tally.outcome() for tally in tallies]


class _Engine:
    """One ephemeral GX context and pandas datasource for the process; an asset per suite."""

    def __init__(self) -> None:
        great_expectations = gx()
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
        self.context = great_expectations.get_context(mode="ephemeral", project_config=config)
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


def _gx_suite(suite: SuiteSpec) -> tuple[ExpectationSuite, list[str]]:
    """The GX suite, with our own ids to match results back to expectations.

    Built through the constructor: ``add_expectation_configuration`` upserts by domain,
    so a second ``between`` on the same column would silently replace the first.
    """
    configs = suite.gx_configs()
    ids = [str(uuid.uuid4()) for _ in configs]
    for config, expectation_id in zip(configs, ids, strict=True):
        config.id = expectation_id
    return gx().ExpectationSuite(name=suite.name, expectations=configs), ids
