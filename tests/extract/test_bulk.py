"""Bulk $export against a stub server: kick-off, polling, downloads, errors, deletes, resume."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from cartfhir.config import BulkSource, Site
from cartfhir.errors import FhirServerError
from cartfhir.extract.bulk import export_site
from cartfhir.extract.http import FhirClient
from cartfhir.runs import start_run
from cartfhir.synth import generate
from tests.testbed import bulk_source, make_config

from .cli_site import extract
from .recording import RecordingProgress
from .stub_server import FakeFhir, StubAdapter

BASE = "http://fhir.test/fhir"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("bulk")
    generate(out, patients=4, seed=9, sites=["site_c"], bundles=True)
    return [e["resource"] for b in sorted((out / "site_c" / "bundles").glob("*.json"))
            for e in orjson.loads(b.read_bytes())["entry"]]


def bulk_site(tmp_path: Path, **source: object) -> Site:
    """site_c exporting the whole system from the stub at BASE; source overrides fields."""
    return make_config(tmp_path, ["site_c"], site_c={"source": bulk_source(
        BASE, **{"level": "system", **source})}).sites[0]


def run_export(con, site: Site, fake: FakeFhir, slept: list[float] | None = None, **kw):
    assert isinstance(site.source, BulkSource)
    adapter = StubAdapter(fake)
    client = FhirClient(BASE, site.source.http, site.source.auth, transport=adapter,
                        sleep=lambda s: None)
    run = start_run(con, "test", "hash")
    report = export_site(con, site, run.run_id, client=client,
                         sleep=(slept.append if slept is not None else lambda s: None), **kw)
    return report, adapter


def ids(con) -> set[tuple[str, str]]:
    return set(con.execute("select resource_type, id from raw.resources").fetchall())


def test_export_lands_exactly_the_resources(con, tmp_path: Path, cohort: list[dict]) -> None:
    fake = FakeFhir(BASE, cohort)
    slept: list[float] = []
    report, adapter = run_export(con, bulk_site(tmp_path), fake, slept)
    assert report.status == "complete", report.problems
    assert ids(con) == {(r["resourceType"], r["id"]) for r in cohort}
    assert slept == [3, 3]  # Retry-After of the two 202 polls
    kickoff = adapter.requests[1]
    assert kickoff.headers["Prefer"] == "respond-async"
    assert "_type=Patient,Condition,Procedure,MedicationAdministration,Observation" in kickoff.url
    # Output files were fetched without the token (requiresAccessToken false).
    files = [r for r in adapter.requests if "/bulkfiles/" in r.url]
    assert files and all("Authorization" not in r.headers for r in files)
    job = con.execute("select status, transaction_time from meta.bulk_job").fetchone()
    assert job == ("downloaded", "2026-01-01T00:00:00Z")
    mark = con.execute("select watermark from meta.extract_state").fetchone()
    assert mark == ("2026-01-01T00:00:00Z",)


def test_next_export_asks_since_the_transaction_time(con, tmp_path: Path,
                                                     cohort: list[dict]) -> None:
    fake = FakeFhir(BASE, cohort)
    site = bulk_site(tmp_path)
    run_export(con, site, fake)
    run_export(con, site, fake)
    assert fake.export_kickoffs[1]["_since"] == ["2025-12-31T23:55:00Z"]
    run_export(con, site, fake, full=True)
    assert "_since" not in fake.export_kickoffs[2]


def test_error_files_are_stored_and_make_the_run_partial(con, tmp_path: Path,
                                                        cohort: list[dict]) -> None:
    fake = FakeFhir(BASE, cohort)
    fake.export_errors = [{"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "exception", "diagnostics": "Observation/x failed"}]}]
    report, _ = run_export(con, bulk_site(tmp_path), fake)
    assert report.status == "partial"
    row = con.execute("select severity, text from raw.export_error").fetchone()
    assert row == ("error", "Observation/x failed")


def test_deleted_entries_are_applied_and_kept(con, tmp_path: Path, cohort: list[dict]) -> None:
    fake = FakeFhir(BASE, cohort)
    site = bulk_site(tmp_path)
    run_export(con, site, fake)
    gone = next(r for r in cohort if r["resourceType"] == "Condition")
    fake.export_deleted = [f"Condition/{gone['id']}"]
    run_export(con, site, fake)
    assert ("Condition", gone["id"]) not in ids(con)
    kept = con.execute("select resource from raw.deleted").fetchone()[0]
    assert orjson.loads(kept)["id"] == gone["id"]


def test_a_short_file_is_partial(con, tmp_path: Path, cohort: list[dict]) -> None:
    fake = FakeFhir(BASE, cohort)
    original = fake._kickoff

    def kickoff(query, request):
        answer = original(query, request)
        fake._manifest["output"][0]["count"] += 5
        return answer

    fake._kickoff = kickoff  # type: ignore[method-assign]
    report, _ = run_export(con, bulk_site(tmp_path), fake)
    assert report.status == "partial" and "the manifest announced" in report.problems[0]


def test_a_crashed_run_resumes_polling(con, tmp_path: Path, cohort: list[dict]) -> None:
    fake = FakeFhir(BASE, cohort)
    fake.export_polls = 100
    site = bulk_site(tmp_path, max_wait=5)
    with pytest.raises(FhirServerError, match="next run resumes it"):
        run_export(con, site, fake, [])
    assert con.execute("select status from meta.bulk_job").fetchone() == ("running",)
    fake.export_polls = 0
    report, _ = run_export(con, site, fake)
    assert len(fake.export_kickoffs) == 1  # no second kick-off: the job was resumed
    assert report.status == "complete" and ids(con)


def test_group_level_kickoff_path(con, tmp_path: Path, cohort: list[dict]) -> None:
    fake = FakeFhir(BASE, cohort)
    _, adapter = run_export(con, bulk_site(tmp_path, level="group", group_id="cart"), fake)
    assert any("/Group/cart/$export?" in r.url for r in adapter.requests)


def test_an_interrupt_cancels_the_export_with_delete(con, tmp_path: Path,
                                                     cohort: list[dict]) -> None:
    fake = FakeFhir(BASE, cohort)
    fake.export_polls = 5

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt  # Ctrl-C while waiting for the server

    site = bulk_site(tmp_path)
    assert isinstance(site.source, BulkSource)
    client = FhirClient(BASE, site.source.http, site.source.auth, transport=StubAdapter(fake),
                        sleep=lambda s: None)
    run = start_run(con, "test", "hash")
    with pytest.raises(KeyboardInterrupt):
        export_site(con, site, run.run_id, client=client, sleep=interrupted)
    assert len(fake.deleted_status) == 1  # the server was told to stop the job
    assert con.execute("select status from meta.bulk_job").fetchone() == ("cancelled",)
    # A cancelled job is not resumed: the next run kicks off afresh.
    fake.export_polls = 0
    report, _ = run_export(con, site, fake)
    assert len(fake.export_kickoffs) == 2 and report.status == "complete"


def test_progress_has_one_bar_per_resource_type(con, tmp_path: Path,
                                                cohort: list[dict]) -> None:
    progress = RecordingProgress()
    run_export(con, bulk_site(tmp_path), FakeFhir(BASE, cohort), progress=progress)
    types = sorted({r["resourceType"] for r in cohort})
    assert [d for d, _, _ in progress.tasks] == [f"site_c {t} files" for t in types]
    assert all(progress.done[d] == total for d, total, _ in progress.tasks)


# ---- malformed manifests and files, met through `cartfhir extract` ------------------------

def corrupt_manifest(fake: FakeFhir, change) -> None:
    """Let ``change`` edit every manifest the server hands out (and its files)."""
    original = fake._kickoff
    fake.export_polls = 0

    def kickoff(query, request):
        answer = original(query, request)
        change(fake._manifest)
        return answer

    fake._kickoff = kickoff  # type: ignore[method-assign]


def drop_first_url(manifest: dict) -> None:
    del manifest["output"][0]["url"]


@pytest.mark.parametrize(("change", "field"), [
    (drop_first_url, "output[0].url"),
    (lambda m: m["output"].insert(0, 1), "output[0]"),
    (lambda m: m.update(output="Patient.ndjson"), "'output'"),
    (lambda m: m.update(deleted=[{"type": "Bundle", "url": 7}]), "deleted[0].url"),
    (lambda m: m.update(transactionTime="yesterday"), "'transactionTime'"),
    (lambda m: m.update(requiresAccessToken="false"), "'requiresAccessToken'"),
], ids=["output-without-url", "output-not-object", "output-not-list", "deleted-url-number",
        "transaction-time-not-instant", "requires-token-not-boolean"])
def test_a_malformed_manifest_fails_and_the_next_run_starts_afresh(tmp_path, capsys, hostile,
                                                                   change, field) -> None:
    corrupt_manifest(hostile, change)
    first = extract(tmp_path, capsys, hostile.base, kind="bulk")
    assert first.code == 1, first.err
    assert "internal error" not in first.err and field in first.err
    assert first.run_row()[0] == "failed" and field in first.run_row()[1]
    assert first.rows("select status from meta.bulk_job") == [("failed",)]
    assert hostile.deleted_status  # the server was told it can drop the job

    second = extract(tmp_path, capsys, hostile.base, kind="bulk")
    assert second.code == 1 and field in second.err
    assert len(hostile.export_kickoffs) == 2  # a new export, not the failed one resumed
    assert second.rows("select status from meta.bulk_job") == [("failed",), ("failed",)]


def test_a_deleted_file_that_is_not_json_is_partial(tmp_path, capsys, hostile) -> None:
    hostile.export_deleted = ["Patient/p1"]

    def broken_deleted(manifest: dict) -> None:
        hostile._export_files["deleted.ndjson"] = b'{"resourceType": "Bundle", "entry": [\n'

    corrupt_manifest(hostile, broken_deleted)
    result = extract(tmp_path, capsys, hostile.base, kind="bulk")
    assert result.code == 3, result.err
    assert "internal error" not in result.err
    message = result.run_row()[1]
    assert "deleted file" in message and "line 1 is not JSON" in message
    assert len(result.rows("select * from raw.resources")) == 3  # the output still landed
    assert result.rows("select status from meta.bulk_job") == [("downloaded",)]


def test_an_error_file_line_that_is_not_an_object_is_kept(tmp_path, capsys, hostile) -> None:
    hostile.export_errors = [1]  # type: ignore[list-item]
    hostile.export_polls = 0
    result = extract(tmp_path, capsys, hostile.base, kind="bulk")
    assert "internal error" not in result.err
    assert result.code == 3, result.err
    assert result.rows("select text from raw.export_error") == [("1",)]
