"""GX Data Docs for validation results: every chunk's result stored in a GX file context.

The pages must work on a network without internet: after GX renders, ``offline`` strips
what GX's pages would fetch from the web and what cannot run without it, and
``index.html`` in the docs folder is a self-contained summary of the run (``summary``)
that links to them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from cartfhir.errors import ExpectationError
from cartfhir.expectations.gx import summary
from cartfhir.expectations.gx.offline import offline
from cartfhir.expectations.gx.spec import SuiteSpec, gx
from cartfhir.expectations.gx.tally import Outcome


class DocsSite:
    """GX Data Docs for validation results: a GX file context rooted at ``folder``.

    ``validate_suite(..., docs=site)`` stores every chunk's result; ``build()`` renders
    the HTML. Results accumulate across runs (one GX run per ``validate_suite`` call).
    """

    def __init__(self, folder: Path, run_name: str = "cartfhir") -> None:
        """``run_name`` names the run in every page: pass the validation run's id."""
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
        run_id = RunIdentifier(run_name=self.run_name, run_time=run_time)
        key = ValidationResultIdentifier(
            expectation_suite_identifier=suite_id,
            run_id=run_id,
            batch_identifier=f"chunk-{chunk:04d}-of-{chunks:04d}",
        )
        # GX's pages read the run and the data asset from the result's meta ("Run Name
        # __none__", "Data asset: None" otherwise); the asset is the suite's table.
        result.meta["run_id"] = run_id.to_json_dict()
        batch_spec = dict(result.meta.get("batch_spec") or {})
        batch_spec["data_asset_name"] = suite.name
        result.meta["batch_spec"] = batch_spec
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

    def build(self, outcomes: Sequence[Outcome] = ()) -> Path:
        """Render the Data Docs and return the run's self-contained ``index.html``.

        ``outcomes`` are the run's combined verdicts (every suite, also those whose rows
        could not be read); GX's pages hold the per-chunk details.
        """
        try:
            urls = self._context.build_data_docs()
        except Exception as exc:
            raise ExpectationError(f"building GX Data Docs in {self.folder} failed: {exc}") from exc
        if not urls:
            raise ExpectationError(f"GX built no Data Docs site in {self.folder}")
        gx_index = Path(unquote(urlparse(next(iter(urls.values()))).path))
        if not gx_index.is_file():
            raise ExpectationError(
                f"GX reported Data Docs at {gx_index}, but there is no such file")
        index = self.folder / "index.html"
        try:
            offline(gx_index.parent, index)
            pages = self._pages(gx_index.parent, {o.suite for o in outcomes})
            index.write_text(summary.render(self.run_name, outcomes, pages), encoding="utf-8")
        except OSError as exc:
            raise ExpectationError(f"writing Data Docs in {self.folder} failed: {exc}") from exc
        return index

    def _pages(self, site: Path, suites: set[str]) -> dict[str, list[str]]:
        """Each suite's GX result pages of this run, as links relative to the folder."""
        pages = {}
        for suite in sorted(suites):
            folder = site.joinpath("validations", *suite.split("."), self.run_name)
            found = sorted(folder.glob("*/*.html")) if folder.is_dir() else []
            pages[suite] = [p.relative_to(self.folder).as_posix() for p in found]
        return pages
