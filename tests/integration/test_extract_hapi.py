"""cartfhir's extraction against a real HAPI FHIR JPA server: REST, $export, faults.

The server is wiped and loaded with one synthetic site; every test checks that
exactly the generated resources landed (same ids, same count per type, none
twice), also through a proxy that injects 429s, 503s, dropped connections,
slow answers and truncated bodies.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import duckdb
import orjson
import pytest
import requests

from cartfhir.api import extract
from cartfhir.synth import generate
from tests.integration import hapi
from tests.integration.fault_proxy import FaultProxy, Rule
from tests.testbed import bulk_source, fhir_source, make_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def loaded(hapi_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    hapi.reset(hapi_base_url)
    out = tmp_path_factory.mktemp("extract-hapi")
    generate(out, patients=5, seed=31, sites=["site_a"], bundles=True)
    hapi.load_bundles(hapi_base_url, out / "site_a")
    sent = {}
    for bundle in sorted((out / "site_a" / "bundles").glob("*.json")):
        for entry in orjson.loads(bundle.read_bytes())["entry"]:
            r = entry["resource"]
            sent[(r["resourceType"], r["id"])] = r
    ids_file = out / "patients.txt"
    ids_file.write_text("\n".join(rid for rtype, rid in sent if rtype == "Patient") + "\n")
    return {"sent": sent, "ids_file": ids_file}


def config(tmp_path: Path, base_url: str, ids_file: Path, **source: object):
    """site_a pulling the loaded patients from base_url (REST unless ``kind="bulk"``)."""
    if source.pop("kind", "fhir") == "bulk":
        body = bulk_source(base_url, **source)
    else:
        body = fhir_source(base_url, **{"cohort": {"patient_ids_file": str(ids_file)},
                                        "patients_per_query": 2, "page_size": 100, **source})
    return make_config(tmp_path, ["site_a"], site_a={"source": body},
                       output={"duckdb": "t.duckdb"})


def landed(tmp_path: Path) -> list[tuple[str, str]]:
    con = duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True)
    try:
        return con.execute("select resource_type, id from raw.resources").fetchall()
    finally:
        con.close()


def assert_exactly(rows: list[tuple[str, str]], sent: dict) -> None:
    assert len(rows) == len(set(rows)), "a resource landed twice"
    assert Counter(t for t, _ in rows) == Counter(t for t, _ in sent)
    assert set(rows) == set(sent)


def test_rest_pull_lands_exactly_what_the_server_holds(hapi_base_url: str, loaded: dict,
                                                      tmp_path: Path) -> None:
    cfg = config(tmp_path, hapi_base_url, loaded["ids_file"])
    result = extract(cfg)
    assert result.status == "success", result.problems
    assert_exactly(landed(tmp_path), loaded["sent"])
    con = duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True)
    software = con.execute("select distinct server_software, fhir_version "
                           "from meta.extract_request").fetchall()
    short = con.execute("select count(*) from meta.extract_request where shortfall > 0")
    assert software and software[0][1] == "4.0.1" and "HAPI" in (software[0][0] or "")
    assert short.fetchone()[0] == 0
    con.close()

    # The next run is incremental: nothing new, nothing changed.
    again = extract(cfg)
    assert again.totals()["inserted"] == 0 and again.totals()["replaced"] == 0

    # A changed Observation on the server comes back as a new version.
    rid = next(i for t, i in loaded["sent"] if t == "Observation")
    current = requests.get(f"{hapi_base_url}/Observation/{rid}", timeout=30).json()
    current["status"] = "corrected"
    put = requests.put(f"{hapi_base_url}/Observation/{rid}", json=current, timeout=30,
                       headers={"Content-Type": "application/fhir+json"})
    assert put.ok, put.text
    third = extract(cfg)
    assert third.counts["site_a"]["Observation"]["replaced"] == 1
    assert_exactly(landed(tmp_path), loaded["sent"])


def test_bulk_export_lands_exactly_what_the_server_holds(hapi_base_url: str, loaded: dict,
                                                        tmp_path: Path) -> None:
    cfg = config(tmp_path, hapi_base_url, loaded["ids_file"], kind="bulk", level="system")
    result = extract(cfg)
    assert result.status == "success", result.problems
    assert_exactly(landed(tmp_path), loaded["sent"])


def test_rest_pull_survives_injected_faults(hapi_base_url: str, loaded: dict,
                                            tmp_path: Path) -> None:
    proxy = FaultProxy(hapi_base_url.rsplit("/fhir", 1)[0], rules=[
        Rule(lambda m, p: "Observation?" in p, "429", times=2, retry_after="1"),
        Rule(lambda m, p: "Condition?" in p, "503", times=1, retry_after="1"),
        Rule(lambda m, p: "_getpages" in p or "Procedure?" in p, "drop", times=1),
        Rule(lambda m, p: "Observation?" in p, "truncate", times=2),
        Rule(lambda m, p: "Patient?" in p, "slow", times=1, delay=1.0),
    ]).start()
    try:
        cfg = config(tmp_path, proxy.base_url(), loaded["ids_file"])
        result = extract(cfg)
    finally:
        proxy.stop()
    assert result.status == "success", result.problems
    assert {"429", "503", "drop", "truncate", "slow"} <= set(proxy.faults())
    assert result.sites["site_a"]["retries"] >= 6
    assert_exactly(landed(tmp_path), loaded["sent"])


def test_a_server_that_keeps_failing_gives_a_partial_run(hapi_base_url: str, loaded: dict,
                                                         tmp_path: Path) -> None:
    proxy = FaultProxy(hapi_base_url.rsplit("/fhir", 1)[0], rules=[
        Rule(lambda m, p: "Condition?" in p, "503", times=1000, retry_after="0"),
    ]).start()
    try:
        cfg = config(tmp_path, proxy.base_url(), loaded["ids_file"],
                     http={"max_retries": 2})
        result = extract(cfg)
    finally:
        proxy.stop()
    assert result.status == "partial"
    assert any("Condition" in p and "503" in p for p in result.problems)
    rows = landed(tmp_path)
    assert "Condition" not in {t for t, _ in rows}
    assert {t for t, _ in rows} >= {"Patient", "Observation", "Procedure"}
