"""The schema of a package's ``manifest.json``, checked field by field before it is used.

A manifest comes from outside, so every field is checked strictly (no coercion: a
number is not a timestamp) and every problem is reported naming the field, e.g.
``manifest.json: field 'created' must be a string (ISO 8601 timestamp), got 5``.
The set of tables is the tool's own (``package.POLICY``) and each file name is the
one the tool's naming rule gives; nothing the manifest says picks a file or a table.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cartfhir.config import SiteId
from cartfhir.errors import PoolError
from cartfhir.multisite.package import MANIFEST, POLICY, SCHEMA_VERSION, shown, table_file

MAX_NESTING = 32  # a genuine manifest is 4 deep; deeper only exhausts parsers' stacks
_SHA256 = r"^[0-9a-f]{64}$"
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
# What a field holds, for messages (pydantic's own words are about Python types).
_HINTS = {"created": "ISO 8601 timestamp", "sha256": "64 lower-case hex digits",
          "site": "a site id"}
_KINDS = {"string_type": "a string", "int_type": "a whole number", "bool_type": "true or false",
          "dict_type": "an object", "model_type": "an object", "list_type": "a list"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TableEntry(_Strict):
    file: str
    rows: int = Field(ge=0)
    sha256: str = Field(pattern=_SHA256)


class ReferenceEntry(_Strict):
    """A terminology file the site's transform used; ``origin`` never a path of the site."""

    name: str
    origin: str = Field(pattern=r"^[^/\\]*$|^package:[A-Za-z0-9_./-]+$")
    sha256: str = Field(pattern=_SHA256)


class Manifest(_Strict):
    schema_version: str
    tool_version: str
    site: SiteId
    study: str = Field(min_length=1)
    config_hash: str
    created: str
    reference: list[ReferenceEntry]
    tables: dict[str, TableEntry]
    validation: dict[str, Any]
    disclosure: dict[str, Any]

    @field_validator("created")
    @classmethod
    def _timestamp(cls, value: str) -> str:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("must be an ISO 8601 timestamp with a time zone, e.g. "
                             "2026-01-31T12:00:00+00:00") from None
        if moment.tzinfo is None:
            raise ValueError("must be an ISO 8601 timestamp with a time zone")
        return value


def _field(loc: tuple[Any, ...]) -> str:
    """A field's dotted name, quoted and escaped: its keys may come from the manifest."""
    return shown(".".join(str(part) for part in loc))


def _problem(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    name = _field(loc)
    kind = error["type"]
    if kind == "missing":
        return f"field {name} is missing"
    if kind == "extra_forbidden":
        return f"field {name} is not a field of a site package manifest"
    if kind in _KINDS:
        hint = _HINTS.get(str(loc[-1]))
        return (f"field {name} must be {_KINDS[kind]}{f' ({hint})' if hint else ''}, "
                f"got {error['input']!r}")
    if kind == "string_pattern_mismatch":
        hint = _HINTS.get(str(loc[-1]), "a value of the expected form")
        if loc and loc[0] == "reference":
            hint = "a package file or a bare file name, never a path of the site's machine"
        return f"field {name} must be {hint}, got {error['input']!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"field {name} {message[0].lower() + message[1:]}, got {error['input']!r}"


def _nesting(raw: bytes) -> int:
    """How deep the JSON's brackets nest, counted without recursion (strings skipped)."""
    depth = deepest = 0
    for bracket in re.findall(rb"[\[\]{}]", _JSON_STRING.sub(b"", raw)):
        depth += 1 if bracket in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def load_json(raw: bytes, where: str) -> Any:
    """A manifest's JSON, refused with a message when too deep, not JSON (huge integers
    included) or holding text that is not valid Unicode (a lone surrogate)."""
    if _nesting(raw) > MAX_NESTING:
        raise PoolError(f"{where}: {MANIFEST} is nested more than {MAX_NESTING} deep; "
                        "this is not a cartfhir site package manifest")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PoolError(f"{where}: {MANIFEST} is not valid JSON ({shown(exc)})") from None
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise PoolError(f"{where}: {MANIFEST} holds text that is not valid Unicode (a lone "
                        "surrogate escape); refused") from None
    return data


def parse_manifest(raw: bytes, where: str) -> Manifest:
    """The manifest's bytes checked against the schema; PoolError names every bad field."""
    data = load_json(raw, where)
    if not isinstance(data, dict):
        raise PoolError(f"{where}: {MANIFEST} must be a JSON object")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise PoolError(f"{where}: schema version {shown(data.get('schema_version'))}, this "
                        f"cartfhir pools {SCHEMA_VERSION!r}; re-export the package with a "
                        "matching cartfhir version")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors()[:5])
        raise PoolError(f"{where}: {MANIFEST}: {problems}") from None
    unknown = sorted(set(manifest.tables) - set(POLICY))
    if unknown:
        raise PoolError(f"{where}: {MANIFEST}: {unknown[0]!r} is not a table of a site "
                        f"package (expected {', '.join(POLICY)}); refused")
    missing = sorted(set(POLICY) - set(manifest.tables))
    if missing:
        raise PoolError(f"{where}: the manifest lists no {', '.join(missing)}")
    for table, entry in manifest.tables.items():
        if entry.file != table_file(table):
            raise PoolError(f"{where}: {MANIFEST}: field 'tables.{table}.file' must be "
                            f"{table_file(table)!r}, got {entry.file!r}; a package names "
                            "its files by the tool's rule and holds no other paths")
    return manifest
