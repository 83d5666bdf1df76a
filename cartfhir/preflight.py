"""Pre-flight: everything a run needs, checked before anything is written.

Without it a missing pseudonym key or concept map passes ``extract`` and fails only
at ``transform``, after a long pull. ``check`` looks at each item the way the stage
that uses it will (the same loaders, the same HTTP client and authentication), so a
passing check means the stages will not trip over the config, and names every
problem at once. It writes nothing. Secrets are resolved but their values never
appear in an item (``SecretRef.resolve`` registers them with ``cartfhir.redact``).
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from cartfhir import db
from cartfhir.config import BulkSource, Config, FhirSource, NoAuth, SecretRef, Site
from cartfhir.errors import (
    AuthError,
    CartfhirError,
    ConfigError,
    DatabaseBusyError,
    DatabaseError,
    ExitCode,
    FhirServerError,
    SourceError,
    TlsError,
)
from cartfhir.extract import ndjson
from cartfhir.extract.http import FhirClient
from cartfhir.extract.rest import capability
from cartfhir.multisite.signing import load_private_key
from cartfhir.redact import mask_url
from cartfhir.transform import load_reference
from cartfhir.transform.identity import site_secret
from cartfhir.transform.reference import time_zone_problem

__all__ = ["CheckItem", "CheckReport", "check"]

log = logging.getLogger(__name__)

# A pre-flight probe should answer in seconds, not wait out the extract's retry budget.
PROBE_TIMEOUT = 20.0
PROBE_RETRIES = 1
Outcome = Literal["ok", "fail", "n/a"]


@dataclass(frozen=True)
class CheckItem:
    """One thing checked: ``name`` (e.g. 'site_a pseudonym key'), the outcome, and why."""

    name: str
    ok: bool
    detail: str
    applies: bool = True  # False: not applicable here (an 'n/a' line, never a failure)
    # A failure that may pass by itself (a busy database, a server down or timing out):
    # the error class to raise, so the exit code says "retry", not "fix the config".
    transient: type[CartfhirError] | None = field(default=None, compare=False)

    @property
    def outcome(self) -> Outcome:
        if not self.applies:
            return "n/a"
        return "ok" if self.ok else "fail"

    def line(self, width: int = 0) -> str:
        """'ok   site_a source  data/site_a (12 files)' / 'FAIL site_b ...' / 'n/a  engine ...'."""
        tag = {"ok": "ok", "fail": "FAIL", "n/a": "n/a"}[self.outcome]
        return f"{tag:<4} {self.name:<{width}}  {self.detail}"


@dataclass
class CheckReport:
    """Every item checked, in order; ``ok`` when none failed."""

    items: list[CheckItem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(item.ok for item in self.items)

    @property
    def failed(self) -> list[CheckItem]:
        return [item for item in self.items if not item.ok]

    @property
    def status(self) -> str:
        return "success" if self.ok else "failed"

    def lines(self) -> list[str]:
        width = max((len(item.name) for item in self.items), default=0)
        return [item.line(width) for item in self.items]

    @property
    def exit_code(self) -> ExitCode:
        """0 all passed; 2 when anything needs fixing; 1 when every failure is transient."""
        if self.ok:
            return ExitCode.SUCCESS
        return ExitCode.USAGE if self._fix_first() else ExitCode.FAILURE

    def _fix_first(self) -> bool:
        return any(item.transient is None for item in self.failed)

    def raise_if_failed(self) -> None:
        """Nothing when all passed; else one error naming every failed item:
        ConfigError (exit 2) when any needs fixing, else the first transient item's
        error (DatabaseBusyError, FhirServerError: exit 1, worth retrying)."""
        if self.ok:
            return
        problems = "\n  ".join(f"{item.name}: {item.detail}" for item in self.failed)
        if self._fix_first():
            raise ConfigError(f"pre-flight check failed ({len(self.failed)} problem(s)); "
                              f"nothing was run:\n  {problems}\n"
                              "fix these, then see every item with 'cartfhir check --config "
                              "...'")
        error = self.failed[0].transient
        assert error is not None
        raise error(f"pre-flight check failed, nothing was run; this may pass by itself, so "
                    f"retry later (or give --wait SECONDS for a busy database):\n  {problems}")

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "ok": self.ok,
                "items": [{"name": i.name, "outcome": i.outcome, "detail": i.detail}
                          for i in self.items]}


def _item(name: str, probe: Callable[[], str]) -> CheckItem:
    """Run one probe: its return value is the detail; a CartfhirError is the failure."""
    try:
        return CheckItem(name, True, probe())
    except CartfhirError as exc:
        return _failed(name, exc)


def _failed(name: str, exc: CartfhirError) -> CheckItem:
    return CheckItem(name, False, str(exc), transient=_transient(exc))


def _transient(exc: CartfhirError) -> type[CartfhirError] | None:
    """The error's class when retrying may help: the database's lock held by another
    process, or a server that did not answer, timed out or answered 429/5xx. Refused
    credentials, a 4xx (a wrong URL or search) and every file or secret problem need a
    fix instead (None)."""
    if isinstance(exc, DatabaseBusyError):
        return DatabaseBusyError
    if isinstance(exc, AuthError | TlsError) or not isinstance(exc, SourceError):
        return None
    status = getattr(exc, "status", None)
    if isinstance(exc, FhirServerError) and status is not None and 400 <= status < 500 \
            and status != 429:
        return None
    return type(exc) if isinstance(exc, FhirServerError) else None


def _not_applicable(name: str, why: str) -> CheckItem:
    return CheckItem(name, True, why, applies=False)


def check(config: Config, *, network: bool = True) -> CheckReport:
    """Check the config's files, secrets, output, servers and engine; never raises for them.

    ``network=False`` skips the FHIR servers (their items say 'not checked').
    """
    report = CheckReport()
    where = config.source_file or "config"
    report.items.append(CheckItem("config", True, f"{where} (study {config.study.name}, "
                                                 f"{len(config.sites)} site(s))"))
    for site in config.sites:
        report.items.extend(_site_items(site, network))
    report.items.extend(_reference_items(config))
    report.items.extend(_output_items(config))
    report.items.append(_engine_item(config))
    log.debug("pre-flight: %d items, %d failed", len(report.items), len(report.failed))
    return report


# ---- sites ------------------------------------------------------------------------------

def _site_items(site: Site, network: bool) -> Iterator[CheckItem]:
    source = site.source
    if source.kind == "ndjson":
        yield _item(f"{site.id} source", lambda: _folder_detail(source.path))
    else:
        yield from _secret_items(site)
        ids_file = source.cohort.patient_ids_file if source.kind == "fhir" else None
        if ids_file is not None:
            yield _item(f"{site.id} cohort file",
                        lambda: _readable(ids_file, "cohort.patient_ids_file"))
        yield from _tls_items(site.id, source)
        if network:
            yield from _server_items(site.id, source)
        else:
            yield _not_applicable(f"{site.id} server", "not checked (network checks off)")
    yield _item(f"{site.id} pseudonym key", lambda: _pseudonym_detail(site))
    if site.signing_key is None:
        yield _not_applicable(f"{site.id} signing key",
                              "not set (packages from export-site are not signed)")
    else:
        yield _item(f"{site.id} signing key", lambda: _signing_detail(site))
    zone = site.timezone
    if zone is None:
        yield _not_applicable(f"{site.id} time zone",
                              "not set (a record's day is the date its timestamp writes)")
    else:
        yield _item(f"{site.id} time zone", lambda: _time_zone_detail(site.id, zone))


def _folder_detail(path: Path) -> str:
    files = ndjson.find_files(path)  # ConfigError when missing, SourceError when empty
    return f"{path} ({len(files)} file{'s' if len(files) != 1 else ''})"


def _pseudonym_detail(site: Site) -> str:
    site_secret(site)  # the transform's own reading: set, resolvable, long enough
    assert site.pseudonym_key is not None
    return f"{site.pseudonym_key.describe()} is readable"


def _signing_detail(site: Site) -> str:
    ref = site.signing_key
    assert ref is not None
    load_private_key(ref.resolve(), f"sites[{site.id}].signing_key ({ref.describe()})")
    return f"{ref.describe()} holds an Ed25519 private key"


def _time_zone_detail(site_id: str, zone: str) -> str:
    """The zone DuckDB will read the site's days in, with its offset now."""
    import duckdb

    with duckdb.connect() as con:
        problem = time_zone_problem(con, site_id, zone)
    if problem:
        raise ConfigError(problem)
    offset = datetime.now(ZoneInfo(zone)).strftime("%z")
    return f"{zone} (UTC{offset[:3]}:{offset[3:]} now)"


