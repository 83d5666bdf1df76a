"""REST pull of a site against a stub server: exact landing, incremental, partial runs."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from cartfhir.config import FhirSource, Site
from cartfhir.extract.http import FhirClient
from cartfhir.extract.rest import pull_site, query_key
from cartfhir.runs import start_run
from cartfhir.synth import generate
from tests.testbed import fhir_source, make_config

from .cli_site import extract
from .recording import RecordingProgress
from .stub_server import FakeFhir, StubAdapter, json_response, outcome

BASE = "http://fhir.test/fhir"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("rest")
    generate(out, patients=5, seed=8, sites=["site_a"], bundles=True)
    resources = []
    for bundle in sorted((out / "site_a" / "bundles").glob("*.json")):
        resources += [e["resource"] for e in orjson.loads(bundle.read_bytes())["entry"]]
    return resources


def rest_site(tmp_path: Path, **source: object) -> Site:
    """site_a pulling from the stub at BASE, two patients per query; source overrides fields."""
    return make_config(tmp_path, ["site_a"], site_a={"source": fhir_source(
        BASE, **{"cohort": {"search": ["Patient?active=true"]}, "patients_per_query": 2,
                 "page_size": 50, **source})}).sites[0]


def pull(con, site: Site, fake: FakeFhir, **kw):
    assert isinstance(site.source, FhirSource)
    client = FhirClient(BASE, site.source.http, site.source.auth, transport=StubAdapter(fake),
                        sleep=lambda s: None)
    run = start_run(con, "test", "hash")
    report = pull_site(con, site, run.run_id, client=client, **kw)
    return run.run_id, report


def landed(con) -> dict[tuple[str, str], dict]:
    rows = con.execute("select resource_type, id, resource from raw.resources").fetchall()
    return {(t, i): orjson.loads(r) for t, i, r in rows}


def test_pulls_exactly_the_server_resources(con, tmp_path: Path, cohort: list[dict]) -> None:
    fake = FakeFhir(BASE, cohort)
    _, report = pull(con, rest_site(tmp_path), fake)
    assert report.status == "complete", report.problems
    expected = {(r["resourceType"], r["id"]) for r in cohort}
    assert set(landed(con)) == expected
    received = sum(c["received"] for c in report.counts.values())
    assert received == len(cohort)  # each resource once: no duplicates across batches
    assert report.server == ("FakeFhir", "1.0", "4.0.1")
    # Observations were asked for by category (no code list configured) and patient batches.
    obs_searches = [s for s in fake.searches if s["_type"] == ["Observation"]]
    assert obs_searches and all("laboratory" in s["category"][0] for s in obs_searches)
    assert all(len(s["patient"][0].split(",")) <= 2 for s in obs_searches)
    manifest = con.execute("select count(*), sum(matched) from meta.extract_request").fetchone()
    assert manifest[0] >= len(obs_searches) and manifest[1] >= len(cohort)


def test_second_run_is_incremental(con, tmp_path: Path, cohort: list[dict]) -> None:
    fake = FakeFhir(BASE, [dict(r) for r in cohort], now="2026-01-01T00:00:00Z")
    site = rest_site(tmp_path)
    pull(con, site, fake)
    marks = dict(con.execute("select query_key, watermark from meta.extract_state").fetchall())
    assert marks["Patient"] == "2026-01-01T00:00:00Z"

    changed = next(r for r in fake.resources if r["resourceType"] == "Observation")
    changed.update(status="amended", meta={"versionId": "2",
                                           "lastUpdated": "2026-02-01T00:00:00Z"})
    fake.now = "2026-02-02T00:00:00Z"
    fake.searches.clear()
    _, report = pull(con, site, fake)
    assert all(s["_lastUpdated"] == ["gt2025-12-31T23:55:00Z"] for s in fake.searches
               if s["_type"] != ["Patient"] or "_id" in s)
    assert report.counts["Observation"]["replaced"] == 1
    assert sum(c["inserted"] for c in report.counts.values()) == 0
    stored = landed(con)[("Observation", changed["id"])]
    assert stored["status"] == "amended"

    fake.searches.clear()
    pull(con, site, fake, full=True)
    assert not any("_lastUpdated" in s for s in fake.searches)


def test_a_failed_search_makes_the_run_partial_and_keeps_the_watermark(
        con, tmp_path: Path, cohort: list[dict]) -> None:
    fake = FakeFhir(BASE, cohort)
    fake.faults.append(lambda r: outcome("database is down", 500)
                       if "/Condition?" in (r.url or "") else None)
    _, report = pull(con, rest_site(tmp_path), fake)
    assert report.status == "partial"
    assert any("database is down" in p for p in report.problems)
    marks = {k for (k,) in con.execute("select query_key from meta.extract_state").fetchall()}
    assert "Condition" not in marks and "Patient" in marks
    assert con.execute("select count(*) from meta.extract_patient").fetchone()[0] == 0
    # Everything else still landed.
    types = {t for t, _ in landed(con)}
    assert {"Patient", "Observation", "Procedure"} <= types and "Condition" not in types


def test_a_server_that_sends_less_than_it_announces_is_partial(
        con, tmp_path: Path, cohort: list[dict]) -> None:
    fake = FakeFhir(BASE, cohort)
    fake.lie_about_total = 1
    _, report = pull(con, rest_site(tmp_path), fake)
    assert report.status == "partial"
    assert any("announced" in p and "missing" in p for p in report.problems)
    failed = con.execute("select count(*) from meta.extract_request where status = 'partial'")
    assert failed.fetchone()[0] > 0


def test_expired_paging_restarts_the_query(con, tmp_path: Path, cohort: list[dict]) -> None:
    fake = FakeFhir(BASE, cohort)
    expired = []

    def expire_once(request):
        if "/page?" in (request.url or "") and not expired:
            expired.append(request.url)
            fake.forget_pages()
        return None

    fake.faults.append(expire_once)
    _, report = pull(con, rest_site(tmp_path, page_size=10), fake)
    assert expired and report.status == "complete", report.problems
    assert set(landed(con)) == {(r["resourceType"], r["id"]) for r in cohort}


def test_cohort_from_group_and_from_file(con, tmp_path: Path, cohort: list[dict]) -> None:
    patients = [r["id"] for r in cohort if r["resourceType"] == "Patient"]
    group = {"resourceType": "Group", "id": "cart", "type": "person", "actual": True,
             "member": [{"entity": {"reference": f"Patient/{p}"}} for p in patients[:2]]}
    fake = FakeFhir(BASE, [*cohort, group])
    _, report = pull(con, rest_site(tmp_path, cohort={"group_id": "cart"}), fake)
    assert report.patients == 2
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# cohort\n" + "\n".join(patients[:3]) + "\n")
    _, report = pull(con, rest_site(tmp_path, cohort={"patient_ids_file": "ids.txt"}), fake)
    assert report.patients == 3


def test_query_key_is_stable() -> None:
    from cartfhir.config import ResourceQuery

    q = ResourceQuery(type="Observation", codes=["http://loinc.org|751-8", "http://loinc.org|718-7"],
                      categories=["laboratory"])
    assert query_key(q) == ("Observation?category=laboratory&"
                            "code=http://loinc.org|718-7,http://loinc.org|751-8")


def test_progress_has_one_bar_per_resource_type(con, tmp_path: Path, cohort: list[dict]) -> None:
    progress = RecordingProgress()
    _, report = pull(con, rest_site(tmp_path), FakeFhir(BASE, cohort), progress=progress)
    searches = {}
    for request in report.requests:
        if request.patients is not None:  # a per-patient-batch search, not the cohort query
            searches[request.resource_type] = searches.get(request.resource_type, 0) + 1
    assert {d: t for d, t, _ in progress.tasks} == {
        f"site_a {rtype} searches": n for rtype, n in searches.items()}
    assert progress.done == {f"site_a {rtype} searches": n for rtype, n in searches.items()}


def test_odd_capability_statement_fields_are_not_an_internal_error(tmp_path, capsys,
                                                                    hostile) -> None:
    hostile.faults.append(lambda r: json_response(
        {"resourceType": "CapabilityStatement", "software": "HAPI", "fhirVersion": 4})
        if r.url.endswith("/metadata") else None)
    result = extract(tmp_path, capsys, hostile.base)
    assert result.code == 0, result.err
    assert result.rows("select distinct server_software, fhir_version "
                       "from meta.extract_request") == [(None, None)]
