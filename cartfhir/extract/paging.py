"""Paging through a FHIR search: follow ``Bundle.link[next]`` exactly as given.

``search_pages`` yields one ``Page`` per Bundle. It keeps ``match`` entries once
each (by type and id), drops ``include`` entries it has already seen, and turns
``outcome`` OperationOutcomes into warnings. Entries it cannot use (not an
object, no resource, another type than the one searched) come back as
``Page.rejects`` with the field named, never dropped silently; so does an entry
whose JSON names a key twice (the landing rule for lines), while a Bundle that
repeats a key of its own cannot be used at all (FhirServerError). ``SearchTally``
counts distinct matches against ``Bundle.total``, so duplicates cannot hide a
missing resource and a server that sends more than it announced is flagged.
A search stops after ``max_pages`` pages (by default what ``total`` and the page
size need, plus slack), so a server whose next links never end cannot keep the
run busy forever. A server's expired-paging answer (410 Gone on a next link, as
HAPI gives) raises ``PagingExpired``; the caller restarts the query.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from cartfhir.errors import FhirServerError
from cartfhir.extract.checks import duplicate_reason, json_kind, keys_may_repeat, parse_instant
from cartfhir.extract.http import FhirClient, JsonBody, mask_url
from cartfhir.extract.page_keys import EnvelopeRepeat, repeated_entries
from cartfhir.redact import redact_cut

log = logging.getLogger(__name__)

# Pages a search may take when the server gives no total and the config sets no max_pages.
DEFAULT_MAX_PAGES = 10_000
# Pages allowed beyond what total/page size need: a server may send a short page or two.
PAGE_SLACK = 2
REJECT_SAMPLE = 200  # characters of an unusable entry quoted in its rejection reason


class PagingExpired(FhirServerError):
    """The server forgot the search while we paged through it (HTTP 410 on a next link)."""


@dataclass
class Page:
    resources: list[dict[str, Any]]  # match entries once each, plus includes not seen before
    url: str  # masked; the URL that answered (after redirects)
    rejects: list[tuple[str, bytes]] = field(default_factory=list)  # (reason, entry as JSON)


@dataclass
class SearchTally:
    """What one search returned, for completeness accounting and the run manifest."""

    url: str
    pages: int = 0
    matched: int = 0  # distinct match resources (by type and id)
    received: int = 0  # match entries, duplicates included
    included: int = 0
    total: int | None = None
    server_time: str | None = None  # first Bundle's meta.lastUpdated, else its Date header
    final_url: str | None = None  # masked; the last URL that answered, after redirects
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # make the search incomplete
    _seen: set[tuple[str, str]] = field(default_factory=set, repr=False)

    @property
    def duplicates(self) -> int:
        return self.received - self.matched

    @property
    def shortfall(self) -> int:
        """How many matches the server announced but did not send (0 when it gave no total)."""
        return max(0, self.total - self.matched) if self.total is not None else 0

    @property
    def over_delivery(self) -> int:
        """Match entries sent beyond the announced total (duplicates or extra resources)."""
        return max(0, self.received - self.total) if self.total is not None else 0

    def incomplete(self) -> list[str]:
        """Why this search cannot be called complete (empty when it can)."""
        why = list(self.problems)
        dups = f", {self.duplicates} duplicate(s)" if self.duplicates else ""
        if self.shortfall:
            why.append(f"the server announced {self.total} matches but sent {self.matched} "
                       f"distinct ({self.shortfall} missing{dups})")
        elif self.over_delivery:
            why.append(f"over-delivery: the server sent {self.received} match entries "
                       f"({self.matched} distinct) for a total of {self.total}")
        return why


def page_limit(total: int | None, page_size: int | None, first_page: int) -> int:
    """Pages a search needs for ``total`` matches, plus slack; a wide default without total."""
    if total is None:
        return DEFAULT_MAX_PAGES
    size = min([n for n in (page_size, first_page) if n] or [1])
    needed = math.ceil(total / size)
    return max(1, needed) + max(PAGE_SLACK, needed // 10)


def _sample(value: Any) -> str:
    """A short, redacted quote of what the server sent, for a message or a rejection."""
    return redact_cut(orjson.dumps(value).decode("utf-8", "replace"), REJECT_SAMPLE)


def _read_total(value: Any, tally: SearchTally) -> int | None:
    """Bundle.total as an integer; anything else is a warning (and a usable digit string)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        warning = f"Bundle.total is the string {value!r}, not an integer; taken as that number"
        total: int | None = int(value)
    else:
        warning = (f"Bundle.total is {_sample(value)}, not a count; completeness of this search "
                   "cannot be checked against it")
        total = None
    tally.warnings.append(warning)
    log.warning("search %s: %s", tally.url, warning)
    return total


