"""`cartfhir extract` on hostile NDJSON: the same landing rules for a folder and a bulk download.

Deep nesting and duplicate keys become raw.rejected rows with a reason while
the other lines land (exit 0); a line over ``landing.max_line_bytes`` is one
rejected row keeping its start; a truncated gzip, a download cut short or a
file over ``landing.max_decompressed_bytes`` makes the run partial (exit 3).
Bulk downloads come from a ``FakeFhir`` over real HTTP on loopback.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from cartfhir.cli import run_cli
from cartfhir.extract.checks import MAX_DEPTH
from tests import testbed

from .stub_server import FakeFhir, serve

TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels of JSON objects and arrays"
DUPLICATE_ID = "JSON object has the key 'id' twice (which value counts is ambiguous)"


def patient(pid: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid,
            "meta": {"versionId": "1", "lastUpdated": "2025-06-01T00:00:00Z"}, **fields}


def deeply_nested(pid: str, levels: int = 130) -> bytes:
    """A valid Patient whose extensions nest ``levels`` deep (json: orjson cannot write it)."""
    extension: dict[str, Any] = {"url": "http://example.org/x", "valueString": "leaf"}
    for _ in range(levels):
        extension = {"url": "http://example.org/x", "extension": [extension]}
    return json.dumps(patient(pid, extension=[extension])).encode()


def duplicate_id(pid: str) -> bytes:
    return (b'{"resourceType":"Patient","id":"' + pid.encode()
            + b'","gender":"male","id":"zz"}')


def hostile_lines() -> bytes:
    return b"\n".join([orjson.dumps(patient("p1")), deeply_nested("p2"), duplicate_id("p3"),
                       orjson.dumps(patient("p4"))]) + b"\n"


class Run:
    """One `cartfhir extract` run: exit code, output, and the DuckDB file to look at."""

    def __init__(self, code: int, out: str, err: str, db: Path) -> None:
        self.code, self.out, self.err, self.db = code, out, err, db

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def ids(self) -> list[str]:
        return [r[0] for r in self.rows("select id from raw.resources order by id")]

    def rejected(self) -> list[tuple[Any, ...]]:
        return self.rows("select line_no, resource_type, reason, payload from raw.rejected "
                         "order by source_uri, line_no")

    def run_row(self) -> tuple[str, str]:
        return self.rows("select status, message from meta.runs order by started desc limit 1")[0]


def extract(tmp_path: Path, capsys: pytest.CaptureFixture[str], source: dict[str, Any],
            landing: dict[str, Any] | None = None, workers: int = 0) -> Run:
    config = testbed.write_config(tmp_path, ["s"], s={"source": source},
                                  landing={"workers": workers, **(landing or {})})
    code = run_cli(["extract", "--config", str(config)])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err, tmp_path / "out" / "t.duckdb")


# --- a folder ---------------------------------------------------------------------


def folder_source(tmp_path: Path, name: str, data: bytes) -> dict[str, Any]:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(data)
    return testbed.ndjson_source("in")


def test_folder_deep_nesting_and_duplicate_keys_are_rejected_the_rest_lands(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = extract(tmp_path, capsys, folder_source(tmp_path, "p.ndjson", hostile_lines()))
    assert run.code == 0, run.err
    assert run.ids() == ["p1", "p4"]
    assert [r[:3] for r in run.rejected()] == [(2, "Patient", TOO_DEEP),
                                               (3, "Patient", DUPLICATE_ID)]


# Instants of the right shape that fall outside datetime's years 1-9999 once in UTC.
OUT_OF_RANGE = ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00"]


def out_of_range_reason(stamp: str) -> str:
    return (f"meta.lastUpdated {stamp!r} is out of range: in UTC it falls outside the "
            "years 0001-9999")


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("stamp", OUT_OF_RANGE)
def test_folder_last_updated_out_of_range_in_utc_is_rejected_the_rest_lands(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], stamp: str, workers: int) -> None:
    bad = orjson.dumps(patient("p2", meta={"lastUpdated": stamp}))
    data = b"\n".join([orjson.dumps(patient("p1")), bad, orjson.dumps(patient("p3"))])
    run = extract(tmp_path, capsys, folder_source(tmp_path, "p.ndjson", data), workers=workers)
    assert run.code == 0, run.err
    assert run.ids() == ["p1", "p3"]
    assert [r[:3] for r in run.rejected()] == [(2, "Patient", out_of_range_reason(stamp))]


def test_folder_line_over_the_cap_is_rejected_keeping_its_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = orjson.dumps(patient("big", name=[{"family": "x" * 5000}]))
    data = b"\n".join([orjson.dumps(patient("p1")), big, orjson.dumps(patient("p3"))])
    run = extract(tmp_path, capsys, folder_source(tmp_path, "p.ndjson", data),
                  {"max_line_bytes": 2048})
    assert run.code == 0, run.err
    assert run.ids() == ["p1", "p3"]
    ((line_no, rtype, reason, payload),) = run.rejected()
    assert (line_no, rtype) == (2, None)
    assert reason == (f"line is {len(big):,} bytes, more than landing.max_line_bytes (2,048); "
                      "not landed, only its start is kept")
    assert payload == big[:2048].decode()


def test_folder_truncated_gzip_makes_the_run_partial(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = b"".join(orjson.dumps(patient(f"p{i}", name=[{"family": f"{i * 7919:x}"}])) + b"\n"
                     for i in range(3000))
    packed = gzip.compress(lines)
    run = extract(tmp_path, capsys,
                  folder_source(tmp_path, "p.ndjson.gz", packed[: len(packed) - 500]))
    assert run.code == 3, run.err
    status, message = run.run_row()
    assert status == "partial"
    assert "p.ndjson.gz" in message and "gzip file is corrupt or truncated" in message
    assert 1000 < len(run.ids()) < 3000  # the lines before the damage are landed


def test_folder_file_over_the_decompressed_cap_makes_the_run_partial(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = b"".join(orjson.dumps(patient(f"p{i}")) + b"\n" for i in range(200))
    run = extract(tmp_path, capsys, folder_source(tmp_path, "p.ndjson.gz", gzip.compress(lines)),
                  {"max_decompressed_bytes": 4096})
    assert run.code == 3, run.err
    assert "landing.max_decompressed_bytes" in run.run_row()[1]
    assert 0 < len(run.ids()) < 200


def test_folder_symlinks_are_not_followed_and_make_the_run_partial(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "elsewhere"
    (outside / "more").mkdir(parents=True)
    (outside / "secret.ndjson").write_bytes(orjson.dumps(patient("p8")) + b"\n")
    (outside / "more" / "m.ndjson").write_bytes(orjson.dumps(patient("p9")) + b"\n")
    source = folder_source(tmp_path, "p.ndjson", orjson.dumps(patient("p1")) + b"\n")
    (tmp_path / "in" / "sub").mkdir()
    (tmp_path / "in" / "sub" / "link.ndjson").symlink_to(outside / "secret.ndjson")
    (tmp_path / "in" / "more").symlink_to(outside / "more", target_is_directory=True)
    (tmp_path / "in" / "notes.txt").symlink_to(outside / "secret.ndjson")  # never read anyway
    run = extract(tmp_path, capsys, source)
    assert run.code == 3, run.err
    assert run.ids() == ["p1"]  # nothing from outside the folder
    status, message = run.run_row()
    assert status == "partial"
    for name in ("sub/link.ndjson", "in/more"):
        assert f"{name}: skipped, a symbolic link" in message
    assert "notes.txt" not in message


def test_folder_of_symlinks_only_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "secret.ndjson"
    outside.write_bytes(orjson.dumps(patient("p8")) + b"\n")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "p.ndjson").symlink_to(outside)
    run = extract(tmp_path, capsys, testbed.ndjson_source("in"))
    assert run.code != 0
    assert "no *.ndjson or *.ndjson.gz files found" in run.err
    assert "p.ndjson: skipped, a symbolic link" in run.err


def test_folder_fifo_named_like_ndjson_is_skipped_and_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = folder_source(tmp_path, "p.ndjson", orjson.dumps(patient("p1")) + b"\n")
    os.mkfifo(tmp_path / "in" / "pipe.ndjson")
    run = extract(tmp_path, capsys, source)
    assert run.code == 3, run.err
    assert run.ids() == ["p1"]
    assert "pipe.ndjson: skipped, not a regular file" in run.run_row()[1]


# --- a bulk download ----------------------------------------------------------------


@pytest.fixture()
def bulk() -> Iterator[FakeFhir]:
    """A bulk server (no polling wait) exporting Patients p1..p3."""
    fake = FakeFhir(resources=[patient("p1"), patient("p2"), patient("p3")])
    fake.export_polls = 0
    server = serve(fake)
    yield fake
    server.shutdown()


def bulk_source(fake: FakeFhir) -> dict[str, Any]:
    return testbed.bulk_source(fake.base, level="system", types=["Patient"])


def serve_file(fake: FakeFhir, body: bytes, count: int | None = None,
               **headers: str) -> None:
    """Serve ``body`` as the Patient output file (the manifest announcing ``count`` lines)."""
    original = fake._kickoff

    def kickoff(query: Any, request: Any) -> Any:
        answer = original(query, request)
        for item in fake._manifest["output"]:
            item["count"] = count
        return answer

    def fault(request: Any) -> Any:
        if request.url.endswith("/bulkfiles/Patient.ndjson"):
            return 200, {"Content-Type": "application/fhir+ndjson", **headers}, body
        return None

    fake._kickoff = kickoff  # type: ignore[method-assign]
    fake.faults.append(fault)


def test_bulk_deep_nesting_and_duplicate_keys_are_rejected_the_rest_lands(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bulk: FakeFhir) -> None:
    serve_file(bulk, hostile_lines(), count=4)
    run = extract(tmp_path, capsys, bulk_source(bulk))
    assert run.code == 0, run.err
    assert run.ids() == ["p1", "p4"]
    assert [r[:3] for r in run.rejected()] == [(2, "Patient", TOO_DEEP),
                                               (3, "Patient", DUPLICATE_ID)]


def test_bulk_lands_a_line_longer_than_a_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bulk: FakeFhir) -> None:
    # 3 MB: spans several reads of the body, so the line is put together from pieces.
    bulk.resources.append(patient("big", name=[{"family": "x" * 3_000_000}]))
    run = extract(tmp_path, capsys, bulk_source(bulk))
    assert run.code == 0, run.err
    assert run.ids() == ["big", "p1", "p2", "p3"]
    stored = run.rows("select resource from raw.resources where id = 'big'")[0][0]
    assert len(orjson.loads(stored)["name"][0]["family"]) == 3_000_000


def test_bulk_line_over_the_cap_is_rejected_keeping_its_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bulk: FakeFhir) -> None:
    big = patient("big", name=[{"family": "x" * 300_000}])
    bulk.resources.insert(1, big)
    run = extract(tmp_path, capsys, bulk_source(bulk), {"max_line_bytes": 100000})
    assert run.code == 0, run.err
    assert run.ids() == ["p1", "p2", "p3"]
    ((line_no, _, reason, payload),) = run.rejected()
    assert line_no == 2 and reason.startswith("line is 300,")
    assert "more than landing.max_line_bytes (100,000)" in reason
    assert payload == orjson.dumps(big)[:65_536].decode()


@pytest.mark.parametrize("encoding", ["file", "transport"])
def test_bulk_gzip_is_unpacked(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               bulk: FakeFhir, encoding: str) -> None:
    body = gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in bulk.resources))
    headers = {"Content-Encoding": "gzip"} if encoding == "transport" else {}
    serve_file(bulk, body, count=3, **headers)
    run = extract(tmp_path, capsys, bulk_source(bulk))
    assert run.code == 0, run.err
    assert run.ids() == ["p1", "p2", "p3"]


@pytest.mark.parametrize("encoding", ["file", "transport"])
def test_bulk_truncated_gzip_makes_the_run_partial(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bulk: FakeFhir,
        encoding: str) -> None:
    lines = b"".join(orjson.dumps(patient(f"p{i}", name=[{"family": f"{i * 7919:x}"}])) + b"\n"
                     for i in range(3000))
    packed = gzip.compress(lines)
    headers = {"Content-Encoding": "gzip"} if encoding == "transport" else {}
    serve_file(bulk, packed[: len(packed) - 500], **headers)
    run = extract(tmp_path, capsys, bulk_source(bulk))
    assert run.code == 3, run.err
    status, message = run.run_row()
    assert status == "partial" and "gzip file is corrupt or truncated" in message
    assert 1000 < len(run.ids()) < 3000


def test_bulk_body_shorter_than_its_content_length_makes_the_run_partial(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bulk: FakeFhir) -> None:
    body = b"".join(orjson.dumps(r) + b"\n" for r in bulk.resources)
    serve_file(bulk, body, **{"Content-Length": str(len(body) + 1000)})
    run = extract(tmp_path, capsys, bulk_source(bulk))
    assert run.code == 3, run.err
    status, message = run.run_row()
    assert status == "partial" and "Patient.ndjson" in message
    assert run.ids() == ["p1", "p2", "p3"]


def test_bulk_gzip_bomb_stops_at_the_decompressed_cap(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bulk: FakeFhir) -> None:
    bomb = gzip.compress(b" " * 64 * 2**20)  # 64 MiB of one line in 64 KiB
    serve_file(bulk, bomb)
    run = extract(tmp_path, capsys, bulk_source(bulk),
                  {"max_line_bytes": 1048576, "max_decompressed_bytes": 4194304})
    assert run.code == 3, run.err
    status, message = run.run_row()
    assert status == "partial"
    assert "more than 4,194,304 bytes of NDJSON (landing.max_decompressed_bytes)" in message


# --- a REST pull ---------------------------------------------------------------------


def test_rest_deep_nesting_is_rejected_the_rest_lands(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bulk: FakeFhir) -> None:
    # Deeper than orjson can write again (254 levels), so the line is built another way.
    deep = json.loads(deeply_nested("p2", levels=200))

    def search(request: Any) -> Any:
        if "/Patient?" not in request.url:
            return None
        body = {"resourceType": "Bundle", "type": "searchset", "total": 3,
                "entry": [{"resource": r, "search": {"mode": "match"}}
                          for r in (patient("p1"), deep, patient("p3"))]}
        return 200, {"Content-Type": "application/fhir+json"}, json.dumps(body).encode()

    bulk.faults.append(search)
    run = extract(tmp_path, capsys, rest_source(bulk))
    assert run.code == 0, run.err
    assert run.ids() == ["p1", "p3"]
    assert [r[1:3] for r in run.rejected()] == [("Patient", TOO_DEEP)]


def test_bulk_content_encoding_not_asked_for_makes_the_run_partial(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bulk: FakeFhir) -> None:
    serve_file(bulk, b"\x8b\x00\x80garbage", count=3, **{"Content-Encoding": "br"})
    run = extract(tmp_path, capsys, bulk_source(bulk))
    assert run.code == 3, run.err
    assert "the server sent Content-Encoding 'br', which was not asked for" in run.run_row()[1]
    assert run.ids() == []


@pytest.mark.parametrize("stamp", OUT_OF_RANGE)
def test_rest_last_updated_out_of_range_in_utc_is_rejected_the_rest_lands(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bulk: FakeFhir, stamp: str) -> None:
    bulk.resources[1]["meta"]["lastUpdated"] = stamp
    run = extract(tmp_path, capsys, rest_source(bulk))
    assert run.code == 0, run.err
    assert run.ids() == ["p1", "p3"]
    assert [r[1:3] for r in run.rejected()] == [("Patient", out_of_range_reason(stamp))]


def rest_source(fake: FakeFhir) -> dict[str, Any]:
    return testbed.fhir_source(fake.base, cohort={"search": ["Patient?active=true"]},
                               resources=[{"type": "Patient"}])


def page_text(*entries: bytes, envelope: bytes = b'"total":4') -> bytes:
    """A searchset Bundle written by hand, so its JSON can repeat keys."""
    return (b'{"resourceType":"Bundle","type":"searchset",' + envelope + b',"entry":['
            + b",".join(entries) + b"]}")


def match(resource: bytes) -> bytes:
    return b'{"resource":' + resource + b',"search":{"mode":"match"}}'


def serve_search(fake: FakeFhir, pull: bytes, cohort: bytes | None = None) -> None:
    """Answer the pull's Patient search with ``pull``, the cohort search with ``cohort``."""

    def search(request: Any) -> Any:
        if "/Patient?" not in request.url:
            return None
        body = cohort if cohort is not None and "active=true" in request.url else pull
        return 200, {"Content-Type": "application/fhir+json"}, body

    fake.faults.append(search)


