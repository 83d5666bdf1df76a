"""Checking one NDJSON line: is it a FHIR resource we can land, and if not, why.

``check_line`` returns ``Accepted`` (the parsed resource and its identity and
version) or ``Rejected`` (a reason a data engineer can act on). It never raises
for bad input. 'structural' checks JSON (no duplicate keys, at most ``MAX_DEPTH``
levels), resourceType, id and meta; 'full' also validates the resource against
the R4B element definitions (``fhir_validate``: the decisions of the
fhir.resources R4B models, where those follow the specification, about ten
times faster).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import orjson

from cartfhir.extract.fhir_validate import (
    is_resource_type,
    json_type_name,
    validation_problem,
)
from cartfhir.redact import redact

if TYPE_CHECKING:
    from fhir_core.fhirabstractmodel import FHIRAbstractModel

Validation = Literal["full", "structural"]

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# The shape of a FHIR instant; datetime.fromisoformat then checks the ranges
# (month 13, February 30) the pattern does not.
INSTANT_PATTERN = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})"
)
# Abstract bases: valid model classes, but never the type of a real resource.
_ABSTRACT = frozenset({"Resource", "DomainResource"})
# Deepest nesting of JSON objects and arrays a line may have. Real resources
# stay far below it (a QuestionnaireResponse nested ten items deep is about 45
# levels); past it the libraries fail instead of answering: orjson cannot
# write (hash) beyond 254 levels, and model validation recurses per level.
MAX_DEPTH = 100
TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels of JSON objects and arrays"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


class Accepted(NamedTuple):
    """A line that is a landable resource.

    ``last_updated`` is meta.lastUpdated in UTC; ``content_hash`` is the sha256
    of the resource's canonical JSON (sorted keys, no whitespace), so the same
    content with other formatting or key order counts as unchanged.
    """

    resource: dict[str, Any]
    resource_type: str
    id: str
    version_id: str | None
    last_updated: datetime | None
    text: str
    content_hash: str


class Rejected(NamedTuple):
    """A line that cannot be landed; ``resource_type`` is set when it is known."""

    reason: str
    resource_type: str | None = None


def json_kind(value: Any) -> str:
    """A parsed value's JSON type with its article ("an object", "null"), for messages
    that name a field of a server's answer."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _show(value: Any, limit: int = 80) -> str:
    """repr of a value from the input, cut short so a reason stays one readable line."""
    text = redact(repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


@cache
def resource_model(resource_type: str) -> type[FHIRAbstractModel] | None:
    """The fhir.resources R4B model class of a resource type, or None when it is not one.

    Landing no longer uses the models (``fhir_validate`` checks the same rules,
    faster); they stay the reference the differential tests compare it with.
    """
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.resource import Resource

    if resource_type in _ABSTRACT:
        return None
    try:
        model = get_fhir_model_class(resource_type)
    except ValueError:
        return None
    # get_fhir_model_class also knows data types (Quantity, Coding...).
    return model if issubclass(model, Resource) else None


NOT_AN_INSTANT = "is not a FHIR instant (like 2024-05-01T12:30:00Z)"
OUT_OF_RANGE = "is out of range: in UTC it falls outside the years 0001-9999"


def instant_or_problem(value: str) -> datetime | str:
    """A FHIR instant as an aware UTC datetime (microseconds), or why it is not one.

    The problem is a phrase to follow the value in a message. Shape and calendar can
    be right and the instant still have no UTC datetime: 0001-01-01T00:00:00+14:00 is
    before year 1 in UTC (Python raises OverflowError for it, never let out of here).
    """
    if not INSTANT_PATTERN.fullmatch(value):
        return NOT_AN_INSTANT
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return NOT_AN_INSTANT
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return OUT_OF_RANGE


def parse_instant(value: str) -> datetime | None:
    """A FHIR instant as an aware UTC datetime, or None if it is not one (or out of range)."""
    moment = instant_or_problem(value)
    return moment if isinstance(moment, datetime) else None


def epoch_us(moment: datetime) -> int:
    """Microseconds since 1970-01-01 UTC: how instants travel to DuckDB and compare."""
    return (moment - _EPOCH) // _ONE_US



def json_depth(value: Any) -> int:
    """How deeply objects and arrays nest in a parsed value ({} is 1), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return deepest


def _too_deep(written: bytes, colons: int, resource: Any) -> bool:
    """Whether ``resource`` (``written`` compactly, with ``colons`` ':') nests too deep.

    A cheap bound clears nearly every line without the walk: an object on a
    path is left through one of its keys (one ':' each), so a path holds at
    most colons + 1 objects and, at most, every array of the line.
    """
    if colons + 1 + written.count(b"[") <= MAX_DEPTH:
        return False
    return json_depth(resource) > MAX_DEPTH


class DuplicateKey(Exception):
    """Raised by ``refuse_duplicates`` with the key an object names twice."""


def refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An ``object_pairs_hook`` for json that raises ``DuplicateKey`` on a repeated key.

    Slow (every pair through Python): only for text ``keys_may_repeat`` flagged.
    """
    found = dict(pairs)
    if len(found) != len(pairs):
        raise DuplicateKey(_first_repeat(pairs))
    return found


def _first_repeat(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    raise AssertionError("no key repeats")  # pragma: no cover - callers checked the lengths


def keys_may_repeat(raw: bytes, colons_written: int) -> bool:
    """Whether some object in the JSON text ``raw`` may name a key twice (False: it does not).

    orjson (like most parsers) silently keeps the last of two equal keys, so
    the stored text and the parsed value would disagree. ``colons_written``
    is the number of ':' in orjson's compact output of what it parsed from
    ``raw``. Each key is followed by one ':' outside strings, and that output
    has every ':' of the input once, except those dropped with a repeated key
    and those written as the escape \\u003a. So with no such escape, equal
    counts of ':' prove there is no repeat: the cheap test that clears nearly
    every input, be it a line or a whole search page.
    """
    # "\\" first: a one-byte search (memchr) that clears most inputs; then only
    # the escape of ':' itself (other escapes, as Go writes '<' \\u003c, are harmless).
    escaped_colon = b"\\" in raw and (b"\\u003a" in raw or b"\\u003A" in raw)
    return escaped_colon or raw.count(b":") != colons_written


def duplicate_key(raw: bytes | str, colons_written: int) -> str | None:
    """A key that some object of the line ``raw`` names twice, or None.

    ``keys_may_repeat`` clears the usual line; otherwise the line is parsed
    again, slowly, by a parser that reports every pair.
    """
    text = raw if isinstance(raw, bytes) else raw.encode("utf-8")
    if not keys_may_repeat(text, colons_written):
        return None  # the usual case: no escaped colon, no key lost
    try:
        json.loads(text, object_pairs_hook=refuse_duplicates)
    except DuplicateKey as found:
        return str(found.args[0])
    return None


def duplicate_reason(key: str, holder: str = "JSON object") -> str:
    """Why a resource whose JSON names ``key`` twice is rejected (files and search pages alike)."""
    return f"{holder} has the key {_show(key)} twice (which value counts is ambiguous)"


def _validation_errors(resource_type: str, resource: dict[str, Any]) -> str | None:
    """Why ``resource`` fails R4B validation ('fails FHIR R4B validation: <where>: <what>;
    ...'), or None. Never raises: the checks are compiled once per type and process."""
    return validation_problem(resource_type, resource)


def _known_type(value: Any) -> str | None:
    """``value`` when it names a resource type (to file a rejection under), else None."""
    return value if isinstance(value, str) and is_resource_type(value) else None


_TYPE_NEAR_START = re.compile(rb'^\s*\{\s*"resourceType"\s*:\s*"([A-Za-z]{1,64})"')


def _peek_type(raw: bytes | str) -> str | None:
    """The resourceType of a line too deep to parse, when it comes first (as usual)."""
    text = raw if isinstance(raw, bytes) else raw.encode("utf-8")
    found = _TYPE_NEAR_START.match(text[:200])
    return _known_type(found.group(1).decode()) if found else None


def check_line(raw: bytes | str, validation: Validation = "full") -> Accepted | Rejected:
    """Decide whether one NDJSON line is a landable FHIR resource."""
    try:
        resource = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):  # orjson stops at 1024 levels
            return Rejected(TOO_DEEP, _peek_type(raw))
        return Rejected(f"not valid JSON: {exc}")
    if not isinstance(resource, dict):
        return Rejected(f"not a JSON object (got {json_type_name(resource)})")

    resource_type = resource.get("resourceType")
    try:  # sorted keys: the canonical form the content hash is taken of
        canonical = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # orjson writes at most 254 levels
        return Rejected(TOO_DEEP, _known_type(resource_type))
    colons = canonical.count(b":")
    if _too_deep(canonical, colons, resource):
        return Rejected(TOO_DEEP, _known_type(resource_type))
    repeated = duplicate_key(raw, colons)
    if repeated is not None:
        return Rejected(duplicate_reason(repeated), _known_type(resource_type))
    if resource_type is None:
        return Rejected("missing resourceType")
    if not isinstance(resource_type, str):
        return Rejected(f"resourceType must be a string (got {json_type_name(resource_type)})")
    if not is_resource_type(resource_type):
        return Rejected(f"unknown resourceType {_show(resource_type)}")

    rid = resource.get("id")
    if rid is None:
        return Rejected("missing id", resource_type)
    if not isinstance(rid, str):
        return Rejected(f"id must be a string (got {json_type_name(rid)})", resource_type)
    if not ID_PATTERN.fullmatch(rid):
        return Rejected(
            f"id {_show(rid)} does not match the FHIR id pattern [A-Za-z0-9-.]{{1,64}}",
            resource_type,
        )

    version_id: str | None = None
    last_updated: datetime | None = None
    meta = resource.get("meta")
    if meta is not None:
        if not isinstance(meta, dict):
            return Rejected(f"meta must be a JSON object (got {json_type_name(meta)})",
                            resource_type)
        version_id = meta.get("versionId")
        if version_id is not None and not (
            isinstance(version_id, str) and ID_PATTERN.fullmatch(version_id)
        ):
            return Rejected(
                f"meta.versionId {_show(version_id)} does not match the FHIR id pattern "
                "[A-Za-z0-9-.]{1,64}",
                resource_type,
            )
        stamp = meta.get("lastUpdated")
        if stamp is not None:
            moment = instant_or_problem(stamp) if isinstance(stamp, str) else NOT_AN_INSTANT
            if isinstance(moment, str):
                return Rejected(f"meta.lastUpdated {_show(stamp)} {moment}", resource_type)
            last_updated = moment

    if validation == "full":
        problem = _validation_errors(resource_type, resource)
        if problem is not None:
            return Rejected(problem, resource_type)

    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return Accepted(
        resource=resource,
        resource_type=resource_type,
        id=rid,
        version_id=version_id,
        last_updated=last_updated,
        text=text,
        content_hash=hashlib.sha256(canonical).hexdigest(),
    )