def _entry_mode(entry: dict[str, Any]) -> str:
    search = entry.get("search")
    mode = search.get("mode") if isinstance(search, dict) else None
    return mode if mode in ("include", "outcome") else "match"


def _next_link(bundle: dict[str, Any], tally: SearchTally) -> str:
    links = bundle.get("link") or []
    if not isinstance(links, list):
        tally.problems.append(f"Bundle.link is {json_kind(links)}, not an array; paging stopped")
        return ""
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str):
                return url
            tally.problems.append(f"Bundle.link[next].url is {json_kind(url)}, not a URL; "
                                  "paging stopped")
    return ""


def search_pages(client: FhirClient, url: str, tally: SearchTally, *,
                 resource_type: str | None = None, page_size: int | None = None,
                 max_pages: int | None = None) -> Iterator[Page]:
    """Yield the pages of the search at ``url``, updating ``tally`` as they come.

    ``resource_type``: the type searched for; a match of another type is rejected.
    ``max_pages``: the most pages to follow (None: derived from the first Bundle's total
    and ``page_size``); beyond it the search stops with a problem in ``tally``.
    """
    seen_links: set[str] = set()
    seen_includes: set[tuple[str, str]] = set()
    limit = max_pages
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
                f"{mask_url(url)} answered with {_sample(bundle.get('resourceType'))[:80]}, "
                "not a Bundle",
                status=body.status, url=mask_url(url))
        tally.final_url = mask_url(body.url)
        repeats = _repeated_keys(body, tally.pages + 1)
        page = _read_page(bundle, tally, seen_includes, resource_type, body.url, repeats)
        if first:
            tally.total = _read_total(bundle.get("total"), tally)
            meta = bundle.get("meta")
            updated = meta.get("lastUpdated") if isinstance(meta, dict) else None
            tally.server_time = _server_time(updated, body.date, tally)
            if limit is None:
                limit = page_limit(tally.total, page_size, tally.received)
            first = False
        tally.pages += 1
        yield page
        url = _next_link(bundle, tally)
        if url and tally.pages >= limit:
            needs = ("and gave no total" if tally.total is None
                     else f"beyond what its total of {tally.total} needs")
            tally.problems.append(
                f"stopped after {tally.pages} pages (max_pages {limit}): the server kept "
                f"sending next links {needs}; raise source.max_pages if the server really "
                "pages this much")
            log.warning("search %s: %s", tally.url, tally.problems[-1])
            return
        if url:
            client.check_url(url)


def _server_time(updated: Any, date: str | None, tally: SearchTally) -> str | None:
    """The server's time of a search (its watermark): Bundle.meta.lastUpdated, else the
    Date header; an unusable lastUpdated is a warning, not the end of the search."""
    if updated is None:
        return date
    if isinstance(updated, str) and parse_instant(updated) is not None:
        return updated
    tally.warnings.append(f"Bundle.meta.lastUpdated {_sample(updated)[:80]} is not a usable "
                          "FHIR instant; the Date header is taken as the server's time")
    return date