def _secret_refs(site: Site) -> Iterator[tuple[str, SecretRef]]:
    auth = site.source.auth  # type: ignore[union-attr]
    for attr in ("token", "password", "private_key"):
        ref = getattr(auth, attr, None)
        if isinstance(ref, SecretRef):
            yield f"auth.{attr}", ref


def _secret_items(site: Site) -> Iterator[CheckItem]:
    for key, ref in _secret_refs(site):
        def probe(ref: SecretRef = ref) -> str:
            ref.resolve()
            return f"{ref.describe()} is set"
        yield _item(f"{site.id} {key}", probe)


def _readable(path: Path | None, key: str) -> str:
    assert path is not None
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise ConfigError(f"{key} {path} cannot be read: {exc.strerror}") from None
    return f"{path} is readable"


def _tls_items(site_id: str, source: FhirSource | BulkSource) -> Iterator[CheckItem]:
    tls = source.http.tls
    for key in ("ca_bundle", "client_cert", "client_key"):
        path = getattr(tls, key)
        if path is not None:
            yield _item(f"{site_id} tls {key}",
                        lambda path=path, key=key: _readable(path, f"http.tls.{key}"))


def _server_items(site_id: str, source: FhirSource | BulkSource) -> Iterator[CheckItem]:
    """The CapabilityStatement (without credentials, as most servers allow), then auth."""
    http = source.http.model_copy(update={"max_retries": PROBE_RETRIES,
                                          "timeout": min(source.http.timeout, PROBE_TIMEOUT)})
    base = str(source.base_url)
    server = f"{site_id} server"
    try:
        try:
            software, version, fhir = _capability(base, http, NoAuth())
        except AuthError:  # a server that wants credentials even for /metadata
            software, version, fhir = _capability(base, http, source.auth)
    except CartfhirError as exc:
        failed = _failed(server, exc)
        if failed.transient is not None:  # the probe's own short patience, not the config's
            failed = replace(failed, detail=(
                f"{mask_url(base)} did not answer the pre-flight probe ({PROBE_RETRIES + 1} "
                f"tries, {min(source.http.timeout, PROBE_TIMEOUT):g} s each; extract itself "
                f"keeps trying up to http.max_retries): "
                + (f"HTTP {exc.status}" if getattr(exc, "status", None) else "no answer")))
        yield failed
        yield _not_applicable(f"{site_id} auth", "not checked (the server did not answer)")
        return
    name = " ".join(p for p in (software, version) if p) or "software not named"
    yield CheckItem(server, True, f"{mask_url(base)} FHIR {fhir or '?'}, {name}")
    yield _item(f"{site_id} auth", lambda: _auth_detail(base, http, source))


