"""Which entries of a search page name a JSON key twice, and their text as sent.

orjson keeps the last of two equal keys, so a resource parsed from a page could
land under a value that another reader of the same text would not take (the
landing rule for NDJSON lines, ``checks.duplicate_key``). ``repeated_entries``
walks the page's text with a parser that sees every pair; it is slow, so
paging calls it only for a page that ``checks.keys_may_repeat`` flagged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json.decoder import scanstring

from cartfhir.extract.checks import DuplicateKey, refuse_duplicates

_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder(object_pairs_hook=refuse_duplicates)
_PLAIN = json.JSONDecoder()  # only to find where an entry that repeats a key ends


class EnvelopeRepeat(ValueError):
    """The Bundle itself (not one of its entries) names ``key`` twice: the page is unusable."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def repeated_entries(raw: bytes) -> dict[int, tuple[str, bytes]]:
    """{index in Bundle.entry: (a key its JSON names twice, the entry's text as sent)}.

    Raises ``EnvelopeRepeat`` when a key repeats outside the entries (two
    ``total``, a link with two ``url``), ValueError for text that is not one
    JSON object, RecursionError past Python's recursion limit.
    """
    text = raw.decode("utf-8")
    found: dict[int, tuple[str, bytes]] = {}
    keys: set[str] = set()

    def entry(index: int, start: int) -> int:
        try:
            return _DECODER.raw_decode(text, start)[1]
        except DuplicateKey as repeat:
            end = _PLAIN.raw_decode(text, start)[1]
            found[index] = (str(repeat.args[0]), text[start:end].encode("utf-8"))
            return end

    def member(key: str, start: int) -> int:
        if key in keys:
            raise EnvelopeRepeat(key)
        keys.add(key)
        if key == "entry" and text.startswith("[", start):
            return _items(text, start, entry)
        try:
            return _DECODER.raw_decode(text, start)[1]
        except DuplicateKey as repeat:
            raise EnvelopeRepeat(str(repeat.args[0])) from None

    end = _members(text, _skip(text, 0), member)
    if _skip(text, end) != len(text):
        raise ValueError(f"extra data after the JSON object at character {end}")
    return found


def _skip(text: str, at: int) -> int:
    return _SPACE.match(text, at).end()  # type: ignore[union-attr]  # matches empty text too


def _expect(text: str, at: int, char: str) -> None:
    if not text.startswith(char, at):
        raise ValueError(f"expected {char!r} at character {at}")


def _members(text: str, at: int, member: Callable[[str, int], int]) -> int:
    """Walk the object at ``text[at]``: ``member(key, value start)`` returns the value's end."""
    _expect(text, at, "{")
    at = _skip(text, at + 1)
    if text.startswith("}", at):
        return at + 1
    while True:
        _expect(text, at, '"')
        key, at = scanstring(text, at + 1)
        at = _skip(text, at)
        _expect(text, at, ":")
        at = _skip(text, member(key, _skip(text, at + 1)))
        if text.startswith("}", at):
            return at + 1
        _expect(text, at, ",")
        at = _skip(text, at + 1)


def _items(text: str, at: int, item: Callable[[int, int], int]) -> int:
    """Walk the array at ``text[at]``: ``item(index, start)`` returns the item's end."""
    _expect(text, at, "[")
    at = _skip(text, at + 1)
    if text.startswith("]", at):
        return at + 1
    index = 0
    while True:
        at = _skip(text, item(index, at))
        index += 1
        if text.startswith("]", at):
            return at + 1
        _expect(text, at, ",")
        at = _skip(text, at + 1)
