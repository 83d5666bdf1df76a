"""Finding NDJSON files and streaming their lines, gzip and corrupt gzip included."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from cartfhir.errors import ConfigError, SourceError
from cartfhir.extract import ndjson
from cartfhir.extract.checks import TOO_DEEP
from cartfhir.extract.ndjson import (
    ReadLimits,
    find_files,
    gunzip,
    iter_folder,
    read_file,
    resource_line,
    scan_folder,
    split_lines,
)


def write_lines(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{text}\n" for text in lines), encoding="utf-8")
    return path


def write_gzip(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(f"{text}\n" for text in lines)
    return path


def truncated_gzip(path: Path, *lines: str, keep: float = 0.6) -> Path:
    """A gzip file cut short, as a failed download leaves it."""
    write_gzip(path, *lines)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_finds_ndjson_at_any_depth_sorted_and_ignores_other_files(tmp_path: Path) -> None:
    write_lines(tmp_path / "b" / "deep" / "Observation.ndjson", "{}")
    write_gzip(tmp_path / "a" / "Patient.000.ndjson.gz", "{}")
    write_lines(tmp_path / "z.NDJSON", "{}")
    write_lines(tmp_path / "manifest.json", "{}")
    write_lines(tmp_path / "notes.txt", "hello")
    (tmp_path / "folder.ndjson").mkdir()  # a folder with an NDJSON-like name is not a file

    found = [p.relative_to(tmp_path).as_posix() for p in find_files(tmp_path)]
    assert found == ["a/Patient.000.ndjson.gz", "b/deep/Observation.ndjson", "z.NDJSON"]


def test_missing_folder_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=f"NDJSON folder {missing} does not exist"):
        find_files(missing)


def test_folder_without_ndjson_is_a_source_error(tmp_path: Path) -> None:
    write_lines(tmp_path / "manifest.json", "{}")
    with pytest.raises(SourceError, match=r"no \*\.ndjson or \*\.ndjson\.gz files found under"):
        find_files(tmp_path)


def test_scan_does_not_follow_a_link_looping_back_into_the_folder(tmp_path: Path) -> None:
    write_lines(tmp_path / "in" / "a.ndjson", "{}")
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in", target_is_directory=True)
    (tmp_path / "in" / "gone.ndjson").symlink_to(tmp_path / "nowhere.ndjson")  # dangling
    scan = scan_folder(tmp_path / "in")
    assert scan.files == [tmp_path / "in" / "a.ndjson"]
    assert [s.split(":")[0] for s in scan.skipped] == [str(tmp_path / "in" / "gone.ndjson"),
                                                       str(tmp_path / "in" / "loop")]


def test_read_file_refuses_a_path_that_became_a_link(tmp_path: Path) -> None:
    target = write_lines(tmp_path / "outside.ndjson", "{}")
    (tmp_path / "in").mkdir()
    link = tmp_path / "in" / "a.ndjson"
    link.symlink_to(target)  # as if swapped in after the folder was scanned
    with pytest.raises(SourceError, match="cannot read"):
        list(read_file(link))


def test_lines_are_numbered_and_blank_lines_skipped(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "x.ndjson", '{"a":1}', "", "   ", '{"b":2}\r')
    lines = list(read_file(path))
    assert [(ln.line_no, ln.raw, ln.error) for ln in lines] == [
        (1, b'{"a":1}', None),
        (4, b'{"b":2}', None),
    ]
    assert lines[0].source_uri == path.resolve().as_uri()


def test_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bom.ndjson"
    path.write_bytes(b'\xef\xbb\xbf{"a":1}\n')
    assert [ln.raw for ln in read_file(path)] == [b'{"a":1}']


def test_gzip_is_read_transparently(tmp_path: Path) -> None:
    path = write_gzip(tmp_path / "x.ndjson.gz", '{"a":1}', '{"b":2}')
    assert [(ln.line_no, ln.raw) for ln in read_file(path)] == [(1, b'{"a":1}'), (2, b'{"b":2}')]


def test_truncated_gzip_keeps_lines_before_the_damage_then_reports_it(tmp_path: Path) -> None:
    # Incompressible-ish lines so the cut lands mid-stream, after some whole lines.
    lines = [f'{{"n": {i}, "pad": "{i * 7919 % 1000003:x}{i}"}}' for i in range(2000)]
    path = truncated_gzip(tmp_path / "x.ndjson.gz", *lines)

    read = list(read_file(path))
    good, last = read[:-1], read[-1]
    assert len(good) > 100
    assert [ln.raw.decode() for ln in good] == lines[: len(good)]
    assert last.raw == b""
    assert last.line_no == len(good) + 1
    assert last.error == ("gzip file is corrupt or truncated: it ends before the gzip end "
                          "marker; the rest of the file was not read")
    assert last.file_cut


def test_file_that_is_not_gzip_at_all_is_reported_not_raised(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "x.ndjson.gz", '{"a":1}')
    (line,) = read_file(path)
    assert line.line_no == 1
    assert line.error is not None and line.file_cut
    assert "incorrect header check" in line.error


def test_progress_callback_adds_up_to_the_file_sizes(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ndjson, "READ_BYTES", 4096)  # several reads of a small file
    plain = write_lines(tmp_path / "a.ndjson", *[f'{{"n": {i}}}' for i in range(5000)])
    packed = write_gzip(tmp_path / "b.ndjson.gz", *[f'{{"n": {i}}}' for i in range(5000)])
    for path in (plain, packed):
        seen: list[int] = []
        assert len(list(read_file(path, on_bytes=seen.append))) == 5000
        assert len(seen) > 1
        assert sum(seen) == path.stat().st_size


def test_iter_folder_streams_every_file_in_order(tmp_path: Path) -> None:
    write_lines(tmp_path / "b.ndjson", '{"b":1}')
    write_gzip(tmp_path / "a.ndjson.gz", '{"a":1}', '{"a":2}')
    assert [ln.raw for ln in iter_folder(tmp_path)] == [b'{"a":1}', b'{"a":2}', b'{"b":1}']


# --- streaming: line splitting, caps, gzip -----------------------------------------


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


LIMITS = ReadLimits(max_line_bytes=1000, max_file_bytes=10**9)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10**6])
def test_lines_are_the_same_however_the_bytes_are_cut(size: int) -> None:
    data = b'\xef\xbb\xbf{"a":1}\r\n\n  \n{"b":"' + b"x" * 500 + b'"}\n{"c":3}'
    found = [(ln.line_no, ln.raw, ln.error) for ln in
             split_lines("u", pieces(data, size), LIMITS)]
    assert found == [(1, b'{"a":1}', None), (4, b'{"b":"' + b"x" * 500 + b'"}', None),
                     (5, b'{"c":3}', None)]


@pytest.mark.parametrize("size", [3, 100, 10**6])
def test_a_line_over_the_cap_is_one_error_line_with_its_start(size: int) -> None:
    long_line = b'{"resourceType":"Patient","x":"' + b"y" * 5000 + b'"}'
    data = b'{"a":1}\n' + long_line + b'\n{"c":3}\n'
    found = list(split_lines("u", pieces(data, size), LIMITS))
    assert [(ln.line_no, ln.error is None) for ln in found] == [(1, True), (2, False),
                                                               (3, True)]
    over = found[1]
    assert over.error == (f"line is {len(long_line):,} bytes, more than landing.max_line_bytes "
                          "(1,000); not landed, only its start is kept")
    assert over.raw == long_line[:1000] and not over.file_cut
    assert found[2].raw == b'{"c":3}'


def test_a_last_line_over_the_cap_without_a_line_end_is_reported() -> None:
    (over,) = split_lines("u", pieces(b"z" * 3000, 256), LIMITS)
    assert over.line_no == 1 and over.error and over.error.startswith("line is 3,000 bytes")


def test_a_file_over_the_size_cap_is_cut_and_says_so(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "x.ndjson", *[f'{{"n": {i:04d}}}' for i in range(1000)])
    read = list(read_file(path, limits=ReadLimits(max_line_bytes=1000, max_file_bytes=5000)))
    *good, last = read
    assert [ln.raw for ln in good] == [f'{{"n": {i:04d}}}'.encode() for i in range(len(good))]
    assert len(good) == 5000 // 12  # 12 bytes a line: whole lines within the first 5,000
    assert last.file_cut and last.line_no == len(good) + 1
    assert last.error == ("file holds more than 5,000 bytes of NDJSON "
                          "(landing.max_decompressed_bytes); the rest of the file was not read")


def test_a_gzip_bomb_stops_at_the_size_cap_without_inflating_it(tmp_path: Path) -> None:
    path = tmp_path / "bomb.ndjson.gz"
    with gzip.open(path, "wb") as handle:
        for _ in range(64):  # 64 MiB of spaces and no line end, in 64 KiB of gzip
            handle.write(b" " * 2**20)
    limits = ReadLimits(max_line_bytes=2**20, max_file_bytes=8 * 2**20)
    *lines, last = read_file(path, limits=limits)
    assert lines == [] and last.file_cut
    assert last.error is not None and "landing.max_decompressed_bytes" in last.error


def test_gunzip_reads_every_member_and_yields_bounded_pieces() -> None:
    data = gzip.compress(b"a" * 3 * 2**20) + gzip.compress(b"\nb\n")
    out = list(gunzip(pieces(data, 1000)))
    assert b"".join(out) == b"a" * 3 * 2**20 + b"\nb\n"
    assert max(len(piece) for piece in out) <= 2**20


def test_gzip_in_a_file_named_plain_is_not_unpacked(tmp_path: Path) -> None:
    # A folder file's name says what it is; only bulk downloads are sniffed.
    path = tmp_path / "x.ndjson"
    # mtime=0 keeps the compressed bytes fixed; with a clock mtime they
    # sometimes hold a newline byte, which splits the raw file in two.
    path.write_bytes(gzip.compress(b'{"a":1}\n', mtime=0))
    first, *_ = read_file(path)
    assert first.raw.startswith(b"\x1f\x8b")


def test_resource_line_writes_what_orjson_cannot_and_names_what_nothing_can() -> None:
    shallow = {"resourceType": "Patient", "id": "p1"}
    assert resource_line("u", 1, shallow).raw == b'{"resourceType":"Patient","id":"p1"}'
    deep: dict = {"resourceType": "Patient", "id": "p1", "x": []}
    inner = deep["x"]
    for _ in range(300):  # 300 levels: orjson refuses, json writes it
        inner.append([])
        inner = inner[0]
    assert resource_line("u", 2, deep).raw.startswith(b'{"resourceType": "Patient"')
    for _ in range(5000):  # beyond any recursion limit
        inner.append([])
        inner = inner[0]
    line = resource_line("u", 3, deep)
    assert (line.raw, line.error) == (b"", TOO_DEEP)