def _capability(base: str, http: Any, auth: Any) -> tuple[str | None, str | None, str | None]:
    client = FhirClient(base, http, auth)
    try:
        return capability(client)
    finally:
        client.close()


def _auth_detail(base: str, http: Any, source: FhirSource | BulkSource) -> str:
    """A token (SMART), then a search that returns no resources, only a count."""
    client = FhirClient(base, http, source.auth)
    got = []
    try:
        if source.auth.kind == "smart":
            client.auth.headers()
            got.append("token obtained")
        url = client.url("Patient", {"_count": 1, "_summary": "count"})
        try:
            response = client.request("GET", url, stream=True)
        except AuthError as exc:
            raise AuthError(f"auth failure ({source.auth.kind}): {exc}") from None
        client.read_body(response, url, limit=1 << 20)
    finally:
        client.close()
    got.append(f"Patient?_summary=count answered {response.status_code}")
    return f"{source.auth.kind}: {', '.join(got)}"


# ---- study files ------------------------------------------------------------------------

def _reference_files(config: Config) -> Iterator[tuple[str, Path]]:
    for path in config.transform.concept_maps:
        yield "study concept map", path
    if config.transform.grade_cuts is not None:
        yield "study grade cuts", config.transform.grade_cuts
    for site in config.sites:
        for path in site.concept_maps:
            yield f"{site.id} concept map", path
        for path in site.text_patterns:
            yield f"{site.id} text patterns", path
        for path in site.unit_maps:
            yield f"{site.id} unit map", path


