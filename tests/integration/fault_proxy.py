"""A fault-injecting HTTP proxy on loopback, in front of a real FHIR server.

Requests are forwarded unchanged (the Host header too, so the server builds its
next links with the proxy's address). ``rules`` decide, per request, whether
to inject a fault instead: 429 with Retry-After, 503, a dropped connection, a
slow answer, or a body cut short. Each rule fires a bounded number of times,
and everything the proxy did is recorded in ``log`` for the test to check.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Rule:
    """Inject ``fault`` into up to ``times`` requests whose path+query ``matches``."""

    matches: Callable[[str, str], bool]  # (method, path with query) -> bool
    fault: str  # "429" | "503" | "drop" | "slow" | "truncate"
    times: int = 1
    retry_after: str = "1"
    delay: float = 2.0
    fired: int = 0


@dataclass
class FaultProxy:
    upstream: str  # e.g. http://127.0.0.1:8080
    rules: list[Rule] = field(default_factory=list)
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, what)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def base_url(self, path: str = "/fhir") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> FaultProxy:
        proxy = self
        upstream = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                rule = proxy._pick(self.command, self.path)
                what = rule.fault if rule else "pass"
                proxy.log.append((self.command, self.path, what))
                if rule and rule.fault in ("429", "503"):
                    body = b'{"resourceType":"OperationOutcome","issue":[{"severity":"error",' \
                           b'"code":"transient","diagnostics":"injected by the fault proxy"}]}'
                    self.send_response(int(rule.fault))
                    self.send_header("Retry-After", rule.retry_after)
                    self.send_header("Content-Type", "application/fhir+json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if rule and rule.fault == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if rule and rule.fault == "slow":
                    time.sleep(rule.delay)
                length = int(self.headers.get("Content-Length") or 0)
                payload = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "keep-alive", "accept-encoding")}
                conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
                try:
                    conn.request(self.command, self.path, body=payload, headers=headers)
                    answer = conn.getresponse()
                    body = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length",
                                           "content-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if rule and rule.fault == "truncate":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_PUT = _handle  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _pick(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.fired < rule.times and rule.matches(method, path):
                    rule.fired += 1
                    return rule
        return None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def faults(self) -> list[str]:
        return [what for _, _, what in self.log if what != "pass"]
