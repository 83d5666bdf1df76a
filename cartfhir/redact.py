"""Secrets out of every message, log line and stored text: one registry, one ``redact``.

Every secret the process comes to hold is registered here the moment it is read or
received: a ``SecretRef``'s value, HTTP Basic's ``user:pass``, a SMART access token
and client assertion, a secret-looking query value of a URL the client requests.
``redact`` replaces each registered value, and its encoded forms (``_forms``: URL,
JSON, HTML, hex, base64 variants), with ``***`` (in any letter case, from
``MIN_CASELESS`` characters on); it also masks credentials by shape (``Bearer …``,
JWTs, ``user:pass@`` in URLs, ``?token=…`` query values), for the ones never
registered. Every writer of messages calls it: the run manifest, the request
manifest, the log formatter, the CLI's error printer. ``mask_url`` does the same for
one URL that is stored or shown.
"""

from __future__ import annotations

import base64
import html
import json
import re
import threading
from functools import lru_cache
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
# Every registered form, with its casefolded text for the quick presence check.
_secrets: dict[str, str] = {}
_URLSAFE = str.maketrans("+/", "-_")


def _base64_forms(data: bytes) -> set[str]:
    """``data`` in standard and URL-safe base64, padded and not, and as it reads inside a
    longer encoded blob: at each of the three byte offsets it can start at, the
    characters that only its own bytes decide."""
    encoded = base64.b64encode(data).decode("ascii")
    forms = {encoded, encoded.rstrip("=")}
    for offset in range(3):
        shifted = base64.b64encode(b"\0" * offset + data).decode("ascii")
        forms.add(shifted[-(-4 * offset // 3):8 * (offset + len(data)) // 6])
    return forms | {f.translate(_URLSAFE) for f in forms}


def _forms(value: str) -> set[str]:
    """The ways a secret can show up in text, worked out once when it is registered.

    As is; URL-quoted (with and without '/', '+' for spaces, quoted twice); JSON- and
    HTML-escaped; hex; base64 of the value and of the ``Bearer`` header carrying it,
    in every variant ``_base64_forms`` lists. Hex and base64 in other letter cases are
    caught by matching forms of ``MIN_CASELESS`` characters or more in any case.
    """
    forms: set[str] = set()
    for text in {value, value.strip()}:
        quoted = quote(text, safe="")
        forms |= {text, quoted, quote(text), quote_plus(text), quote(quoted, safe=""),
                  quote_plus(quote_plus(text)), json.dumps(text)[1:-1],
                  json.dumps(text)[1:-1].replace("/", "\\/"), html.escape(text),
                  html.escape(text, quote=False), text.encode().hex()}
        forms |= _base64_forms(text.encode()) | _base64_forms(f"Bearer {text}".encode())
    return {f for f in forms if len(f) >= MIN_SECRET}


def register(value: str | None) -> None:
    """Remember a secret value so ``redact`` removes it (and its encoded forms) from text."""
    if not value or len(value.strip()) < MIN_SECRET:
        return
    forms = _forms(value)
    with _lock:
        _secrets.update((f, f.casefold()) for f in forms if f not in _secrets)


def register_url(url: str) -> None:
    """Register the password and the secret-looking query values of a URL about to be used."""
    parts = urlsplit(url)
    register(parts.password)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if SECRET_PARAM.search(name) and not _NOT_HUNTED.match(name):
            register(value)


@lru_cache(maxsize=256)
def _pattern(forms: frozenset[str]) -> re.Pattern[str]:
    # Longest first, so a secret is masked whole before any part of it.
    return re.compile("|".join(
        f"(?i:{re.escape(s)})" if len(s) >= MIN_CASELESS else re.escape(s)
        for s in sorted(forms, key=lambda s: (-len(s), s))))


def redact(text: str) -> str:
    """``text`` with every registered secret and every credential-shaped value masked.

    The forms present are found by plain substring search first (casefolded, which
    finds at least what the case-insensitive match does); the regular expression runs
    only when some are, and only over those: one over every form would cost seconds
    per megabyte of text.
    """
    if not text:
        return text
    folded = text.casefold()
    with _lock:
        known = list(_secrets.items())
    present = frozenset(form for form, fold in known
                        if (fold in folded if len(form) >= MIN_CASELESS else form in text))
    if present:
        text = _pattern(present).sub(MASK, text)
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
