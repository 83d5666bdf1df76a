"""GX Data Docs for validation results: every chunk's result stored in a GX file context."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from cartfhir.errors import ExpectationError
from cartfhir.expectations.gx.spec import SuiteSpec, gx


class DocsSite:
    """GX Data Docs for validation results: a GX file context rooted at ``folder``.

    ``validate_suite(..., docs=site)`` stores every chunk's result; ``build()`` renders
    the HTML. Results accumulate across runs (one GX run per ``validate_suite`` call).
    """

    def __init__(self, folder: Path, run_name: str = "cartfhir") -> None:
        great_expectations = gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.folder = Path(folder)
        self.run_name = run_name
        try:
            self._context = great_expectations.get_context(mode="file",
                                                           context_root_dir=str(self.folder))
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

        suite_id = ExpectationSuiteIdentifier(name=suite.name)
        key = ValidationResultIdentifier(
            expectation_suite_identifier=suite_id,
            run_id=RunIdentifier(run_name=self.run_name, run_time=run_time),
            batch_identifier=f"chunk-{chunk:04d}-of-{chunks:04d}",
        )
        try:
            if suite.name not in self._suites:
                meta = {"cartfhir_source": suite.source, "query": suite.query}
                self._context.suites.add_or_update(gx().ExpectationSuite(
                    name=suite.name, expectations=suite.gx_configs(), meta=meta))
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
