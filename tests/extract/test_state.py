"""Watermarks from a server whose clock cannot be trusted, through ``cartfhir extract``.

The watermark of a query is the server's time of its first page (Bundle.meta.lastUpdated,
else the HTTP Date header). A time that cannot be read, or lies in the far future, must
not end the run or stop later runs from seeing changes; one at the start of the calendar
only makes the next run ask for everything.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cartfhir.extract import state

from .cli_site import bundle, extract, patient, searching
from .stub_server import FakeFhir


def stamp_bundles(fake: FakeFhir, stamp: str) -> list[dict[str, list[str]]]:
    """Answer every Patient search with p1, p2 in a Bundle whose meta.lastUpdated is ``stamp``.

    Returns the queries of the pull's searches (those by _id), as they arrive.
    """
    pulls: list[dict[str, list[str]]] = []

    def fault(request: Any) -> Any:
        query = searching("Patient", request)
        if query is None:
            return None
        if "_id" in query:
            pulls.append(query)
        return bundle([patient("p1"), patient("p2")], total=2, meta={"lastUpdated": stamp})

    fake.faults.append(fault)
    return pulls


def stored_watermark(result: Any) -> str:
    [(mark,)] = result.rows("select watermark from meta.extract_state")
    return mark


@pytest.mark.parametrize("stamp", ["garbage", "9999-12-31T23:59:59-23:59"])
def test_an_unreadable_bundle_time_is_a_warning_and_the_date_header_is_taken(
        tmp_path, capsys, hostile, stamp) -> None:
    stamp_bundles(hostile, stamp)
    started = datetime.now(UTC).replace(microsecond=0)
    result = extract(tmp_path, capsys, hostile.base)
    assert result.code == 0, result.err
    assert f'Bundle.meta.lastUpdated "{stamp}" is not a usable FHIR instant' in result.err
    assert result.rows("select id from raw.resources order by id") == [("p1",), ("p2",)]
    mark = state.parse_instant(stored_watermark(result))  # the Date header's time
    assert started - timedelta(seconds=1) <= mark <= datetime.now(UTC)


def test_a_watermark_at_the_start_of_the_calendar_lets_the_next_runs_ask_for_everything(
        tmp_path, capsys, hostile) -> None:
    pulls = stamp_bundles(hostile, "0001-01-01T00:00:00Z")
    first = extract(tmp_path, capsys, hostile.base)
    assert first.code == 0, first.err
    assert stored_watermark(first) == "0001-01-01T00:00:00Z"
    for _ in range(2):
        again = extract(tmp_path, capsys, hostile.base)
        assert again.code == 0, again.err
        assert pulls[-1]["_lastUpdated"] == ["gt0001-01-01T00:00:00Z"]


def test_a_bundle_time_in_the_far_future_does_not_become_the_watermark(
        tmp_path, capsys, hostile) -> None:
    pulls = stamp_bundles(hostile, "9999-12-31T23:59:59Z")
    first = extract(tmp_path, capsys, hostile.base)
    assert first.code == 0, first.err
    assert "not taken as a watermark" in first.err
    assert first.rows("select * from meta.extract_state") == []
    second = extract(tmp_path, capsys, hostile.base)
    assert second.code == 0, second.err
    assert "_lastUpdated" not in pulls[-1]  # would have hidden every later change


def test_earliest_leaves_out_what_it_cannot_read_or_what_is_ahead(caplog) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with caplog.at_level(logging.WARNING):
        assert state.earliest(["garbage", None, "2025-12-31T23:00:00Z", "Mon, 0 Xyz",
                               "2026-03-01T00:00:00Z", "2025-12-31T23:30:00+01:00"],
                              now=now) == "2025-12-31T23:30:00+01:00"
    assert "'garbage'" in caplog.text and "2026-03-01T00:00:00Z" in caplog.text


def test_the_overlap_stops_at_the_first_instant_there_is() -> None:
    assert state.since_with_overlap("0001-01-01T00:02:00Z") == "0001-01-01T00:00:00Z"
    assert state.since_with_overlap("2026-01-01T00:00:00Z") == "2025-12-31T23:55:00Z"


@pytest.mark.parametrize(("now", "kept"), [("9999-12-31T23:59:59Z", False),
                                           ("0001-01-01T00:00:00Z", True)])
def test_a_bulk_transaction_time_is_a_watermark_unless_it_lies_ahead(
        tmp_path, capsys, hostile, now, kept) -> None:
    hostile.export_polls = 0
    hostile.now = now
    first = extract(tmp_path, capsys, hostile.base, kind="bulk")
    assert first.code == 0, first.err
    assert first.rows("select watermark from meta.extract_state") == ([(now,)] if kept else [])
    second = extract(tmp_path, capsys, hostile.base, kind="bulk")
    assert second.code == 0, second.err
    assert hostile.export_kickoffs[-1].get("_since") == (
        ["0001-01-01T00:00:00Z"] if kept else None)
    assert second.rows("select count(*) from raw.resources") == [(3,)]
