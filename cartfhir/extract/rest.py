"""REST extraction of one site: find the cohort, then pull its resources page by page.

Searches for batches of patients run in a few worker threads (the site's
``http.max_connections``). Pages come back through a bounded queue to this
thread, which alone writes to DuckDB through the same ``Lander`` as NDJSON
landing, so versions, duplicates and rejects follow the same rules. A query's
watermark moves only when every batch of it completed with nothing missing;
a patient counts as pulled only when every query covered them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import duckdb

from cartfhir.config import LANDING_BATCH_ROWS, FhirSource, ResourceQuery, Site
from cartfhir.errors import CartfhirError, FhirServerError, SourceError
from cartfhir.extract import state
from cartfhir.extract.http import FhirClient, mask_url
from cartfhir.extract.landing import Lander
from cartfhir.extract.ndjson import RawLine, resource_line
from cartfhir.extract.paging import Page, PagingExpired, SearchTally, search_pages
from cartfhir.progress import NullProgress, Progress, type_bars
from cartfhir.redact import redact, redact_cut

log = logging.getLogger(__name__)
PAGING_RESTARTS = 2  # times a query is restarted after its paging expired (HTTP 410)
QUEUE_PAGES = 32  # pages waiting for the writer; bounds memory


@dataclass(frozen=True)
class Task:
    """One search: a query for a batch of patients (or a cohort-defining search)."""

    query: ResourceQuery
    query_key: str
    patients: tuple[str, ...]
    params: dict[str, Any]


@dataclass
class SiteReport:
    """What the REST pull of one site did; ``status`` is complete, partial or failed."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    status: str = "complete"
    problems: list[str] = field(default_factory=list)
    requests: list[state.RequestRecord] = field(default_factory=list)
    server: tuple[str | None, str | None, str | None] = (None, None, None)
    patients: int = 0
    http_requests: int = 0
    retries: int = 0
    server_times: dict[str, list[str | None]] = field(default_factory=dict)


def query_key(query: ResourceQuery) -> str:
    """The query as a stable text, without patients or dates (the watermark's key)."""
    parts = []
    if query.categories:
        parts.append("category=" + ",".join(sorted(query.categories)))
    if query.codes:
        parts.append("code=" + ",".join(sorted(query.codes)))
    return query.type + ("?" + "&".join(parts) if parts else "")


def capability(client: FhirClient) -> tuple[str | None, str | None, str | None]:
    """(software name, software version, FHIR version) from the CapabilityStatement."""
    body = client.get_json(client.url("metadata")).data
    if body.get("resourceType") != "CapabilityStatement":
        raise FhirServerError(f"{mask_url(client.url('metadata'))} is not a CapabilityStatement; "
                              "is base_url the FHIR base (usually ending in /fhir)?")
    software = body.get("software")

    def text(value: Any) -> str | None:  # servers put odd things here; keep only text
        return redact_cut(value, 200, "") if isinstance(value, str) else None

    return (text(_field(software, "name")), text(_field(software, "version")),
            text(body.get("fhirVersion")))


def _reference_id(reference: Any) -> str | None:
    if not isinstance(reference, str):
        return None
    if reference and reference.startswith("Patient/"):
        return reference.split("/", 2)[1]
    if reference and "/Patient/" in reference:  # absolute reference
        return reference.rsplit("/Patient/", 1)[1].split("/", 1)[0]
    return None


def find_cohort(client: FhirClient, source: FhirSource, page_size: int,
                report: SiteReport) -> list[str]:
    """Patient ids of the cohort, from a Group, a file of ids, or searches."""
    cohort = source.cohort
    ids: set[str] = set()
    if cohort.patient_ids_file is not None:
        try:
            text = cohort.patient_ids_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise SourceError(f"cannot read cohort.patient_ids_file "
                              f"{cohort.patient_ids_file}: {exc.strerror}") from None
        ids = {line.strip() for line in text.splitlines() if line.strip()
               and not line.startswith("#")}
    elif cohort.group_id is not None:
        url = client.url(f"Group/{cohort.group_id}")
        group = client.get_json(url).data
        members = group.get("member") or []
        for member in members if isinstance(members, list) else []:
            pid = _reference_id(_field(_field(member, "entity"), "reference"))
            if pid and not _field(member, "inactive"):
                ids.add(pid)
        report.requests.append(state.RequestRecord("Group", "Group", mask_url(url), None, 1,
                                                   len(ids), 0, None, 0, "complete", None, 0.0))
    else:
        for search in cohort.search:
            rtype, _, query = search.partition("?")
            url = client.url(f"{rtype}?{query}", {"_count": page_size})
            tally = SearchTally(url=mask_url(url))
            started = time.monotonic()
            for page in search_pages(client, url, tally, resource_type=rtype,
                                     page_size=page_size, max_pages=source.max_pages):
                for resource in page.resources:
                    if resource.get("resourceType") == "Patient":
                        if isinstance(resource.get("id"), str):
                            ids.add(resource["id"])
                    else:
                        for name in ("subject", "patient"):
                            pid = _reference_id(_field(resource.get(name), "reference"))
                            if pid:
                                ids.add(pid)
            status, message = judge(tally)
            if status != "complete":
                report.problems.append(f"cohort search {search}: {message}")
            _record(report, search, rtype, tally, None, time.monotonic() - started, message,
                    status)
    return sorted(ids)


