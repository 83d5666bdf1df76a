"""Finding and streaming NDJSON files: one raw line at a time, gzip or not.

``iter_folder`` yields every non-blank line of every ``*.ndjson`` /
``*.ndjson.gz`` file under a folder, in a stable order, without holding more
than one line in memory. Only regular files inside the folder are read:
``scan_folder`` does not follow symbolic links (which could point anywhere)
and names each one it skips, so the caller can call the run incomplete.
``split_lines`` does the splitting for folders and bulk downloads alike, in
time linear in the bytes, with the caps of ``ReadLimits``: a line over
``max_line_bytes`` comes out as one ``RawLine`` with ``error`` set (and its
start), and a file that cannot be read to the end (truncated or corrupt gzip,
over ``max_file_bytes``, a download cut short) ends with one ``RawLine`` with
``file_cut`` set instead of raising.
"""

from __future__ import annotations

import itertools
import json
import os
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from cartfhir.config import Landing, require_source_folder
from cartfhir.errors import SourceError
from cartfhir.extract.checks import TOO_DEEP

SUFFIXES = (".ndjson", ".ndjson.gz")
_BOM = b"\xef\xbb\xbf"
# Bytes per read from disk, and most bytes one step of gunzip may produce.
READ_BYTES = 2**20
# What is kept of a line over the cap: enough for landing's payload (64 Ki
# characters of up to 4 bytes each).
KEPT_OF_LONG_LINE = 2**18
GZIP_MAGIC = b"\x1f\x8b"
# gzip (or zlib) header, detected automatically by zlib.
_GZIP_WBITS = 32 + zlib.MAX_WBITS
_GZIP_BROKEN = "gzip file is corrupt or truncated"


class ReadLimits(NamedTuple):
    """Caps on one NDJSON file; ``of(config.landing)`` takes them from the config."""

    max_line_bytes: int
    max_file_bytes: int  # after decompression

    @classmethod
    def of(cls, landing: Landing) -> ReadLimits:
        return cls(landing.max_line_bytes, landing.max_decompressed_bytes)


DEFAULT_LIMITS = ReadLimits.of(Landing())


class RawLine(NamedTuple):
    """One line as read (``raw`` without the line ending).

    ``error`` set: the line cannot be landed, for the reason given (``raw`` is
    what was kept of it). ``file_cut`` set as well: the file could not be read
    past ``line_no - 1``; ``raw`` is empty and the run is incomplete.
    """

    source_uri: str
    line_no: int
    raw: bytes
    error: str | None = None
    file_cut: bool = False


def resource_line(uri: str, line_no: int, resource: Any) -> RawLine:
    """A resource parsed out of a search page, written back as a line to check and land.

    orjson writes at most 254 levels; a deeper resource is written by json
    instead, so checking rejects it like the same line from a file (with its
    type and start), unless even that recursion fails.
    """
    try:
        return RawLine(uri, line_no, orjson.dumps(resource))
    except orjson.JSONEncodeError:
        try:
            return RawLine(uri, line_no, json.dumps(resource, ensure_ascii=False).encode())
        except RecursionError:
            return RawLine(uri, line_no, b"", TOO_DEEP)


class Unreadable(Exception):
    """The rest of a file cannot be read; the message says why (for ``split_lines``)."""


def is_ndjson(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES)


class FolderScan(NamedTuple):
    """The NDJSON files of a folder, and what was skipped (``path: why``, one per path)."""

    files: list[Path]
    skipped: list[str]


_LINK_SKIPPED = ("skipped, a symbolic link (not followed: it may point outside the folder); "
                 "copy the file into the folder to land it")
_NOT_REGULAR = "skipped, not a regular file"