def _repeated_keys(body: JsonBody, number: int) -> dict[int, tuple[str, bytes]]:
    """The entries of a Bundle whose JSON names a key twice: {index: (key, text as sent)}.

    orjson kept the last of the two values, so landing ``body.data`` could store
    what a view would read otherwise. The cheap test of ``keys_may_repeat``
    clears a normal page; only a flagged one is walked again, slowly, to find
    the entries. A key repeated in the Bundle itself (two totals, two links)
    leaves no reading of the page to trust: FhirServerError naming page ``number``.
    """
    try:
        colons = orjson.dumps(body.data).count(b":")
    except orjson.JSONEncodeError:  # deeper than orjson writes (254 levels): the slow way
        colons = -1
    if colons >= 0 and not keys_may_repeat(body.raw, colons):
        return {}
    where = f"page {number} of the search ({mask_url(body.url)})"
    try:
        return repeated_entries(body.raw)
    except EnvelopeRepeat as exc:
        raise FhirServerError(f"{where}: {duplicate_reason(exc.key, 'the Bundle')}; the page "
                              "cannot be used (ask the server's administrators to fix it)",
                              url=mask_url(body.url)) from None
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else f"not JSON: {exc}"
        raise FhirServerError(f"{where} cannot be checked for repeated keys ({reason}); "
                              "the page cannot be used", url=mask_url(body.url)) from None


def _read_page(bundle: dict[str, Any], tally: SearchTally, seen_includes: set[tuple[str, str]],
               resource_type: str | None, url: str,
               repeats: dict[int, tuple[str, bytes]]) -> Page:
    """The usable resources of one Bundle, and its unusable entries as rejects.

    ``repeats``: the entries whose JSON names a key twice (see ``_repeated_keys``).
    """
    page = Page(resources=[], url=mask_url(url))
    entries = bundle.get("entry") or []
    where = f"page {tally.pages + 1}: Bundle.entry"
    if not isinstance(entries, list):
        tally.problems.append(f"{where} is {json_kind(entries)}, not an array")
        page.rejects.append((f"{where} is {json_kind(entries)}, not an array: "
                             f"{_sample(entries)}", orjson.dumps(entries)))
        return page
    for i, entry in enumerate(entries):
        if i in repeats:  # stored as sent: what orjson kept of it would mislead
            key, sent = repeats[i]
            problem = f"{where}[{i}]: {duplicate_reason(key)}"
            tally.problems.append(problem)
            page.rejects.append((problem, sent))
            continue
        if not isinstance(entry, dict):
            problem = f"{where}[{i}] is not an object ({json_kind(entry)})"
            tally.problems.append(problem)
            page.rejects.append((f"{problem}: {_sample(entry)}", orjson.dumps(entry)))
            continue
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            problem = (f"{where}[{i}].resource is "
                       f"{'missing' if resource is None else 'not an object'}")
            tally.problems.append(problem)
            page.rejects.append((f"{problem}: {_sample(entry)}", orjson.dumps(entry)))
            continue
        mode = _entry_mode(entry)
        rtype, rid = resource.get("resourceType"), resource.get("id")
        key = (str(rtype), str(rid))
        if mode == "outcome":
            tally.warnings.append(_outcome_summary(resource))
            continue
        if mode == "include":
            if key in seen_includes:
                continue
            seen_includes.add(key)
            tally.included += 1
            page.resources.append(resource)
            continue
        if resource_type is not None and rtype != resource_type:
            shown = redact_cut(rtype, 60, "") if isinstance(rtype, str) else _sample(rtype)[:60]
            reason = (f"{where}[{i}]: {shown} in a {resource_type} search (a match of another "
                      "type); not landed")
            tally.warnings.append(reason)
            page.rejects.append((reason, orjson.dumps(resource)))
            continue
        tally.received += 1
        if not isinstance(rid, str):  # no usable id: landing rejects it; count it once
            key = ("", f"#{tally.received}")
        if key in tally._seen:
            continue
        tally._seen.add(key)
        tally.matched += 1
        page.resources.append(resource)
    return page


def _outcome_summary(resource: dict[str, Any]) -> str:
    issues = resource.get("issue")
    texts = [f"{i.get('severity', '?')}: {i.get('diagnostics') or i.get('code', '')}"
             for i in (issues if isinstance(issues, list) else []) if isinstance(i, dict)]
    text = "; ".join(texts) or "OperationOutcome without issues"
    log.warning("server search outcome: %s", text)
    return text
