"""A real HAPI FHIR JPA server holds exactly what cartfhir's synthetic cohort sends it.

The server tests share one module-scoped cohort: the server is wiped, six patients over
two sites are generated, ``site_a`` is loaded, then (a second later) ``site_b``, so the
instant between the two loads splits the data for ``_lastUpdated`` and ``_since``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests

from cartfhir.synth import SynthResult, generate
from tests.integration import hapi

SITES = ["site_a", "site_b"]
integration = pytest.mark.integration


@dataclass
class Cohort:
    result: SynthResult
    base_url: str
    boundary: str  # an instant after every site_a write and before every site_b write
    # site -> (type, id) -> the resource as sent
    sent: dict[str, dict[tuple[str, str], dict]] = field(default_factory=dict)

    def keys(self, *types: str, sites: list[str] = SITES) -> set[tuple[str, str]]:
        return {k for s in sites for k in self.sent[s] if not types or k[0] in types}


def _sent_resources(folder: Path) -> dict[tuple[str, str], dict]:
    sent = {}
    for path in hapi.bundle_files(folder):
        for entry in json.loads(path.read_bytes())["entry"]:
            resource = entry["resource"]
            sent[(resource["resourceType"], resource["id"])] = resource
    return sent


def _newest_update(base_url: str, types: set[str]) -> datetime:
    newest = []
    for rtype in types:
        params = {"_sort": "-_lastUpdated", "_count": 1, "_elements": "id"}
        page = requests.get(f"{base_url}/{rtype}", params=params, timeout=60).json()
        newest.append(datetime.fromisoformat(page["entry"][0]["resource"]["meta"]["lastUpdated"]))
    return max(newest)


@pytest.fixture(scope="module")
def cohort(hapi_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    hapi.reset(hapi_base_url)  # other modules may have used the session's server
    out = tmp_path_factory.mktemp("cohort")
    result = generate(out, patients=6, seed=3, sites=SITES, bundles=True)
    sent = {site: _sent_resources(out / site) for site in SITES}
    hapi.load_bundles(hapi_base_url, out / "site_a")
    newest_a = _newest_update(hapi_base_url, {k[0] for k in sent["site_a"]})
    time.sleep(1.0)
    hapi.load_bundles(hapi_base_url, out / "site_b")
    boundary = (newest_a + timedelta(milliseconds=500)).isoformat(timespec="milliseconds")
    return Cohort(result=result, base_url=hapi_base_url, boundary=boundary, sent=sent)


def _export_contents(manifest: dict) -> Counter:
    """(type, id) -> times seen over every output file; checks each line's declared type."""
    seen: Counter = Counter()
    for output in manifest["output"]:
        for resource in hapi.ndjson_lines(output["url"]):
            assert resource["resourceType"] == output["type"], output["url"]
            seen[(resource["resourceType"], resource["id"])] += 1
    return seen


# ---- the harness's own decisions (no server needed) ----------------------------------
def test_missing_tools_are_skipped_with_what_to_install() -> None:
    action, why = hapi.unavailable_action(["java"], {})
    assert action == "skip"
    assert "java" in why and "JDK" in why and "mvn" not in why.split(";")[0]
    assert hapi.unavailable_action([], {"CI": "true"}) is None


@pytest.mark.parametrize("ci", ["true", "TRUE", " true "])
def test_missing_tools_fail_on_ci(ci: str) -> None:
    action, why = hapi.unavailable_action(["java", "mvn"], {"CI": ci})
    assert action == "fail"
    assert "java" in why and "mvn" in why and "CI=true" in why


def test_missing_tools_found_by_which() -> None:
    assert hapi.missing_tools(lambda tool: None) == ["java", "mvn"]
    assert hapi.missing_tools(lambda tool: "/usr/bin/" + tool) == []
    assert hapi.unavailable_action(["mvn"], {"CI": "false"})[0] == "skip"


def test_jar_is_stale_when_missing_or_older_than_sources(tmp_path: Path) -> None:
    module = tmp_path / "hapi"
    (module / "src" / "main").mkdir(parents=True)
    (module / "pom.xml").write_text("<project/>")
    source = module / "src" / "main" / "App.java"
    source.write_text("class App {}")
    jar = module / "target" / "app.jar"
    assert hapi.jar_is_stale(jar, module)
    jar.parent.mkdir()
    jar.write_bytes(b"jar")
    now = time.time()
    for path, age in ((module / "pom.xml", 20), (source, 20), (jar, 10)):
        os.utime(path, (now - age, now - age))
    assert not hapi.jar_is_stale(jar, module)
    os.utime(source, (now, now))
    assert hapi.jar_is_stale(jar, module)


# ---- against the server -------------------------------------------------------------
@integration
def test_capability_statement_is_hapi_r4(hapi_base_url: str) -> None:
    response = requests.get(f"{hapi_base_url}/metadata", timeout=60)
    assert response.status_code == 200
    capability = response.json()
    assert capability["resourceType"] == "CapabilityStatement"
    assert capability["fhirVersion"] == "4.0.1"
    assert capability["software"]["name"] == "HAPI FHIR Server"
    assert capability["software"]["version"].startswith("8.8.")
    assert capability["implementation"]["url"] == hapi_base_url
    system_ops = {op["name"] for op in capability["rest"][0]["operation"]}
    assert {"export", "export-poll-status"} <= system_ops
    by_type = {r["type"]: r for r in capability["rest"][0]["resource"]}
    for rtype in ("Patient", "Group"):
        assert "export" in {op["name"] for op in by_type[rtype].get("operation", [])}