def _field(value: Any, name: str) -> Any:
    """``value[name]`` when ``value`` is an object, else None (servers send odd shapes)."""
    return value.get(name) if isinstance(value, dict) else None


def plan(source: FhirSource, patients: Sequence[str], known: set[str],
         marks: dict[str, str | None], since: str | None) -> list[Task]:
    """Split the pull into searches of at most ``patients_per_query`` patients."""
    tasks: list[Task] = []
    size = source.patients_per_query
    for query in source.resources:
        key = query_key(query)
        mark = since or marks.get(key)
        if mark is None:
            groups: list[tuple[list[str], str | None]] = [(list(patients), None)]
        else:  # patients already pulled get what changed; new ones get everything
            groups = [(sorted(set(patients) - known), None), (sorted(set(patients) & known), mark)]
        for members, last in groups:
            for i in range(0, len(members), size):
                batch = tuple(members[i:i + size])
                params: dict[str, Any] = {"_count": source.page_size, "_total": "accurate"}
                if query.type == "Patient":
                    params["_id"] = ",".join(batch)
                else:
                    params["patient"] = ",".join(batch)
                if query.codes:
                    params["code"] = ",".join(query.codes)
                if query.categories:
                    params["category"] = ",".join(query.categories)
                if last is not None:
                    params["_lastUpdated"] = "gt" + state.since_with_overlap(last)
                tasks.append(Task(query, key, batch, params))
    return tasks


@dataclass
class _Done:
    task: Task
    tally: SearchTally
    seconds: float
    error: BaseException | None