def test_rest_entries_with_duplicate_keys_are_rejected_and_the_search_is_partial(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bulk: FakeFhir) -> None:
    nested = (b'{"resourceType":"Patient","id":"p5","name":[{"family":"a","family":"b"}],'
              b'"meta":{"versionId":"1","lastUpdated":"2025-06-01T00:00:00Z"}}')
    two_resources = (b'{"resource":' + orjson.dumps(patient("p6")) + b',"resource":'
                     + orjson.dumps(patient("p7")) + b',"search":{"mode":"match"}}')
    body = page_text(match(orjson.dumps(patient("p1"))), match(duplicate_id("p3")),
                     match(nested), two_resources, match(orjson.dumps(patient("p4"))),
                     envelope=b'"total":5')
    serve_search(bulk, body)
    run = extract(tmp_path, capsys, rest_source(bulk))
    assert run.code == 3, run.err
    assert run.ids() == ["p1", "p4"]  # never p3 landed as 'zz', nor p5, p6 or p7
    rejected = run.rejected()
    reasons = [r[2] for r in rejected]
    assert len(reasons) == 3
    # Kept as sent, both values: what orjson kept ("zz") alone would mislead.
    assert [r[3].encode() for r in rejected] == [match(duplicate_id("p3")), match(nested),
                                                 two_resources]
    assert reasons[0].endswith("Bundle.entry[1]: " + DUPLICATE_ID)
    assert reasons[1].endswith(
        "Bundle.entry[2]: JSON object has the key 'family' twice (which value counts is "
        "ambiguous)")
    assert reasons[2].endswith(
        "Bundle.entry[3]: JSON object has the key 'resource' twice (which value counts is "
        "ambiguous)")
    status, message = run.run_row()
    assert status == "partial"
    assert "Patient: page 1: Bundle.entry[1]: " + DUPLICATE_ID in message