def scan_folder(folder: Path) -> FolderScan:
    """The regular NDJSON files under ``folder`` (any depth, sorted), and the paths skipped.

    A symbolic link is never followed, to a file or a folder: it could make
    cartfhir read data from outside the site's folder. Each link that is named
    like NDJSON or leads to a folder is skipped and named, as is anything else
    named like NDJSON that is not a regular file (a pipe would block the read).
    Raises ConfigError when the folder is missing and SourceError when it holds no
    NDJSON file, as a site with nothing to land is almost always a wrong path in the config.
    """
    folder = require_source_folder(Path(folder))
    files: list[Path] = []
    skipped: list[str] = []
    pending = [folder]
    while pending:
        here = pending.pop()
        try:
            with os.scandir(here) as entries:
                found = list(entries)
        except OSError as exc:
            raise SourceError(f"cannot list {here}: {exc.strerror or exc}") from None
        for entry in found:
            path = here / entry.name
            if entry.is_symlink():
                if is_ndjson(path) or entry.is_dir():  # is_dir follows it, only to look
                    skipped.append(f"{path}: {_LINK_SKIPPED}")
            elif entry.is_dir(follow_symlinks=False):
                pending.append(path)
            elif is_ndjson(path):
                if entry.is_file(follow_symlinks=False):
                    files.append(path)
                else:
                    skipped.append(f"{path}: {_NOT_REGULAR}")
    skipped.sort()
    if not files:
        also = f" ({'; '.join(skipped)})" if skipped else ""
        raise SourceError(
            f"no *.ndjson or *.ndjson.gz files found under {folder}{also}; "
            "point sites[].source.path at the folder holding the FHIR bulk export"
        )
    return FolderScan(sorted(files), skipped)


def find_files(folder: Path) -> list[Path]:
    """The regular NDJSON files under ``folder`` (see ``scan_folder``)."""
    return scan_folder(folder).files


def read_file(path: Path, on_bytes: Callable[[int], None] | None = None,
              limits: ReadLimits = DEFAULT_LIMITS) -> Iterator[RawLine]:
    """Yield the non-blank lines of one NDJSON file, numbered from 1.

    ``on_bytes(n)`` is called after each read with the number of on-disk bytes
    read (compressed bytes for gzip), so the calls add up to the file's size.
    """
    uri = path.resolve().as_uri()
    handle = _open_regular(path)

    def blocks() -> Iterator[bytes]:
        while True:
            try:
                block = handle.read(READ_BYTES)
            except OSError as exc:
                raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
            if not block:
                return
            if on_bytes is not None:
                on_bytes(len(block))
            yield block

    with handle:
        data = blocks()
        if path.name.lower().endswith(".gz"):
            data = gunzip(data)
        yield from split_lines(uri, data, limits)


def _open_regular(path: Path) -> Any:
    """``path`` opened for reading, refused unless it is (still) a regular file, not a link.

    ``scan_folder`` checked that already; this closes the gap of a file swapped
    for a link or a pipe in between (O_NONBLOCK: opening a pipe must not wait).
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SourceError(f"cannot read {path}: it is no longer a regular file")
    return os.fdopen(fd, "rb")


def gunzip(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress gzip data (every member; zlib data too) in pieces of at most READ_BYTES.

    Never holds more than one piece, so a gzip bomb costs time, not memory (the
    caller's size cap stops it). Raises ``Unreadable`` for corrupt data and for
    data that ends before the gzip end marker.
    """
    inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
    fresh = True  # nothing of the current member seen yet
    for block in blocks:
        data = block
        while data:
            if fresh and not data.strip(b"\0"):
                break  # zero padding after the last member, as some tools write
            try:
                piece = inflater.decompress(data, READ_BYTES)
            except zlib.error as exc:
                raise Unreadable(f"{_GZIP_BROKEN}: {exc}") from None
            fresh = False
            if piece:
                yield piece
            if inflater.eof:  # another member may follow
                data = inflater.unused_data
                inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
                fresh = True
            else:
                data = inflater.unconsumed_tail
    if not fresh:
        try:
            piece = inflater.flush()
        except zlib.error as exc:
            raise Unreadable(f"{_GZIP_BROKEN}: {exc}") from None
        if piece:
            yield piece
        if not inflater.eof:
            raise Unreadable(f"{_GZIP_BROKEN}: it ends before the gzip end marker")


