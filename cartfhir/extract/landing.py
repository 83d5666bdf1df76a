"""Landing checked lines into raw.resources / raw.rejected, batch by batch.

Contract: the result is the same as landing the lines one at a time in input
order. Per key (site, resource_type, id) a line is *inserted* (new key),
*replaces* an older stored version, is *unchanged* (same content), *stale*
(older than the stored version) or *rejected* (same version, other content).
Versions order by meta.lastUpdated, then meta.versionId (as numbers when both
are integers); when nothing orders two different contents, the later one wins.

Checking (JSON parsing, FHIR validation) is the expensive part and needs no
state, so it can run in a pool of worker processes; deciding and writing stay
in this process, in input order.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing as mp
import os
from collections import Counter, defaultdict, deque
from collections.abc import Iterator, Sequence
from concurrent import futures
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

import duckdb
import numpy as np
import pandas as pd

from cartfhir.config import LANDING_BATCH_ROWS
from cartfhir.db import registered
from cartfhir.errors import CartfhirError, DatabaseError
from cartfhir.extract import ndjson
from cartfhir.extract.checks import Rejected, Validation, check_line, epoch_us
from cartfhir.extract.ndjson import DEFAULT_LIMITS, RawLine, ReadLimits
from cartfhir.progress import NullProgress, Progress
from cartfhir.redact import redact, redact_cut

OUTCOMES = ("received", "inserted", "replaced", "unchanged", "stale", "rejected")
# Counts key for rejected lines that do not name a known resource type.
UNKNOWN_TYPE = "unknown"
PAYLOAD_LIMIT = 65_536
SQL_PACKAGE = "cartfhir.extract.sql"
# Rows per transaction: at least DuckDB's row group size (122,880), so committed
# data goes straight to the database file, and not much more, because DuckDB
# holds a transaction's rows in memory outside its memory_limit until the
# commit (measured on 1M lab results: 250,000 -> 1.39 GB peak RSS, 122,880 ->
# 1.07 GB, at the same speed).
COMMIT_ROWS = 122_880
# Keys of a first landing remembered to skip lookups (8 bytes each).
REMEMBER_KEYS = 20_000_000
# Lines per unit of work sent to a check process: big enough that pickling
# overhead is small, small enough that results stream back steadily.
CHUNK_LINES = 1000
# Below this much input a process pool costs more (start-up) than it saves.
POOL_MIN_BYTES = 32 * 2**20
MAX_WORKERS = 8
# Chunks submitted ahead of the one being taken: enough to keep MAX_WORKERS
# busy while a batch is written, and a bound on memory.
IN_FLIGHT_CHUNKS = 2 * MAX_WORKERS

SiteCounts = dict[str, dict[str, int]]
log = logging.getLogger(__name__)


def _sql(name: str) -> str:
    return resources.files(SQL_PACKAGE).joinpath(f"{name}.sql").read_text(encoding="utf-8")


class Version(NamedTuple):
    """What decides between two copies of one resource."""

    version_id: str | None
    last_updated_us: int | None
    content_hash: str


class _Row(NamedTuple):
    """An accepted line waiting in a batch."""

    resource_type: str
    id: str
    version: Version
    text: str
    source_uri: str
    line_no: int


class _Reject(NamedTuple):
    source_uri: str
    line_no: int
    resource_type: str | None
    reason: str
    payload: str


def _is_integer(text: str) -> bool:
    return text.isascii() and text.isdigit()


def compare_versions(a: Version, b: Version) -> int:
    """1 if ``a`` is newer, -1 if older, 0 if the version metadata does not order them."""
    a_stamp, b_stamp = a.last_updated_us, b.last_updated_us
    if a_stamp is not None and b_stamp is not None and a_stamp != b_stamp:
        return 1 if a_stamp > b_stamp else -1
    if a.version_id is not None and b.version_id is not None and a.version_id != b.version_id:
        left: int | str = a.version_id
        right: int | str = b.version_id
        if _is_integer(a.version_id) and _is_integer(b.version_id):
            left, right = int(a.version_id), int(b.version_id)
        if left != right:
            return 1 if left > right else -1
    return 0


def decide(incoming: Version, current: Version | None) -> str:
    """inserted | replaced | unchanged | stale | conflict, for one line against the current."""
    if current is None:
        return "inserted"
    order = compare_versions(incoming, current)
    if order > 0:
        return "replaced"
    if order < 0:
        return "stale"
    if incoming.content_hash == current.content_hash:
        return "unchanged"
    same_version = (
        incoming.version_id == current.version_id
        and incoming.last_updated_us == current.last_updated_us
        and (incoming.version_id is not None or incoming.last_updated_us is not None)
    )
    # A server that hands out one version twice with different content is
    # wrong; keep what is stored and show the engineer the second copy.
    if same_version:
        return "conflict"
    return "replaced"  # nothing orders them: the newly landed copy wins


def describe_version(version: Version) -> str:
    parts = []
    if version.version_id is not None:
        parts.append(f"versionId {version.version_id}")
    if version.last_updated_us is not None:
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
            microseconds=version.last_updated_us
        )
        parts.append(f"lastUpdated {moment.isoformat().replace('+00:00', 'Z')}")
    return ", ".join(parts) or "without meta"


def _payload(raw: bytes | str) -> str:
    if isinstance(raw, bytes):
        # 4 bytes per character at most, so this never cuts inside the kept part.
        raw = raw[: PAYLOAD_LIMIT * 4].decode("utf-8", errors="replace")
    return redact_cut(raw, PAYLOAD_LIMIT, "")


def _frame(columns: dict[str, Sequence[object]]) -> pd.DataFrame:
    # object dtype: no conversion to pandas' string type, DuckDB reads the str as is.
    return pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in columns.items()})


class _KeyHashes:
    """The hashes of the keys a first landing has written, as a few sorted int64 runs.

    8 bytes a key where a set of Python ints takes about 70 (356 MB at 5 million
    keys); a batch is looked up and added with numpy, in a few calls. Each batch
    becomes a sorted run, and runs of similar size are merged (as a log-structured
    merge tree does), so a key is copied about log2(batches) times over a landing
    instead of once per batch, as merging every batch into one array did, and
    there are never more than about log2(batches) runs to search.
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []  # sorted, disjoint, sizes decreasing
        self.copied = 0  # keys copied by merges: the cost the run structure bounds

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    @property
    def runs(self) -> int:
        return len(self._runs)

    @property
    def nbytes(self) -> int:
        return sum(run.nbytes for run in self._runs)

    def seen(self, hashes: np.ndarray) -> np.ndarray:
        """For each of ``hashes``, whether it was added before (a bool array)."""
        found = np.zeros(len(hashes), dtype=bool)
        for run in self._runs:
            at = np.searchsorted(run, hashes)
            at[at == len(run)] = 0
            found |= run[at] == hashes
        return found

    def add(self, hashes: np.ndarray) -> None:
        fresh = np.unique(hashes[~self.seen(hashes)])  # sorted; runs stay disjoint
        if not len(fresh):
            return
        self._runs.append(fresh)
        while len(self._runs) > 1 and 2 * len(self._runs[-1]) >= len(self._runs[-2]):
            newer, older = self._runs.pop(), self._runs.pop()
            merged = np.concatenate((older, newer))
            merged.sort(kind="stable")  # two sorted runs: numpy merges them in linear time
            self.copied += len(merged)
            self._runs.append(merged)


