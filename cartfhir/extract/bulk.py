"""Bulk Data $export of one site: kick off, poll, download in parallel, land.

Follows the Bulk Data Access IG: ``Prefer: respond-async`` kick-off at system,
Patient or Group level with ``_type``/``_since``/``_typeFilter``; polling that
honours ``Retry-After`` (capped) and logs ``X-Progress``; output files fetched
with at most ``max_downloads`` connections, with the token sent only when the
manifest says ``requiresAccessToken``. Error files go to ``raw.export_error``,
``deleted`` entries are applied (the removed versions kept in ``raw.deleted``).
The status URL is stored in ``meta.bulk_job`` before polling, so a crashed run
resumes that job; an interrupt cancels it with DELETE. The manifest is checked
field by field (``parse_manifest``); a job that fails in any way is marked
``failed`` and DELETEd, so the next run kicks off afresh instead of resuming it.
The status URL is stored with secret-looking query values masked: a job whose URL
carried a token cannot be resumed after a crash and is ``abandoned`` instead.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson
import requests
import urllib3

from cartfhir.config import LANDING_BATCH_ROWS, BulkSource, Site
from cartfhir.db import apply_ddl
from cartfhir.errors import CartfhirError, FhirServerError, SourceError
from cartfhir.extract import state
from cartfhir.extract.checks import json_kind
from cartfhir.extract.http import MASK, FhirClient, mask_url, parse_retry_after
from cartfhir.extract.landing import Lander
from cartfhir.extract.ndjson import (
    DEFAULT_LIMITS,
    READ_BYTES,
    RawLine,
    ReadLimits,
    Unreadable,
    gunzip,
    gunzip_if_gzip,
    split_lines,
)
from cartfhir.extract.rest import SiteReport, capability, close_report, put_unless_stopped
from cartfhir.progress import NullProgress, Progress, type_bars
from cartfhir.redact import redact, redact_cut

log = logging.getLogger(__name__)
SQL_PACKAGE = "cartfhir.extract.sql"
POLL_FIRST = 1.0  # seconds before the first status check when the server gives no Retry-After
POLL_MAX = 60.0
QUEUE_CHUNKS = 16
# A chunk of lines goes to the writer at this many lines or bytes, whichever comes first.
LINES_PER_CHUNK = 500
BYTES_PER_CHUNK = 8 * 2**20
# Content-Encodings undone here (the ones the client's Accept-Encoding offers).
DEFLATED = frozenset({"gzip", "x-gzip", "deflate"})


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
    lines: list[RawLine]


@dataclass
class _FileDone:
    url: str
    kind: str  # output | error
    resource_type: str
    lines: int
    expected: int | None
    error: BaseException | None


def export_site(con: duckdb.DuckDBPyConnection, site: Site, run_id: str, *,
                validation: str = "full", batch_size: int = LANDING_BATCH_ROWS, full: bool = False,
                since: str | None = None, progress: Progress | None = None,
                client: FhirClient | None = None, sleep=time.sleep,
                limits: ReadLimits = DEFAULT_LIMITS) -> SiteReport:
    """Export one ``bulk`` site into raw.resources; return counts, status and problems.

    ``limits``: caps on each downloaded file (``landing`` in the config).
    """
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
        status_url = _resume(con, client, site.id, full)
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
                  progress, source.max_downloads, limits)
        except (KeyboardInterrupt, SystemExit):
            _cancel(con, client, status_url)
            raise
        except ExportNotReady:
            raise
        except Exception:  # never resume a job that broke us: the next run starts afresh
            _fail(con, client, status_url)
            raise
        transaction_time = manifest.transaction_time
        _finish_job(con, status_url, "downloaded", transaction_time)
        # earliest() of one: the same rule as a search's clock (never a time ahead of ours).
        mark = state.earliest([transaction_time])
        if report.status == "complete" and mark:
            state.advance(con, site.id, key, "*", mark, run_id)
        _delete_quietly(client, status_url)  # tell the server the files can go
    finally:
        close_report(con, run_id, site.id, report, client)
    return report


def _resume(con: duckdb.DuckDBPyConnection, client: FhirClient, site: str,
            full: bool) -> str | None:
    """The status URL of the site's job still running, if it can and should be resumed."""
    row = con.execute("SELECT status_url FROM meta.bulk_job WHERE site = ? AND status = 'running' "
                      "ORDER BY started DESC LIMIT 1", [site]).fetchone()
    if row is None:
        return None
    if full:
        _finish_job(con, row[0], "cancelled")
        return None
    if MASK in row[0]:  # its secret was never stored, so it cannot be polled again
        log.warning("site %s: bulk export %s cannot be resumed: its status URL carried a "
                    "secret, which is not stored; starting a new export", site, row[0])
        _finish_job(con, row[0], "abandoned")
        return None
    return row[0]


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
    # Stored masked: a token in the status URL must not rest in the file (see _resume).
    con.execute("INSERT OR REPLACE INTO meta.bulk_job VALUES "
                "(?, ?, ?, ?, 'running', ?, ?, NULL, NULL)",
                [site, mask_url(status_url), mask_url(url), since, run_id, datetime.now(UTC)])
    log.info("site %s: bulk export started (%s)", site, mask_url(status_url))
    return status_url


