"""Bring a site package (folder or zip) into a private work folder, reading only what it may hold.

Only the names a package is made of (``package.package_files()``) are read: from a
folder, each must be a regular file (never a symlink), from a zip a member with
exactly that name (no folders, no ``..``, no absolute names, no links, only stored or
deflated). The caller brings in the small manifest and signature first and the table
files only once the signature is verified, so an unsigned or forged package never
costs more than those two files. A file whose declared size (``ZipInfo.file_size``,
the folder's ``st_size``) is over its cap is refused before copying, and every copy is
capped again while reading (a declared size can lie). Everything after this reads the
private copies, which cannot change underneath.
"""

from __future__ import annotations

import lzma
import os
import shutil
import stat
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from cartfhir.errors import PoolError
from cartfhir.multisite.package import MANIFEST, MAX_MANIFEST_BYTES, SIGNATURE, package_files

MAX_FILE_BYTES = 4 * 1024**3  # one table's Parquet
MAX_SIGNATURE_BYTES = 1024
MAX_TOTAL_BYTES = 16 * 1024**3
_CHUNK = 1 << 20


def _cap(name: str) -> int:
    return {MANIFEST: MAX_MANIFEST_BYTES, SIGNATURE: MAX_SIGNATURE_BYTES}.get(name,
                                                                            MAX_FILE_BYTES)


def _copy_capped(source: BinaryIO, target: Path, cap: int, what: str) -> int:
    written = 0
    with target.open("xb") as out:
        while block := source.read(_CHUNK):
            written += len(block)
            if written > cap:
                raise PoolError(f"{what} is larger than {cap} bytes; refused")
            out.write(block)
    return written


def _too_large(source: Path, name: str, size: int, what: str) -> None:
    if size > _cap(name):
        raise PoolError(f"{source}: {what} declares {size} bytes, more than the "
                        f"{_cap(name)} a package file may hold; refused before copying")


def _from_folder(source: Path, target: Path, names: Iterable[str]) -> None:
    total = 0
    for name in names:
        path = source / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue  # missing files are reported by the manifest checks, which name the table
        if not stat.S_ISREG(info.st_mode):
            raise PoolError(f"{source}: {name} is not a regular file (a symlink or a "
                            "folder); a package holds only its own files")
        _too_large(source, name, info.st_size, name)
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(path, flags), "rb") as fh:
            total += _copy_capped(fh, target / name, _cap(name), f"{source}: {name}")
        if total > MAX_TOTAL_BYTES:
            raise PoolError(f"{source}: the package is larger than {MAX_TOTAL_BYTES} bytes")


def _member_problem(info: zipfile.ZipInfo, allowed: set[str]) -> str | None:
    mode = info.external_attr >> 16
    if info.filename not in allowed:
        return "is not a file of a site package"
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if info.is_dir() or stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # 0: no Unix mode
        return "is not a regular file"
    if info.flag_bits & 0x1:
        return "is encrypted (a package is never password-protected)"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return "uses a compression other than deflate (a package zip is deflated or stored)"
    return None


def _from_zip(source: Path, target: Path, names: Iterable[str]) -> None:
    allowed = set(package_files())
    wanted = set(names)
    total = 0
    try:
        with zipfile.ZipFile(source) as zf:
            members = zf.infolist()
            names = [m.filename for m in members]
            for info in members:
                problem = _member_problem(info, allowed)
                if problem:
                    raise PoolError(f"{source}: member {info.filename!r} {problem}; refused")
                if names.count(info.filename) > 1:
                    raise PoolError(f"{source}: member {info.filename!r} appears twice")
            if sum(m.file_size for m in members) > MAX_TOTAL_BYTES:
                raise PoolError(f"{source}: the package declares more than {MAX_TOTAL_BYTES} "
                                "bytes uncompressed; refused before copying")
            chosen = [m for m in members if m.filename in wanted]
            for info in chosen:
                _too_large(source, info.filename, info.file_size, f"member {info.filename!r}")
            for info in chosen:
                with zf.open(info) as fh:
                    total += _copy_capped(fh, target / info.filename, _cap(info.filename),
                                          f"{source}: member {info.filename!r}")
                if total > MAX_TOTAL_BYTES:
                    raise PoolError(f"{source}: the package is larger than {MAX_TOTAL_BYTES} "
                                    "bytes uncompressed")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
            zlib.error, lzma.LZMAError) as exc:
        raise PoolError(f"{source}: not a readable zip file ({exc})") from None


def bring_in(source: Path, target: Path, names: Iterable[str]) -> Path:
    """Copy ``names`` (package files; those absent are skipped) from ``source`` into the
    folder ``target``, created on the first call."""
    source, names = Path(source), tuple(names)
    target.mkdir(exist_ok=True)
    unknown = set(names) - set(package_files())
    if unknown:
        raise ValueError(f"not package files: {sorted(unknown)}")  # a caller's bug
    try:
        if source.is_dir():
            _from_folder(source, target, names)
        elif source.suffix == ".zip" and source.is_file():
            _from_zip(source, target, names)
        else:
            raise PoolError(f"{source}: no such package (expected a folder or a .zip file)")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target