def _hash_array(hashes: list[int]) -> np.ndarray:
    return np.fromiter(hashes, dtype=np.int64, count=len(hashes))


class _Work(NamedTuple):
    """One batch, decided, ready for the database: what the write thread does with it."""

    statement: str | None  # insert_resources or upsert_resources; None: no resource to write
    batch: pd.DataFrame | None
    rejected: pd.DataFrame | None
    lines: int  # lines the batch stands for (written, unchanged and rejected alike)


class _BatchWriter:
    """Decides one batch at a time and writes it on its own DuckDB cursor (so its
    transaction is separate from whatever the caller does on the connection).

    Deciding (versions against the stored ones) happens in the caller's thread;
    the database work of a batch runs in one background thread while the caller
    checks the next batch's lines. DuckDB releases the GIL while it works, so on
    two CPUs checking and writing overlap. One batch at most is in flight: the
    next waits for it, and so does every lookup of stored versions, so each
    batch is decided against everything written before it, as in input order.

    Batches share a transaction that is committed every ``COMMIT_ROWS`` rows
    and at ``close``: DuckDB then writes whole row groups straight to the file
    instead of through the WAL, which halves the write cost. If landing fails,
    the uncommitted batches are rolled back (re-running lands them again).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, site: str, run_id: str) -> None:
        self.con = con.cursor()
        self.site = site
        self.run_id = run_id
        self._lookup = _sql("stored_versions")
        self._upsert = _sql("upsert_resources")
        self._insert = _sql("insert_resources")
        self._insert_rejected = _sql("insert_rejected")
        self._uncommitted: int | None = None  # rows written since BEGIN; None: no transaction
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cartfhir-landing")
        self._in_flight: Future[None] | None = None
        # Looking up stored versions scans the table, so skip it when the answer
        # is known: if the site had no rows when landing began, only keys
        # written since can be stored, and ``_written`` holds their hashes.
        # Past REMEMBER_KEYS keys it is dropped (memory) and every batch looks up.
        self._written: _KeyHashes | None = None
        try:
            has_rows = self.con.execute(  # fetchall: leaves no unread result on the cursor
                "SELECT 1 FROM raw.resources WHERE site = ? LIMIT 1", [site]
            ).fetchall()
        except duckdb.Error as exc:
            self._close_quietly()
            raise DatabaseError(f"cannot read raw.resources: {exc}") from exc
        if not has_rows:
            self._written = _KeyHashes()

    def write(self, rows: list[_Row], rejects: list[_Reject]) -> Counter[tuple[str, str]]:
        """Decide one batch and hand it to the write thread; return counts keyed by
        (resource_type, outcome). A failure to write surfaces here, at the next
        batch, or at ``commit``/``close``."""
        try:
            counts, work = self._decide(rows, rejects)
        except duckdb.Error as exc:
            raise DatabaseError(
                f"reading the stored versions of site {self.site!r} failed: {exc}"
            ) from exc
        self._wait()
        self._in_flight = self._thread.submit(self._apply, work)
        return counts

    def commit(self) -> None:
        """Write what is in flight and commit it."""
        self._wait()
        try:
            self._commit_now()
        except duckdb.Error as exc:
            raise DatabaseError(
                f"committing the landed rows of site {self.site!r} failed: {exc}"
            ) from exc

    def close(self, commit: bool) -> None:
        try:
            if commit:
                self.commit()
            else:
                # The error that got us here propagates; the batch in flight has to
                # end before its transaction can be rolled back, whatever it raises.
                if self._in_flight is not None:
                    futures.wait([self._in_flight])
                    self._in_flight = None
                if self._uncommitted is not None:
                    # Closing the cursor discards the transaction anyway; a failing
                    # ROLLBACK must not hide the error that got us here.
                    with contextlib.suppress(duckdb.Error):
                        self.con.execute("ROLLBACK")
        finally:
            self._close_quietly()

    def _close_quietly(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)
        self.con.close()

    def _wait(self) -> None:
        """Wait for the batch in flight; raise its error if writing it failed.

        The batch stays in flight until it has ended: an interrupt while waiting
        leaves it there, for ``close`` to wait for before it rolls back.
        """
        future = self._in_flight
        if future is None:
            return
        try:
            future.result()
        except duckdb.Error as exc:
            self._in_flight = None
            raise DatabaseError(
                f"writing a batch of site {self.site!r} to the raw tables failed: {exc}"
            ) from exc
        except BaseException:
            if future.done():
                self._in_flight = None
            raise
        self._in_flight = None

    def _commit_now(self) -> None:
        if self._uncommitted is not None:
            self.con.execute("COMMIT")
            self._uncommitted = None

    def _apply(self, work: _Work) -> None:
        """The database work of one batch (in the write thread)."""
        if self._uncommitted is None:
            self.con.execute("BEGIN TRANSACTION")
            self._uncommitted = 0
        if work.statement is not None and work.batch is not None:
            self._run(work.statement, "_landing_batch", work.batch)
        if work.rejected is not None:
            self._run(self._insert_rejected, "_landing_rejected", work.rejected)
        self._uncommitted += work.lines
        if self._uncommitted >= COMMIT_ROWS:
            self._commit_now()

    def _stored(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Version]:
        if not keys:
            return {}
        self._wait()  # the lookup must see every batch written before this one
        keys_frame = _frame({"resource_type": [k[0] for k in keys], "id": [k[1] for k in keys]})
        with registered(self.con, "_landing_keys", keys_frame):
            found = self.con.execute(self._lookup, {"site": self.site}).fetchall()
        return {(rt, rid): Version(vid, lu, h) for rt, rid, vid, lu, h in found}

    def _decide_each(
        self, rows: list[_Row], rejects: list[_Reject], maybe_stored: set[tuple[str, str]]
    ) -> tuple[Counter[tuple[str, str]], list[_Row]]:
        """Each line against the stored version and the batch's earlier lines, in input
        order; the conflicts join ``rejects``. Returns the counts and the rows to write
        (the last winner of each key, in input order)."""
        counts: Counter[tuple[str, str]] = Counter()
        current = self._stored(maybe_stored)
        winners: dict[tuple[str, str], int] = {}
        for index, row in enumerate(rows):
            key = (row.resource_type, row.id)
            outcome = decide(row.version, current.get(key))
            if outcome == "conflict":
                rejects.append(
                    _Reject(
                        row.source_uri,
                        row.line_no,
                        row.resource_type,
                        f"conflicts with stored version ({describe_version(current[key])}) of "
                        f"{row.resource_type}/{row.id} (same version, different content)",
                        _payload(row.text),
                    )
                )
                outcome = "rejected"
            elif outcome in ("inserted", "replaced"):
                current[key] = row.version
                winners[key] = index
            counts[(row.resource_type, outcome)] += 1
        return counts, [rows[i] for i in sorted(winners.values())]

    def _decide(
        self, rows: list[_Row], rejects: list[_Reject]
    ) -> tuple[Counter[tuple[str, str]], _Work]:
        keys = [(row.resource_type, row.id) for row in rows]
        # Which keys may have a stored row: all of them, unless ``_written`` rules some out.
        hashes: np.ndarray | None = None
        if self._written is None:
            maybe_stored = set(keys)
        else:
            hashes = _hash_array([hash(key) for key in keys])
            seen = self._written.seen(hashes)
            maybe_stored = {keys[i] for i in np.flatnonzero(seen)} if seen.any() else set()
        if not maybe_stored and hashes is not None and len(np.unique(hashes)) == len(hashes):
            # The usual batch of a first landing: nothing stored, no key twice. Every
            # line is then "inserted" (what ``decide`` says against no current version).
            counts = Counter((row.resource_type, "inserted") for row in rows)
            chosen, new_hashes = rows, hashes
        else:
            counts, chosen = self._decide_each(rows, rejects, maybe_stored)
            new_hashes = _hash_array([hash((row.resource_type, row.id)) for row in chosen])

        statement, batch, rejected = None, None, None
        if chosen:
            types, ids, versions, texts, uris, line_nos = zip(*chosen, strict=True)
            version_ids, stamps, hashes_ = zip(*versions, strict=True)
            batch = _frame(
                {
                    "resource_type": types,
                    "id": ids,
                    "version_id": version_ids,
                    "last_updated_us": stamps,
                    "resource": texts,
                    "content_hash": hashes_,
                    "source_uri": uris,
                    "line_no": line_nos,
                }
            )
            batch["last_updated_us"] = batch["last_updated_us"].astype("Int64")
            batch["line_no"] = batch["line_no"].astype("int64")
            # No key that may be stored: append rather than merge.
            statement = self._upsert if maybe_stored else self._insert
            if self._written is not None:
                self._written.add(new_hashes)
                if len(self._written) > REMEMBER_KEYS:
                    self._written = None
        if rejects:
            # Rejected lines are diagnostics, kept as text a person reads; servers echo
            # credentials into them (an OperationOutcome entry, a line quoting the
            # request), so they are redacted here, where every rejection is stored.
            # Landed resources are clinical data and stay exactly as sent.
            rejected = _frame(
                {
                    "source_uri": [redact(r.source_uri) for r in rejects],
                    "line_no": [r.line_no for r in rejects],
                    "resource_type": [r.resource_type for r in rejects],
                    "reason": [redact(r.reason) for r in rejects],
                    "payload": [redact(r.payload) for r in rejects],
                }
            )
            rejected["line_no"] = rejected["line_no"].astype("int64")
        return counts, _Work(statement, batch, rejected, len(rows) + len(rejects))

    def _run(self, sql: str, name: str, frame: pd.DataFrame) -> None:
        with registered(self.con, name, frame):
            # Fetched: DuckDB refuses other work on a cursor holding an unread result.
            self.con.execute(sql, {"site": self.site, "run_id": self.run_id}).fetchall()


class Landable(NamedTuple):
    """What landing keeps of an accepted line (the parsed dict is dropped)."""

    resource_type: str
    id: str
    version: Version
    text: str


def check_for_landing(raw: bytes, validation: Validation) -> Landable | Rejected:
    """``check_line``, reduced to what landing needs (small to pass between processes)."""
    result = check_line(raw, validation)
    if isinstance(result, Rejected):
        return result
    stamp = result.last_updated
    version = Version(
        result.version_id, None if stamp is None else epoch_us(stamp), result.content_hash
    )
    return Landable(result.resource_type, result.id, version, result.text)


# What a check process sends back for an accepted line: (resource_type, id,
# version_id, last_updated_us, content_hash). Not its text, which the landing
# process holds already (half the bytes between them); a plain tuple, which
# unpickles several times faster than named tuples.
Checked = tuple[str, str, str | None, int | None, str]


def check_chunk(raws: list[bytes], validation: Validation) -> list[Checked | Rejected]:
    """Check many lines in one call: the unit of work sent to a worker process."""
    results: list[Checked | Rejected] = []
    for raw in raws:
        result = check_for_landing(raw, validation)
        if isinstance(result, Rejected):
            results.append(result)
        else:
            version = result.version
            results.append((result.resource_type, result.id, version.version_id,
                            version.last_updated_us, version.content_hash))
    return results


class Lander:
    """Checks lines for one site and lands them in batches of ``batch_size``.

    With a ``pool`` (a process pool; see ``make_check_pool``) the checks run in
    worker processes, a few chunks ahead, while this process writes; results
    are taken in input order, so the outcome does not depend on the pool.
    Use as a context manager (or call ``close``); ``counts`` is final after that:
    {resource_type: {received, inserted, replaced, unchanged, stale, rejected}}.
    ``problems`` lists the files that could not be read to the end.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        site: str,
        run_id: str,
        validation: Validation = "full",
        batch_size: int = LANDING_BATCH_ROWS,
        pool: Executor | None = None,
    ) -> None:
        self.site = site
        self.validation: Validation = validation
        self.batch_size = batch_size
        self._writer = _BatchWriter(con, site, run_id)
        self._pool = pool
        self._chunk: list[RawLine] = []
        self._in_flight: deque[tuple[list[RawLine], Future[list[Checked | Rejected]]]] = deque()
        self._rows: list[_Row] = []
        self._rejects: list[_Reject] = []
        self._counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.problems: list[str] = []

    def add(self, line: RawLine) -> None:
        """Check one line (now, or in the pool) and land it with its batch."""
        if self._pool is None:
            result = None if line.error else check_for_landing(line.raw, self.validation)
            self._take(line, result)
            return
        self._chunk.append(line)
        if len(self._chunk) >= CHUNK_LINES:
            self._submit()

    def _submit(self) -> None:
        assert self._pool is not None
        chunk, self._chunk = self._chunk, []
        raws = [line.raw for line in chunk]
        self._in_flight.append((chunk, self._pool.submit(check_chunk, raws, self.validation)))
        # A bounded window keeps memory flat however large the input is.
        while len(self._in_flight) > IN_FLIGHT_CHUNKS:
            self._take_oldest_chunk()

    def _take_oldest_chunk(self) -> None:
        chunk, future = self._in_flight.popleft()
        try:
            results = future.result()
        except BrokenProcessPool as exc:
            raise CartfhirError(
                "a line-checking worker process died (out of memory?); "
                "re-run with fewer or no workers"
            ) from exc
        for line, result in zip(chunk, results, strict=True):
            if line.error:
                self._take(line, None)
            elif isinstance(result, Rejected):
                self._take(line, result)
            else:  # accepted lines are valid UTF-8: the JSON parser checked
                resource_type, rid, version_id, last_updated_us, content_hash = result
                version = Version(version_id, last_updated_us, content_hash)
                self._take(line, Landable(resource_type, rid, version, line.raw.decode("utf-8")))

    def _take(self, line: RawLine, result: Landable | Rejected | None) -> None:
        if result is None:  # found while reading: too long, or the file unreadable from here
            self._reject(line.source_uri, line.line_no, None, line.error or "unreadable",
                         _payload(line.raw))
            if line.file_cut:
                self.problems.append(f"{line.source_uri} from line {line.line_no}: {line.error}")
        elif isinstance(result, Rejected):
            self._reject(
                line.source_uri, line.line_no, result.resource_type, result.reason,
                _payload(line.raw),
            )
        else:
            self._rows.append(_Row(*result, line.source_uri, line.line_no))
            self._counts[result.resource_type]["received"] += 1
        if len(self._rows) + len(self._rejects) >= self.batch_size:
            self.flush()

    def _reject(
        self, uri: str, line_no: int, resource_type: str | None, reason: str, payload: str
    ) -> None:
        self._rejects.append(_Reject(uri, line_no, resource_type, reason, payload))
        counts = self._counts[resource_type or UNKNOWN_TYPE]
        counts["received"] += 1
        counts["rejected"] += 1

    def flush(self) -> None:
        """Write the buffered batch (lines still in the pool wait for the next one)."""
        if self._rows or self._rejects:
            rows, rejects = self._rows, self._rejects
            self._rows, self._rejects = [], []
            for (resource_type, outcome), n in self._writer.write(rows, rejects).items():
                self._counts[resource_type][outcome] += n

    def commit(self) -> None:
        """Write the buffered batch and commit, so a crash after this loses none of it.

        Only for the in-process mode (no pool): lines still in the pool would be
        committed later, out of their turn.
        """
        if self._in_flight or self._chunk:
            raise RuntimeError("commit() is not available while a check pool is in use")
        self.flush()
        self._writer.commit()

    def close(self) -> None:
        """Check and write everything still pending, then commit."""
        ok = False
        try:
            if self._chunk:
                self._submit()
            while self._in_flight:
                self._take_oldest_chunk()
            self.flush()
            ok = True
        finally:
            self._abandon_in_flight()
            self._writer.close(commit=ok)

    def _abandon_in_flight(self) -> None:
        for _, future in self._in_flight:
            future.cancel()
        self._in_flight.clear()

    @property
    def counts(self) -> SiteCounts:
        return {
            rt: {outcome: self._counts[rt][outcome] for outcome in OUTCOMES}
            for rt in sorted(self._counts)
        }

    def __enter__(self) -> Lander:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # the original error propagates; nothing uncommitted is kept
            self._abandon_in_flight()
            self._writer.close(commit=False)