class ExportNotReady(FhirServerError):
    """The export did not finish within max_wait; its job stays 'running' to be resumed."""


@dataclass(frozen=True)
class ManifestFile:
    """One file the manifest lists: where it is, its resource type, its announced count."""

    url: str
    type: str
    count: int | None


@dataclass(frozen=True)
class Manifest:
    """A completed export's manifest, every field checked."""

    transaction_time: str | None
    requires_token: bool
    output: list[ManifestFile]
    error: list[ManifestFile]
    deleted: list[ManifestFile]


def parse_manifest(data: Any, where: str) -> Manifest:
    """Check a manifest field by field; FhirServerError naming the first bad field.

    ``where`` is the (masked) status URL, for the message.
    """
    def bad(what: str) -> FhirServerError:
        return FhirServerError(f"bulk manifest at {where}: {what}; the server's export is "
                               "malformed, nothing of it was landed", url=where)

    if not isinstance(data, dict):
        raise bad(f"it is {json_kind(data)}, not a JSON object")
    if "output" not in data:
        raise bad("it has no 'output'")
    parts: dict[str, list[ManifestFile]] = {}
    for part, default_type in (("output", "?"), ("error", "OperationOutcome"),
                               ("deleted", "Bundle")):
        items = data.get(part) or []
        if not isinstance(items, list):
            raise bad(f"'{part}' is {json_kind(items)}, not an array")
        files = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise bad(f"{part}[{i}] is {json_kind(item)}, not an object")
            url = item.get("url")
            if not isinstance(url, str) or not url:
                raise bad(f"{part}[{i}].url is {'missing' if url is None else json_kind(url)}, "
                          "not a URL")
            rtype = item.get("type")
            count = item.get("count")
            if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                      or count < 0):
                raise bad(f"{part}[{i}].count is {json_kind(count)}, not a count")
            files.append(ManifestFile(url, rtype if isinstance(rtype, str) and rtype
                                      else default_type, count))
        parts[part] = files
    transaction_time = data.get("transactionTime")
    if transaction_time is not None:
        try:
            state.parse_instant(transaction_time if isinstance(transaction_time, str) else "")
        except ValueError:
            raise bad(f"'transactionTime' {redact_cut(repr(str(transaction_time)), 40)} is "
                      "not an instant") from None
    requires_token = data.get("requiresAccessToken", False)
    if not isinstance(requires_token, bool):
        raise bad(f"'requiresAccessToken' is {json_kind(requires_token)}, not true or false")
    return Manifest(transaction_time, requires_token, parts["output"], parts["error"],
                    parts["deleted"])


