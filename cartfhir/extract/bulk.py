"""Bulk Data $export of one site: kick off, poll, download in parallel, land.

Follows the Bulk Data Access IG: ``Prefer: respond-async`` kick-off at system,
Patient or Group level with ``_type``/``_since``/``_typeFilter``; polling that
honours ``Retry-After`` (capped) and logs ``X-Progress``; output files fetched
with at most ``max_downloads`` connections, with the token sent only when the
manifest says ``requiresAccessToken``. Error files go to ``raw.export_error``,
``deleted`` entries are applied (the removed versions kept in ``raw.deleted``).
The status URL is stored in ``meta.bulk_job`` before polling, so a crashed run
resumes that job; an interrupt cancels it with DELETE.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson
import requests

from cartfhir.config import BulkSource, Site
from cartfhir.db import apply_ddl
from cartfhir.errors import CartfhirError, FhirServerError
from cartfhir.extract import state
from cartfhir.extract.http import FhirClient, mask_url, parse_retry_after
from cartfhir.extract.landing import Lander
from cartfhir.extract.ndjson import RawLine
from cartfhir.extract.rest import SiteReport, capability, close_report, put_unless_stopped
from cartfhir.progress import NullProgress, Progress, type_bars

log = logging.getLogger(__name__)
SQL_PACKAGE = "cartfhir.extract.sql"
POLL_FIRST = 1.0  # seconds before the first status check when the server gives no Retry-After
POLL_MAX = 60.0
QUEUE_CHUNKS = 16
LINES_PER_CHUNK = 500


def export_key(source: BulkSource) -> str:
    """The watermark key of an export: its level and what it asks for."""
    level = {"system": "$export", "patient": "Patient/$export",
             "group": f"Group/{source.group_id}/$export"}[source.level]
    parts = [f"_type={','.join(sorted(source.types))}"]
    if source.type_filters:
        parts.append(f"_typeFilter={','.join(sorted(source.type_filters))}")
    return f"{level}?{'&'.join(parts)}"


def _kickoff_path(source: BulkSource) -> str:
    return export_key(source).split("?", 1)[0]


@dataclass
class _Chunk:
    url: str  # masked
    kind: str  # output | error
    start: int
    lines: list[bytes]


@dataclass
class _FileDone:
    url: str
    kind: str  # output | error
    resource_type: str
    lines: int
    expected: int | None
    error: BaseException | None


def export_site(con: duckdb.DuckDBPyConnection, site: Site, run_id: str, *,
                validation: str = "full", batch_size: int = 5000, full: bool = False,
                since: str | None = None, progress: Progress | None = None,
                client: FhirClient | None = None, sleep=time.sleep) -> SiteReport:
    """Export one ``bulk`` site into raw.resources; return counts, status and problems."""
    source = site.source
    assert isinstance(source, BulkSource)
    progress = progress or NullProgress()
    state.create_state_tables(con)
    apply_ddl(con, SQL_PACKAGE, "bulk_job", "raw_export_error", "raw_deleted")
    report = SiteReport()
    client = client or FhirClient(str(source.base_url), source.http, source.auth)
    key = export_key(source)
    try:
        report.server = capability(client)
        status_url = _resume(con, site.id, full)
        if status_url is None:
            mark = since or (None if full else state.watermark(con, site.id, key, "*"))
            status_url = _kickoff(con, client, source, site.id, run_id,
                                  state.since_with_overlap(mark) if mark and not since
                                  else mark)
        else:
            log.info("site %s: resuming bulk export %s", site.id, mask_url(status_url))
        try:
            manifest = _poll(client, status_url, source.max_wait, sleep)
            _land(con, client, site, run_id, manifest, report, validation, batch_size,
                  progress, source.max_downloads)
        except (KeyboardInterrupt, SystemExit):
            _cancel(con, client, status_url)
            raise
        except ExportNotReady:
            raise
        except FhirServerError:
            _finish_job(con, status_url, "failed")
            raise
        transaction_time = manifest.get("transactionTime")
        _finish_job(con, status_url, "downloaded", transaction_time)
        if report.status == "complete" and transaction_time:
            state.advance(con, site.id, key, "*", transaction_time, run_id)
        _delete_quietly(client, status_url)  # tell the server the files can go
    finally:
        close_report(con, run_id, site.id, report, client)
    return report


def _resume(con: duckdb.DuckDBPyConnection, site: str, full: bool) -> str | None:
    row = con.execute("SELECT status_url FROM meta.bulk_job WHERE site = ? AND status = 'running' "
                      "ORDER BY started DESC LIMIT 1", [site]).fetchone()
    if row and full:
        _finish_job(con, row[0], "cancelled")
        return None
    return row[0] if row else None


def _kickoff(con: duckdb.DuckDBPyConnection, client: FhirClient, source: BulkSource, site: str,
             run_id: str, since: str | None) -> str:
    params: dict[str, Any] = {"_type": ",".join(source.types)}
    if since:
        params["_since"] = since
    if source.type_filters:
        params["_typeFilter"] = list(source.type_filters)
    url = client.url(_kickoff_path(source), params)
    response = client.request("GET", url, headers={"Prefer": "respond-async",
                                                   "Accept": "application/fhir+json"},
                              ok=lambda r: r.status_code == 202)
    status_url = response.headers.get("Content-Location")
    if not status_url:
        raise FhirServerError(f"bulk kick-off {mask_url(url)} answered 202 without a "
                              "Content-Location header", status=202, url=mask_url(url))
    client.check_url(status_url)
    # A server may reuse a status URL once a job is over; the new job takes the row.
    con.execute("INSERT OR REPLACE INTO meta.bulk_job VALUES "
                "(?, ?, ?, ?, 'running', ?, ?, NULL, NULL)",
                [site, status_url, mask_url(url), since, run_id, datetime.now(UTC)])
    log.info("site %s: bulk export started (%s)", site, mask_url(status_url))
    return status_url


class ExportNotReady(FhirServerError):
    """The export did not finish within max_wait; its job stays 'running' to be resumed."""


def _poll(client: FhirClient, status_url: str, max_wait: float, sleep) -> dict[str, Any]:
    waited = 0.0
    wait = POLL_FIRST
    while True:
        response = client.request("GET", status_url, headers={"Accept": "application/json"},
                                  ok=lambda r: r.status_code in (200, 202))
        if response.status_code == 200:
            try:
                manifest = orjson.loads(response.content)
            except orjson.JSONDecodeError as exc:
                raise FhirServerError(f"bulk manifest at {mask_url(status_url)} is not JSON: {exc}",
                                      url=mask_url(status_url)) from None
            if not isinstance(manifest, dict) or "output" not in manifest:
                raise FhirServerError(f"bulk manifest at {mask_url(status_url)} has no 'output'",
                                      url=mask_url(status_url))
            return manifest
        progress_note = response.headers.get("X-Progress")
        if progress_note:
            log.info("bulk export: %s", progress_note)
        asked = parse_retry_after(response.headers.get("Retry-After"))
        pause = min(asked if asked is not None else wait, client.http.retry_after_cap, POLL_MAX)
        if waited + pause > max_wait:
            raise ExportNotReady(
                f"bulk export at {mask_url(status_url)} not finished after {max_wait:.0f} s "
                "(max_wait); the job is kept and the next run resumes it",
                url=mask_url(status_url))
        sleep(pause)
        waited += pause
        wait = min(wait * 1.5, POLL_MAX)


def _download(client: FhirClient, url: str, kind: str, resource_type: str,
              expected: int | None, with_token: bool, out: queue.Queue,
              stop: threading.Event) -> None:
    lines = 0
    error: BaseException | None = None
    try:
        client.check_url(url)
        response = client.request("GET", url, headers={"Accept": "application/fhir+ndjson"},
                                  stream=True, auth=with_token)
        chunk: list[bytes] = []
        start = 1
        try:
            for raw in response.iter_lines():
                lines += 1
                chunk.append(raw)
                if len(chunk) >= LINES_PER_CHUNK:
                    if not put_unless_stopped(out, _Chunk(mask_url(url), kind, start, chunk),
                                              stop):
                        return
                    start, chunk = start + len(chunk), []
            if chunk and not put_unless_stopped(out, _Chunk(mask_url(url), kind, start, chunk),
                                                stop):
                return
        finally:
            response.close()
    except BaseException as exc:  # always reported, so the writer never waits forever
        error = exc
    put_unless_stopped(out, _FileDone(url, kind, resource_type, lines, expected, error), stop)


def _land(con: duckdb.DuckDBPyConnection, client: FhirClient, site: Site, run_id: str,
          manifest: dict[str, Any], report: SiteReport, validation: str, batch_size: int,
          progress: Progress, max_downloads: int) -> None:
    with_token = bool(manifest.get("requiresAccessToken"))
    files = [(o["url"], "output", o.get("type", "?"), o.get("count"))
             for o in manifest.get("output") or []]
    files += [(o["url"], "error", o.get("type", "OperationOutcome"), o.get("count"))
              for o in manifest.get("error") or []]
    out: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=max_downloads, thread_name_prefix=f"bulk-{site.id}")
    errors: list[tuple[str, int, bytes]] = []
    pending = len(files)
    with (
        type_bars(progress, site.id, [rtype for _, _, rtype, _ in files], "files") as bars,
        Lander(con, site.id, run_id, validation=validation, batch_size=batch_size) as lander,
    ):
        for url, kind, rtype, expected in files:
            pool.submit(_download, client, url, kind, rtype, expected, with_token, out, stop)
        try:
            while pending:
                item = out.get()
                if isinstance(item, _FileDone):
                    pending -= 1
                    bars[item.resource_type].advance(1)
                    if item.error is not None and not isinstance(
                            item.error, requests.RequestException | CartfhirError):
                        raise item.error  # a bug or an interrupt: stop everything
                    _judge_file(item, report)
                    lander.commit()  # a downloaded file is kept even if the run dies later
                    continue
                if item.kind == "error":
                    errors += [(item.url, item.start + i, raw) for i, raw in enumerate(item.lines)]
                    continue
                for i, raw in enumerate(item.lines):
                    if raw.strip():
                        lander.add(RawLine(item.url, item.start + i, raw))
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
    report.counts = lander.counts
    _store_errors(con, site.id, run_id, errors, report)
    _apply_deleted(con, client, site.id, run_id, manifest.get("deleted") or [], report,
                   with_token)


def _judge_file(done: _FileDone, report: SiteReport) -> None:
    problem = None
    if done.error is not None:
        problem = f"{done.kind} file {mask_url(done.url)} failed: {done.error}"
    elif done.expected is not None and done.lines < done.expected:
        problem = (f"{done.kind} file {mask_url(done.url)} had {done.lines} lines, the manifest "
                   f"announced {done.expected}")
    report.requests.append(state.RequestRecord(
        "$export", done.resource_type, mask_url(done.url), None, 1, done.lines, 0, done.expected,
        max(0, (done.expected or 0) - done.lines), "failed" if problem else "complete", problem,
        0.0))
    if problem:
        report.status = "partial"
        report.problems.append(problem)


def _store_errors(con: duckdb.DuckDBPyConnection, site: str, run_id: str,
                  errors: list[tuple[str, int, bytes]], report: SiteReport) -> None:
    rows = []
    for url, line_no, raw in errors:
        try:
            outcome = orjson.loads(raw)
        except orjson.JSONDecodeError:
            outcome = {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "invalid",
                 "diagnostics": raw[:500].decode("utf-8", "replace")}]}
        issues = outcome.get("issue") or []
        severities = [i.get("severity", "error") for i in issues]
        worst = next((s for s in ("fatal", "error", "warning", "information") if s in severities),
                     None)
        text = "; ".join(str(i.get("diagnostics") or i.get("code")) for i in issues)
        rows.append([site, run_id, url, line_no, worst, text,
                     orjson.dumps(outcome).decode()])
        if worst in ("fatal", "error"):
            report.status = "partial"
            report.problems.append(f"server export error: {text}")
    if rows:
        con.executemany("INSERT INTO raw.export_error VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def _apply_deleted(con: duckdb.DuckDBPyConnection, client: FhirClient, site: str, run_id: str,
                   deleted: list[dict[str, Any]], report: SiteReport, with_token: bool) -> None:
    """Remove resources the server deleted, keeping what was stored in raw.deleted."""
    for item in deleted:
        try:
            bundle_lines = client.request("GET", item["url"],
                                          auth=with_token).content.splitlines()
        except CartfhirError as exc:
            report.status = "partial"
            report.problems.append(f"deleted file {mask_url(item['url'])} failed: {exc}")
            continue
        for raw in bundle_lines:
            if not raw.strip():
                continue
            bundle = orjson.loads(raw)
            for entry in bundle.get("entry") or []:
                request = entry.get("request") or {}
                if request.get("method") != "DELETE" or "/" not in request.get("url", ""):
                    continue
                rtype, rid = request["url"].split("/")[-2:]
                con.execute(
                    "INSERT INTO raw.deleted SELECT ?, ?, ?, ?, (SELECT resource FROM "
                    "raw.resources WHERE site = ? AND resource_type = ? AND id = ?)",
                    [site, rtype, rid, run_id, site, rtype, rid])
                con.execute("DELETE FROM raw.resources WHERE site = ? AND resource_type = ? "
                            "AND id = ?", [site, rtype, rid])


def _finish_job(con: duckdb.DuckDBPyConnection, status_url: str, status: str,
                transaction_time: str | None = None) -> None:
    con.execute("UPDATE meta.bulk_job SET status = ?, finished = ?, transaction_time = ? "
                "WHERE status_url = ?", [status, datetime.now(UTC), transaction_time, status_url])


def _cancel(con: duckdb.DuckDBPyConnection, client: FhirClient, status_url: str) -> None:
    log.warning("interrupted: cancelling bulk export %s", mask_url(status_url))
    _delete_quietly(client, status_url)
    _finish_job(con, status_url, "cancelled")


def _delete_quietly(client: FhirClient, status_url: str) -> None:
    try:
        client.request("DELETE", status_url, ok=lambda r: r.status_code < 500)
    except CartfhirError as exc:  # cleanup is a courtesy; the data is already safe
        log.info("could not DELETE %s: %s", mask_url(status_url), exc)