def gunzip_if_gzip(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """``blocks``, decompressed when they start like a gzip file (for downloads, which have no
    file name to go by)."""
    stream = iter(blocks)
    head = b""
    for block in stream:
        head += block
        if len(head) >= len(GZIP_MAGIC):
            break
    if head.startswith(GZIP_MAGIC):
        yield from gunzip(itertools.chain([head], stream))
    else:
        if head:
            yield head
        yield from stream


def capped(blocks: Iterable[bytes], max_bytes: int) -> Iterator[bytes]:
    """``blocks`` up to ``max_bytes`` in all; raises ``Unreadable`` when there is more."""
    total = 0
    for block in blocks:
        total += len(block)
        if total > max_bytes:
            yield block[: len(block) - (total - max_bytes)]
            raise Unreadable(f"file holds more than {max_bytes:,} bytes of NDJSON "
                             "(landing.max_decompressed_bytes)")
        yield block


def split_lines(uri: str, blocks: Iterable[bytes],
                limits: ReadLimits = DEFAULT_LIMITS) -> Iterator[RawLine]:
    """The non-blank lines in a stream of byte blocks, numbered from 1 (blank ones count).

    Linear in the bytes however long a line is: a block without a line end is
    appended to a buffer, never re-joined. A line longer than
    ``limits.max_line_bytes`` is not kept whole: one ``RawLine`` with its start
    and an ``error``. An ``Unreadable`` from ``blocks`` ends the file with a
    ``file_cut`` line (the unfinished line before it is dropped).
    """
    cap = limits.max_line_bytes
    line_no = 0
    pending = bytearray()  # the line being read, when it spans blocks
    long_by = 0  # > 0: the line being read is over the cap; bytes seen of it

    def too_long(number: int, line: bytes | bytearray, length: int) -> RawLine:
        return RawLine(uri, number, bytes(line[:min(cap, KEPT_OF_LONG_LINE)]),
                       f"line is {length:,} bytes, more than landing.max_line_bytes "
                       f"({cap:,}); not landed, only its start is kept")

    def finish(line: bytes | bytearray, length: int) -> RawLine | None:
        """The next line, which may have been put together from pieces."""
        nonlocal line_no
        line_no += 1
        if line_no == 1 and line.startswith(_BOM):
            line, length = line[len(_BOM):], length - len(_BOM)
        if line.endswith(b"\r"):
            line, length = line[:-1], length - 1
        if length > cap:
            return too_long(line_no, line, length)
        if not line or line.isspace():
            return None
        return RawLine(uri, line_no, bytes(line))

    try:
        for block in capped(blocks, limits.max_file_bytes):
            end = block.rfind(b"\n")
            if end < 0:  # the current line goes on
                if long_by:
                    long_by += len(block)
                else:
                    pending += block
                    if len(pending) > cap + 1:  # + 1: a "\r" before the line end
                        long_by = len(pending)
                        del pending[KEPT_OF_LONG_LINE:]
                continue
            lines = block[:end].split(b"\n")
            head = lines[0]
            if long_by:
                done = finish(pending, long_by + len(head))
            elif pending:
                pending += head
                done = finish(pending, len(pending))
            else:
                done = finish(head, len(head))
            pending.clear()
            long_by = 0
            if done is not None:
                yield done
            # The hot loop: lines wholly inside this block (finish, inlined).
            for line in itertools.islice(lines, 1, None):
                line_no += 1
                line = line.rstrip(b"\r")  # the same object when there is no "\r"
                if len(line) > cap:
                    yield too_long(line_no, line, len(line))
                elif line and not line.isspace():
                    yield RawLine(uri, line_no, line)
            pending += block[end + 1:]
        if long_by or pending:
            done = finish(pending, long_by or len(pending))
            if done is not None:
                yield done
    except Unreadable as exc:
        yield RawLine(uri, line_no + 1, b"", f"{exc}; the rest of the file was not read",
                      file_cut=True)


def iter_folder(folder: Path) -> Iterator[RawLine]:
    """Every non-blank line of every NDJSON file under ``folder``, file by file.

    What ``scan_folder`` skips is not reported here; ``landing.land_folder`` does that.
    """
    for path in scan_folder(folder).files:
        yield from read_file(path)
