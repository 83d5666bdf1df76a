"""A real SMART Backend Services token endpoint on loopback, for auth tests.

``TokenServer`` serves ``/fhir/.well-known/smart-configuration`` and ``/token`` on 127.0.0.1
(a free port) from a thread. It verifies each client assertion's signature with the client's
PUBLIC key, its claims and the form, refuses a replayed jti, and records what it saw.
Given a ``FakeFhir`` as ``fhir``, it is also the resource server: FHIR requests under
``/fhir`` are answered only for a bearer token it issued, 401 otherwise.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt

from .stub_server import answer

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class Seen:
    """One token request as the server saw it."""

    form: dict[str, str]
    headers: dict[str, str]
    jwt_header: dict[str, Any] | None = None
    claims: dict[str, Any] | None = None


@dataclass
class TokenServer:
    public_key: Any
    algorithm: str
    client_id: str = "cartfhir-test"
    scope: str = "system/*.rs"
    expires_in: int | None = 300
    discovery_status: int = 200
    token_delay: float = 0.0  # seconds, to make concurrent callers overlap
    token_response: dict[str, Any] | None = None  # answered instead of a fresh token
    echo_assertion: bool = False  # a careless server: quote the assertion in its error
    fhir: Any = None  # a FakeFhir served under /fhir to callers holding an issued token
    fhir_refused: int = 0  # FHIR requests answered 401 (no token, or one never issued)
    issued: list[str] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    discovery_hits: int = 0
    discovery_user_agents: list[str] = field(default_factory=list)
    _jtis: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> TokenServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.origin + "/fhir"

    @property
    def token_url(self) -> str:
        return self.origin + "/token"

    @property
    def token_requests(self) -> int:
        return len(self.requests)

    def verify(self, form: dict[str, str]) -> tuple[int, dict[str, Any], Seen | None]:
        """(status, JSON answer) for one token request, as a strict server would judge it."""
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}, None
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return 400, {"error": "invalid_request",
                         "error_description": "wrong client_assertion_type"}, None
        if form.get("scope") != self.scope:
            return 400, {"error": "invalid_scope", "error_description": "scope not granted"}, None
        assertion = form.get("client_assertion", "")
        if self.echo_assertion:
            return 400, {"error": "invalid_grant",
                         "error_description": f"cannot use assertion {assertion}"}, None
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion, self.public_key, algorithms=[self.algorithm],
                audience=self.token_url, issuer=self.client_id,
                options={"require": ["exp", "iss", "sub", "jti", "aud"]},
            )
        except jwt.PyJWTError as exc:
            return 401, {"error": "invalid_client",
                         "error_description": f"assertion rejected: {type(exc).__name__}"}, None
        if claims["sub"] != self.client_id or header.get("typ") != "JWT":
            return 401, {"error": "invalid_client", "error_description": "bad sub or typ"}, None
        if claims["exp"] > time.time() + 300:
            return 401, {"error": "invalid_client",
                         "error_description": "exp more than 5 minutes ahead"}, None
        seen = Seen(form=form, headers={}, jwt_header=header, claims=claims)
        with self._lock:
            if claims["jti"] in self._jtis:
                return 401, {"error": "invalid_client", "error_description": "jti replayed"}, None
            self._jtis.add(claims["jti"])
            if self.token_response is not None:
                return 200, self.token_response, seen
            token = f"tok-{len(self.issued) + 1}-{claims['jti'][:8]}"
            self.issued.append(token)
        answer: dict[str, Any] = {"access_token": token, "token_type": "bearer",
                                  "scope": self.scope}
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        return 200, answer, seen


def _handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _serve_fhir(self) -> None:
            bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if bearer not in server.issued:
                server.fhir_refused += 1
                self._send(401, {"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "login", "diagnostics": "no valid token"}]})
                return
            answer(self, server.fhir, server.origin + self.path)

        def do_GET(self) -> None:
            if self.path != "/fhir/.well-known/smart-configuration":
                if server.fhir is not None and self.path.startswith("/fhir/"):
                    self._serve_fhir()
                    return
                self._send(404, {"error": "not found"})
                return
            server.discovery_hits += 1
            server.discovery_user_agents.append(self.headers.get("User-Agent", ""))
            if server.discovery_status != 200:
                self._send(server.discovery_status, {"error": "no smart here"})
                return
            self._send(200, {
                "token_endpoint": server.token_url,
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
                "grant_types_supported": ["client_credentials"],
                "capabilities": ["client-confidential-asymmetric"],
            })

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length).decode()
            if self.path != "/token":
                self._send(404, {"error": "not found"})
                return
            if self.headers.get("Content-Type") != "application/x-www-form-urlencoded":
                self._send(400, {"error": "invalid_request", "error_description": "not a form"})
                return
            form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
            if server.token_delay:
                time.sleep(server.token_delay)
            status, body, seen = server.verify(form)
            with server._lock:
                server.requests.append(seen or Seen(form=form, headers={}))
                server.requests[-1].headers = dict(self.headers.items())
            self._send(status, body)

    return Handler
