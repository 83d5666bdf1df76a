"""check_line: which lines are landable, and the exact reason for those that are not."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson
import pytest

from cartfhir.extract import fhir_validate
from cartfhir.extract.checks import (
    MAX_DEPTH,
    TOO_DEEP,
    Accepted,
    Rejected,
    check_line,
    duplicate_key,
    json_depth,
    keys_may_repeat,
    parse_instant,
)
from cartfhir.extract.page_keys import EnvelopeRepeat, repeated_entries


def line(**resource: object) -> bytes:
    return orjson.dumps(resource)


def valid_observation(**extra: object) -> bytes:
    return line(
        resourceType="Observation",
        id="obs-1",
        status="final",
        code={"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        subject={"reference": "Patient/p1"},
        valueQuantity={"value": 13.2, "unit": "g/dL"},
        **extra,
    )


def observation_without_code() -> bytes:
    return line(resourceType="Observation", id="obs-1", status="final")


def patient_with_bad_fields() -> bytes:
    return line(
        resourceType="Patient", id="p1", birthDate="1990-13-01", gender=5,
        name=[{"family": 1}], telecom="not a list",
    )


def rejected(raw: bytes, validation: str = "full") -> Rejected:
    result = check_line(raw, validation)  # type: ignore[arg-type]
    assert isinstance(result, Rejected), f"expected a rejection, got {result!r}"
    return result


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"resourceType": "Patient", "id": ',
         "not valid JSON: unexpected end of data: line 1 column 35 (char 34)"),
        (b"[1, 2]", "not a JSON object (got array)"),
        (b'"just a string"', "not a JSON object (got string)"),
        (b'{"id": "p1"}', "missing resourceType"),
        (b'{"resourceType": 7, "id": "p1"}', "resourceType must be a string (got number)"),
        (b'{"resourceType": "Foo", "id": "x"}', "unknown resourceType 'Foo'"),
        # A FHIR data type is not a resource.
        (b'{"resourceType": "Quantity", "id": "x"}', "unknown resourceType 'Quantity'"),
        (b'{"resourceType": "DomainResource", "id": "x"}', "unknown resourceType 'DomainResource'"),
        (b'{"resourceType": "Patient"}', "missing id"),
        (b'{"resourceType": "Patient", "id": 5}', "id must be a string (got number)"),
        (b'{"resourceType": "Patient", "id": "x y"}',
         "id 'x y' does not match the FHIR id pattern [A-Za-z0-9-.]{1,64}"),
        (b'{"resourceType": "Patient", "id": "' + b"a" * 65 + b'"}',
         f"id '{'a' * 65}' does not match the FHIR id pattern [A-Za-z0-9-.]{{1,64}}"),
        # Long values are cut in the reason so it stays one readable line.
        (b'{"resourceType": "Patient", "id": "' + b"b" * 500 + b'"}',
         f"id '{'b' * 76}... does not match the FHIR id pattern [A-Za-z0-9-.]{{1,64}}"),
        (b'{"resourceType": "Patient", "id": "p1", "meta": []}',
         "meta must be a JSON object (got array)"),
        (b'{"resourceType": "Patient", "id": "p1", "meta": {"versionId": 3}}',
         "meta.versionId 3 does not match the FHIR id pattern [A-Za-z0-9-.]{1,64}"),
        (b'{"resourceType": "Patient", "id": "p1", "meta": {"lastUpdated": "2024-02-30T00:00Z"}}',
         "meta.lastUpdated '2024-02-30T00:00Z' is not a FHIR instant (like 2024-05-01T12:30:00Z)"),
        (b'{"resourceType": "Patient", "id": "p", "meta": {"lastUpdated": "2024-02-30T00:00:00Z"}}',
         "meta.lastUpdated '2024-02-30T00:00:00Z' is not a FHIR instant "
         "(like 2024-05-01T12:30:00Z)"),
        (b'{"resourceType": "Patient", "id": "p1", "meta": {"lastUpdated": "2024-01-01"}}',
         "meta.lastUpdated '2024-01-01' is not a FHIR instant (like 2024-05-01T12:30:00Z)"),
    ],
)
def test_rejection_reasons_are_exact(raw: bytes, reason: str) -> None:
    assert rejected(raw, "structural").reason == reason
    assert rejected(raw, "full").reason == reason


def test_invalid_utf8_is_reported_as_invalid_json() -> None:
    assert rejected(b'{"resourceType": "Patient", "id": "\xff"}').reason.startswith(
        "not valid JSON: str is not valid UTF-8"
    )


def test_rejection_keeps_the_resource_type_when_it_is_known() -> None:
    assert rejected(b'{"resourceType": "Patient"}').resource_type == "Patient"
    assert rejected(b'{"resourceType": "Foo", "id": "x"}').resource_type is None
    assert rejected(b"[]").resource_type is None


def test_full_validation_rejects_what_structural_accepts() -> None:
    assert (
        rejected(observation_without_code(), "full").reason
        == "fails FHIR R4B validation: code: Field required"
    )
    assert isinstance(check_line(observation_without_code(), "structural"), Accepted)


def test_full_validation_shows_at_most_three_errors_with_paths() -> None:
    reason = rejected(patient_with_bad_fields(), "full").reason
    assert reason == (
        "fails FHIR R4B validation: "
        "birthDate: Date value string does not match spec regex.; "
        "gender: Input should be a valid string; "
        "name[0].family: Input should be a valid string (+1 more)"
    )


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        (dict(resourceType="Patient", id="p1", nmae=[{"family": "X"}]),
         "nmae: Extra inputs are not permitted"),
        (dict(resourceType="Patient", id="p1", telecom={"system": "phone"}),
         "telecom: Input should be a valid list"),
        (dict(resourceType="Patient", id="p1", maritalStatus=[{"text": "x"}]),
         "maritalStatus: Input should be a JSON object (got array)"),
        (dict(resourceType="Patient", id="p1", active="true"),
         "active: Input should be a valid boolean"),
        (dict(resourceType="Patient", id="p1", multipleBirthInteger=2**31),
         "multipleBirthInteger: Input should be less than or equal to 2147483647 "
         "(FHIR integer)"),
        (dict(resourceType="Patient", id="p1", birthDate="2023-02-29"),
         "birthDate: Date value '2023-02-29' is not a calendar date (no such day in that "
         "month)"),
        (dict(resourceType="Patient", id="p1", gender="fe male "),
         "gender: String should match pattern '^[^\\s]+(\\s[^\\s]+)*$'"),
        (dict(resourceType="Patient", id="p1", deceasedBoolean=True,
              deceasedDateTime="2020"),
         "(top level): only one type of deceased[x] may be given "
         "(got deceasedBoolean, deceasedDateTime)"),
        (dict(resourceType="Patient", id="p1", link=[{"other": {"reference": "Patient/2"}}]),
         "link[0].type: Value for the field 'type' is required."),
        (dict(resourceType="Patient", id="p1", contained=[{"resourceType": "Patient",
                                                          "id": "c", "gender": 1}]),
         "contained[0].gender: Input should be a valid string"),
        (dict(resourceType="Patient", id="p1", contained=[{"resourceType": "Nope"}]),
         "contained[0].resourceType: unknown resourceType 'Nope'"),
        (dict(resourceType="Patient", id="p1", name=[None]),
         "name[0]: null is not allowed in a list of objects"),
        (dict(resourceType="Patient", id="p1", _gender={}),
         "_gender: an extension object needs an id or an extension (leave it out instead)"),
    ],
)
def test_full_validation_reasons_say_where_and_what(resource: dict[str, object],
                                                    reason: str) -> None:
    result = rejected(orjson.dumps(resource), "full")
    assert result.reason == "fails FHIR R4B validation: " + reason
    assert result.resource_type == "Patient"


def test_accepted_line_carries_identity_version_and_text() -> None:
    raw = valid_observation(meta={"versionId": "3", "lastUpdated": "2024-05-01T14:30:00.5+02:00"})
    result = check_line(raw, "full")
    assert isinstance(result, Accepted)
    assert (result.resource_type, result.id, result.version_id) == ("Observation", "obs-1", "3")
    assert result.last_updated == datetime(2024, 5, 1, 12, 30, 0, 500000, tzinfo=UTC)
    assert result.text == raw.decode()
    assert result.resource["valueQuantity"]["value"] == 13.2


def test_missing_meta_gives_no_version() -> None:
    result = check_line(valid_observation(), "full")
    assert isinstance(result, Accepted)
    assert (result.version_id, result.last_updated) == (None, None)


def test_content_hash_ignores_key_order_and_whitespace_but_not_values() -> None:
    a = check_line(b'{"resourceType": "Patient", "id": "p1", "active": true}', "full")
    b = check_line(b'{"active":true,"id":"p1","resourceType":"Patient"}', "full")
    c = check_line(b'{"resourceType": "Patient", "id": "p1", "active": false}', "full")
    assert isinstance(a, Accepted) and isinstance(b, Accepted) and isinstance(c, Accepted)
    assert a.content_hash == b.content_hash
    assert a.content_hash != c.content_hash
    assert len(a.content_hash) == 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:30:00Z", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01T12:30:00.123456789-05:00",
         datetime(2024, 5, 1, 17, 30, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T12:30:00", None),  # no time zone: a dateTime, not an instant
        ("2024-05-01", None),
        ("2024-13-01T00:00:00Z", None),
        ("yesterday", None),
    ],
)
def test_parse_instant(text: str, expected: datetime | None) -> None:
    assert parse_instant(text) == expected


# --- hostile structure: nesting and duplicate keys -------------------------------


def nested_extensions(levels: int) -> bytes:
    """A Patient whose extension nests ``levels`` deep (two JSON levels each)."""
    extension: dict[str, object] = {"url": "http://example.org/x", "valueString": "leaf"}
    for _ in range(levels):
        extension = {"url": "http://example.org/x", "extension": [extension]}
    # json, not orjson: orjson cannot write more than 254 levels.
    return json.dumps({"resourceType": "Patient", "id": "p1", "extension": [extension]}).encode()


@pytest.mark.parametrize("levels", [60, 130, 300])
@pytest.mark.parametrize("validation", ["full", "structural"])
def test_nesting_deeper_than_the_limit_is_rejected_with_a_reason(levels: int,
                                                                validation: str) -> None:
    found = rejected(nested_extensions(levels), validation)
    assert found.reason == f"nested deeper than {MAX_DEPTH} levels of JSON objects and arrays"
    assert found.resource_type == "Patient"


def test_nesting_up_to_the_limit_is_landed() -> None:
    levels = (MAX_DEPTH - 3) // 2  # the resource, its extension array and the innermost object
    assert json_depth(orjson.loads(nested_extensions(levels))) <= MAX_DEPTH
    assert isinstance(check_line(nested_extensions(levels), "full"), Accepted)


@pytest.mark.parametrize(
    ("opening", "closing"),
    [(b"[", b"]"), (b"[1,", b"]"), (b'{"a":', b"}"), (b'[{"a":', b"}]")],
    ids=["arrays in arrays", "arrays after a comma", "objects in objects", "alternating"],
)
def test_every_shape_of_deep_nesting_is_caught(opening: bytes, closing: bytes) -> None:
    def nest(levels: int) -> bytes:
        return (b'{"resourceType": "Patient", "id": "p1", "x": ' + opening * levels + b"0"
                + closing * levels + b"}")

    assert isinstance(check_line(nest(40), "structural"), Accepted)
    assert rejected(nest(120), "structural").reason == TOO_DEEP


def test_nesting_beyond_what_the_json_parser_accepts_is_rejected_as_too_deep() -> None:
    raw = b'{"resourceType": "Patient", "id": "p1", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert rejected(raw).reason == (
        f"nested deeper than {MAX_DEPTH} levels of JSON objects and arrays")


def test_a_recursion_error_in_validation_is_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    def too_deep(*args: object, **kwargs: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(fhir_validate, "object_check", lambda type_name: too_deep)
    assert rejected(line(resourceType="Patient", id="p1")).reason == (
        "fails FHIR R4B validation: nested too deeply to validate")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"resourceType":"Patient","id":"p1","gender":"male","id":"zz"}', "id"),
        # The same key spelt with an escape is still the same key.
        (b'{"resourceType":"Patient","id":"p1","\\u0069d":"zz"}', "id"),
        # Deep inside: the object in name[0] repeats "family".
        (b'{"resourceType":"Patient","id":"p1","name":[{"family":"A","family":"B"}]}', "family"),
        # Colons inside strings must not hide a duplicate...
        (b'{"resourceType":"Patient","id":"p1","gender":"a:b","gender":"male"}', "gender"),
        # ...nor an escaped colon in a kept value balance a dropped key.
        (b'{"resourceType":"Patient","id":"p1","x":"\\u003a","x":1}', "x"),
        (b'{"resourceType":"Patient","id":"p1","x":"\\u003A","x":1}', "x"),
    ],
)
def test_duplicate_keys_are_rejected(raw: bytes, key: str) -> None:
    for validation in ("full", "structural"):
        found = rejected(raw, validation)
        assert found.reason == (f"JSON object has the key {key!r} twice "
                                "(which value counts is ambiguous)")
        assert found.resource_type == "Patient"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}',  # the same key in different objects
        b'{"a":"x:y:z","b":"\\u003a","c":"\\\\u003a"}',  # colons and escapes in strings
        b'{"a" : 1 , "b":\t{ "c" :2}}',  # whitespace around colons
        b"{}",
    ],
)
def test_no_false_duplicates(raw: bytes) -> None:
    assert duplicate_key(raw, orjson.dumps(orjson.loads(raw)).count(b":")) is None


def written_colons(raw: bytes) -> int:
    return orjson.dumps(orjson.loads(raw)).count(b":")


@pytest.mark.parametrize(
    "raw",
    [
        # Go's encoder writes '<', '>' and '&' as escapes in every narrative div.
        b'{"div":"\\u003cdiv\\u003e\\u0026\\u003c/div\\u003e","n":"\\n"}',
        b'{"url":"http:\\/\\/example.org"}',
    ],
)
def test_escapes_other_than_a_colon_keep_the_fast_path(raw: bytes) -> None:
    assert not keys_may_repeat(raw, written_colons(raw))


def test_the_page_walk_finds_where_a_key_repeats() -> None:
    raw = b'{"entry":[{"a":1},{"r":{"x":[{"k":1,"k":2}]}}],"t":1}'
    assert keys_may_repeat(raw, written_colons(raw))
    assert {i: key for i, (key, _) in repeated_entries(raw).items()} == {1: "k"}
    with pytest.raises(EnvelopeRepeat, match="t"):
        repeated_entries(b'{"t":1,"t":2,"e":[]}')


def test_duplicate_key_finds_the_repeated_key() -> None:
    raw = b'{"a":{"b":1,"b":2},"c":3}'
    assert duplicate_key(raw, orjson.dumps(orjson.loads(raw)).count(b":")) == "b"
