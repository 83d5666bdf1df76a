"""Paging: next links followed verbatim, includes deduped, totals checked, loops refused."""

from __future__ import annotations

import pytest

from cartfhir.config import Http, NoAuth
from cartfhir.errors import FhirServerError
from cartfhir.extract.http import FhirClient
from cartfhir.extract.paging import PagingExpired, SearchTally, search_pages

from .stub_server import FakeFhir, StubAdapter, json_response, outcome

BASE = "http://fhir.test/fhir"


def obs(i: int) -> dict:
    return {"resourceType": "Observation", "id": f"o{i}", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "Patient/p1"},
            "meta": {"lastUpdated": f"2025-01-01T00:00:{i % 60:02d}Z"}}


def make(handler) -> tuple[FhirClient, StubAdapter]:
    adapter = StubAdapter(handler)
    return FhirClient(BASE, Http(), NoAuth(), transport=adapter, sleep=lambda s: None), adapter


def test_follows_next_links_verbatim_and_counts() -> None:
    fake = FakeFhir(BASE, [obs(i) for i in range(23)])
    c, adapter = make(fake)
    tally = SearchTally(url="")
    ids = [r["id"] for page in search_pages(c, c.url("Observation", {"_count": 5}), tally)
           for r in page.resources]
    assert ids == [f"o{i}" for i in range(23)]
    assert (tally.pages, tally.matched, tally.total, tally.shortfall) == (5, 23, 23, 0)
    assert tally.server_time == "2026-01-01T00:00:00Z"
    # The client asked for exactly the URLs the server gave, opaque tokens and all.
    assert adapter.requests[2].url == f"{BASE}/page?token=t0&offset=10&count=5"


def test_a_short_result_is_a_shortfall() -> None:
    fake = FakeFhir(BASE, [obs(i) for i in range(4)])
    fake.lie_about_total = 3
    c, _ = make(fake)
    tally = SearchTally(url="")
    list(search_pages(c, c.url("Observation"), tally))
    assert tally.shortfall == 3


def test_includes_are_deduped_and_outcomes_become_warnings() -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    page = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": obs(1), "search": {"mode": "match"}},
        {"resource": patient, "search": {"mode": "include"}},
        {"resource": obs(2)},  # no mode: a match
        {"resource": patient, "search": {"mode": "include"}},
        {"resource": {"resourceType": "OperationOutcome", "issue": [
            {"severity": "warning", "code": "processing", "diagnostics": "sorted by _id"}]},
         "search": {"mode": "outcome"}},
    ]}
    c, _ = make(lambda r: json_response(page))
    tally = SearchTally(url="")
    [got] = list(search_pages(c, c.url("Observation", {"_include": "Observation:subject"}),
                              tally))
    assert [r["id"] for r in got.resources] == ["o1", "p1", "o2"]
    assert (tally.matched, tally.included) == (2, 1)
    assert tally.warnings == ["warning: sorted by _id"]


def test_next_link_to_another_host_is_refused() -> None:
    page = {"resourceType": "Bundle", "type": "searchset", "entry": [],
            "link": [{"relation": "next", "url": "http://attacker.test/fhir?page=2"}]}
    c, adapter = make(lambda r: json_response(page))
    with pytest.raises(FhirServerError, match="attacker.test"):
        list(search_pages(c, c.url("Observation"), SearchTally(url="")))
    assert len(adapter.requests) == 1


def test_paging_loop_is_refused() -> None:
    page = {"resourceType": "Bundle", "type": "searchset", "entry": [],
            "link": [{"relation": "next", "url": f"{BASE}/Observation?page=2"}]}
    c, _ = make(lambda r: json_response(page))
    with pytest.raises(FhirServerError, match="paging loop"):
        list(search_pages(c, c.url("Observation"), SearchTally(url="")))


def test_expired_paging_is_its_own_error() -> None:
    fake = FakeFhir(BASE, [obs(i) for i in range(10)])
    c, _ = make(fake)
    pages = search_pages(c, c.url("Observation", {"_count": 5}), SearchTally(url=""))
    next(pages)
    fake.forget_pages()
    with pytest.raises(PagingExpired):
        next(pages)


def test_a_first_page_410_is_an_ordinary_error() -> None:
    c, _ = make(lambda r: outcome("gone", 410))
    with pytest.raises(FhirServerError) as info:
        list(search_pages(c, c.url("Observation"), SearchTally(url="")))
    assert not isinstance(info.value, PagingExpired)


def test_not_a_bundle() -> None:
    c, _ = make(lambda r: json_response({"resourceType": "Patient", "id": "x"}))
    with pytest.raises(FhirServerError, match="not a Bundle"):
        list(search_pages(c, c.url("Observation"), SearchTally(url="")))