def make_check_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool for ``Lander``: fresh interpreters (spawn), never a fork.

    Forking a process that holds an open DuckDB (and its threads) is unsafe;
    spawn costs about a second of start-up, so use a pool only for large inputs.
    As with any spawn pool, a script calling this needs an
    ``if __name__ == "__main__":`` guard.
    """
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours CPU limits of containers
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_workers(input_bytes: int) -> int:
    """How many check processes are worth it (0: check in this process).

    This process reads the lines, decides versions and builds the batches
    (about 5 us a line) while a thread writes; a check costs about 7 us a line
    ('structural') or 12 us ('full', with the compiled R4B validator). Measured
    on 2 CPUs and 1M lab results, a pool of 2 lands 'structural' no faster and
    'full' 15 % faster for 40 % more memory (1.46 GB peak), so a pool is used
    only when CPUs are left over for it beside this process and DuckDB's writer.
    """
    cpus = _usable_cpus()
    if input_bytes < POOL_MIN_BYTES or cpus < 4:
        return 0
    return min(cpus - 1, MAX_WORKERS)


class Landed(NamedTuple):
    """What landing a folder did: counts, and the files that could not be read to the end."""

    counts: SiteCounts
    problems: list[str]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cycle collector off for a landing loop, back as it was after.

    Landing allocates millions of short-lived tuples and strings and creates
    no reference cycles; each allocation burst triggers a collection that walks
    every young object (measured: a fifth of the time of landing a folder). The
    pause is bounded by the loop; what cycles other code makes meanwhile are
    collected when it ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def land_folder(
    con: duckdb.DuckDBPyConnection,
    site: str,
    folder: Path,
    run_id: str,
    *,
    validation: Validation = "full",
    batch_size: int = LANDING_BATCH_ROWS,
    progress: Progress | None = None,
    pool: Executor | None = None,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> Landed:
    """Land every NDJSON file under ``folder`` for ``site``; return counts and problems.

    The raw tables must exist (see ``cartfhir.extract.create_tables``).
    ``pool``: optional process pool for the checks (``make_check_pool``).
    A file cut short (truncated gzip, over ``limits``) keeps the lines read
    before the damage and is named in ``problems``: the run is then partial,
    as it is when the folder holds a symbolic link (not followed) or a pipe.
    """
    files, skipped = ndjson.scan_folder(folder)
    total = sum(path.stat().st_size for path in files)
    progress = progress or NullProgress()
    with (
        gc_paused(),
        progress.task(f"landing {site}", total=total, unit="bytes") as task,
        Lander(con, site, run_id, validation=validation, batch_size=batch_size,
               pool=pool) as lander,
    ):
        for path in files:
            log.debug("site %s: reading %s", site, path)
            for line in ndjson.read_file(path, on_bytes=task.advance, limits=limits):
                lander.add(line)
    return Landed(lander.counts, skipped + lander.problems)
