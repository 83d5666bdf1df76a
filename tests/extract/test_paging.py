"""Paging: next links followed verbatim, includes deduped, totals checked, loops refused."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from cartfhir.config import Http, NoAuth
from cartfhir.errors import FhirServerError
from cartfhir.extract.http import FhirClient
from cartfhir.extract.paging import PagingExpired, SearchTally, search_pages

from .cli_site import bundle, extract, patient, searching
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


# ---- servers that lie about their pages, met through `cartfhir extract` -------------------

def p(pid: str) -> dict:
    return patient(pid)


@pytest.mark.parametrize("pages", [
    [[p("p1"), p("p1"), p("p2")]],  # the duplicate on the same page
    [[p("p1"), p("p2")], [p("p1")]],  # the duplicate on the next page
], ids=["same-page", "next-page"])
def test_duplicates_do_not_hide_a_missing_resource(tmp_path, capsys, hostile, pages) -> None:
    def lie(request):
        if searching("Patient", request) is None:
            return None
        k = int(parse_qs(urlsplit(request.url).query).get("k", ["0"])[0])
        more = f"{hostile.base}/Patient?k={k + 1}" if k + 1 < len(pages) else None
        return bundle(pages[k], total=3, next_url=more)

    hostile.faults.append(lie)
    result = extract(tmp_path, capsys, hostile.base)
    assert result.code == 3, result.err
    status, message = result.run_row()
    assert status == "partial"
    assert "announced 3" in message and "2 distinct" in message and "1 duplicate" in message
    assert "Patient" in result.err and "INCOMPLETE" in result.err


def test_runaway_paging_stops_and_is_partial(tmp_path, capsys, hostile) -> None:
    served = []

    def forever(request):
        if searching("Patient", request) is None:
            return None
        served.append(request.url)
        k = int(parse_qs(urlsplit(request.url).query).get("page", ["0"])[0])
        # A safety net so the test ends even if nothing stops the client.
        more = f"{hostile.base}/Patient?page={k + 1}" if k < 150 else None
        return bundle([p("p1"), p("p2"), p("p3")], total=3, next_url=more)

    hostile.faults.append(forever)
    result = extract(tmp_path, capsys, hostile.base)
    assert result.code == 3, result.err
    status, message = result.run_row()
    assert status == "partial" and "max_pages" in message and "over-delivery" in message
    assert len(served) < 20  # two searches (cohort and pull), a few pages each
    pages = result.rows("select max(pages) from meta.extract_request")[0][0]
    assert pages <= 5


def test_max_pages_from_the_config_caps_a_search_without_total(tmp_path, capsys,
                                                                hostile) -> None:
    def forever(request):
        if searching("Patient", request) is None:
            return None
        k = int(parse_qs(urlsplit(request.url).query).get("page", ["0"])[0])
        more = f"{hostile.base}/Patient?page={k + 1}" if k < 150 else None
        return bundle([p(f"p{k}")], next_url=more)  # no total: nothing to derive a cap from

    hostile.faults.append(forever)
    result = extract(tmp_path, capsys, hostile.base, source={"max_pages": 4})
    assert result.code == 3, result.err
    assert "stopped after 4 pages" in result.run_row()[1]
    assert result.rows("select max(pages) from meta.extract_request")[0][0] == 4


def test_an_entry_that_is_not_an_object_is_partial_naming_the_field(tmp_path, capsys,
                                                                     hostile) -> None:
    hostile.faults.append(lambda r: bundle([p("p1"), 1, p("p2")], total=3)
                          if searching("Patient", r) is not None else None)
    result = extract(tmp_path, capsys, hostile.base)
    assert result.code == 3, result.err
    assert "internal error" not in result.err
    assert "Bundle.entry[1] is not an object" in result.run_row()[1]
    reasons = [r for (r,) in result.rows("select reason from raw.rejected")]
    assert any("Bundle.entry[1]" in r for r in reasons)


def test_an_entry_whose_resource_is_not_an_object_is_rejected(tmp_path, capsys,
                                                              hostile) -> None:
    hostile.faults.append(lambda r: bundle([p("p1"), {"resource": "Patient/p2"}])
                          if searching("Patient", r) is not None else None)
    result = extract(tmp_path, capsys, hostile.base)
    assert result.code == 3, result.err
    assert "Bundle.entry[1].resource is not an object" in result.run_row()[1]
    reasons = [r for (r,) in result.rows("select reason from raw.rejected")]
    assert any("Bundle.entry[1].resource" in r for r in reasons)


def test_another_type_in_a_patient_search_is_rejected_not_landed(tmp_path, capsys,
                                                                 hostile) -> None:
    stray = {"resourceType": "Observation", "id": "o1", "status": "final",
             "code": {"text": "x"}, "subject": {"reference": "Patient/p9"}}
    hostile.faults.append(lambda r: bundle([p("p1"), stray], total=2)
                          if searching("Patient", r) is not None else None)
    result = extract(tmp_path, capsys, hostile.base)
    assert result.code == 3, result.err  # one of the two announced matches was unusable
    reasons = [r for (r,) in result.rows("select reason from raw.rejected")]
    assert any("Observation in a Patient search" in r for r in reasons)
    assert result.rows("select resource_type, id from raw.resources") == [("Patient", "p1")]
    # The cohort did not pick up p9 from the stray Observation's subject.
    assert "p9" not in str(result.rows("select * from meta.extract_patient"))


def test_total_given_as_a_string_is_a_warning(tmp_path, capsys, hostile) -> None:
    hostile.faults.append(lambda r: bundle([p("p1"), p("p2"), p("p3")], total="3")
                          if searching("Patient", r) is not None else None)
    result = extract(tmp_path, capsys, hostile.base)
    assert result.code == 0, result.err
    messages = [m for (m,) in result.rows("select message from meta.extract_request")]
    assert all("Bundle.total is the string '3'" in (m or "") for m in messages)
    assert result.rows("select distinct total from meta.extract_request") == [(3,)]
    assert "Bundle.total" in result.err  # logged as a warning too