def put_unless_stopped(out: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Hand an item to the writer; give up when the pull is being stopped."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


def _run_task(client: FhirClient, task: Task, out: queue.Queue, stop: threading.Event,
              max_pages: int | None = None) -> None:
    if stop.is_set():
        return
    started = time.monotonic()
    url = client.url(task.query.type, task.params)
    tally = SearchTally(url=mask_url(url))
    error: BaseException | None = None
    for attempt in range(PAGING_RESTARTS + 1):
        tally = SearchTally(url=mask_url(url))
        try:
            for page in search_pages(client, url, tally, resource_type=task.query.type,
                                     page_size=task.params.get("_count"),
                                     max_pages=max_pages):
                if not put_unless_stopped(out, page, stop):
                    return
            error = None
            break
        except PagingExpired as exc:  # the server forgot the search: start it again
            log.warning("%s; restarting the query (%d/%d)", exc, attempt + 1, PAGING_RESTARTS)
            error = exc
        except BaseException as exc:  # reported by the writer thread, never swallowed
            error = exc
            break
    put_unless_stopped(out, _Done(task, tally, time.monotonic() - started, error), stop)


def _lines(page: Page) -> Iterator[RawLine]:
    """The page's resources as lines to land, then its unusable entries as rejected lines."""
    for n, resource in enumerate(page.resources, start=1):
        yield resource_line(page.url, n, resource)
    for n, (reason, raw) in enumerate(page.rejects, start=len(page.resources) + 1):
        yield RawLine(page.url, n, raw, error=reason)


def pull_site(con: duckdb.DuckDBPyConnection, site: Site, run_id: str, *,
              validation: str = "full", batch_size: int = LANDING_BATCH_ROWS, full: bool = False,
              since: str | None = None, progress: Progress | None = None,
              client: FhirClient | None = None) -> SiteReport:
    """Pull one ``fhir`` site into raw.resources; return counts, status and provenance."""
    source = site.source
    assert isinstance(source, FhirSource)
    progress = progress or NullProgress()
    state.create_state_tables(con)
    report = SiteReport()
    client = client or FhirClient(str(source.base_url), source.http, source.auth)
    try:
        report.server = capability(client)
        log.info("site %s: %s %s (FHIR %s) at %s", site.id, report.server[0] or "server",
                 report.server[1] or "", report.server[2] or "?", mask_url(client.base_url))
        patients = find_cohort(client, source, source.page_size, report)
        report.patients = len(patients)
        known = set() if full else state.known_patients(con, site.id)
        marks = {} if full else {query_key(q): state.watermark(con, site.id, query_key(q), q.type)
                                 for q in source.resources}
        tasks = plan(source, patients, known, marks, since)
        log.info("site %s: %d patients, %d searches", site.id, len(patients), len(tasks))
        failed_keys = _pull(con, site, run_id, client, tasks, report, validation, batch_size,
                            progress)
        # Move watermarks and remember patients only for what completed in full.
        for query in source.resources:
            key = query_key(query)
            if key in failed_keys:
                continue
            mark = state.earliest(report.server_times.get(key, []))
            if mark:
                state.advance(con, site.id, key, query.type, mark, run_id)
        if not failed_keys:
            state.remember_patients(con, site.id, patients, run_id)
        if report.problems:  # a cohort search may have come back incomplete too
            report.status = "partial"
    finally:
        close_report(con, run_id, site.id, report, client)
    return report


def close_report(con: duckdb.DuckDBPyConnection, run_id: str, site: str, report: SiteReport,
                 client: FhirClient) -> None:
    """Copy the client's counters into the report, store its requests, close the client.

    The problems are redacted here, once, as they leave the extraction (servers echo
    credentials in their error text).
    """
    report.problems[:] = [redact(problem) for problem in report.problems]
    report.http_requests = client.stats.requests
    report.retries = client.stats.retries
    state.record_requests(con, run_id, site, report.requests, report.server)
    client.close()


def _pull(con: duckdb.DuckDBPyConnection, site: Site, run_id: str, client: FhirClient,
          tasks: list[Task], report: SiteReport, validation: str, batch_size: int,
          progress: Progress) -> set[str]:
    """Run the searches in threads and land their pages here; return failed query keys."""
    source = site.source
    assert isinstance(source, FhirSource)
    out: queue.Queue = queue.Queue(maxsize=QUEUE_PAGES)
    stop = threading.Event()
    failed: set[str] = set()
    pending = len(tasks)
    pool = ThreadPoolExecutor(max_workers=source.http.max_connections,
                              thread_name_prefix=f"fhir-{site.id}")
    with (
        type_bars(progress, site.id, [t.query.type for t in tasks], "searches") as bars,
        Lander(con, site.id, run_id, validation=validation, batch_size=batch_size) as lander,
    ):
        for task in tasks:
            pool.submit(_run_task, client, task, out, stop, source.max_pages)
        try:
            while pending:
                item = out.get()
                if isinstance(item, _Done):
                    pending -= 1
                    bars[item.task.query.type].advance(1)
                    lander.commit()  # a finished search is kept even if the run dies later
                    status, message = _judge(item)
                    for warning in item.tally.warnings:
                        log.warning("site %s %s: %s", site.id, item.task.query_key, warning)
                    if status != "complete":
                        failed.add(item.task.query_key)
                        report.problems.append(f"{item.task.query_key}: {message}")
                    report.server_times.setdefault(item.task.query_key, []).append(
                        item.tally.server_time)
                    _record(report, item.task.query_key, item.task.query.type, item.tally,
                            len(item.task.patients), item.seconds, message, status)
                    if isinstance(item.error, CartfhirError | OSError) or item.error is None:
                        continue
                    raise item.error  # a bug or an interrupt in a worker: stop everything
                for line in _lines(item):
                    lander.add(line)
        except BaseException:
            stop.set()  # workers stop at their next page; queued searches never start
            raise
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
    report.counts = lander.counts
    if failed:
        report.status = "partial"
    return failed


def _judge(done: _Done) -> tuple[str, str | None]:
    if done.error is not None:
        return "failed", str(done.error)
    return judge(done.tally)


def judge(tally: SearchTally) -> tuple[str, str | None]:
    """(complete | partial, message): what is missing first, then the server's warnings."""
    why = tally.incomplete()
    message = "; ".join(why + tally.warnings) or None
    return ("partial" if why else "complete"), message


def _record(report: SiteReport, key: str, rtype: str, tally: SearchTally, patients: int | None,
            seconds: float, message: str | None, status: str = "complete") -> None:
    report.requests.append(state.RequestRecord(
        key, rtype, tally.url, patients, tally.pages, tally.matched, tally.included, tally.total,
        tally.shortfall, status, message, seconds, tally.final_url))
