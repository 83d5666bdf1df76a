"""Validating a parsed FHIR R4B resource against the R4B element definitions, fast.

Full landing validation used to build the fhir.resources pydantic model of every
resource (about 75 µs for a lab Observation, almost all of it per-field Python
validators). This module checks the same structure from the element table the
SQL-on-FHIR engine already ships (``cartfhir/transform/sof/fhir_types.json.gz``:
type -> element -> [type or choice types, repeats, required]), with one
checker compiled per type, lazily and cached, so a worker process pays only
for the types it meets.

What it checks, per object: every key is an element of its type (or ``_name``,
the extension object of a primitive ``name``); a repeating element is a list and
a single one is not; a complex element is an object; a primitive has its JSON
kind (boolean, number, string) and its R4B regex and range (dates are real
calendar dates, integers fit 32 bits); required elements are present (a
required primitive may be replaced by an extension in ``_name``); at most one
type of a choice element ``x[x]``; a nested resource (``contained``,
``Bundle.entry.resource``, ``Parameters.parameter.resource``) is checked as the
type its ``resourceType`` names. A null counts as absent, except inside a list
of complex values (a null inside a primitive list lines a value up with its
``_name`` extension, as in FHIR JSON).

Where fhir.resources is laxer than the R4B specification (it coerces "true" to
a boolean and 5.0 to an integer, parses a JSON string given for an object,
accepts empty strings and ids of 255 characters...), this module follows the
specification: tests/extract/test_fhir_validate.py lists every such case.

Speed comes from doing little per value: a dict lookup and one small function
per key, plain strings checked inline, matched codes and uris remembered, and
the verdict on a resource's complex elements remembered by their JSON text (a
lab feed repeats the same code, category and subject). All memories are bounded.

``validation_problem`` never raises on hostile input; callers cap the nesting
depth (its recursion follows the JSON nesting), and it answers RecursionError
with a reason all the same.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
import sys
from calendar import monthrange
from collections.abc import Callable
from functools import cache
from math import isfinite
from pathlib import Path
from typing import Any

import orjson

from cartfhir.config import format_location
from cartfhir.redact import redact

Loc = tuple[str | int, ...]
Error = tuple[Loc, str]
# A primitive's check: the message for a bad value, or None. A complex (or list)
# check: the errors inside the value, located relative to it, or None.
PrimitiveCheck = Callable[[Any], str | None]
Check = Callable[[Any], "str | list[Error] | None"]

MAX_ERRORS_SHOWN = 3
# Errors kept per object or list: past them the rest of it is not checked (the
# resource is rejected anyway). A 64 MiB line of [0,0,...] has 32 million bad
# items; keeping an error for each took hundreds of bytes apiece.
MAX_ERRORS_KEPT = 50
NOT_CHECKED = "the rest was not checked (too many problems)"
# A key or reason as shown: one line, cut short (keys come from the input).
_KEY_SHOWN = 64
PREFIX = "fails FHIR R4B validation: "
_RESOURCE = "Resource"
_ABSTRACT = frozenset({"Resource", "DomainResource"})

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

# The R4B regexes of the primitive types (http://hl7.org/fhir/R4B/datatypes.html).
# R4B writes the year ([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000): four
# digits but 0000. This equal form matches four times faster (no backtracking).
_YEAR = r"(?!0000)[0-9]{4}"
_MONTH = r"(?:0[1-9]|1[0-2])"
_DAY = r"(?:0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\.[0-9]+)?"
_ZONE = r"(?:Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
# Without capturing groups (they cost): the day, when there is one, is value[8:10].
_DATE_RE = re.compile(rf"{_YEAR}(?:-{_MONTH}(?:-{_DAY})?)?")
_DATETIME_RE = re.compile(rf"{_YEAR}(?:-{_MONTH}(?:-{_DAY}(?:T{_TIME}{_ZONE})?)?)?")
_INSTANT_RE = re.compile(rf"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_ZONE}")
_TIME_RE = re.compile(_TIME)
_CODE_RE = re.compile(r"[^\s]+(?:\s[^\s]+)*")
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_NO_SPACE_RE = re.compile(r"\S+")
_OID_RE = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+")
_UUID_RE = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

NOT_A_STRING = "Input should be a valid string"
EMPTY_STRING = "String should not be empty (leave the element out instead)"
NOT_A_BOOLEAN = "Input should be a valid boolean"
NOT_AN_INTEGER = "Input should be a valid integer"
NOT_A_DECIMAL = "Input should be a valid decimal (a JSON number)"
NOT_A_LIST = "Input should be a valid list"
NOT_AN_OBJECT = "Input should be a JSON object"
UNKNOWN_KEY = "Extra inputs are not permitted"
COMPLEX_REQUIRED = "Field required"


def json_type_name(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages (checks.py's too)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {dict: "object", list: "array", str: "string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


# ---------------------------------------------------------------- primitives


def _string(value: Any) -> str | None:
    """string, markdown, xhtml: any characters, but at least one.

    R4B's string regex [ \\r\\n\\t\\S]+ is an XML Schema regex, where \\S is any
    character but space, tab, CR and LF: every non-empty string matches.
    """
    if type(value) is str:
        return None if value else EMPTY_STRING
    return NOT_A_STRING


_KNOWN_GOOD_MAX = 4096
_KNOWN_GOOD_LONGEST = 256  # characters: hostile input cannot make the set large


def _string_kind(problem: Callable[[str], str | None]) -> PrimitiveCheck:
    """A primitive written as a JSON string, ``problem`` saying what is wrong with one.

    Codes, systems, ids and timestamps repeat from resource to resource (a lab
    panel shares its time): the values found good are remembered (short ones,
    up to ``_KNOWN_GOOD_MAX``, then all forgotten at once), a set lookup being
    cheaper than a regex.
    """
    known_good: set[str] = set()

    def check(value: Any) -> str | None:
        if type(value) is not str:
            return NOT_A_STRING
        if value in known_good:
            return None
        found = problem(value)
        if found is None and len(value) <= _KNOWN_GOOD_LONGEST:
            if len(known_good) >= _KNOWN_GOOD_MAX:
                known_good.clear()
            known_good.add(value)
        return found
    return check


def _pattern(regex: re.Pattern[str], message: str) -> PrimitiveCheck:
    """A string primitive whose whole value must match ``regex``."""
    fullmatch = regex.fullmatch

    def problem(value: str) -> str | None:
        return None if fullmatch(value) else message
    return _string_kind(problem)


def _calendar(regex: re.Pattern[str], name: str) -> PrimitiveCheck:
    """date, dateTime, instant: the R4B regex, then a real day of the month."""
    match = regex.fullmatch
    bad = f"{name} value string does not match spec regex."
    no_day = f"{name} value {{!r}} is not a calendar date (no such day in that month)"

    def problem(value: str) -> str | None:
        if match(value) is None:
            return bad
        # The regex lets days 29-31 through in every month.
        if (len(value) >= 10 and value[8:10] > "28"
                and int(value[8:10]) > monthrange(int(value[:4]), int(value[5:7]))[1]):
            return no_day.format(value[:40])
        return None
    return _string_kind(problem)


def _integer(low: int, name: str) -> PrimitiveCheck:
    """integer (32-bit), unsignedInt (>= 0), positiveInt (>= 1): a JSON integer."""
    too_low = f"Input should be greater than or equal to {low} (FHIR {name})"
    too_high = f"Input should be less than or equal to {_INT32_MAX} (FHIR {name})"

    def check(value: Any) -> str | None:
        if type(value) is not int:
            return NOT_AN_INTEGER
        if value < low:
            return too_low
        return too_high if value > _INT32_MAX else None
    return check


def _decimal(value: Any) -> str | None:
    kind = type(value)
    if kind is int or (kind is float and isfinite(value)):
        return None
    return NOT_A_DECIMAL


def _boolean(value: Any) -> str | None:
    return None if type(value) is bool else NOT_A_BOOLEAN


def _base64(value: Any) -> str | None:
    """base64Binary: the base64 alphabet with its padding, whitespace allowed between.

    The R4B regex, (\\s*([0-9a-zA-Z\\+\\=]){4}\\s*)+, leaves out '/' by mistake (R5
    has it); the models decode leniently, skipping any character outside the alphabet.
    """
    if type(value) is not str:
        return NOT_A_STRING
    if not value:
        return EMPTY_STRING
    try:
        base64.b64decode("".join(value.split()).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return "Base64 decoding failed (not base64Binary)"
    return None


def _uri_problem(value: str) -> str | None:
    """R4B's uri is ``\\S*``. Whitespace around it is tolerated: servers pad coding
    systems (`` http://loinc.org ``), the fhir.resources models accepted it, and
    harmonization trims it, so refusing it would drop real results for no gain.
    Whitespace inside, or nothing but whitespace, is refused."""
    inner = value.strip()
    if not inner:
        return "URI must not be empty"
    return None if _NO_SPACE_RE.fullmatch(inner) else "URI must not contain whitespace"


_URI = _string_kind(_uri_problem)
PRIMITIVES: dict[str, PrimitiveCheck] = {
    "boolean": _boolean,
    "integer": _integer(_INT32_MIN, "integer"),
    "integer64": _integer(-(2**63), "integer64"),
    "unsignedInt": _integer(0, "unsignedInt"),
    "positiveInt": _integer(1, "positiveInt"),
    "decimal": _decimal,
    "string": _string,
    "markdown": _string,
    "xhtml": _string,
    "code": _pattern(_CODE_RE, "String should match pattern '^[^\\s]+(\\s[^\\s]+)*$'"),
    "id": _pattern(_ID_RE, "String should match the FHIR id pattern [A-Za-z0-9-.]{1,64}"),
    "uri": _URI,
    "url": _URI,
    "canonical": _URI,
    "oid": _pattern(_OID_RE, "String should match pattern 'urn:oid:[0-2](\\.(0|[1-9][0-9]*))+'"),
    "uuid": _pattern(_UUID_RE, "String should be a urn:uuid: with a lower-case UUID"),
    "base64Binary": _base64,
    "date": _calendar(_DATE_RE, "Date"),
    "dateTime": _calendar(_DATETIME_RE, "DateTime"),
    "instant": _calendar(_INSTANT_RE, "Instant"),
    "time": _pattern(_TIME_RE, "Time value string does not match spec regex."),
}


# ---------------------------------------------------------------- the table


# Written by cartfhir/transform/sof/fhir_types_build.py, read there by types.element_table.
# Read here from its path: importing cartfhir.transform (pandas, DuckDB...) would
# cost every check process more than the table.
TABLE_FILE = Path(__file__).parents[1] / "transform" / "sof" / "fhir_types.json.gz"


@cache
def _table() -> dict[str, dict[str, list[Any]]]:
    """The R4B element table: type -> element -> [type or choice types, repeats, required]."""
    table: dict[str, dict[str, list[Any]]] = json.loads(gzip.decompress(TABLE_FILE.read_bytes()))
    return table


_RESOURCE_TYPES: frozenset[str] = frozenset()  # filled on first use


def _resource_types() -> frozenset[str]:
    """The concrete R4B resource types (not Resource, DomainResource)."""
    global _RESOURCE_TYPES
    _RESOURCE_TYPES = frozenset(name for name, elements in _table().items()
                                if _names_a_resource(elements) and name not in _ABSTRACT)
    return _RESOURCE_TYPES


def is_resource_type(name: str) -> bool:
    """Whether ``name`` is a concrete R4B resource type (not Resource, DomainResource).

    Not a cache of the names asked about: every line names its resourceType, and a
    hostile file could name a new (long) one on each line.
    """
    return name in (_RESOURCE_TYPES or _resource_types())


def _names_a_resource(elements: dict[str, list[Any]]) -> bool:
    """Whether a type's elements are a resource's: the table gives every resource a
    ``resourceType`` of type string (ExampleScenarioInstance has a real element
    ``resourceType``, a code)."""
    return elements.get("resourceType", [None])[0] == "string"


def _add(errors: list[Error] | None, more: list[Error]) -> list[Error]:
    """``errors`` (created on the first problem: valid input allocates nothing) plus ``more``."""
    if errors is None:
        return more
    errors.extend(more)
    return errors


def _prefixed(key: str | int, errors: list[Error]) -> list[Error]:
    return [((key, *loc), msg) for loc, msg in errors]


def _located(key: str | int, found: str | list[Error]) -> list[Error]:
    """A child's result as errors under ``key``."""
    if type(found) is str:
        return [((key,), found)]
    return _prefixed(key, found)  # type: ignore[arg-type]


def _many(item: Check, complex_items: bool) -> Check:
    """A repeating element: a list whose items pass ``item`` (nulls only among primitives)."""
    def check(value: Any) -> str | list[Error] | None:
        if type(value) is not list:
            return NOT_A_LIST
        errors: list[Error] | None = None
        for index, entry in enumerate(value):
            if entry is None:
                if not complex_items:
                    continue  # a placeholder lining the value up with its _name extension
                found: str | list[Error] | None = "null is not allowed in a list of objects"
            else:
                found = item(entry)
            if found is not None:
                errors = _add(errors, _located(index, found))
                if len(errors) >= MAX_ERRORS_KEPT and index + 1 < len(value):
                    errors.append(((index + 1,), NOT_CHECKED))
                    break
        return errors
    return check


def _element_check(type_name: str, repeats: bool) -> Check:
    """The check of one element's value, by its FHIR type and cardinality."""
    primitive = PRIMITIVES.get(type_name)
    single: Check
    if primitive is not None:
        single = primitive
    elif type_name == _RESOURCE:
        single = _nested_resource
    else:
        single = object_check(type_name)
    return _many(single, primitive is None) if repeats else single


# Verdicts on the complex elements of resources, by their JSON text: lab results
# repeat the same code, category and unit over and over, so most are checked once.
_MEMO_MAX_ENTRIES = 16_384
_MEMO_MAX_BYTES = 1024
# A verdict of more errors is not kept: 500 errors of a 1 kB value are 240 kB.
_MEMO_MAX_ERRORS = MAX_ERRORS_SHOWN + 1
# Subclasses (an OrderedDict, an IntEnum), datetimes and dataclasses would be
# written as the JSON they stand for, but the checks refuse them: not written, not kept.
_MEMO_DUMPS_OPTIONS = (orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME
                       | orjson.OPT_PASSTHROUGH_DATACLASS)
# (element type, with [] when a list; JSON text) -> the verdict. One memory for the
# process, so its bound (about 16 MB) holds however many elements use it.
_MEMO: dict[tuple[str, bytes], str | list[Error] | None] = {}
_UNSEEN: Any = object()


def _memoized(check: Check, kind: str) -> Check:
    """``check`` answering again from memory for a value of ``kind`` already seen.

    The JSON text, not the value, is the key: 1, 1.0 and true are equal in
    Python but not of the same FHIR kind. Values too long or unwritable are just
    checked, and so are those holding a null: orjson writes NaN and infinities
    as null too (not from parsed JSON, but ``validation_problem`` is public). A
    verdict of many errors is not kept; the memory is emptied when full, so
    hostile input cannot grow it.
    """
    memo = _MEMO
    memo_get = memo.get
    dumps = orjson.dumps
    options = _MEMO_DUMPS_OPTIONS
    longest = _MEMO_MAX_BYTES
    most_items = longest // 2  # a list or object of more is longer than that, written
    unseen = _UNSEEN

    def remembering(value: Any) -> str | list[Error] | None:
        try:
            if len(value) > most_items:
                # Not kept once written; and orjson's buffer for a large value peaks
                # at many times its size (66 MB for 2.4 MB of text).
                return check(value)
            text = dumps(value, option=options)
        except TypeError:  # no len (a number, a boolean), or not writable (JSONEncodeError)
            return check(value)
        if len(text) > longest:
            return check(value)
        key = (kind, text)
        # One lookup, not 'in' then '[]': a thread emptying the memory in between
        # would make the second a KeyError. Never a text with a null: those are not kept.
        found = memo_get(key, unseen)
        if found is not unseen:
            return found  # type: ignore[no-any-return]
        found = check(value)
        if b"null" not in text and (found is None or type(found) is str
                                    or len(found) <= _MEMO_MAX_ERRORS):
            if len(memo) >= _MEMO_MAX_ENTRIES:
                memo.clear()
            memo[key] = found
        return found
    return remembering


def _deferred(checks: dict[str, Check], key: str, type_name: str, repeats: bool,
              memo: bool) -> Check:
    """A stand-in for a complex element's check until its first value comes.

    Types nest in cycles (Extension holds Extensions), and a process meets few
    of them: compiling a type only sets up stand-ins for its complex elements;
    the first value of one compiles that type and puts its real check in place.
    """
    def check(value: Any) -> str | list[Error] | None:
        real = _element_check(type_name, repeats)
        if memo and type_name != _RESOURCE:
            real = _memoized(real, sys.intern(type_name + "[]" if repeats else type_name))
        checks[key] = real
        return real(value)
    return check


def _primitive_extension(value: Any) -> str | list[Error] | None:
    """``_name``: the id and extensions of a primitive value (at least one of them)."""
    if type(value) is dict and value.get("id") is None and value.get("extension") is None:
        return "an extension object needs an id or an extension (leave it out instead)"
    return object_check("FHIRPrimitiveExtension")(value)


def _nested_resource(value: Any) -> str | list[Error] | None:
    """A resource inside a resource: checked as the type its resourceType names."""
    if type(value) is not dict:
        return f"{NOT_AN_OBJECT} (got {json_type_name(value)})"
    name = value.get("resourceType")
    if name is None:
        return "a nested resource needs a resourceType"
    if type(name) is not str or not is_resource_type(name):
        shown = _shown_text(name) if type(name) is str else f"(a JSON {json_type_name(name)})"
        return [(("resourceType",), f"unknown resourceType {shown}")]
    return object_check(name)(value)


class _Compiled:
    """What an object check needs of its type, computed once per type."""

    def __init__(self, type_name: str) -> None:
        elements = _table()[type_name]
        self.type_name = type_name
        self.checks: dict[str, Check] = {}
        self.primitive_keys: set[str] = set()
        self.required: list[tuple[str, bool]] = []  # (name, is primitive)
        self.choices: dict[str, tuple[str, ...]] = {}
        self.required_choices: list[str] = []
        for name, (fhir_type, repeats, required) in elements.items():
            if isinstance(fhir_type, list):  # a choice group: its keys are typed names
                keys = tuple(name + t[0].upper() + t[1:] for t in fhir_type)
                self.choices[name] = keys
                if required:
                    self.required_choices.append(name)
                continue
            if name == "resourceType" and _names_a_resource(elements):
                continue  # checked by whoever chose this type from it
            is_primitive = fhir_type in PRIMITIVES
            self.checks[name] = (_element_check(fhir_type, repeats) if is_primitive
                                 else _deferred(self.checks, name, fhir_type, repeats,
                                                memo=_names_a_resource(elements)))
            if is_primitive and not _is_attribute(type_name, name):
                self.checks["_" + name] = (_many(_primitive_extension, False) if repeats
                                           else _primitive_extension)
            if required:
                self.required.append((name, is_primitive))
        self.choice_keys = frozenset(k for keys in self.choices.values() for k in keys)
        self.choice_of = {k: name for name, keys in self.choices.items() for k in keys}
        self.is_resource = _names_a_resource(elements)


def _is_attribute(type_name: str, name: str) -> bool:
    """Whether primitive ``name`` is an XML attribute in FHIR (ids, Extension.url),
    which has no ``_name`` extension object in JSON."""
    return name == "id" or (type_name == "Extension" and name == "url")


def _missing(obj: dict[str, Any], name: str, is_primitive: bool) -> str | None:
    """Why required element ``name`` is missing from ``obj``, or None when it is there."""
    if obj.get(name) is not None:
        return None
    if is_primitive:
        extension = obj.get("_" + name)
        if type(extension) is dict and extension.get("extension"):
            return None  # a required primitive may be replaced by an extension
        return f"Value for the field '{name}' is required."
    return COMPLEX_REQUIRED


def _choice_errors(compiled: _Compiled, obj: dict[str, Any]) -> list[Error]:
    """More than one type given of a choice element (or none of a required one)."""
    errors: list[Error] = []
    for name, keys in compiled.choices.items():
        given = [k for k in keys if obj.get(k) is not None]
        if len(given) > 1:
            errors.append(((), f"only one type of {name}[x] may be given "
                               f"(got {', '.join(given)})"))
        elif not given and name in compiled.required_choices:
            errors.append(((), f"{name}[x] is required: give one of its types "
                               f"({', '.join(keys[:3])}... {len(keys)} in all)"
                           if len(keys) > 4 else
                           f"{name}[x] is required: give one of {', '.join(keys)}"))
    return errors


def _two_of_a_choice(obj: dict[str, Any], choice_keys: frozenset[str],
                     choice_of: dict[str, str]) -> bool:
    """Whether two keys of ``obj`` are types of the same choice element (cheap when not)."""
    given = choice_keys.intersection(obj)
    if len(given) < 2:
        return False
    groups = [choice_of[k] for k in given]
    return len(set(groups)) < len(groups)


def _compile(type_name: str) -> Check:
    compiled = _Compiled(type_name)
    checks = compiled.checks
    get_check = checks.get
    required = compiled.required
    choice_keys = compiled.choice_keys
    choice_of = compiled.choice_of
    has_choices = bool(compiled.choices)
    required_choices = bool(compiled.required_choices)
    is_resource = compiled.is_resource
    string = _string

    def check(obj: Any) -> str | list[Error] | None:
        if type(obj) is not dict:
            return f"{NOT_AN_OBJECT} (got {json_type_name(obj)})"
        errors: list[Error] | None = None
        for key, value in obj.items():
            element = get_check(key)
            if element is None:
                if is_resource and key == "resourceType":
                    continue
                found: str | list[Error] | None = UNKNOWN_KEY
            elif value is None:
                continue
            elif element is string and type(value) is str and value:
                continue  # the commonest element, checked without a call
            else:
                found = element(value)
                if found is None:
                    continue
            errors = _add(errors, _located(key, found))
            if len(errors) >= MAX_ERRORS_KEPT:
                errors.append(((), NOT_CHECKED))
                break
        for name, is_primitive in required:
            if name not in obj or obj[name] is None:
                why = _missing(obj, name, is_primitive)
                if why is not None:
                    errors = _add(errors, [((name,), why)])
        if has_choices and (required_choices or _two_of_a_choice(obj, choice_keys, choice_of)):
            choice = _choice_errors(compiled, obj)
            if choice:
                errors = _add(errors, choice)
        return errors
    return check


@cache
def object_check(type_name: str) -> Check:
    """The compiled check of an object of ``type_name`` (cached: built once per process)."""
    return _compile(type_name)


# ---------------------------------------------------------------- entry points


def errors_of(resource_type: str, resource: dict[str, Any]) -> list[Error]:
    """Every problem of ``resource`` as R4B ``resource_type``, located; [] when valid.

    Raises RecursionError only when the stack is smaller than the nesting callers allow.
    """
    found = object_check(resource_type)(resource)
    if found is None:
        return []
    return [((), found)] if type(found) is str else found  # type: ignore[list-item]


def _shown_text(text: str) -> str:
    """Text of the input as a reason quotes it: redacted, then cut short (cut first, a
    registered secret would no longer be found whole, and its start would show), as repr."""
    text = redact(text)
    return repr(text[:_KEY_SHOWN]) + ("..." if len(text) > _KEY_SHOWN else "")


def _shown_key(part: str | int) -> str | int:
    """A key of the input as a location shows it: printable and short, else quoted."""
    if type(part) is int or (len(part) <= _KEY_SHOWN and part.isprintable()):
        return part
    return _shown_text(part)


def _shown_location(loc: Loc) -> str:
    """A location on one line, at most about 300 characters (its end kept: the
    innermost keys say what is wrong)."""
    text = format_location(tuple(_shown_key(part) for part in loc))
    return text if len(text) <= 300 else "..." + text[-297:]


def describe(errors: list[Error]) -> str:
    """The rejection reason: the first errors with their paths, and how many more."""
    shown = [f"{_shown_location(loc)}: {msg}" for loc, msg in errors[:MAX_ERRORS_SHOWN]]
    more = len(errors) - len(shown)
    return PREFIX + "; ".join(shown) + (f" (+{more} more)" if more > 0 else "")


def validation_problem(resource_type: str, resource: dict[str, Any]) -> str | None:
    """Why ``resource`` fails R4B validation, in the landing's reason format, or None."""
    if not is_resource_type(resource_type):
        return f"{PREFIX}unknown resourceType {resource_type[:64]!r}"
    try:
        errors = errors_of(resource_type, resource)
    except RecursionError:  # callers cap nesting at 100 levels; a small stack may not do
        return f"{PREFIX}nested too deeply to validate"
    return describe(errors) if errors else None
