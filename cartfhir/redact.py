"""Secrets out of every message, log line and stored text: one registry, one ``redact``.

Every secret the process comes to hold is registered here the moment it is read or
received: a ``SecretRef``'s value, the base64 form of HTTP Basic credentials, a SMART
access token and client assertion, a secret-looking query value of a URL the client
requests. ``redact`` replaces each registered value, and its URL-, JSON- and
base64-encoded forms, with ``***`` (in any letter case, from ``MIN_CASELESS``
characters on); it also masks credentials by shape (``Bearer …``,
JWTs, ``user:pass@`` in URLs, ``?token=…`` query values), for the ones never
registered. Every writer of messages calls it: the run manifest, the request
manifest, the log formatter, the CLI's error printer. ``mask_url`` does the same for
one URL that is stored or shown.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

__all__ = ["MASK", "mask_url", "redact", "redact_cut", "register", "register_url"]

MASK = "***"
# Shorter values would mask ordinary words everywhere; no real credential is this short.
MIN_SECRET = 4
# From this length a registered form is also masked in any letter case (servers echo
# credentials upper-cased); a shorter one only as is, or it would mask ordinary words.
MIN_CASELESS = 8
# Query parameters whose values are masked in any URL that is stored or shown.
SECRET_PARAM = re.compile(
    r"(token|secret|password|passwd|key|code|signature|sig|auth|credential)", re.I)
# Of those, 'code' is also FHIR's everyday search parameter (code=http://loinc.org|718-7):
# masked in a URL, but not hunted for in free text, where it would garble query names.
_NOT_HUNTED = re.compile(r"^_?code$", re.I)
_SHAPES = (
    # An Authorization value: the scheme stays, the credential goes.
    (re.compile(r"\b(Bearer|Basic) (?=[^\s]*[0-9A-Z+/=._-])[A-Za-z0-9._~+/-]{8,}=*"),
     rf"\1 {MASK}"),
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"), MASK),  # a JWT
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@]+@", re.I), rf"\1{MASK}@"),  # user:pass@
    (re.compile(r"([?&;][\w.-]*(?:token|secret|password|passwd|key|signature|sig|auth|"
                r"credential)[\w.-]*=)[^&\s\"'<>#]+", re.I), rf"\1{MASK}"),
)

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def _forms(value: str) -> set[str]:
    """The ways a secret can show up in text: as is, URL-quoted, JSON-escaped, base64."""
    forms = {value, value.strip(), quote(value, safe=""), quote_plus(value),
             json.dumps(value)[1:-1], base64.b64encode(value.encode()).decode("ascii")}
    return {f for f in forms if len(f) >= MIN_SECRET}


def register(value: str | None) -> None:
    """Remember a secret value so ``redact`` removes it (and its encoded forms) from text."""
    if not value or len(value.strip()) < MIN_SECRET:
        return
    global _pattern
    forms = _forms(value)
    with _lock:
        if not forms <= _secrets:
            _secrets.update(forms)
            _pattern = None


def register_url(url: str) -> None:
    """Register the password and the secret-looking query values of a URL about to be used."""
    parts = urlsplit(url)
    register(parts.password)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if SECRET_PARAM.search(name) and not _NOT_HUNTED.match(name):
            register(value)


def _compiled() -> re.Pattern[str] | None:
    global _pattern
    with _lock:
        if _pattern is None and _secrets:
            # Longest first, so a secret is masked whole before any part of it.
            _pattern = re.compile("|".join(
                f"(?i:{re.escape(s)})" if len(s) >= MIN_CASELESS else re.escape(s)
                for s in sorted(_secrets, key=len, reverse=True)))
        return _pattern


def redact(text: str) -> str:
    """``text`` with every registered secret and every credential-shaped value masked."""
    if not text:
        return text
    pattern = _compiled()
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for shape, replacement in _SHAPES:
        text = shape.sub(replacement, text)
    return text


def mask_url(url: str) -> str:
    """The URL with credentials and secret-looking query values replaced by ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@" + netloc.rsplit("@", 1)[1]
    query = urlencode(
        [(k, MASK if SECRET_PARAM.search(k) else v)
         for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe=",|:/*",
    )
    return redact(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))


def redact_cut(text: str, limit: int, tail: str = "...") -> str:
    """``text`` redacted, then cut to ``limit`` characters (``tail`` marks a cut).

    Redacting after cutting would miss a secret straddling the cut: its first
    characters no longer match it, so they would stay in the text.
    """
    text = redact(text)
    return text if len(text) <= limit else text[:limit] + tail
