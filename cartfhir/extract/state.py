"""Incremental state in DuckDB: watermarks, pulled patients, the request manifest.

Watermarks are the server's own instants and move only after a query finished;
``since_with_overlap`` backs off a little so nothing updated in the same second
is missed (landing dedupes what comes twice).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import duckdb

from cartfhir.db import apply_ddl
from cartfhir.extract.checks import parse_instant as fhir_instant
from cartfhir.redact import redact

SQL_PACKAGE = "cartfhir.extract.sql"
OVERLAP = timedelta(minutes=5)


def create_state_tables(con: duckdb.DuckDBPyConnection) -> None:
    apply_ddl(con, SQL_PACKAGE, "extract_state", "extract_patient", "extract_request")


def parse_instant(text: str) -> datetime:
    """A FHIR instant (or HTTP Date) as an aware datetime; ValueError if it is neither."""
    if text and text[0].isalpha():  # an HTTP date, e.g. 'Mon, 23 Nov 2026 20:00:00 GMT'
        return parsedate_to_datetime(text).astimezone(UTC)
    moment = fhir_instant(text)
    if moment is None:
        raise ValueError(f"{text!r} is not a FHIR instant")
    return moment


def since_with_overlap(watermark: str, overlap: timedelta = OVERLAP) -> str:
    """The _lastUpdated / _since value for the next run: the watermark minus an overlap."""
    moment = parse_instant(watermark) - overlap
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


def earliest(instants: Iterable[str]) -> str | None:
    """The earliest of several server instants (the safe watermark for a whole query)."""
    values = [v for v in instants if v]
    return min(values, key=parse_instant) if values else None


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