def _poll(client: FhirClient, status_url: str, max_wait: float, sleep) -> Manifest:
    waited = 0.0
    wait = POLL_FIRST
    while True:
        response = client.request("GET", status_url, headers={"Accept": "application/json"},
                                  ok=lambda r: r.status_code in (200, 202), stream=True)
        if response.status_code == 200:
            try:
                data = orjson.loads(client.read_body(response, status_url))
            except orjson.JSONDecodeError as exc:
                raise FhirServerError(f"bulk manifest at {mask_url(status_url)} is not JSON: {exc}",
                                      url=mask_url(status_url)) from None
            except requests.RequestException as exc:  # cut short: ask again after a pause
                log.info("bulk manifest at %s was cut short (%s); asking again",
                         mask_url(status_url), type(exc).__name__)
            else:
                return parse_manifest(data, mask_url(status_url))
        response.close()
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
              stop: threading.Event, limits: ReadLimits = DEFAULT_LIMITS) -> None:
    """Stream one file's lines to ``out`` in chunks, then report it done (with any error).

    Lines are split as the body arrives (linear in its size however long a
    line is) with the same caps as a folder; a body cut short, corrupt gzip or
    a file over the size cap lands what came before and fails the file.
    """
    lines = 0
    error: BaseException | None = None
    try:
        client.check_url(url)
        response = client.request("GET", url, headers={"Accept": "application/fhir+ndjson"},
                                  stream=True, auth=with_token)
        chunk: list[RawLine] = []
        size = 0
        shown = mask_url(url)  # once per file: it redacts with every registered secret
        try:
            for line in split_lines(shown, _ndjson_blocks(response), limits):
                if line.file_cut:
                    error = SourceError(line.error)
                else:
                    lines += 1
                chunk.append(line)
                size += len(line.raw)
                if len(chunk) >= LINES_PER_CHUNK or size >= BYTES_PER_CHUNK:
                    if not put_unless_stopped(out, _Chunk(shown, kind, chunk), stop):
                        return
                    chunk, size = [], 0
            if chunk and not put_unless_stopped(out, _Chunk(shown, kind, chunk), stop):
                return
        finally:
            response.close()
    except BaseException as exc:  # always reported, so the writer never waits forever
        error = exc
    put_unless_stopped(out, _FileDone(url, kind, resource_type, lines, expected, error), stop)


def _ndjson_blocks(response: requests.Response) -> Iterator[bytes]:
    """The NDJSON bytes of a download: Content-Encoding and a gzip file undone here.

    Decompressing ourselves (not in urllib3) lets one gunzip report a stream
    cut short, and lets the caller's size cap bound it.
    """
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    blocks = _wire_blocks(response)
    if encoding in DEFLATED:
        blocks = gunzip(blocks)
    elif encoding not in ("", "identity"):
        raise Unreadable(f"the server sent Content-Encoding {encoding!r}, which was not asked "
                         "for")
    yield from gunzip_if_gzip(blocks)  # a file exported as .ndjson.gz


def _wire_blocks(response: requests.Response) -> Iterator[bytes]:
    """The body as sent, in blocks; a connection lost or a body shorter than its
    Content-Length raises ``Unreadable``."""
    wire = response.raw
    if not isinstance(wire, urllib3.response.BaseHTTPResponse):  # a body already in memory
        yield from response.iter_content(READ_BYTES)
        return
    try:
        yield from wire.stream(READ_BYTES, decode_content=False)
    except urllib3.exceptions.HTTPError as exc:
        raise Unreadable(f"the download was cut short ({exc})") from None


