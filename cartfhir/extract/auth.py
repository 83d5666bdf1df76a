"""Credentials for a FHIR server: none, a static bearer token, HTTP Basic or SMART Backend Services.

``make_authenticator`` turns a site's ``auth`` config into an ``Authenticator``: the HTTP client
adds its ``headers()`` to every request and calls ``invalidate()`` once after a 401. Secrets are
read when first needed and registered with ``cartfhir.redact`` (with the tokens obtained), so they
never reach a message, a log line or a repr; failures raise AuthError.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import jwt
import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from cartfhir.config import AuthConfig, BasicAuth, BearerAuth, NoAuth, SecretRef, SmartAuth
from cartfhir.errors import AuthError
from cartfhir.redact import redact_cut
from cartfhir.redact import register as register_secret

__all__ = [
    "Authenticator",
    "BasicAuthenticator",
    "BearerAuthenticator",
    "NoAuthenticator",
    "SmartAuthenticator",
    "make_authenticator",
]

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# The SMART spec caps exp at five minutes ahead; a minute less leaves room for a server
# whose clock runs behind ours.
ASSERTION_LIFETIME = 240
DEFAULT_TOKEN_LIFETIME = 300.0  # when the token response has no usable expires_in
REFRESH_MARGIN = 60.0  # refresh this long (or 10% of the lifetime, if less) before expiry
DEFAULT_TIMEOUT = 60.0  # seconds per discovery or token request
MIN_RSA_BITS = 2048  # RFC 7518 3.3: RS* keys MUST be 2048 bits or larger
# Anything shaped like a JWT, cut out of server text before it reaches a message.
# Visible ASCII only: a space, line break or control character would break the header.
_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]+$")
_OAUTH_HINTS = {
    "invalid_client": "check that client_id {client_id!r} is registered there with the public "
                      "half of this key{kid} and algorithm {alg}",
    "invalid_scope": "the server does not grant scope {scope!r} to this client; change auth.scope "
                     "or ask the server's administrators to allow it",
    "unauthorized_client": "the client {client_id!r} is not allowed the client_credentials grant; "
                           "ask the server's administrators to enable backend services for it",
}


class Authenticator(Protocol):
    """What the HTTP client needs from any kind of credentials."""

    def headers(self) -> dict[str, str]:
        """Headers to add to a request to the FHIR server (may fetch and cache a token)."""
        ...

    def invalidate(self) -> None:
        """Forget a cached token so the next ``headers()`` gets a fresh one (after a 401)."""
        ...


class NoAuthenticator:
    """An open server: no headers."""

    def headers(self) -> dict[str, str]:
        return {}

    def invalidate(self) -> None:
        pass

    def __repr__(self) -> str:
        return "NoAuthenticator()"


def _check_token(token: str, where: str) -> str:
    # requests puts an invalid header value into its exception message; refuse it here first.
    if not _TOKEN_CHARS.match(token):
        raise AuthError(f"the bearer token from {where} contains spaces, line breaks or other "
                        "characters a token cannot have; check that it holds only the token")
    return token


class BearerAuthenticator:
    """A static bearer token, read from its SecretRef on first use and then kept."""

    def __init__(self, token: SecretRef) -> None:
        self._ref = token
        self._header: str | None = None
        self._lock = threading.Lock()

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._header is None:
                token = _check_token(self._ref.resolve().strip(), self._ref.describe())
                self._header = f"Bearer {token}"
            return {"Authorization": self._header}

    def invalidate(self) -> None:
        pass  # a static token does not get better by asking again

    def __repr__(self) -> str:
        return f"BearerAuthenticator(token from {self._ref.describe()})"


class BasicAuthenticator:
    """HTTP Basic: the username from the config, the password from its SecretRef."""

    def __init__(self, username: str, password: SecretRef) -> None:
        if ":" in username:
            raise AuthError(f"basic auth username {username!r} contains ':', which HTTP Basic "
                            "cannot carry; check auth.username")
        self._username = username
        self._ref = password
        self._header: str | None = None
        self._lock = threading.Lock()

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._header is None:
                pair = f"{self._username}:{self._ref.resolve()}"
                # the pair, so all its encodings (the header's base64 among them) are masked
                register_secret(pair)
                encoded = base64.b64encode(pair.encode()).decode("ascii")
                self._header = "Basic " + encoded
            return {"Authorization": self._header}

    def invalidate(self) -> None:
        pass

    def __repr__(self) -> str:
        return (f"BasicAuthenticator(username={self._username!r}, "
                f"password from {self._ref.describe()})")


def _redact(text: str, limit: int = 300) -> str:
    """Server text for a message: every registered secret and JWT masked, then cut."""
    return redact_cut(text.strip(), limit)  # redact masks JWTs by shape too


def _json_object(response: requests.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _lifetime(value: Any) -> float:
    """Seconds from the token response's expires_in; a default when absent or unusable."""
    if isinstance(value, bool):
        return DEFAULT_TOKEN_LIFETIME
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return DEFAULT_TOKEN_LIFETIME
    return seconds if seconds >= 0 else DEFAULT_TOKEN_LIFETIME