def _exists(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"file {path} {'is not a file' if path.exists() else 'does not exist'}")
    return _readable(path, "file")


def _reference_items(config: Config) -> Iterator[CheckItem]:
    """Each file the config adds, then all of them parsed as the transform parses them."""
    items = [_item(name, lambda path=path: _exists(path))
             for name, path in _reference_files(config)]
    yield from items
    if not all(item.ok for item in items):
        yield _not_applicable("study definitions", "not parsed (files above are missing)")
        return

    def parse() -> str:
        reference = load_reference(config)
        return f"{len(reference.sources)} reference files parse"
    yield _item("study definitions", parse)


# ---- output -----------------------------------------------------------------------------

def _writable_folder(folder: Path) -> str:
    """Writable by trying (os.access says yes to root), without creating the folder."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{folder} cannot be created: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".cartfhir-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write in {existing}: {exc.strerror}") from None
    return f"{folder} is writable" + ("" if existing == folder else " (will be created)")


def _database_detail(path: Path) -> str:
    if path.is_dir():
        raise ConfigError(f"output.duckdb {path} is a folder; name a file")
    if not path.exists():
        return f"{path} (created by the first run)"
    try:  # waits for another process's lock as long as --wait says, as the stages do
        con = db.connect(path, read_only=True)
    except DatabaseBusyError:
        raise
    except DatabaseError as exc:
        raise ConfigError(f"output.duckdb {path} cannot be opened: {exc}") from None
    con.close()
    return f"{path} opens"


def _output_items(config: Config) -> Iterator[CheckItem]:
    out = config.output
    yield _item("output database folder", lambda: _writable_folder(out.duckdb.parent))
    if out.dir is not None and out.dir != out.duckdb.parent:
        yield _item("output dir", lambda: _writable_folder(out.folder))
    yield _item("output database", lambda: _database_detail(out.duckdb))


# ---- engine -----------------------------------------------------------------------------

JAVA_MIN = 17  # Spark 4.0 runs on Java 17 and 21


def _engine_item(config: Config) -> CheckItem:
    """The engine the config names: DuckDB's version, or for Spark pyspark, Java and the
    master (without starting a JVM)."""
    engine = config.engine_for()
    if engine.kind == "duckdb":
        import duckdb

        return CheckItem("engine", True, f"duckdb {duckdb.__version__} (in-process)")
    return _item("engine", lambda: _spark_detail(engine.master))


def _spark_detail(master: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    from cartfhir.spark.session import INSTALL_HINT

    if importlib.util.find_spec("pyspark") is None:
        raise ConfigError(INSTALL_HINT)
    try:
        pyspark = version("pyspark")
    except PackageNotFoundError:
        pyspark = "?"
    return f"spark: pyspark {pyspark}, {_java_detail()}, master {master}"


def _java_detail() -> str:
    """'java 17.0.9' from ``java -version`` (JAVA_HOME's first, else PATH's); ConfigError
    when there is none or it is older than JAVA_MIN."""
    import os
    import re
    import subprocess

    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").is_file() \
        else shutil.which("java")
    if java is None:
        raise ConfigError(f"engine spark needs Java {JAVA_MIN} or 21: none on PATH or in "
                          "JAVA_HOME")
    try:
        answer = subprocess.run([java, "-version"], capture_output=True, text=True,
                                timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"{java} -version failed: {exc}") from None
    found = re.search(r'version "(\d+)(?:\.(\d+))?[^"]*"', answer.stderr + answer.stdout)
    if not found:
        raise ConfigError(f"{java} -version did not say its version")
    major = int(found.group(1))
    if major == 1 and found.group(2):  # 1.8 is Java 8
        major = int(found.group(2))
    if major < JAVA_MIN:
        raise ConfigError(f"engine spark needs Java {JAVA_MIN} or 21; {java} is Java {major}")
    return f"java {major} ({java})"
