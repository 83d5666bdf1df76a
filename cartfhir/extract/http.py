"""The one class that talks HTTP to a FHIR server: policy here, I/O in requests.

``FhirClient`` holds the site's network policy: TLS, timeouts, the User-Agent,
authentication, which hosts a URL may point to, and retries. Retries use
exponential backoff with jitter, honour ``Retry-After`` (capped), and spend from
one budget per client. Every failure raises ``FhirServerError`` carrying the
status, the URL with secrets masked, and the server's OperationOutcome text.
Unit tests mount a fake ``HTTPAdapter`` through ``transport``.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter

from cartfhir import __version__
from cartfhir.config import AuthConfig, Http, Tls
from cartfhir.errors import AuthError, FhirServerError, TlsError
from cartfhir.extract.auth import Authenticator, make_authenticator
from cartfhir.redact import MASK, mask_url, redact_cut, register_url

__all__ = ["MASK", "FhirClient", "JsonBody", "mask_url", "outcome_text", "parse_retry_after"]

log = logging.getLogger(__name__)

USER_AGENT = f"cartfhir/{__version__} (FHIR cohort extraction; python-requests)"
# Transient answers worth another try; everything else 4xx/5xx is final.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Redirects are followed here, not by requests, so each hop passes the same host check
# as a next link; 303 turns the request into a GET, the others keep the method.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
# Largest JSON answer read into memory (a search page, a manifest): far above a page of a
# few thousand resources, well below what would exhaust the machine.
MAX_JSON_BYTES = 512 * 2**20
ERROR_BODY_BYTES = 65536  # of an error answer, read for its OperationOutcome
BACKOFF_BASE = 1.0  # seconds before the first retry (before jitter)
BACKOFF_MAX = 60.0
TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError)
def outcome_text(body: bytes) -> str | None:
    """Diagnostics of an OperationOutcome body (or None when it is not one)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("resourceType") != "OperationOutcome":
        return None
    texts = []
    for issue in data.get("issue", []):
        text = issue.get("diagnostics") or issue.get("details", {}).get("text") or issue.get("code")
        if text:
            texts.append(f"{issue.get('severity', 'error')}: {text}")
    return "; ".join(texts) or None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


@dataclass
class ClientStats:
    """Counters for the run manifest and the closing summary (thread-safe)."""

    requests: int = 0
    retries: int = 0
    bytes: int = 0
    waited: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


@dataclass(frozen=True)
class JsonBody:
    """A decoded JSON answer and the server's own clock (the Date header)."""

    data: dict[str, Any]
    status: int
    date: str | None
    url: str = ""  # the URL that answered, after redirects (not masked)
    # The body as sent (a key it repeats, ``data`` keeps once); not in repr: patient data.
    raw: bytes = field(default=b"", repr=False)


class _SiteSession(requests.Session):
    """A session whose TLS settings come from the site's config and nothing else.

    ``requests`` lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` override a session's
    ``verify``; a configured CA bundle (or an explicit, logged opt-out) must win over
    the environment. Without either, the environment and certifi decide as usual.
    Proxies from ``HTTPS_PROXY``/``NO_PROXY`` are still honoured (``trust_env``).
    """

    def __init__(self, tls: Tls) -> None:
        super().__init__()
        self._pinned_verify: bool | str | None = None
        if tls.insecure_skip_verify:
            self._pinned_verify = False
        elif tls.ca_bundle is not None:
            self._pinned_verify = str(tls.ca_bundle)
        if self._pinned_verify is not None:
            self.verify = self._pinned_verify  # what the session says matches what it does
        if tls.client_cert is not None:
            self.cert = (str(tls.client_cert), str(tls.client_key)) if tls.client_key \
                else str(tls.client_cert)

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[no-untyped-def]
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self._pinned_verify is not None:
            settings["verify"] = self._pinned_verify
        return settings


