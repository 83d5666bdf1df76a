"""Finding NDJSON files and streaming their lines, gzip and corrupt gzip included."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from cartfhir.errors import SourceError
from cartfhir.extract.ndjson import find_files, iter_folder, read_file


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


def test_missing_folder_is_a_source_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(SourceError, match=f"NDJSON folder {missing} does not exist"):
        find_files(missing)


def test_folder_without_ndjson_is_a_source_error(tmp_path: Path) -> None:
    write_lines(tmp_path / "manifest.json", "{}")
    with pytest.raises(SourceError, match=r"no \*\.ndjson or \*\.ndjson\.gz files found under"):
        find_files(tmp_path)


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
    assert last.error is not None
    assert last.error.startswith("gzip file is corrupt or truncated: Compressed file ended")


def test_file_that_is_not_gzip_at_all_is_reported_not_raised(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "x.ndjson.gz", '{"a":1}')
    (line,) = read_file(path)
    assert line.line_no == 1
    assert line.error is not None
    assert "Not a gzipped file" in line.error


def test_progress_callback_adds_up_to_the_file_sizes(tmp_path: Path) -> None:
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
