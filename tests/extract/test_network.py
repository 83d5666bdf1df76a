"""Hospital networks and SMART, end to end over real sockets on loopback.

TLS with a hospital CA and with client certificates (mutual TLS), the configured CA
winning over REQUESTS_CA_BUNDLE, the explicit and logged opt-out, proxies from the
environment, and a full ``cartfhir extract`` authenticated with SMART Backend Services
against a token endpoint that verifies the signature.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import certifi
import duckdb
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cartfhir.cli import run_cli
from cartfhir.config import Http, NoAuth, Tls
from cartfhir.errors import FhirServerError
from cartfhir.extract.http import FhirClient
from cartfhir.synth import generate
from tests.testbed import fhir_source, write_config

from .stub_server import FakeFhir, answer, serve
from .tls_certs import Pki, make_pki
from .token_server import TokenServer


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("net")
    generate(out, patients=3, seed=4, sites=["site_a"], bundles=True)
    return [e["resource"] for b in sorted((out / "site_a" / "bundles").glob("*.json"))
            for e in orjson.loads(b.read_bytes())["entry"]]


def https_server(pki: Pki, cohort: list[dict], require_client_cert: bool) -> Any:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca)
    return serve(FakeFhir(resources=cohort), tls=context)


@pytest.fixture
def https(pki: Pki, cohort: list[dict]) -> Iterator[Any]:
    server = https_server(pki, cohort, require_client_cert=False)
    yield server
    server.shutdown()


@pytest.fixture
def mtls(pki: Pki, cohort: list[dict]) -> Iterator[Any]:
    server = https_server(pki, cohort, require_client_cert=True)
    yield server
    server.shutdown()


def client(base_url: str, **tls: Any) -> FhirClient:
    return FhirClient(base_url, Http(max_retries=1, tls=Tls(**tls)), NoAuth(kind="none"),
                      sleep=lambda s: None)


def metadata(c: FhirClient) -> dict:
    return c.get_json(c.url("metadata")).data


# ---- TLS ------------------------------------------------------------------------------------
def test_an_unknown_ca_is_refused_with_advice(https) -> None:
    c = client(https.base_url)
    with pytest.raises(FhirServerError, match="TLS with .* failed.*http.tls.ca_bundle"):
        metadata(c)
    assert c.stats.requests == 1  # a certificate problem is not retried


def test_the_configured_ca_bundle_is_trusted(https, pki: Pki) -> None:
    assert metadata(client(https.base_url, ca_bundle=pki.ca))["fhirVersion"] == "4.0.1"


def test_the_configured_ca_wins_over_requests_ca_bundle(https, pki: Pki,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # requests would let this variable replace the session's CA; the site's config must win.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    assert metadata(client(https.base_url, ca_bundle=pki.ca))["fhirVersion"] == "4.0.1"


def test_requests_ca_bundle_is_used_when_the_config_names_no_ca(
        https, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca))
    assert metadata(client(https.base_url))["fhirVersion"] == "4.0.1"


def test_skipping_verification_works_only_when_asked_and_is_logged(
        https, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert metadata(client(https.base_url, insecure_skip_verify=True))
    assert "TLS certificate verification is OFF" in caplog.text


def test_mutual_tls_needs_the_client_certificate(mtls, pki: Pki) -> None:
    with pytest.raises(FhirServerError, match="TLS|giving up"):
        metadata(client(mtls.base_url, ca_bundle=pki.ca))
    with_cert = client(mtls.base_url, ca_bundle=pki.ca, client_cert=pki.client_cert,
                       client_key=pki.client_key)
    assert metadata(with_cert)["fhirVersion"] == "4.0.1"


# ---- proxies --------------------------------------------------------------------------------
class ForwardProxy:
    """A plain-HTTP forward proxy on loopback that answers for a FakeFhir and logs requests."""

    def __init__(self, fake: FakeFhir) -> None:
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                proxy.seen.append(self.path)  # absolute URI: that is how proxies are asked
                answer(self, fake, self.path)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_proxy_from_the_environment_is_used(cohort: list[dict],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    base = "http://fhir.hospital.invalid/fhir"  # resolvable only through the proxy
    proxy = ForwardProxy(FakeFhir(base, cohort))
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert metadata(client(base))["fhirVersion"] == "4.0.1"
        assert proxy.seen == [f"{base}/metadata"]

        monkeypatch.setenv("NO_PROXY", "fhir.hospital.invalid")
        with pytest.raises(FhirServerError, match="giving up"):
            metadata(client(base))  # bypassing the proxy, the name does not resolve
        assert len(proxy.seen) == 1
    finally:
        proxy.server.shutdown()


# ---- SMART end to end -----------------------------------------------------------------------
def test_extract_with_smart_backend_services(tmp_path: Path, cohort: list[dict],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "client-key.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    fake = FakeFhir(resources=cohort)
    server = TokenServer(public_key=key.public_key(), algorithm="RS384", fhir=fake).start()
    fake.base = server.base_url
    try:
        config = write_config(tmp_path, ["site_a"], site_a={"source": fhir_source(
            server.base_url, cohort={"search": ["Patient?_count=100"]},
            auth={"kind": "smart", "client_id": "cartfhir-test",
                  "private_key": {"file": str(key_file)}})})
        assert run_cli(["extract", "--config", str(config)]) == 0, capsys.readouterr().err
        captured = capsys.readouterr()
    finally:
        server.stop()
    assert server.token_requests == 1  # discovered once, then the cached token served all
    assert server.fhir_refused == 0
    token = server.issued[0]
    con = duckdb.connect(str(tmp_path / "out" / "t.duckdb"), read_only=True)
    try:
        landed = con.execute("select count(*) from raw.resources").fetchone()[0]
        assert landed == len(cohort)
        # The token is nowhere in the database, and nowhere in what was printed.
        for schema, table in con.execute(
                "select table_schema, table_name from information_schema.tables").fetchall():
            dump = con.execute(f'select * from "{schema}"."{table}"').fetchall()
            assert token not in repr(dump), f"{schema}.{table}"
    finally:
        con.close()
    assert token not in captured.out + captured.err