class SmartAuthenticator:
    """SMART Backend Services: a signed client assertion exchanged for a cached access token.

    Thread-safe: concurrent ``headers()`` calls share one token, and only one of them
    fetches a new one. ``clock`` (monotonic seconds) decides when the cached token is stale.
    """

    def __init__(self, config: SmartAuth, base_url: str, session: requests.Session, *,
                 timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._token_url: str | None = str(config.token_url) if config.token_url else None
        self._token: str | None = None
        self._refresh_at = 0.0

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                self._token = None
                token, lifetime = self._fetch_token()
                self._token = token
                self._refresh_at = self._clock() + lifetime - min(REFRESH_MARGIN, lifetime / 10)
            return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def __repr__(self) -> str:
        c = self._config
        return (f"SmartAuthenticator(client_id={c.client_id!r}, algorithm={c.algorithm}, "
                f"key from {c.private_key.describe()}, token_url={self._token_url!r}, "
                f"token={'cached' if self._token else 'none'})")

    # ---- token endpoint ---------------------------------------------------------------
    def token_url(self) -> str:
        """The token endpoint: from the config, else discovered once and remembered."""
        if self._token_url is None:
            self._token_url = self._discover()
        return self._token_url

    def _discover(self) -> str:
        url = f"{self._base_url}/.well-known/smart-configuration"
        fix = "or set auth.token_url to the server's token endpoint"
        try:
            response = self._session.get(url, headers={"Accept": "application/json"},
                                         timeout=self._timeout)
        except requests.RequestException as exc:
            raise AuthError(f"cannot reach SMART discovery at {url} ({type(exc).__name__}: "
                            f"{_redact(str(exc))}); check the network and base_url, {fix}"
                            ) from exc
        if response.status_code != 200:
            raise AuthError(f"SMART discovery at {url} answered HTTP {response.status_code}; "
                            f"the server may not publish a smart-configuration: check base_url, "
                            f"{fix}")
        data = _json_object(response)
        endpoint = data.get("token_endpoint") if data else None
        if not isinstance(endpoint, str) or urlsplit(endpoint).scheme not in ("http", "https"):
            raise AuthError(f"SMART discovery at {url} has no usable token_endpoint; {fix}")
        if urlsplit(endpoint).scheme == "http" and urlsplit(url).scheme == "https":
            # The assertion is a credential; do not let discovery downgrade it to plain HTTP.
            raise AuthError(f"SMART discovery at {url} points to a plain-http token endpoint "
                            f"{endpoint}; refusing to send credentials there. Ask the server's "
                            "administrators to fix it, or set auth.token_url")
        algs = data.get("token_endpoint_auth_signing_alg_values_supported") if data else None
        if isinstance(algs, list) and self._config.algorithm not in algs:
            log.warning("SMART discovery at %s lists signing algorithms %s, not %s; the token "
                        "request may be refused (see auth.algorithm)",
                        url, ", ".join(map(str, algs)), self._config.algorithm)
        log.debug("SMART token endpoint for %s: %s", self._base_url, endpoint)
        return endpoint

    def _fetch_token(self) -> tuple[str, float]:
        token_url = self.token_url()
        c = self._config
        form = {
            "grant_type": "client_credentials",
            "scope": c.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self._assertion(token_url),
        }
        try:
            # No redirects: the assertion goes to the endpoint it was made for, nowhere else.
            response = self._session.post(token_url, data=form,
                                          headers={"Accept": "application/json"},
                                          timeout=self._timeout, allow_redirects=False)
        except requests.RequestException as exc:
            # Not chained: the exception holds the request, and the request holds the assertion.
            raise AuthError(f"cannot reach the token endpoint {token_url} "
                            f"({type(exc).__name__}: {_redact(str(exc))}); check the network "
                            "and auth.token_url") from None
        data = _json_object(response)
        if response.status_code != 200:
            raise AuthError(self._refusal(token_url, response.status_code, data))
        if data is None:
            raise AuthError(f"the token endpoint {token_url} answered HTTP 200 without a JSON "
                            "object; it does not look like an OAuth token endpoint (check "
                            "auth.token_url)")
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError(f"the token endpoint {token_url} answered without an access_token; "
                            "the server's OAuth setup for this client looks broken")
        token_type = data.get("token_type")
        if isinstance(token_type, str) and token_type.lower() != "bearer":
            raise AuthError(f"the token endpoint {token_url} issued a {token_type!r} token; "
                            "cartfhir can only use bearer tokens")
        _check_token(token, f"the token endpoint {token_url}")
        register_secret(token)
        lifetime = _lifetime(data.get("expires_in"))
        log.debug("got an access token from %s for scope %r, valid %.0f s",
                  token_url, c.scope, lifetime)
        return token, lifetime

    def _refusal(self, token_url: str, status: int, data: dict[str, Any] | None) -> str:
        c = self._config
        error = data.get("error") if data else None
        described = data.get("error_description") if data else None
        if isinstance(error, str) and error:
            detail = _redact(error + (f": {described}" if isinstance(described, str) else ""))
        else:
            detail = "no OAuth error in the answer"
        hint = _OAUTH_HINTS.get(error if isinstance(error, str) else "",
                                "check auth.client_id, auth.private_key, auth.key_id and "
                                "auth.scope against the client's registration there")
        hint = hint.format(client_id=c.client_id, scope=c.scope, alg=c.algorithm,
                           kid=f" (kid {c.key_id!r})" if c.key_id else "")
        return (f"the token endpoint {token_url} refused the token request with HTTP {status} "
                f"({detail}); {hint}")

    # ---- client assertion -------------------------------------------------------------
    def _assertion(self, token_url: str) -> str:
        c = self._config
        now = int(time.time())
        claims = {
            "iss": c.client_id,
            "sub": c.client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": secrets.token_urlsafe(24),  # servers refuse a jti they have seen
        }
        header = {"typ": "JWT", **({"kid": c.key_id} if c.key_id else {})}
        try:
            assertion = jwt.encode(claims, self._private_key(), algorithm=c.algorithm,
                                   headers=header)
            register_secret(assertion)
            return assertion
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise AuthError(f"cannot sign the client assertion with {c.algorithm} "
                            f"({type(exc).__name__}); check auth.private_key and "
                            "auth.algorithm") from None

    def _private_key(self) -> PrivateKeyTypes:
        """The PEM key, read anew for each assertion so a rotated key file is picked up."""
        ref, alg = self._config.private_key, self._config.algorithm
        pem = ref.resolve()
        if "\\n" in pem and "\n" not in pem:
            pem = pem.replace("\\n", "\n")  # a PEM squeezed into one env var line
        try:
            key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
        except TypeError:
            raise AuthError(f"the private key in {ref.describe()} is encrypted; cartfhir needs "
                            "an unencrypted PEM key (decrypt it with 'openssl pkey -in in.pem "
                            "-out key.pem' and keep that file readable only by this service)"
                            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise AuthError(f"{ref.describe()} does not hold a PEM private key that can be "
                            "loaded; expected a '-----BEGIN PRIVATE KEY-----' (or RSA/EC "
                            "PRIVATE KEY) block") from None
        if alg == "RS384":
            if not isinstance(key, rsa.RSAPrivateKey):
                raise AuthError(f"auth.algorithm RS384 needs an RSA private key, but "
                                f"{ref.describe()} holds a {_key_kind(key)} key; use an RSA key "
                                "or set auth.algorithm to match the key (ES384 for EC P-384)")
            if key.key_size < MIN_RSA_BITS:
                raise AuthError(f"the RSA key in {ref.describe()} has {key.key_size} bits; RS384 "
                                f"needs at least {MIN_RSA_BITS}. Generate a new key pair and "
                                "register its public half with the server")
        elif not (isinstance(key, ec.EllipticCurvePrivateKey)
                  and isinstance(key.curve, ec.SECP384R1)):
            raise AuthError(f"auth.algorithm ES384 needs an EC P-384 (secp384r1) private key, "
                            f"but {ref.describe()} holds a {_key_kind(key)} key; use a P-384 "
                            "key or set auth.algorithm to match the key (RS384 for RSA)")
        return key


def _key_kind(key: PrivateKeyTypes) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"{key.key_size}-bit RSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    return type(key).__name__.lstrip("_").removesuffix("PrivateKey") or "other"


def make_authenticator(config: AuthConfig, base_url: str, session: requests.Session, *,
                       timeout: float = DEFAULT_TIMEOUT) -> Authenticator:
    """The authenticator for a site's ``auth`` config.

    ``session`` is the caller's configured session (TLS, proxies, User-Agent); SMART discovery
    and token requests go through it. Nothing is read or fetched until the first ``headers()``.
    """
    if isinstance(config, NoAuth):
        return NoAuthenticator()
    if isinstance(config, BearerAuth):
        return BearerAuthenticator(config.token)
    if isinstance(config, BasicAuth):
        return BasicAuthenticator(config.username, config.password)
    if isinstance(config, SmartAuth):
        return SmartAuthenticator(config, base_url, session, timeout=timeout)
    raise AuthError(f"unknown auth kind {getattr(config, 'kind', config)!r}; "
                    "use none, bearer, basic or smart")
