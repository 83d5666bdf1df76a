"""Ed25519 signatures on site packages: who made a package, checked before anything in it.

A site signs the exact bytes of its ``manifest.json`` (which holds every file's SHA-256)
and ships the signature as ``manifest.sig``; the coordinating center keeps each site's
public key as ``<site>.pub`` in one folder. A package is accepted only when the key
named after the site it claims verifies it, so a key signs for its own site only.
Signatures stop outsiders; they say nothing about a site's own mistakes, which the
pool's content checks catch for signed packages too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cartfhir.config import site_id_problem
from cartfhir.errors import PoolError, UsageError

# Domain separation: a signature over a package manifest is never valid for anything else.
CONTEXT = b"cartfhir-site-package-manifest\n"
MAX_KEY_BYTES = 16 * 1024


@dataclass(frozen=True)
class KeyPair:
    site: str
    private: Path
    public: Path


def _check_site(site: str) -> None:
    problem = site_id_problem(site)
    if problem:
        raise UsageError(f"site id {site!r} is not valid: {problem}")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (no moment with wider permissions);
    an existing file is never replaced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def generate_keypair(site: str, out: Path) -> KeyPair:
    """Write ``out/<site>.key`` (private, mode 600) and ``out/<site>.pub``; never overwrite."""
    _check_site(site)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(site, out / f"{site}.key", out / f"{site}.pub")
    existing = [p for p in (pair.private, pair.public) if p.exists() or p.is_symlink()]
    if existing:
        raise UsageError(f"{', '.join(map(str, existing))} already exists; keys are never "
                         "overwritten (move the old ones away first)")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_new(pair.private, private, 0o600)
    _write_new(pair.public, public, 0o644)
    return pair


def load_private_key(text: str, where: str) -> Ed25519PrivateKey:
    """The site's private key from its PEM text; ``where`` says where it came from."""
    try:
        key = serialization.load_pem_private_key(text.strip().encode("utf-8") + b"\n",
                                                 password=None)
    except (ValueError, TypeError):
        raise PoolError(f"{where} is not an unencrypted PEM private key (make one with "
                        "'cartfhir keygen')") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PoolError(f"{where} is not an Ed25519 key (make one with 'cartfhir keygen')")
    return key


def read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        with Path(path).open("rb") as fh:
            text = fh.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read key file {path}: {exc.strerror}") from None
    if len(text) > MAX_KEY_BYTES:
        raise UsageError(f"{path} is too large to be a key")
    return load_private_key(text.decode("utf-8", "replace"), f"key file {path}")


def sign(manifest: bytes, key: Ed25519PrivateKey) -> bytes:
    """The contents of ``manifest.sig``: the base64 signature of the manifest's bytes."""
    return base64.b64encode(key.sign(CONTEXT + manifest)) + b"\n"


def public_key(keys: Path, site: str) -> Ed25519PublicKey:
    """``keys/<site>.pub``; the site id is checked first, so it cannot name another path."""
    _check_site(site)
    path = Path(keys) / f"{site}.pub"
    if not path.is_file():
        raise PoolError(f"no public key for site {site!r}: {path} does not exist; add the "
                        "site's key (from 'cartfhir keygen') to the keys folder")
    data = path.read_bytes()[:MAX_KEY_BYTES + 1]
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise PoolError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise PoolError(f"{path} is not an Ed25519 public key")
    return key


def verify(manifest: bytes, signature: bytes, key: Ed25519PublicKey, site: str,
           where: str) -> None:
    """Raise PoolError unless ``signature`` is ``site``'s key's signature of ``manifest``."""
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
        key.verify(raw, CONTEXT + manifest)
    except (InvalidSignature, binascii.Error, ValueError):
        raise PoolError(f"{where}: bad signature: it does not verify with the key "
                        f"of site {site!r} (the manifest was changed after signing, or "
                        "another key signed it)") from None


def fingerprint(key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key (SHA-256 of its raw bytes, 16 hex digits)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]