@pytest.mark.parametrize("envelope", [b'"total":4,"total":1',
                                      b'"total":4,"link":[],"link":[]',
                                      b'"total":4,"link":[{"relation":"next","relation":"self",'
                                      b'"url":"http://x.test/fhir/page"}]'])
def test_rest_bundle_repeating_a_key_of_its_own_fails_the_search_naming_the_page(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bulk: FakeFhir,
        envelope: bytes) -> None:
    good = page_text(*(match(orjson.dumps(patient(p))) for p in ("p1", "p3")),
                     envelope=b'"total":2')
    bad = page_text(*(match(orjson.dumps(patient(p))) for p in ("p1", "p3")), envelope=envelope)
    serve_search(bulk, bad, cohort=good)
    run = extract(tmp_path, capsys, rest_source(bulk))
    assert run.code == 3, run.err
    assert run.ids() == []
    status, message = run.run_row()
    assert status == "partial"
    assert "page 1 of the search" in message and "/Patient?" in message
    assert "twice (which value counts is ambiguous); the page cannot be used" in message


def test_rest_page_with_escaped_characters_but_no_duplicate_lands_whole(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bulk: FakeFhir) -> None:
    # As Go's encoder writes: '<' as \u003c, and here a ':' as \u003a in a value.
    escaped = (b'{"resourceType":"Patient","id":"p3","text":{"status":"generated",'
               b'"div":"\\u003cdiv xmlns=\\"http\\u003a//www.w3.org/1999/xhtml\\"\\u003ex'
               b'\\u003c/div\\u003e"},"meta":{"versionId":"1",'
               b'"lastUpdated":"2025-06-01T00:00:00Z"}}')
    body = page_text(match(orjson.dumps(patient("p1"))), match(escaped), envelope=b'"total":2')
    serve_search(bulk, body)
    run = extract(tmp_path, capsys, rest_source(bulk))
    assert run.code == 0, run.err
    assert run.ids() == ["p1", "p3"]
    assert run.rejected() == []


def test_rest_page_too_deep_for_orjson_still_has_its_duplicate_keys_found(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bulk: FakeFhir) -> None:
    # orjson cannot write this page back to count its ':', so it is walked the slow way.
    body = page_text(match(orjson.dumps(patient("p1"))), match(deeply_nested("p2", levels=300)),
                     match(duplicate_id("p3")), envelope=b'"total":3')
    serve_search(bulk, body)
    run = extract(tmp_path, capsys, rest_source(bulk))
    assert run.code == 3, run.err
    assert run.ids() == ["p1"]
    assert [r[1:3] for r in run.rejected()] == [
        ("Patient", TOO_DEEP), (None, "page 1: Bundle.entry[2]: " + DUPLICATE_ID)]
