"""Secrets at rest: a server that echoes credentials must not get them into the file or logs.

Each test runs ``cartfhir extract`` against a loopback server that copies what it was
sent into its error answers (or hands out a status URL carrying a token), then looks
for the secret, in every form it was sent, in stdout, stderr, every table of the
DuckDB file and the file's bytes.
"""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from .cli_site import Outcome, bundle, extract, patient, searching
from .stub_server import FakeFhir

TOKEN = "s3cr3t-T0ken-4f9a8b7c6d"
USER, PASSWORD = "alice", "pa55-W0rd-z9y8x7"
STATUS_TOKEN = "st4tus-T0ken-1a2b3c4d"

AUTH = {
    "bearer": {"auth": {"kind": "bearer", "token": {"env": "CARTFHIR_TEST_SECRET"}}},
    "basic": {"auth": {"kind": "basic", "username": USER,
                       "password": {"env": "CARTFHIR_TEST_SECRET"}}},
}
SECRETS = {
    "bearer": [TOKEN],
    "basic": [PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()],
}


def echo_credentials(fake: FakeFhir, where: str) -> None:
    """Answer one kind of request with an error that repeats the Authorization header."""
    def fault(request):
        path = urlsplit(request.url).path
        query = searching("Patient", request)
        hit = path.endswith("/metadata") if where == "metadata" else bool(query and "_id" in query)
        if not hit:
            return None
        header = request.headers.get("Authorization", "")
        value = header.partition(" ")[2]
        decoded = base64.b64decode(value).decode() if header.startswith("Basic ") else value
        text = (f"request refused; you sent Authorization: {header} i.e. {value!r}, "
                f"decoded {decoded}")
        if where == "metadata":  # a plain-text 500
            return 500, {"Content-Type": "text/plain"}, text.encode()
        outcome = {"resourceType": "OperationOutcome",
                   "issue": [{"severity": "error", "code": "security", "diagnostics": text}]}
        return 400, {"Content-Type": "application/fhir+json"}, orjson.dumps(outcome)

    fake.faults.append(fault)


def assert_nowhere(result: Outcome, secrets: list[str]) -> None:
    tables = result.rows("select table_schema, table_name from information_schema.tables")
    stored = [str(result.rows(f'select * from "{schema}"."{table}"')) for schema, table in tables]
    raw = b"".join(p.read_bytes() for p in Path(result.db).parent.iterdir())
    for secret in secrets:
        assert secret not in result.out
        assert secret not in result.err
        assert not [t for t in stored if secret in t]
        assert secret.encode() not in raw


@pytest.mark.parametrize("kind", ["bearer", "basic"])
def test_an_echoed_credential_in_a_search_error_is_stored_nowhere(
        tmp_path, capsys, hostile, monkeypatch, kind) -> None:
    monkeypatch.setenv("CARTFHIR_TEST_SECRET", TOKEN if kind == "bearer" else PASSWORD)
    echo_credentials(hostile, "search")
    result = extract(tmp_path, capsys, hostile.base, source=AUTH[kind],
                     options=("--log-format", "json"))
    assert result.code == 3, result.err
    status, message = result.run_row()
    assert status == "partial" and "request refused" in message and "***" in message
    messages = [m for (m,) in result.rows("select message from meta.extract_request")]
    assert any("request refused" in (m or "") for m in messages)
    assert_nowhere(result, SECRETS[kind])


@pytest.mark.parametrize("kind", ["bearer", "basic"])
def test_an_echoed_credential_in_a_failed_run_is_stored_and_printed_nowhere(
        tmp_path, capsys, hostile, monkeypatch, kind) -> None:
    monkeypatch.setenv("CARTFHIR_TEST_SECRET", TOKEN if kind == "bearer" else PASSWORD)
    echo_credentials(hostile, "metadata")
    result = extract(tmp_path, capsys, hostile.base, source=AUTH[kind], options=("--verbose",))
    assert result.code == 1, result.err
    assert "request refused" in result.err and "Traceback" in result.err
    status, message = result.run_row()
    assert status == "failed" and "request refused" in message
    assert_nowhere(result, SECRETS[kind])


def with_status_token(fake: FakeFhir) -> None:
    original = fake._kickoff

    def kickoff(query, request):
        status, headers, body = original(query, request)
        headers["Content-Location"] += f"?token={STATUS_TOKEN}"
        return status, headers, body

    fake._kickoff = kickoff  # type: ignore[method-assign]


