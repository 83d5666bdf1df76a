"""A stub FHIR server for unit tests: a function from request to response, no sockets.

``StubAdapter`` is mounted into ``FhirClient`` as its transport; ``FakeFhir``
serves a small in-memory store with real paging, totals and _lastUpdated, and
lets a test inject faults per request.
"""

from __future__ import annotations

import itertools
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter

Handler = Callable[[requests.PreparedRequest], tuple[int, dict[str, str], bytes] | Exception]


class StubAdapter(HTTPAdapter):
    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.requests.append(request)
        result = self.handler(request)
        if isinstance(result, Exception):
            raise result
        status, headers, body = result
        response = requests.Response()
        response.status_code = status
        response.headers.update(headers)
        response._content = body
        response._content_consumed = True
        response.url = request.url or ""
        response.request = request
        response.reason = "stub"
        return response


def json_response(data: Any, status: int = 200, **headers: str) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/fhir+json", **headers}, orjson.dumps(data)


def outcome(text: str, status: int) -> tuple[int, dict, bytes]:
    return json_response({"resourceType": "OperationOutcome",
                          "issue": [{"severity": "error", "code": "processing",
                                     "diagnostics": text}]}, status)


class FakeFhir:
    """An in-memory FHIR server: metadata, Group, searches with paging and totals."""

    def __init__(self, base: str = "http://fhir.test/fhir", resources: list[dict] | None = None,
                 now: str = "2026-01-01T00:00:00Z") -> None:
        self.base = base.rstrip("/")
        self.resources = resources or []
        self.now = now
        self.lie_about_total = 0  # announce this many more than exist
        self.delay = 0.0  # seconds before each answer when served over HTTP
        self.served = 0  # answers sent over HTTP
        self.faults: list[Callable[[requests.PreparedRequest], Any]] = []
        self.searches: list[dict[str, list[str]]] = []
        self._pages: dict[str, list[dict]] = {}
        # Paging tokens are never reused, not even after forget_pages(): a reused token
        # would hand a search that is still paging the hits of another search.
        self._tokens = itertools.count()
        # Bulk export: status polls answered 202 before the manifest, extra manifest parts.
        self.export_polls = 2
        self.export_kickoffs: list[dict[str, list[str]]] = []
        self.export_errors: list[dict] = []
        self.export_deleted: list[str] = []  # "Type/id"
        self.export_requires_token = False
        self.deleted_status: list[str] = []
        self._export_files: dict[str, bytes] = {}
        self._polls = 0

    def __call__(self, request: requests.PreparedRequest):
        for fault in list(self.faults):
            result = fault(request)
            if result is not None:
                return result
        parts = urlsplit(request.url or "")
        path = parts.path[len(urlsplit(self.base).path):].strip("/")
        query = parse_qs(parts.query)
        if path == "metadata":
            return json_response({"resourceType": "CapabilityStatement", "status": "active",
                                  "fhirVersion": "4.0.1",
                                  "software": {"name": "FakeFhir", "version": "1.0"}})
        if path.endswith("$export"):
            return self._kickoff(query, request)
        if path.startswith("bulkstatus/"):
            if getattr(request, "method", "GET") == "DELETE":
                self.deleted_status.append(path)
                return 202, {}, b""
            return self._status()
        if path.startswith("bulkfiles/"):
            body = self._export_files.get(path.split("/", 1)[1])
            if body is None:
                return outcome("no such file", 404)
            return 200, {"Content-Type": "application/fhir+ndjson"}, body
        if path == "page":
            token = query["token"][0]
            if token not in self._pages:
                return outcome("search expired", 410)
            return self._page(token, int(query["offset"][0]), int(query["count"][0]))
        if "/" in path:
            rtype, rid = path.split("/", 1)
            for r in self.resources:
                if r["resourceType"] == rtype and r["id"] == rid:
                    return json_response(r)
            return outcome(f"{rtype}/{rid} not found", 404)
        return self._search(path, query)

    def _search(self, rtype: str, query: dict[str, list[str]]):
        self.searches.append({"_type": [rtype], **query})
        hits = [r for r in self.resources if r["resourceType"] == rtype]
        if "_id" in query:
            ids = set(query["_id"][0].split(","))
            hits = [r for r in hits if r["id"] in ids]
        if "patient" in query:
            ids = {p.split("/")[-1] for p in query["patient"][0].split(",")}
            hits = [r for r in hits if r.get("subject", {}).get("reference", "").split("/")[-1]
                    in ids]
        if "code" in query:
            codes = set(query["code"][0].split(","))
            hits = [r for r in hits if any(f"{c.get('system')}|{c.get('code')}" in codes
                                           for c in r.get("code", {}).get("coding", []))]
        if "_lastUpdated" in query:
            since = query["_lastUpdated"][0].removeprefix("gt")
            hits = [r for r in hits if r["meta"]["lastUpdated"] > since]
        token = f"t{next(self._tokens)}"
        self._pages[token] = hits
        return self._page(token, 0, int(query.get("_count", ["10"])[0]))

    def _page(self, token: str, offset: int, count: int):
        hits = self._pages[token]
        chunk = hits[offset:offset + count]
        bundle: dict[str, Any] = {
            "resourceType": "Bundle", "type": "searchset", "meta": {"lastUpdated": self.now},
            "total": len(hits) + self.lie_about_total,
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in chunk],
            "link": [],
        }
        if offset + count < len(hits):
            bundle["link"].append({"relation": "next", "url": (
                f"{self.base}/page?token={token}&offset={offset + count}&count={count}")})
        return json_response(bundle)

    def forget_pages(self) -> None:
        self._pages.clear()

    def _kickoff(self, query: dict[str, list[str]], request: Any):
        if request.headers.get("Prefer") != "respond-async":
            return outcome("Prefer: respond-async is required", 400)
        self.export_kickoffs.append(query)
        self._polls = 0
        types = query.get("_type", [""])[0].split(",")
        since = query.get("_since", [None])[0]
        self._export_files = {}
        output = []
        for rtype in types:
            hits = [r for r in self.resources if r["resourceType"] == rtype
                    and (since is None or r["meta"]["lastUpdated"] > since)]
            if hits:
                name = f"{rtype}.ndjson"
                self._export_files[name] = b"\n".join(orjson.dumps(r) for r in hits) + b"\n"
                output.append({"type": rtype, "url": f"{self.base}/bulkfiles/{name}",
                               "count": len(hits)})
        error = []
        if self.export_errors:
            self._export_files["errors.ndjson"] = b"\n".join(
                orjson.dumps(e) for e in self.export_errors)
            error.append({"type": "OperationOutcome",
                          "url": f"{self.base}/bulkfiles/errors.ndjson"})
        deleted = []
        if self.export_deleted:
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"request": {"method": "DELETE", "url": ref}} for ref in self.export_deleted]}
            self._export_files["deleted.ndjson"] = orjson.dumps(bundle)
            deleted.append({"type": "Bundle", "url": f"{self.base}/bulkfiles/deleted.ndjson"})
        self._manifest = {"transactionTime": self.now, "request": "$export",
                          "requiresAccessToken": self.export_requires_token,
                          "output": output, "error": error, "deleted": deleted}
        job = f"{self.base}/bulkstatus/job{len(self.export_kickoffs)}"
        return 202, {"Content-Location": job}, b""

    def _status(self):
        self._polls += 1
        if self._polls <= self.export_polls:
            return 202, {"X-Progress": f"step {self._polls}", "Retry-After": "3"}, b""
        return json_response(self._manifest)


