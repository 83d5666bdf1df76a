"""repeated_entries: the entries of a page that repeat a key, as sent; the Bundle's own repeats."""

from __future__ import annotations

import json

import pytest

from cartfhir.extract.page_keys import EnvelopeRepeat, repeated_entries

DUP = b'{ "resource" : {"resourceType":"Patient","id":"p3",\n "id":"zz"} }'
NESTED = b'{"resource":{"name":[{"family":"a","family":"b"}]},"search":{"mode":"match"}}'


def page(*entries: bytes, envelope: bytes = b'"total": 3') -> bytes:
    return (b'{"resourceType":"Bundle",\n  ' + envelope + b',\n  "entry": [\n    '
            + b",\n    ".join(entries) + b"\n  ]\n}\n")


def test_finds_each_repeating_entry_with_its_text_as_sent() -> None:
    raw = page(b'{"resource":{"id":"p1"}}', DUP, b'{"resource":{"id":"\xc3\xa9"}}', NESTED)
    assert repeated_entries(raw) == {1: ("id", DUP), 3: ("family", NESTED)}


def test_a_key_spelt_with_an_escape_is_the_same_key() -> None:
    sent = b'{"resource":{"id":"p1","\\u0069d":"zz"}}'
    assert repeated_entries(page(sent)) == {0: ("id", sent)}


@pytest.mark.parametrize("raw", [
    page(b"{}"),
    b'{"resourceType":"Bundle","entry":[]}',
    b'{"resourceType":"Bundle"}',
    b'{"resourceType":"Bundle","entry":{"a":1}}',  # not an array: paging says so itself
])
def test_pages_without_repeats(raw: bytes) -> None:
    assert repeated_entries(raw) == {}


@pytest.mark.parametrize(("envelope", "key"), [
    (b'"total":3,"total":1', "total"),
    (b'"link":[{"relation":"next","url":"a","url":"b"}]', "url"),
    (b'"entry":[],"total":2', "entry"),  # a second entry array besides the page's own
    (b'"meta":{"lastUpdated":"x","lastUpdated":"y"}', "lastUpdated"),
])
def test_a_repeat_in_the_bundle_itself_is_an_envelope_repeat(envelope: bytes, key: str) -> None:
    with pytest.raises(EnvelopeRepeat) as caught:
        repeated_entries(page(DUP, envelope=envelope))
    assert caught.value.key == key


@pytest.mark.parametrize("raw", [b"[]", b'{"a":1} x', b'{"a" 1}', b'{"entry":[{},]}', b""])
def test_text_that_is_not_one_json_object_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (any ValueError: json's own or ours)
        repeated_entries(raw)


def test_entries_too_deep_for_orjson_to_write_are_walked() -> None:
    deep: object = {"leaf": 1}
    for _ in range(300):
        deep = {"x": [deep]}
    sent = json.dumps({"resource": deep}).encode()
    assert repeated_entries(page(sent, DUP)) == {1: ("id", DUP)}
