"""Incremental state in DuckDB: watermarks, pulled patients, the request manifest.

Watermarks are the server's own instants and move only after a query finished;
``since_with_overlap`` backs off a little so nothing updated in the same second
is missed (landing dedupes what comes twice). A server time is distrusted only where
trusting it would lose data: one ahead of this machine's clock is never a watermark.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import duckdb

from cartfhir.db import apply_ddl
from cartfhir.extract.checks import parse_instant as fhir_instant
from cartfhir.redact import redact, redact_cut

SQL_PACKAGE = "cartfhir.extract.sql"
OVERLAP = timedelta(minutes=5)
# How far a server's clock may run ahead of this machine's and still give a watermark.
FUTURE_SLACK = timedelta(days=1)
_FIRST_INSTANT = datetime.min.replace(tzinfo=UTC)

log = logging.getLogger(__name__)


def create_state_tables(con: duckdb.DuckDBPyConnection) -> None:
    apply_ddl(con, SQL_PACKAGE, "extract_state", "extract_patient", "extract_request")


def parse_instant(text: str) -> datetime:
    """A FHIR instant (or HTTP Date) as an aware UTC datetime; ValueError if it is neither.

    Also ValueError for one of the right shape with no UTC datetime (before year 1 or
    after 9999 once in UTC), so callers need to handle one error only.
    """
    if text and text[0].isalpha():  # an HTTP date, e.g. 'Mon, 23 Nov 2026 20:00:00 GMT'
        try:
            moment = parsedate_to_datetime(text)
            # '-0000' means UTC with no zone known: a naive datetime, not local time.
            return (moment.replace(tzinfo=UTC) if moment.tzinfo is None
                    else moment.astimezone(UTC))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{text!r} is not an HTTP date") from exc
    moment = fhir_instant(text)
    if moment is None:
        raise ValueError(f"{text!r} is not a FHIR instant in range")
    return moment


def since_with_overlap(watermark: str, overlap: timedelta = OVERLAP) -> str:
    """The _lastUpdated / _since value for the next run: the watermark minus an overlap.

    The subtraction stops at 0001-01-01T00:00:00Z. A watermark that early (a server
    clock that absurd) is kept rather than refused: it only makes the next run ask
    for everything, which costs time and misses nothing (``earliest`` refuses the
    dangerous kind, a time in the future, which would hide every later change).
    """
    moment = parse_instant(watermark)
    moment = moment - overlap if moment - _FIRST_INSTANT > overlap else _FIRST_INSTANT
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def watermark(con: duckdb.DuckDBPyConnection, site: str, query_key: str,
              resource_type: str) -> str | None:
    row = con.execute(
        "SELECT watermark FROM meta.extract_state WHERE site = ? AND query_key = ? "
        "AND resource_type = ?", [site, query_key, resource_type]).fetchone()
    return row[0] if row else None


def advance(con: duckdb.DuckDBPyConnection, site: str, query_key: str, resource_type: str,
            mark: str, run_id: str) -> None:
    con.execute(
        "INSERT OR REPLACE INTO meta.extract_state VALUES (?, ?, ?, ?, ?, ?)",
        [site, query_key, resource_type, mark, run_id, datetime.now(UTC)])


def earliest(instants: Iterable[str | None], now: datetime | None = None) -> str | None:
    """The earliest of several server instants (the safe watermark for a whole query).

    An instant that cannot be read is left out with a warning (the server's clock is
    input like any other); so is one more than ``FUTURE_SLACK`` past ``now`` (this
    machine's clock): as a watermark it would make later runs ask only for changes
    after it, hiding every change until then. None when nothing is left: the
    watermark then stays where it was.
    """
    ahead = (now or datetime.now(UTC)) + FUTURE_SLACK
    usable: list[tuple[datetime, str]] = []
    for value in instants:
        if not value:
            continue
        try:
            moment = parse_instant(value)
        except ValueError:
            log.warning("the server's time %s is not an instant; not taken as a watermark",
                        redact_cut(repr(value), 80))
            continue
        if moment > ahead:
            log.warning("the server's time %s is more than %s ahead of this machine's clock; "
                        "not taken as a watermark (it would hide later changes)",
                        redact_cut(repr(value), 80), FUTURE_SLACK)
            continue
        usable.append((moment, value))
    return min(usable)[1] if usable else None


def known_patients(con: duckdb.DuckDBPyConnection, site: str) -> set[str]:
    rows = con.execute("SELECT patient_id FROM meta.extract_patient WHERE site = ?", [site])
    return {r[0] for r in rows.fetchall()}


def remember_patients(con: duckdb.DuckDBPyConnection, site: str, patients: Iterable[str],
                      run_id: str) -> None:
    con.executemany("INSERT OR IGNORE INTO meta.extract_patient VALUES (?, ?, ?)",
                    [[site, p, run_id] for p in patients])


# meta.extract_request's columns in the order record_requests fills them.
REQUEST_COLUMNS = ("run_id", "site", "seq", "query_key", "resource_type", "url", "patients",
                   "pages", "matched", "included", "total", "shortfall", "status", "message",
                   "seconds", "server_software", "server_version", "fhir_version", "final_url")


@dataclass
class RequestRecord:
    query_key: str
    resource_type: str
    url: str
    patients: int | None
    pages: int
    matched: int
    included: int
    total: int | None
    shortfall: int
    status: str
    message: str | None
    seconds: float
    final_url: str | None = None  # masked; after redirects, when known


def record_requests(con: duckdb.DuckDBPyConnection, run_id: str, site: str,
                    records: list[RequestRecord], server: tuple[str | None, str | None,
                                                                str | None]) -> None:
    rows = [[run_id, site, i, r.query_key, r.resource_type, redact(r.url), r.patients,
             r.pages, r.matched, r.included, r.total, r.shortfall, r.status,
             r.message and redact(r.message), r.seconds, *server,
             r.final_url and redact(r.final_url)] for i, r in enumerate(records)]
    if rows:
        con.executemany(f"INSERT INTO meta.extract_request ({', '.join(REQUEST_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})", rows)
