"""Authenticators: static headers, and SMART Backend Services against a real loopback server."""

from __future__ import annotations

import base64
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cartfhir.config import BasicAuth, BearerAuth, NoAuth, SecretRef, SmartAuth
from cartfhir.errors import AuthError, SecretError
from cartfhir.extract.auth import SmartAuthenticator, make_authenticator
from cartfhir.redact import redact, register
from tests.extract.stub_server import StubAdapter, json_response
from tests.extract.token_server import TokenServer

USER_AGENT = "cartfhir-auth-test/1"


# ---- keys and servers -------------------------------------------------------------------
@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def pem(key, password: bytes | None = None) -> str:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption).decode()


def key_ref(tmp_path: Path, key_pem: str) -> SecretRef:
    path = tmp_path / "client-key.pem"
    path.write_text(key_pem)
    return SecretRef(file=path)


@pytest.fixture
def serve() -> Iterator:
    started: list[TokenServer] = []

    def start(public_key, algorithm: str, **kwargs) -> TokenServer:
        server = TokenServer(public_key=public_key, algorithm=algorithm, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.headers["User-Agent"] = USER_AGENT
        yield s


def smart(ref: SecretRef, algorithm: str = "RS384", **kwargs) -> SmartAuth:
    return SmartAuth(kind="smart", client_id="cartfhir-test", private_key=ref,
                     algorithm=algorithm, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- SMART: the happy path --------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["RS384", "ES384"])
def test_smart_gets_a_token_the_server_verified(algorithm, rsa_key, ec_key, serve, session,
                                                tmp_path):
    key = rsa_key if algorithm == "RS384" else ec_key
    server = serve(key.public_key(), algorithm)
    auth = make_authenticator(smart(key_ref(tmp_path, pem(key)), algorithm, key_id="k1"),
                              server.base_url + "/", session)

    assert auth.headers() == {"Authorization": f"Bearer {server.issued[0]}"}

    seen = server.requests[0]
    assert seen.claims is not None, "the server did not accept the assertion"
    assert seen.jwt_header == {"alg": algorithm, "typ": "JWT", "kid": "k1"}
    assert seen.claims["iss"] == seen.claims["sub"] == "cartfhir-test"
    assert seen.claims["aud"] == server.token_url
    assert 0 < seen.claims["exp"] - seen.claims["iat"] <= 300
    assert seen.form["scope"] == "system/*.rs"
    assert seen.headers["Accept"] == "application/json"
    # Discovery and the token request both went through the caller's session.
    assert server.discovery_user_agents == [USER_AGENT]
    assert seen.headers["User-Agent"] == USER_AGENT


def test_no_kid_configured_sends_no_kid(rsa_key, serve, session, tmp_path):
    server = serve(rsa_key.public_key(), "RS384")
    make_authenticator(smart(key_ref(tmp_path, pem(rsa_key))), server.base_url, session).headers()
    assert "kid" not in server.requests[0].jwt_header


def test_private_key_from_env_var_even_on_one_line(rsa_key, serve, session, monkeypatch):
    server = serve(rsa_key.public_key(), "RS384")
    monkeypatch.setenv("CARTFHIR_TEST_KEY", pem(rsa_key).replace("\n", "\\n"))
    auth = make_authenticator(smart(SecretRef(env="CARTFHIR_TEST_KEY")), server.base_url, session)
    assert auth.headers()["Authorization"] == f"Bearer {server.issued[0]}"


# ---- SMART: caching, expiry, invalidate, threads ----------------------------------------
def test_token_is_cached(rsa_key, serve, session, tmp_path):
    server = serve(rsa_key.public_key(), "RS384")
    auth = make_authenticator(smart(key_ref(tmp_path, pem(rsa_key))), server.base_url, session)
    first = auth.headers()
    assert auth.headers() == first
    assert server.token_requests == 1
    assert server.discovery_hits == 1


def test_token_is_refreshed_shortly_before_it_expires(rsa_key, serve, session, tmp_path):
    server = serve(rsa_key.public_key(), "RS384", expires_in=120)
    clock = FakeClock()
    auth = SmartAuthenticator(smart(key_ref(tmp_path, pem(rsa_key))), server.base_url, session,
                              clock=clock)
    first = auth.headers()
    clock.now += 107  # 120 s minus a 10% margin (12 s) is 108 s
    assert auth.headers() == first
    clock.now += 2
    second = auth.headers()
    assert second != first and second["Authorization"] == f"Bearer {server.issued[1]}"
    assert server.token_requests == 2
    assert server.discovery_hits == 1  # the endpoint is discovered once


def test_token_without_expires_in_lives_five_minutes(rsa_key, serve, session, tmp_path):
    server = serve(rsa_key.public_key(), "RS384", expires_in=None)
    clock = FakeClock()
    auth = SmartAuthenticator(smart(key_ref(tmp_path, pem(rsa_key))), server.base_url, session,
                              clock=clock)
    first = auth.headers()
    clock.now += 269  # 300 s minus a 30 s margin
    assert auth.headers() == first
    clock.now += 2
    assert auth.headers() != first


def test_a_token_expiring_at_once_is_fetched_each_time(rsa_key, serve, session, tmp_path):
    server = serve(rsa_key.public_key(), "RS384", expires_in=0)
    auth = make_authenticator(smart(key_ref(tmp_path, pem(rsa_key))), server.base_url, session)
    assert auth.headers() != auth.headers()
    assert server.token_requests == 2


def test_invalidate_forces_a_new_token(rsa_key, serve, session, tmp_path):
    server = serve(rsa_key.public_key(), "RS384")
    auth = make_authenticator(smart(key_ref(tmp_path, pem(rsa_key))), server.base_url, session)
    first = auth.headers()
    auth.invalidate()
    second = auth.headers()
    assert first != second
    assert server.token_requests == 2
    jtis = [seen.claims["jti"] for seen in server.requests]
    assert len(set(jtis)) == 2


def test_concurrent_callers_share_one_token_fetch(rsa_key, serve, session, tmp_path):
    server = serve(rsa_key.public_key(), "RS384", token_delay=0.2)
    auth = make_authenticator(smart(key_ref(tmp_path, pem(rsa_key))), server.base_url, session)
    results: list[dict[str, str]] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(auth.headers())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 8
    assert all(r == results[0] for r in results)
    assert server.token_requests == 1


# ---- SMART: discovery -------------------------------------------------------------------
def test_discovery_failure_raises_auth_error_with_status_and_url(rsa_key, serve, session,
                                                                 tmp_path):
    server = serve(rsa_key.public_key(), "RS384", discovery_status=404)
    auth = make_authenticator(smart(key_ref(tmp_path, pem(rsa_key))), server.base_url, session)
    with pytest.raises(AuthError) as info:
        auth.headers()
    message = str(info.value)
    assert "HTTP 404" in message
    assert f"{server.base_url}/.well-known/smart-configuration" in message
    assert "auth.token_url" in message
    assert server.token_requests == 0


def test_token_url_skips_discovery(rsa_key, serve, session, tmp_path):
    server = serve(rsa_key.public_key(), "RS384", discovery_status=500)
    config = smart(key_ref(tmp_path, pem(rsa_key)), token_url=server.token_url)
    auth = make_authenticator(config, server.base_url, session)
    assert auth.headers()["Authorization"] == f"Bearer {server.issued[0]}"
    assert server.discovery_hits == 0
    assert server.requests[0].claims["aud"] == server.token_url


def test_https_discovery_pointing_to_plain_http_is_refused(rsa_key, session, tmp_path):
    def handler(request):
        return json_response({"token_endpoint": "http://auth.example.org/token"})

    session.mount("https://", StubAdapter(handler))
    auth = make_authenticator(smart(key_ref(tmp_path, pem(rsa_key))),
                              "https://fhir.example.org/r4/", session)
    with pytest.raises(AuthError, match="plain-http token endpoint"):
        auth.headers()


# ---- SMART: refusals and broken answers -------------------------------------------------
def test_wrong_key_reports_the_token_endpoint_error(rsa_key, serve, session, tmp_path):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = serve(other.public_key(), "RS384")  # registered key is not ours
    auth = make_authenticator(smart(key_ref(tmp_path, pem(rsa_key)), key_id="k1"),
                              server.base_url, session)
    with pytest.raises(AuthError) as info:
        auth.headers()
    message = str(info.value)
    assert "HTTP 401" in message
    assert "invalid_client" in message
    assert "InvalidSignatureError" in message  # the server's error_description
    assert server.token_url in message
    assert "client_id 'cartfhir-test'" in message and "'k1'" in message


def test_scope_refusal_says_so(rsa_key, serve, session, tmp_path):
    server = serve(rsa_key.public_key(), "RS384", scope="system/Patient.rs")
    auth = make_authenticator(smart(key_ref(tmp_path, pem(rsa_key))), server.base_url, session)
    with pytest.raises(AuthError, match=r"invalid_scope.*auth\.scope"):
        auth.headers()


def test_missing_access_token_raises(rsa_key, serve, session, tmp_path):
    server = serve(rsa_key.public_key(), "RS384",
                   token_response={"token_type": "bearer", "expires_in": 300})
    auth = make_authenticator(smart(key_ref(tmp_path, pem(rsa_key))), server.base_url, session)
    with pytest.raises(AuthError, match="without an access_token"):
        auth.headers()


def test_unreachable_token_endpoint_raises_auth_error(rsa_key, session, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/token"
    auth = make_authenticator(smart(key_ref(tmp_path, pem(rsa_key)), token_url=url),
                              "http://127.0.0.1:1/fhir", session)
    with pytest.raises(AuthError, match="cannot reach the token endpoint") as info:
        auth.headers()
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_server_rejects_a_replayed_assertion(rsa_key, serve, session, tmp_path):
    """The test server's replay check is real, so a client that reused a jti would fail."""
    server = serve(rsa_key.public_key(), "RS384")
    auth = SmartAuthenticator(smart(key_ref(tmp_path, pem(rsa_key))), server.base_url, session)
    form = {"grant_type": "client_credentials", "scope": "system/*.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": auth._assertion(server.token_url)}
    assert session.post(server.token_url, data=form).status_code == 200
    again = session.post(server.token_url, data=form)
    assert again.status_code == 401 and again.json()["error_description"] == "jti replayed"


# ---- SMART: keys ------------------------------------------------------------------------
def offline(ref: SecretRef, algorithm: str):
    # The key is checked before anything is sent, so no server is needed.
    return make_authenticator(smart(ref, algorithm, token_url="http://127.0.0.1:9/token"),
                              "http://127.0.0.1:9/fhir", requests.Session())


def test_rsa_key_with_es384_names_the_key_type_needed(rsa_key, tmp_path):
    with pytest.raises(AuthError, match=r"ES384 needs an EC P-384 .*2048-bit RSA"):
        offline(key_ref(tmp_path, pem(rsa_key)), "ES384").headers()


def test_ec_key_with_rs384_names_the_key_type_needed(ec_key, tmp_path):
    with pytest.raises(AuthError, match=r"RS384 needs an RSA private key.*EC secp384r1"):
        offline(key_ref(tmp_path, pem(ec_key)), "RS384").headers()


def test_wrong_ec_curve_is_refused(tmp_path):
    p256 = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(AuthError, match="ES384 needs an EC P-384"):
        offline(key_ref(tmp_path, pem(p256)), "ES384").headers()


def test_short_rsa_key_is_refused(tmp_path):
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(AuthError, match="1024 bits; RS384 needs at least 2048"):
        offline(key_ref(tmp_path, pem(small)), "RS384").headers()


def test_encrypted_key_is_refused(rsa_key, tmp_path):
    with pytest.raises(AuthError, match="encrypted"):
        offline(key_ref(tmp_path, pem(rsa_key, b"pw")), "RS384").headers()


def test_not_a_pem_key_is_refused(tmp_path):
    with pytest.raises(AuthError, match="does not hold a PEM private key"):
        offline(key_ref(tmp_path, "not a key"), "RS384").headers()


def test_missing_key_env_var_is_a_secret_error(monkeypatch):
    monkeypatch.delenv("CARTFHIR_NO_SUCH_KEY", raising=False)
    with pytest.raises(SecretError, match="CARTFHIR_NO_SUCH_KEY"):
        offline(SecretRef(env="CARTFHIR_NO_SUCH_KEY"), "RS384").headers()


# ---- secrets stay secret ----------------------------------------------------------------
def test_secrets_never_reach_messages_reprs_or_logs(rsa_key, serve, session, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    key_pem = pem(rsa_key)
    ref = key_ref(tmp_path, key_pem)
    good = serve(rsa_key.public_key(), "RS384")
    auth = make_authenticator(smart(ref), good.base_url, session)
    token = auth.headers()["Authorization"].removeprefix("Bearer ")
    shown = [repr(auth), str(auth)]

    careless = serve(rsa_key.public_key(), "RS384", echo_assertion=True)
    other_key = serve(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(),
                      "RS384")
    for server in (careless, other_key):
        failing = make_authenticator(smart(ref), server.base_url, session)
        with pytest.raises(AuthError) as info:
            failing.headers()
        shown += [str(info.value), repr(info.value), repr(failing)]
    assert "invalid_grant: cannot use assertion ***" in shown[2]
    shown.append(caplog.text)

    assertions = [seen.form["client_assertion"]
                  for server in (good, careless, other_key) for seen in server.requests]
    secrets = [token, *assertions, *(a.split(".")[2] for a in assertions),
               *key_pem.splitlines()[1:-1]]
    for text in shown:
        assert "PRIVATE KEY" not in text
        for secret in secrets:
            assert secret not in text


def test_bearer_header_is_read_once_and_never_shown(monkeypatch):
    monkeypatch.setenv("CARTFHIR_TEST_TOKEN", "s3cr3t-token\n")
    auth = make_authenticator(BearerAuth(kind="bearer", token=SecretRef(env="CARTFHIR_TEST_TOKEN")),
                              "http://fhir.test/fhir", requests.Session())
    assert auth.headers() == {"Authorization": "Bearer s3cr3t-token"}
    monkeypatch.setenv("CARTFHIR_TEST_TOKEN", "rotated")
    auth.invalidate()  # a no-op for a static token
    assert auth.headers() == {"Authorization": "Bearer s3cr3t-token"}
    assert "s3cr3t" not in repr(auth) and "CARTFHIR_TEST_TOKEN" in repr(auth)


def test_bearer_token_with_a_line_break_is_refused_without_showing_it(monkeypatch):
    monkeypatch.setenv("CARTFHIR_TEST_TOKEN", "s3cr3t\nX-Injected: 1")
    auth = make_authenticator(BearerAuth(kind="bearer", token=SecretRef(env="CARTFHIR_TEST_TOKEN")),
                              "http://fhir.test/fhir", requests.Session())
    with pytest.raises(AuthError, match="env var CARTFHIR_TEST_TOKEN") as info:
        auth.headers()
    assert "s3cr3t" not in str(info.value)


def test_basic_header(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("p@ss:word\n")
    config = BasicAuth(kind="basic", username="etl", password=SecretRef(file=secret))
    auth = make_authenticator(config, "http://fhir.test/fhir", requests.Session())
    expected = base64.b64encode(b"etl:p@ss:word").decode()
    assert auth.headers() == {"Authorization": f"Basic {expected}"}
    auth.invalidate()
    assert auth.headers() == {"Authorization": f"Basic {expected}"}
    assert "p@ss" not in repr(auth) and expected not in repr(auth)


def test_basic_username_with_colon_is_refused(tmp_path):
    with pytest.raises(AuthError, match="contains ':'"):
        make_authenticator(BasicAuth(kind="basic", username="a:b",
                                     password=SecretRef(env="UNUSED")),
                           "http://fhir.test/fhir", requests.Session())


def test_no_auth_adds_nothing():
    auth = make_authenticator(NoAuth(), "http://fhir.test/fhir", requests.Session())
    assert auth.headers() == {}
    auth.invalidate()
    assert auth.headers() == {}


def test_a_long_oauth_error_is_redacted_before_it_is_cut(rsa_key, session, tmp_path):
    """The error text is cut to a few hundred characters; a registered secret the server
    echoes across the cut must not leave its first characters in the message."""
    secret = "Zq8vN3kLmP0rT6wYxB2cD5fH7jK9-client-secret"
    register(secret)

    def handler(request):
        return json_response({"error": "invalid_client", "error_description":
                              "x" * 250 + " got client_secret " + secret}, status=401)

    session.mount("https://", StubAdapter(handler))
    auth = make_authenticator(smart(key_ref(tmp_path, pem(rsa_key)),
                                    token_url="https://auth.example.org/token"),
                              "https://fhir.example.org/r4/", session)
    with pytest.raises(AuthError) as info:
        auth.headers()
    message = str(info.value)
    assert "invalid_client" in message and "got client_secret" in message
    assert secret[:4] not in message


def test_basic_credentials_are_masked_in_their_unpadded_and_urlsafe_base64(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("h>nter2?x\n")  # base64 of etl:h>nter2?x has '+', '/' and padding
    auth = make_authenticator(BasicAuth(kind="basic", username="etl",
                                        password=SecretRef(file=secret)),
                              "http://fhir.test/fhir", requests.Session())
    auth.headers()
    encoded = base64.b64encode(b"etl:h>nter2?x").decode()
    assert "=" in encoded and ("+" in encoded or "/" in encoded)
    for form in (encoded.rstrip("="), base64.urlsafe_b64encode(b"etl:h>nter2?x").decode(),
                 base64.urlsafe_b64encode(b"etl:h>nter2?x").decode().rstrip("=")):
        assert redact(f"echo {form} end") == "echo *** end", form
