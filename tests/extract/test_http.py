"""FhirClient policy: retries, Retry-After, budget, 401 refresh, host pinning, masking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import urlsplit

import pytest
import requests

from cartfhir import __version__
from cartfhir.config import BearerAuth, Http, NoAuth, SecretRef
from cartfhir.errors import AuthError, FhirServerError
from cartfhir.extract.http import FhirClient, mask_url, parse_retry_after
from cartfhir.redact import register

from .cli_site import extract, patient, searching
from .stub_server import FakeFhir, StubAdapter, json_response, outcome, serve

BASE = "http://fhir.test/fhir"
OK = json_response({"resourceType": "Bundle", "type": "searchset"})


def client(handler, *, http: Http | None = None, auth=None) -> tuple[FhirClient, list[float]]:
    slept: list[float] = []
    c = FhirClient(BASE, http or Http(), auth or NoAuth(), transport=StubAdapter(handler),
                   sleep=slept.append)
    return c, slept


def sequence(*answers):
    queue = list(answers)
    return lambda request: queue.pop(0) if len(queue) > 1 else queue[0]


def test_retries_503_then_succeeds_and_sends_user_agent() -> None:
    seen = []

    def handler(request):
        seen.append(request.headers["User-Agent"])
        return outcome("busy", 503) if len(seen) < 3 else OK

    c, slept = client(handler)
    assert c.get_json(c.url("Patient")).data["resourceType"] == "Bundle"
    assert len(slept) == 2 and c.stats.retries == 2 and c.stats.requests == 3
    assert seen[0].startswith(f"cartfhir/{__version__}")


def test_retry_after_seconds_and_http_date_are_honoured_and_capped() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    c, slept = client(sequence(json_response({}, 429, **{"Retry-After": "7"}),
                               json_response({}, 503, **{"Retry-After": later}),
                               json_response({}, 429, **{"Retry-After": "9999"}), OK),
                      http=Http(retry_after_cap=120))
    c.get_json(c.url("Patient"))
    assert slept[0] == 7 and 25 <= slept[1] <= 30 and slept[2] == 120


def test_parse_retry_after() -> None:
    assert parse_retry_after("12") == 12
    assert parse_retry_after("not a date") is None
    assert parse_retry_after(None) is None


def test_connection_errors_are_retried_then_fail_naming_the_url() -> None:
    c, slept = client(lambda r: requests.ConnectionError("reset by peer"),
                      http=Http(max_retries=3))
    with pytest.raises(FhirServerError, match=r"giving up on http://fhir.test/fhir/Patient "
                                              r"after 4 tries: ConnectionError"):
        c.get_json(c.url("Patient"))
    assert len(slept) == 3


def test_retry_budget_is_shared_and_bounded() -> None:
    c, slept = client(lambda r: json_response({}, 503, **{"Retry-After": "100"}),
                      http=Http(retry_budget=250, max_retries=50))
    with pytest.raises(FhirServerError, match="retry budget of 250 s"):
        c.get_json(c.url("Patient"))
    assert sum(slept) <= 250


def test_client_errors_are_final_and_carry_the_operation_outcome() -> None:
    calls = []
    c, _ = client(lambda r: calls.append(r) or outcome("Unknown search parameter 'foo'", 400))
    with pytest.raises(FhirServerError) as info:
        c.get_json(c.url("Patient", {"foo": "1"}))
    assert len(calls) == 1 and info.value.status == 400
    assert "Unknown search parameter 'foo'" in str(info.value)
    assert info.value.outcome == "error: Unknown search parameter 'foo'"


def test_a_body_that_is_not_json_is_retried() -> None:
    c, slept = client(sequence((200, {}, b'{"resourceType": "Bund'), OK))
    assert c.get_json(c.url("Patient")).data["resourceType"] == "Bundle"
    assert len(slept) == 1


def test_401_refreshes_the_token_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTFHIR_TEST_TOKEN", "tok-123")
    seen = []

    def handler(request):
        seen.append(request.headers.get("Authorization"))
        return outcome("expired", 401) if len(seen) == 1 else OK

    bearer = BearerAuth(kind="bearer", token=SecretRef(env="CARTFHIR_TEST_TOKEN"))
    c, _ = client(handler, auth=bearer)
    c.get_json(c.url("Patient"))
    assert seen == ["Bearer tok-123", "Bearer tok-123"]

    c2, _ = client(lambda r: outcome("no", 401),
                   auth=BearerAuth(kind="bearer", token=SecretRef(env="CARTFHIR_TEST_TOKEN")))
    with pytest.raises(AuthError, match="refused with HTTP 401") as info:
        c2.get_json(c2.url("Patient"))
    assert "tok-123" not in str(info.value)


def test_urls_off_the_server_are_refused_unless_allowed() -> None:
    c, _ = client(lambda r: OK)
    with pytest.raises(FhirServerError, match="refusing to send credentials"):
        c.get_json("http://evil.test/fhir/Patient")
    with pytest.raises(FhirServerError, match="not on"):
        c.get_json("https://fhir.test/fhir/Patient")  # another scheme
    with pytest.raises(FhirServerError, match="not on"):
        c.get_json("http://fhir.test:8443/fhir/Patient")  # another port
    allowed, _ = client(lambda r: OK, http=Http(allowed_hosts=["files.test"]))
    allowed.get_json("https://files.test/export/1.ndjson")


def test_mask_url_hides_credentials_and_secret_params() -> None:
    masked = mask_url("https://user:pw@h.test/fhir/x?access_token=abc&patient=1&sig=zz")
    assert "pw" not in masked and "abc" not in masked and "zz" not in masked
    assert "patient=1" in masked and masked.startswith("https://***@h.test/")


def test_insecure_tls_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    from cartfhir.config import Tls

    with caplog.at_level("WARNING"):
        c, _ = client(lambda r: OK, http=Http(tls=Tls(insecure_skip_verify=True)))
    assert c.session.verify is False
    assert "verification is OFF" in caplog.text


def test_a_body_cut_short_in_transit_is_retried() -> None:
    cut = requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead")
    c, slept = client(sequence(cut, OK))
    assert c.get_json(c.url("Patient")).data["resourceType"] == "Bundle"
    assert len(slept) == 1 and c.stats.retries == 1


# ---- redirects, met through `cartfhir extract` --------------------------------------------

@pytest.fixture()
def elsewhere():
    """A second server on another port, with the same patients (a redirect target)."""
    fake = FakeFhir(resources=[patient("p1"), patient("p2"), patient("p3")])
    server = serve(fake)
    yield fake
    server.shutdown()


def redirect_searches(hostile, elsewhere):
    def redirect(request):
        if searching("Patient", request) is None:
            return None
        query = urlsplit(request.url).query
        return 302, {"Location": f"{elsewhere.base}/Patient?{query}"}, b""
    hostile.faults.append(redirect)


def test_a_redirect_to_another_host_is_refused(tmp_path, capsys, hostile, elsewhere) -> None:
    redirect_searches(hostile, elsewhere)
    result = extract(tmp_path, capsys, hostile.base)
    assert result.code == 1, result.err
    assert "redirected" in result.err and "http.allowed_hosts" in result.err
    assert elsewhere.served == 0  # nothing was asked of the other host, no token went there
    assert result.run_row()[0] == "failed"


def test_a_redirect_to_an_allowed_host_is_followed_and_recorded(tmp_path, capsys, hostile,
                                                                elsewhere) -> None:
    redirect_searches(hostile, elsewhere)
    port = urlsplit(elsewhere.base).port
    result = extract(tmp_path, capsys, hostile.base,
                     source={"http": {"allowed_hosts": [f"127.0.0.1:{port}"]}})
    assert result.code == 0, result.err
    assert len(result.rows("select * from raw.resources")) == 3
    rows = result.rows("select url, final_url from meta.extract_request")
    assert rows and all(f":{port}/" in final and f":{port}/" not in url for url, final in rows)


def test_a_redirect_loop_is_cut_off() -> None:
    c, _ = client(lambda r: (302, {"Location": f"{BASE}/Patient?hop=1" if "hop=2" in r.url
                                   else f"{BASE}/Patient?hop=2"}, b""))
    with pytest.raises(FhirServerError, match="redirected more than 5 times"):
        c.get_json(c.url("Patient"))
    assert c.stats.requests == 6


def test_a_303_redirect_turns_a_delete_into_a_get() -> None:
    seen = []

    def handler(request):
        seen.append((request.method, request.url))
        return (303, {"Location": "/fhir/done"}, b"") if len(seen) == 1 else OK

    c, _ = client(handler)
    c.request("DELETE", c.url("bulkstatus/1"))
    assert seen == [("DELETE", f"{BASE}/bulkstatus/1"), ("GET", f"{BASE}/done")]


def test_an_answer_over_the_size_cap_is_refused(monkeypatch) -> None:
    from cartfhir.extract import http

    monkeypatch.setattr(http, "MAX_JSON_BYTES", 1000)
    big = json_response({"resourceType": "Bundle", "type": "searchset",
                         "entry": [{"resource": {"resourceType": "Patient", "id": "x" * 2000}}]})
    c, _ = client(lambda r: big)
    with pytest.raises(FhirServerError, match="more than 1,000 bytes"):
        c.get_json(c.url("Patient"))


def test_an_error_body_is_redacted_before_it_is_cut() -> None:
    """The body quoted in the message is cut at 300 characters; a registered secret the
    server echoes across the cut leaves none of its characters there."""
    secret = "Wq7uM2jKlO9sS5vXwA1bC4eG6iJ8-echoed"
    register(secret)
    body = ("x" * 290 + " " + secret).encode()
    c, _ = client(lambda r: (400, {"Content-Type": "text/plain"}, body))
    with pytest.raises(FhirServerError) as info:
        c.get_json(c.url("Patient"))
    assert "xxxx ***" in str(info.value) and secret[:4] not in str(info.value)
