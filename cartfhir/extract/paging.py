"""Paging through a FHIR search: follow ``Bundle.link[next]`` exactly as given.

``search_pages`` yields one ``Page`` per Bundle. It keeps ``match`` entries, drops
``include`` entries it has already seen, and turns ``outcome`` OperationOutcomes
into warnings. ``SearchTally`` counts what arrived against ``Bundle.total``, so a
short result is reported rather than passed off as complete. A server's
expired-paging answer (410 Gone on a next link, as HAPI gives) raises
``PagingExpired``; the caller restarts the query.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cartfhir.errors import FhirServerError
from cartfhir.extract.http import FhirClient, mask_url

log = logging.getLogger(__name__)


class PagingExpired(FhirServerError):
    """The server forgot the search while we paged through it (HTTP 410 on a next link)."""


@dataclass
class Page:
    resources: list[dict[str, Any]]  # match entries, plus includes not seen before
    url: str  # masked


@dataclass
class SearchTally:
    """What one search returned, for completeness accounting and the run manifest."""

    url: str
    pages: int = 0
    matched: int = 0
    included: int = 0
    total: int | None = None
    server_time: str | None = None  # first Bundle's meta.lastUpdated, else its Date header
    warnings: list[str] = field(default_factory=list)

    @property
    def shortfall(self) -> int:
        """How many matches the server announced but did not send (0 when it gave no total)."""
        return max(0, self.total - self.matched) if self.total is not None else 0


def _entry_mode(entry: dict[str, Any]) -> str:
    return (entry.get("search") or {}).get("mode", "match")


def search_pages(client: FhirClient, url: str, tally: SearchTally) -> Iterator[Page]:
    """Yield the pages of the search at ``url``, updating ``tally`` as they come."""
    seen_links: set[str] = set()
    seen_includes: set[tuple[str, str]] = set()
    first = True
    while url:
        if url in seen_links:
            raise FhirServerError(f"the server's next link repeats {mask_url(url)}: a paging loop",
                                  url=mask_url(url))
        seen_links.add(url)
        try:
            body = client.get_json(url)
        except FhirServerError as exc:
            if exc.status == 410 and not first:
                raise PagingExpired(f"search paging expired at {mask_url(url)}", status=410,
                                    url=mask_url(url)) from exc
            raise
        bundle = body.data
        if bundle.get("resourceType") != "Bundle":
            raise FhirServerError(
                f"{mask_url(url)} answered with a {bundle.get('resourceType')!r}, not a Bundle",
                status=body.status, url=mask_url(url))
        if first:
            tally.total = bundle.get("total") if isinstance(bundle.get("total"), int) else None
            tally.server_time = (bundle.get("meta") or {}).get("lastUpdated") or body.date
            first = False
        resources: list[dict[str, Any]] = []
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource")
            if not isinstance(resource, dict):
                continue
            mode = _entry_mode(entry)
            if mode == "outcome":
                tally.warnings.append(_outcome_summary(resource))
                continue
            if mode == "include":
                key = (str(resource.get("resourceType")), str(resource.get("id")))
                if key in seen_includes:
                    continue
                seen_includes.add(key)
                tally.included += 1
            else:
                tally.matched += 1
            resources.append(resource)
        tally.pages += 1
        yield Page(resources=resources, url=mask_url(url))
        url = next((link.get("url", "") for link in bundle.get("link") or []
                    if link.get("relation") == "next"), "")
        if url:
            client.check_url(url)


def _outcome_summary(resource: dict[str, Any]) -> str:
    issues = resource.get("issue") or []
    texts = [f"{i.get('severity', '?')}: {i.get('diagnostics') or i.get('code', '')}"
             for i in issues]
    text = "; ".join(texts) or "OperationOutcome without issues"
    log.warning("server search outcome: %s", text)
    return text