def _land(con: duckdb.DuckDBPyConnection, client: FhirClient, site: Site, run_id: str,
          manifest: Manifest, report: SiteReport, validation: str, batch_size: int,
          progress: Progress, max_downloads: int,
          limits: ReadLimits = DEFAULT_LIMITS) -> None:
    with_token = manifest.requires_token
    files = [(f.url, kind, f.type, f.count)
             for kind, part in (("output", manifest.output), ("error", manifest.error))
             for f in part]
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
            pool.submit(_download, client, url, kind, rtype, expected, with_token, out, stop,
                        limits)
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
                    errors += [(line.source_uri, line.line_no, line.raw) for line in item.lines
                               if not line.file_cut]
                    continue
                for line in item.lines:
                    lander.add(line)
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
    report.counts = lander.counts
    _store_errors(con, site.id, run_id, errors, report)
    _apply_deleted(con, client, site.id, run_id, manifest.deleted, report, with_token)


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
            outcome = None
        if not isinstance(outcome, dict):  # kept as the server sent it, as diagnostics
            outcome = {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "invalid",
                 "diagnostics": redact_cut(raw.decode("utf-8", "replace"), 500, "")}]}
        issues = outcome.get("issue")
        issues = [i for i in issues if isinstance(i, dict)] if isinstance(issues, list) else []
        severities = [i.get("severity", "error") for i in issues]
        worst = next((s for s in ("fatal", "error", "warning", "information") if s in severities),
                     None)
        text = redact("; ".join(str(i.get("diagnostics") or i.get("code")) for i in issues))
        rows.append([site, run_id, url, line_no, worst, text,
                     redact(orjson.dumps(outcome).decode())])
        if worst in ("fatal", "error"):
            report.status = "partial"
            report.problems.append(f"server export error: {text}")
    if rows:
        con.executemany("INSERT INTO raw.export_error VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def _apply_deleted(con: duckdb.DuckDBPyConnection, client: FhirClient, site: str, run_id: str,
                   deleted: list[ManifestFile], report: SiteReport, with_token: bool) -> None:
    """Remove resources the server deleted, keeping what was stored in raw.deleted.

    A file that cannot be fetched or read, or an entry that does not name a resource,
    makes the run partial with the file, line and field named; the rest is applied.
    """
    def problem(text: str) -> None:
        report.status = "partial"
        report.problems.append(text)

    for item in deleted:
        where = f"deleted file {mask_url(item.url)}"
        try:
            client.check_url(item.url)
            body = client.read_body(client.request("GET", item.url, auth=with_token, stream=True),
                                    item.url)
        except (CartfhirError, requests.RequestException) as exc:
            problem(f"{where} failed: {exc}")
            continue
        for line_no, raw in enumerate(body.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                bundle = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                problem(f"{where} line {line_no} is not JSON ({exc}); its deletions were not "
                        "applied")
                continue
            entries = bundle.get("entry") if isinstance(bundle, dict) else None
            if not isinstance(entries, list):
                problem(f"{where} line {line_no} is not a Bundle with an 'entry' array; its "
                        "deletions were not applied")
                continue
            for i, entry in enumerate(entries):
                request = entry.get("request") if isinstance(entry, dict) else None
                method = request.get("method") if isinstance(request, dict) else None
                ref = request.get("url") if isinstance(request, dict) else None
                if method != "DELETE" or not isinstance(ref, str) or "/" not in ref:
                    problem(f"{where} line {line_no}: Bundle.entry[{i}].request is not a DELETE "
                            "of 'Type/id'; not applied")
                    continue
                rtype, rid = ref.split("/")[-2:]
                con.execute(
                    "INSERT INTO raw.deleted SELECT ?, ?, ?, ?, (SELECT resource FROM "
                    "raw.resources WHERE site = ? AND resource_type = ? AND id = ?)",
                    [site, rtype, rid, run_id, site, rtype, rid])
                con.execute("DELETE FROM raw.resources WHERE site = ? AND resource_type = ? "
                            "AND id = ?", [site, rtype, rid])


def _finish_job(con: duckdb.DuckDBPyConnection, status_url: str, status: str,
                transaction_time: str | None = None) -> None:
    """Close the job's row (found by its masked status URL, as stored)."""
    con.execute("UPDATE meta.bulk_job SET status = ?, finished = ?, transaction_time = ? "
                "WHERE status_url = ?",
                [status, datetime.now(UTC), transaction_time, mask_url(status_url)])


def _fail(con: duckdb.DuckDBPyConnection, client: FhirClient, status_url: str) -> None:
    """Mark the job failed (so no later run resumes it) and tell the server to drop it."""
    log.warning("bulk export %s failed; marked failed, the next run starts a new export",
                mask_url(status_url))
    try:
        _finish_job(con, status_url, "failed")
    except duckdb.Error as exc:  # the original error says more; keep it
        log.error("could not mark bulk export %s failed: %s", mask_url(status_url), exc)
    _delete_quietly(client, status_url)


def _cancel(con: duckdb.DuckDBPyConnection, client: FhirClient, status_url: str) -> None:
    log.warning("interrupted: cancelling bulk export %s", mask_url(status_url))
    _delete_quietly(client, status_url)
    _finish_job(con, status_url, "cancelled")


def _delete_quietly(client: FhirClient, status_url: str) -> None:
    try:
        client.request("DELETE", status_url, ok=lambda r: r.status_code < 500)
    except CartfhirError as exc:  # cleanup is a courtesy; the data is already safe
        log.info("could not DELETE %s: %s", mask_url(status_url), exc)