class FakeRequest:
    """What FakeFhir reads of a request (URL and headers), for serving it over real HTTP."""

    def __init__(self, url: str, headers: dict[str, str], method: str = "GET") -> None:
        self.url = url
        self.headers = headers
        self.method = method


def answer(handler: Any, fake: Callable[[Any], tuple[int, dict[str, str], bytes]],
           url: str, method: str = "GET") -> None:
    """Ask ``fake`` about ``url``; write its (status, headers, body) to an http.server handler."""
    status, headers, body = fake(FakeRequest(url, dict(handler.headers.items()), method))
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    if "Content-Length" not in headers:  # a test may promise more than it sends
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def serve(fake: FakeFhir, tls: ssl.SSLContext | None = None):
    """Serve ``fake`` on a loopback port over real HTTP (HTTPS given ``tls``).

    Sets ``fake.base`` to ``server.base_url``; the caller calls ``server.shutdown()``
    when done.
    """
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"
            if fake.delay:
                import time

                time.sleep(fake.delay)
            fake.served += 1
            answer(self, fake, url)

        def do_DELETE(self) -> None:  # noqa: N802 (bulk jobs are cancelled with DELETE)
            fake.served += 1
            answer(self, fake, f"http://127.0.0.1:{self.server.server_address[1]}{self.path}",
                   "DELETE")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    server.base_url = f"{scheme}://127.0.0.1:{server.server_address[1]}/fhir"  # type: ignore[attr-defined]
    fake.base = server.base_url  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