@integration
def test_server_holds_exactly_the_generated_resources(cohort: Cohort) -> None:
    expected = Counter()
    for by_type in cohort.result.resources.values():
        expected.update(by_type)
    held = {rtype: hapi.count(cohort.base_url, rtype) for rtype in expected}
    assert held == dict(expected)
    _, patients = hapi.search_all(cohort.base_url, "Patient", _count=100)
    assert {("Patient", p["id"]) for p in patients} == cohort.keys("Patient")


@integration
@pytest.mark.parametrize("site", SITES)
def test_patient_read_by_id_matches_what_was_sent(cohort: Cohort, site: str) -> None:
    key, sent = next((k, r) for k, r in sorted(cohort.sent[site].items()) if k[0] == "Patient")
    response = requests.get(f"{cohort.base_url}/Patient/{key[1]}", timeout=60)
    assert response.status_code == 200
    held = response.json()
    assert held["id"] == key[1]
    for field_name in ("identifier", "name", "gender", "birthDate", "telecom", "address"):
        assert held.get(field_name) == sent.get(field_name), field_name
    assert held["meta"]["versionId"] == "1"


@integration
def test_paging_follows_next_links_and_totals_match(cohort: Cohort) -> None:
    observations = cohort.keys("Observation")
    pages, resources = hapi.search_all(cohort.base_url, "Observation", _count=50)
    assert len(pages) == -(-len(observations) // 50)
    assert all(len(page.get("entry", [])) <= 50 for page in pages)
    assert pages[0]["total"] == len(observations) == hapi.count(cohort.base_url, "Observation")
    keys = [("Observation", r["id"]) for r in resources]
    assert len(keys) == len(set(keys))
    assert set(keys) == observations
    accurate = requests.get(f"{cohort.base_url}/Condition", timeout=60,
                            params={"_total": "accurate", "_count": 1}).json()
    assert accurate["total"] == len(cohort.keys("Condition"))


@integration
def test_last_updated_splits_the_two_loads(cohort: Cohort) -> None:
    for rtype in ("Patient", "Observation", "Condition", "Procedure"):
        after = hapi.count(cohort.base_url, rtype, _lastUpdated=f"gt{cohort.boundary}")
        before = hapi.count(cohort.base_url, rtype, _lastUpdated=f"le{cohort.boundary}")
        assert after == len(cohort.keys(rtype, sites=["site_b"])), rtype
        assert before == len(cohort.keys(rtype, sites=["site_a"])), rtype


@integration
def test_system_bulk_export_returns_every_patient_and_observation(cohort: Cohort) -> None:
    kickoff, manifest = hapi.bulk_export(cohort.base_url, params={"_type": "Patient,Observation"})
    assert kickoff.status_code == 202
    assert kickoff.headers["Content-Location"].startswith(cohort.base_url)
    assert manifest["error"] == []
    assert {o["type"] for o in manifest["output"]} == {"Patient", "Observation"}
    seen = _export_contents(manifest)
    assert max(seen.values()) == 1
    assert set(seen) == cohort.keys("Patient", "Observation")


def _most_common_coding(resources: list[dict]) -> tuple[str, str]:
    codings = Counter((c["system"], c["code"]) for r in resources for c in r["code"]["coding"])
    return codings.most_common(1)[0][0]


def _coded(resources: list[dict], coding: tuple[str, str]) -> set[tuple[str, str]]:
    return {(r["resourceType"], r["id"]) for r in resources
            if any((c["system"], c["code"]) == coding for c in r["code"]["coding"])}


@integration
def test_patient_bulk_export_honours_type_filter(cohort: Cohort) -> None:
    observations = [r for site in SITES for k, r in cohort.sent[site].items()
                    if k[0] == "Observation"]
    coding = _most_common_coding(observations)
    _, manifest = hapi.bulk_export(
        cohort.base_url, "Patient/$export",
        params={"_type": "Patient,Observation",
                "_typeFilter": f"Observation?code={coding[0]}|{coding[1]}"})
    seen = _export_contents(manifest)
    assert max(seen.values()) == 1
    assert set(seen) == cohort.keys("Patient") | _coded(observations, coding)


@integration
def test_group_bulk_export_honours_since(cohort: Cohort) -> None:
    # NB: HAPI 8.8.0 ignores _since on Patient/$export (it returns everything); Group and
    # system level honour it.
    members = sorted(k[1] for k in cohort.keys("Patient"))
    group = {"resourceType": "Group", "type": "person", "actual": True,
             "member": [{"entity": {"reference": f"Patient/{p}"}} for p in members]}
    created = requests.post(f"{cohort.base_url}/Group", json=group, timeout=60,
                            headers={"Content-Type": hapi.FHIR_JSON})
    assert created.status_code == 201, hapi.outcome_text(created)
    group_id = created.json()["id"]
    try:
        _, manifest = hapi.bulk_export(cohort.base_url, f"Group/{group_id}/$export",
                                       params={"_type": "Patient,Condition",
                                               "_since": cohort.boundary})
        seen = _export_contents(manifest)
        assert max(seen.values()) == 1
        assert set(seen) == cohort.keys("Patient", "Condition", sites=["site_b"])
    finally:
        requests.delete(f"{cohort.base_url}/Group/{group_id}", timeout=60)