def test_a_status_url_token_is_masked_and_its_job_not_resumed(tmp_path, capsys,
                                                              hostile) -> None:
    with_status_token(hostile)
    hostile.export_polls = 100
    first = extract(tmp_path, capsys, hostile.base, kind="bulk", source={"max_wait": 1},
                    options=("--verbose",))
    assert first.code == 1 and "next run resumes it" in first.err
    [(url, status)] = first.rows("select status_url, status from meta.bulk_job")
    assert status == "running" and url.endswith("?token=***")
    assert_nowhere(first, [STATUS_TOKEN])

    hostile.export_polls = 0
    second = extract(tmp_path, capsys, hostile.base, kind="bulk", options=("--verbose",))
    assert second.code == 0, second.err
    assert len(hostile.export_kickoffs) == 2 and "cannot be resumed" in second.err
    assert sorted(s for (s,) in second.rows("select status from meta.bulk_job")) == [
        "abandoned", "downloaded"]
    assert_nowhere(second, [STATUS_TOKEN])


def echo_in_an_entry(fake: FakeFhir, shape: str) -> None:
    """Answer the pull's search with a page whose first entry (rejected) repeats the header."""
    def fault(request):
        query = searching("Patient", request)
        if not (query and "_id" in query):
            return None
        said = f"you sent Authorization: {request.headers.get('Authorization', '')}"
        if shape == "no resource":
            first = {"search": {"mode": "match"}, "note": said}
        else:  # an OperationOutcome in a Patient search
            first = {"resource": {"resourceType": "OperationOutcome", "id": "x", "issue": [
                {"severity": "warning", "code": "informational", "diagnostics": said}]},
                "search": {"mode": "match"}}
        return bundle([first, patient("p1")])

    fake.faults.append(fault)


@pytest.mark.parametrize("shape", ["no resource", "other type"])
@pytest.mark.parametrize("kind", ["bearer", "basic"])
def test_a_rejected_search_entry_echoing_the_credential_is_stored_redacted(
        tmp_path, capsys, hostile, monkeypatch, kind, shape) -> None:
    monkeypatch.setenv("CARTFHIR_TEST_SECRET", TOKEN if kind == "bearer" else PASSWORD)
    echo_in_an_entry(hostile, shape)
    result = extract(tmp_path, capsys, hostile.base, source=AUTH[kind],
                     options=("--log-format", "json"))
    assert result.code in (0, 3), result.err
    [(payload,)] = result.rows("select payload from raw.rejected")
    assert "you sent Authorization: " in payload and "***" in payload
    assert result.rows("select id from raw.resources") == [("p1",)]
    assert_nowhere(result, SECRETS[kind])


def test_a_rejected_bulk_line_echoing_the_token_is_stored_redacted(
        tmp_path, capsys, hostile, monkeypatch) -> None:
    monkeypatch.setenv("CARTFHIR_TEST_SECRET", TOKEN)
    hostile.export_polls = 0
    hostile.export_requires_token = True

    def fault(request):
        if not request.url.endswith("/bulkfiles/Patient.ndjson"):
            return None
        echo = orjson.dumps({"resourceType": "Patient",
                             "note": f"got {request.headers.get('Authorization', '')}"})
        return 200, {"Content-Type": "application/fhir+ndjson"}, (
            echo + b"\n" + orjson.dumps(patient("p1")) + b"\n" + orjson.dumps(patient("p2")))

    hostile.faults.append(fault)
    result = extract(tmp_path, capsys, hostile.base, kind="bulk", source=AUTH["bearer"])
    assert result.code == 0, result.err
    [(reason, payload)] = result.rows("select reason, payload from raw.rejected")
    assert reason == "missing id" and "got Bearer ***" in payload
    assert_nowhere(result, SECRETS["bearer"])


@pytest.mark.parametrize("kind", ["bearer", "basic"])
def test_an_upper_cased_echo_of_the_credential_is_stored_and_printed_nowhere(
        tmp_path, capsys, hostile, monkeypatch, kind) -> None:
    secret = TOKEN if kind == "bearer" else PASSWORD
    monkeypatch.setenv("CARTFHIR_TEST_SECRET", secret)

    def fault(request):
        query = searching("Patient", request)
        if not (query and "_id" in query):
            return None
        return 400, {"Content-Type": "text/plain"}, f"refused {secret.upper()}".encode()

    hostile.faults.append(fault)
    result = extract(tmp_path, capsys, hostile.base, source=AUTH[kind],
                     options=("--log-format", "json"))
    assert result.code == 3, result.err
    assert "refused ***" in result.run_row()[1]
    assert_nowhere(result, [secret.upper(), *SECRETS[kind]])
