"""Which copy of a resource wins: compare_versions and decide, without a database."""

from __future__ import annotations

import pytest

from cartfhir.extract.landing import Version, compare_versions, decide, describe_version

T1 = 1_700_000_000_000_000  # epoch microseconds
T2 = T1 + 1


def v(version_id: str | None = None, at: int | None = None, content: str = "a") -> Version:
    return Version(version_id, at, content)


@pytest.mark.parametrize(
    ("newer", "older"),
    [
        (v("1", T2), v("2", T1)),  # lastUpdated decides before versionId
        (v("10", T1), v("9", T1)),  # integers compare as numbers...
        (v("b", T1), v("a", T1)),  # ...anything else as text
        (v("10"), v("9")),
        (v(None, T2), v(None, T1)),
        (v("2", None), v("1", T1)),  # only versionId is known on both sides
    ],
)
def test_compare_versions(newer: Version, older: Version) -> None:
    assert compare_versions(newer, older) == 1
    assert compare_versions(older, newer) == -1


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (v(), v()),
        (v("1", T1), v("1", T1)),
        (v("01", T1), v("1", T1)),  # equal as numbers
        (v("1", None), v(None, T1)),  # nothing comparable
    ],
)
def test_compare_versions_undecided(a: Version, b: Version) -> None:
    assert compare_versions(a, b) == 0


@pytest.mark.parametrize(
    ("incoming", "current", "outcome"),
    [
        (v("1", T1), None, "inserted"),
        (v("2", T2, "b"), v("1", T1, "a"), "replaced"),
        (v("1", T1, "a"), v("2", T2, "b"), "stale"),
        (v("1", T1, "a"), v("1", T1, "a"), "unchanged"),
        (v("1", T1, "b"), v("1", T1, "a"), "conflict"),
        (v(None, T1, "b"), v(None, T1, "a"), "conflict"),  # same lastUpdated, no versionId
        (v(content="b"), v(content="a"), "replaced"),  # no meta: the newly landed copy wins
        (v(content="a"), v(content="a"), "unchanged"),
        (v("1", None, "b"), v(None, T1, "a"), "replaced"),  # nothing orders them
    ],
)
def test_decide(incoming: Version, current: Version | None, outcome: str) -> None:
    assert decide(incoming, current) == outcome


def test_describe_version() -> None:
    assert describe_version(v("3", T1)) == "versionId 3, lastUpdated 2023-11-14T22:13:20Z"
    assert describe_version(v(None, T1 + 500)) == "lastUpdated 2023-11-14T22:13:20.000500Z"
    assert describe_version(v()) == "without meta"
