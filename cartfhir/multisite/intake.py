"""Bring a site package (folder or zip) into a private work folder, reading only what it may hold.

Only the names a package is made of (``package.package_files()``) are read: from a
folder, each must be a regular file (never a symlink), from a zip a member with
exactly that name (no folders, no ``..``, no absolute names, no links). Every file is
copied with its size capped while reading, so a zip bomb or a huge file stops early,
and everything after this reads the private copies, which cannot change underneath.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
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


def _from_folder(source: Path, target: Path) -> None:
    total = 0
    for name in package_files():
        path = source / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue  # missing files are reported by the manifest checks, which name the table
        if not stat.S_ISREG(info.st_mode):
            raise PoolError(f"{source}: {name} is not a regular file (a symlink or a "
                            "folder); a package holds only its own files")
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
    return None


def _from_zip(source: Path, target: Path) -> None:
    allowed = set(package_files())
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
            for info in members:
                with zf.open(info) as fh:
                    total += _copy_capped(fh, target / info.filename, _cap(info.filename),
                                          f"{source}: member {info.filename!r}")
                if total > MAX_TOTAL_BYTES:
                    raise PoolError(f"{source}: the package is larger than {MAX_TOTAL_BYTES} "
                                    "bytes uncompressed")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
            zlib.error) as exc:
        raise PoolError(f"{source}: not a readable zip file ({exc})") from None


def bring_in(source: Path, target: Path) -> Path:
    """Copy the package's own files from ``source`` into the new folder ``target``."""
    source = Path(source)
    target.mkdir()
    try:
        if source.is_dir():
            _from_folder(source, target)
        elif source.suffix == ".zip" and source.is_file():
            _from_zip(source, target)
        else:
            raise PoolError(f"{source}: no such package (expected a folder or a .zip file)")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target
