"""Finding and streaming NDJSON files: one raw line at a time, gzip or not.

``iter_folder`` yields every non-blank line of every ``*.ndjson`` /
``*.ndjson.gz`` file under a folder, in a stable order, without holding more
than one line in memory. A file that cannot be read to the end (a truncated or
corrupt gzip) yields one final ``RawLine`` with ``error`` set instead of raising.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from cartfhir.errors import SourceError

SUFFIXES = (".ndjson", ".ndjson.gz")
_BOM = b"\xef\xbb\xbf"
# Progress is reported every this many lines, so a tell() is not paid per line.
_REPORT_EVERY = 2048


class RawLine(NamedTuple):
    """One line as read from disk (``raw`` without the line ending).

    When ``error`` is set the file could not be read past ``line_no - 1``;
    ``raw`` is empty and ``error`` says why.
    """

    source_uri: str
    line_no: int
    raw: bytes
    error: str | None = None


def is_ndjson(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES)


def find_files(folder: Path) -> list[Path]:
    """All NDJSON files under ``folder`` (any depth), sorted by path.

    Raises SourceError when the folder is missing or holds no NDJSON file, as a
    site with nothing to land is almost always a wrong path in the config.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise SourceError(
            f"NDJSON folder {folder} {what}; check sites[].source.path in the config"
        )
    files = sorted(p for p in folder.rglob("*") if p.is_file() and is_ndjson(p))
    if not files:
        raise SourceError(
            f"no *.ndjson or *.ndjson.gz files found under {folder}; "
            "point sites[].source.path at the folder holding the FHIR bulk export"
        )
    return files


def read_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[RawLine]:
    """Yield the non-blank lines of one NDJSON file, numbered from 1.

    ``on_bytes(n)`` is called now and then with the number of on-disk bytes read
    since the last call (compressed bytes for gzip), and once at the end so the
    calls add up to the file's size.
    """
    uri = path.resolve().as_uri()
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    reported = 0
    line_no = 0
    with raw:
        lines: BinaryIO = raw
        if path.name.lower().endswith(".gz"):
            lines = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        try:
            for line_no, line in enumerate(lines, start=1):
                if line_no == 1 and line.startswith(_BOM):
                    line = line[len(_BOM):]
                line = line.rstrip(b"\r\n")
                if line.strip():
                    yield RawLine(uri, line_no, line)
                if on_bytes is not None and line_no % _REPORT_EVERY == 0:
                    position = raw.tell()
                    on_bytes(position - reported)
                    reported = position
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            # Keep what was read; the rest of the file becomes one rejected row.
            yield RawLine(uri, line_no + 1, b"", f"gzip file is corrupt or truncated: {exc}")
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
        finally:
            if lines is not raw:
                lines.close()
    if on_bytes is not None:
        size = path.stat().st_size
        if size > reported:
            on_bytes(size - reported)


def iter_folder(folder: Path) -> Iterator[RawLine]:
    """Every non-blank line of every NDJSON file under ``folder``, file by file."""
    for path in find_files(folder):
        yield from read_file(path)