class FhirClient:
    """GET (and kick-off/DELETE) requests to one FHIR server, with the site's policy."""

    def __init__(
        self,
        base_url: str,
        http: Http,
        auth: AuthConfig,
        *,
        transport: HTTPAdapter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.http = http
        self.stats = ClientStats()
        self._sleep = sleep
        self._origins = {origin(self.base_url)}
        for host in http.allowed_hosts:
            name, _, port = host.partition(":")
            for scheme in ("https", "http"):
                default = 443 if scheme == "https" else 80
                self._origins.add((scheme, name.lower(), int(port) if port else default))
        self.session = _SiteSession(http.tls)
        adapter = transport or HTTPAdapter(pool_connections=http.max_connections,
                                           pool_maxsize=http.max_connections, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": USER_AGENT,
                                     "Accept": "application/fhir+json",
                                     "Accept-Encoding": "gzip, deflate"})
        if http.tls.insecure_skip_verify:
            log.warning("TLS certificate verification is OFF for %s (tls.insecure_skip_verify); "
                        "traffic can be intercepted", mask_url(self.base_url))
        self.auth: Authenticator = make_authenticator(auth, self.base_url, self.session,
                                                      timeout=http.timeout)

    # ---- URLs -------------------------------------------------------------------------
    def url(self, path_or_url: str, params: Mapping[str, Any] | None = None) -> str:
        """An absolute URL under the base (a full URL is checked and kept as given)."""
        url = urljoin(self.base_url, path_or_url)
        if params:
            sep = "&" if urlsplit(url).query else "?"
            url += sep + urlencode(
                [(k, v) for k, values in params.items()
                 for v in (values if isinstance(values, list | tuple) else [values])],
                safe=",|:/*")
        return url

    def check_url(self, url: str, via: str = "pointed to") -> None:
        """Refuse a URL on another scheme, host or port than the server's (token safety)."""
        if origin(url) not in self._origins:
            raise FhirServerError(
                f"the server {via} {mask_url(url)}, which is not on {mask_url(self.base_url)} "
                "(different scheme, host or port); refusing to send credentials there. If that "
                "host is legitimate, add it to http.allowed_hosts",
                url=mask_url(url))

    # ---- requests ---------------------------------------------------------------------
    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                stream: bool = False, auth: bool = True,
                ok: Callable[[requests.Response], bool] | None = None) -> requests.Response:
        """Send with retries; return a response whose status is acceptable (``ok``, or 2xx).

        Redirects are followed here (at most ``MAX_REDIRECTS``), each target checked like a
        next link; the returned response's ``url`` is the URL that finally answered.
        """
        self.check_url(url)
        register_url(url)  # a token in the URL is a secret from now on
        attempt, refreshed, hops = 0, False, 0
        while True:
            send_headers = dict(headers or {})
            if auth:
                send_headers.update(self.auth.headers())
            started = time.monotonic()
            try:
                response = self.session.request(method, url, headers=send_headers,
                                                timeout=self.http.timeout, stream=stream,
                                                allow_redirects=False)
            except requests.exceptions.SSLError as exc:  # retrying cannot fix a certificate
                self.stats.add(requests=1)
                raise TlsError(
                    f"TLS with {mask_url(url)} failed: {exc}. If the server's certificate comes "
                    "from a hospital CA, set http.tls.ca_bundle to that CA's PEM file; if it "
                    "asks for a client certificate, set http.tls.client_cert and client_key",
                    url=mask_url(url)) from None
            except TRANSPORT_ERRORS as exc:  # dropped, timed out, or a body cut short
                self.stats.add(requests=1)
                attempt = self._retry(url, attempt, f"{type(exc).__name__}", None)
                continue
            self.stats.add(requests=1)
            log.debug("%s %s -> %s (%.2f s)", method, mask_url(url), response.status_code,
                      time.monotonic() - started)
            if response.status_code in REDIRECT_STATUSES and response.headers.get("Location"):
                target = urljoin(url, response.headers["Location"])
                response.close()
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise FhirServerError(
                        f"{method} {mask_url(url)} was redirected more than {MAX_REDIRECTS} "
                        "times; the server is misconfigured", status=response.status_code,
                        url=mask_url(url))
                self.check_url(target, via=f"redirected {mask_url(url)} to")
                log.info("%s %s redirected to %s", method, mask_url(url), mask_url(target))
                method = "GET" if response.status_code == 303 else method
                url = target
                register_url(url)
                continue
            if response.status_code == 401 and auth and not refreshed:
                refreshed = True  # one token refresh, then the 401 is final
                self.auth.invalidate()
                response.close()
                continue
            if (ok(response) if ok else response.ok):
                return response
            if response.status_code in RETRY_STATUSES:
                wait = parse_retry_after(response.headers.get("Retry-After"))
                response.close()
                attempt = self._retry(url, attempt, f"HTTP {response.status_code}", wait)
                continue
            raise self._error(method, url, response)

    def get_json(self, url: str, headers: Mapping[str, str] | None = None) -> JsonBody:
        """GET a JSON body; a body cut short or not JSON is retried like a dropped connection."""
        attempt = 0
        while True:
            response = self.request("GET", url, headers=headers, stream=True)
            try:
                body = self.read_body(response, url)
            except TRANSPORT_ERRORS as exc:
                attempt = self._retry(url, attempt, f"body cut short ({type(exc).__name__})", None)
                continue
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                attempt = self._retry(url, attempt, f"body is not JSON ({exc})", None)
                continue
            if not isinstance(data, dict):
                raise FhirServerError(f"{mask_url(url)} answered with JSON that is not an object",
                                      status=response.status_code, url=mask_url(url))
            return JsonBody(data=data, status=response.status_code,
                            date=response.headers.get("Date"), url=response.url or url,
                            raw=body)

    def read_body(self, response: requests.Response, url: str,
                  limit: int | None = None) -> bytes:
        """The whole body of a streamed response, refused past ``limit`` bytes (decoded)."""
        limit = MAX_JSON_BYTES if limit is None else limit
        parts, size = [], 0
        try:
            for block in response.iter_content(1 << 20):
                size += len(block)
                if size > limit:
                    raise FhirServerError(
                        f"{mask_url(url)} answered with more than {limit:,} bytes; refusing to "
                        "read it into memory (lower page_size, or ask the server's "
                        "administrators why its answers are this large)",
                        status=response.status_code, url=mask_url(url))
                parts.append(block)
        finally:
            response.close()
        self.stats.add(bytes=size)
        return b"".join(parts)

    def _retry(self, url: str, attempt: int, why: str, retry_after: float | None) -> int:
        """Sleep before the next try, or raise once tries or the budget run out."""
        if attempt >= self.http.max_retries:
            raise FhirServerError(
                f"giving up on {mask_url(url)} after {attempt + 1} tries: {why}. The server or "
                "network is failing; try again later or raise http.max_retries",
                url=mask_url(url))
        backoff = min(BACKOFF_MAX, BACKOFF_BASE * 2**attempt) * random.uniform(0.5, 1.0)
        wait = backoff if retry_after is None else min(max(retry_after, 0.0),
                                                       self.http.retry_after_cap)
        if self.stats.waited + wait > self.http.retry_budget:
            raise FhirServerError(
                f"giving up on {mask_url(url)}: {why}, and the retry budget of "
                f"{self.http.retry_budget:.0f} s for this run is spent (http.retry_budget)",
                url=mask_url(url))
        log.info("retrying %s in %.1f s (%s)", mask_url(url), wait, why)
        self.stats.add(retries=1, waited=wait)
        self._sleep(wait)
        return attempt + 1

    def _error(self, method: str, url: str, response: requests.Response) -> FhirServerError:
        try:
            body = next(response.iter_content(ERROR_BODY_BYTES), b"")[:ERROR_BODY_BYTES]
        except TRANSPORT_ERRORS:
            body = b""
        finally:
            response.close()
        outcome = outcome_text(body)
        detail = outcome or (redact_cut(body.decode("utf-8", "replace").strip(), 300, "")
                             or response.reason)
        status = response.status_code
        if status in (401, 403):
            raise AuthError(f"{method} {mask_url(url)} was refused with HTTP {status}: {detail}. "
                            "Check the site's auth settings and the client's permissions")
        return FhirServerError(f"{method} {mask_url(url)} failed with HTTP {status}: {detail}",
                               status=status, url=mask_url(url), outcome=outcome)

    def close(self) -> None:
        self.session.close()
