"""Run and fill cartfhir's local HAPI FHIR JPA server (``servers/hapi``) from tests.

The server is a Spring Boot jar built by Maven from the project's own module; it
serves FHIR R4 at ``http://127.0.0.1:PORT/fhir`` on an in-memory H2 database. This
module builds the jar when needed, starts and stops the process, and offers small
REST helpers (``load_bundles``, ``count``, ``reset``, ``bulk_export``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "servers" / "hapi"
JAR = MODULE / "target" / "cartfhir-hapi.jar"
JAVA_OPTS = ("-Xmx1g", "-XX:+UseSerialGC")
FHIR_JSON = "application/fhir+json"
TOOLS = {"java": "a Java 17+ JDK (e.g. apt-get install openjdk-17-jdk-headless)",
         "mvn": "Apache Maven 3.8+ (e.g. apt-get install maven)"}


class HapiError(RuntimeError):
    """The HAPI server refused a request or could not be built or started."""


# ---- can we run it at all ------------------------------------------------------------
def missing_tools(which: Callable[[str], str | None] | None = None) -> list[str]:
    """The tools (``java``, ``mvn``) not found on PATH."""
    which = which or shutil.which
    return [tool for tool in TOOLS if which(tool) is None]


def unavailable_action(missing: list[str], env: Mapping[str, str]) -> tuple[str, str] | None:
    """What to do when tools are missing: ``None`` (all there), ``("skip", why)`` or
    ``("fail", why)``. On CI (``CI=true``) a missing tool fails: integration tests must
    never silently turn into skips there."""
    if not missing:
        return None
    needs = "; ".join(f"{tool}: install {TOOLS[tool]}" for tool in missing)
    why = (f"HAPI FHIR integration tests need {' and '.join(missing)} on PATH ({needs}); "
           f"the server is built from servers/hapi with Maven and run with java")
    if env.get("CI", "").strip().lower() == "true":
        return "fail", why + " [CI=true: failing instead of skipping]"
    return "skip", why


# ---- build ----------------------------------------------------------------------------
def module_sources(module: Path = MODULE) -> list[Path]:
    return [module / "pom.xml", *(p for p in (module / "src").rglob("*") if p.is_file())]


def jar_is_stale(jar: Path = JAR, module: Path = MODULE) -> bool:
    """True when the jar is missing or older than any file of the Maven module."""
    if not jar.exists():
        return True
    built = jar.stat().st_mtime
    return any(p.stat().st_mtime > built for p in module_sources(module))


def build_jar(log_path: Path, *, jar: Path = JAR, module: Path = MODULE,
              timeout: float = 1800) -> Path:
    """Build the server jar with Maven unless it is up to date; one build at a time.

    A cold build downloads HAPI and Spring Boot from Maven Central into ~/.m2 once.
    """
    jar.parent.mkdir(parents=True, exist_ok=True)
    with (jar.parent / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building right now
        if not jar_is_stale(jar, module):
            return jar
        command = ["mvn", "-q", "-B", "-f", str(module / "pom.xml"), "package", "-DskipTests"]
        with log_path.open("wb") as log:
            try:
                done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                      timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                raise HapiError(f"`{' '.join(command)}` took over {timeout:.0f}s\n"
                                f"{tail(log_path)}") from None
        if done.returncode != 0 or not jar.exists():
            raise HapiError(f"`{' '.join(command)}` failed (exit {done.returncode}):\n"
                            f"{tail(log_path)}")
        jar.touch()  # Maven may keep an up-to-date jar's old mtime; mark it as checked now
        return jar


# ---- run ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class HapiServer:
    """One server process on loopback; ``stop`` ends it and everything it started."""

    jar: Path
    port: int
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def start(self) -> None:
        # the server exits by itself should this process die without stopping it
        command = ["java", *JAVA_OPTS, "-jar", str(self.jar), f"--hapi.port={self.port}",
                   f"--cartfhir.hapi.parent-pid={os.getpid()}"]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> float:
        """Wait until ``GET /fhir/metadata`` answers 200; returns the seconds it took."""
        assert self.process is not None, "start() first"
        started = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise HapiError(f"HAPI server exited with code {self.process.returncode} "
                                f"before it answered; log {self.log_path}:\n{tail(self.log_path)}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.base_url}/metadata", timeout=5).status_code == 200:
                    return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise HapiError(f"HAPI server did not answer GET /fhir/metadata within "
                                f"{timeout:.0f}s; log {self.log_path}:\n{tail(self.log_path)}")
            time.sleep(0.5)

    def stop(self, grace: float = 15) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
        process, self.process = self.process, None
        if process is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # children (if any) live in the same session; make sure none outlive the server
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def start_server(jar: Path, work_dir: Path, *, timeout: float = 180,
                 attempts: int = 3) -> HapiServer:
    """Start the jar on a free loopback port and wait until it answers; the caller stops it.

    Another process may grab the chosen port before the server binds it, so a server that
    exits complaining about its port is retried on a new one.
    """
    for attempt in range(1, attempts + 1):
        server = HapiServer(jar, free_port(), work_dir / f"server-{attempt}.log")
        server.start()
        try:
            server.wait_ready(timeout)
            return server
        except BaseException as exc:  # also KeyboardInterrupt: never leave a server behind
            server.stop()
            retry = isinstance(exc, HapiError) and attempt < attempts
            if not retry or "already in use" not in tail(server.log_path, 200):
                raise
    raise AssertionError("unreachable")


# ---- REST helpers ---------------------------------------------------------------------
def outcome_text(response: requests.Response) -> str:
    """The OperationOutcome's diagnostics (or the body) of an error response."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:2000]
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        issues = [" ".join(str(i.get(k, "")) for k in ("severity", "code", "diagnostics")
                           if i.get(k)) for i in body.get("issue", [])]
        return "; ".join(issues) or response.text[:2000]
    return response.text[:2000]


def _check(response: requests.Response, what: str) -> requests.Response:
    if not 200 <= response.status_code < 300:
        raise HapiError(f"{what}: HTTP {response.status_code}: {outcome_text(response)}")
    return response


def bundle_files(folder: Path) -> list[Path]:
    """The transaction Bundles ``cartfhir.synth.generate(out, bundles=True)`` wrote under
    ``folder`` (``out``, ``out/<site>`` or ``out/<site>/bundles``), in a stable order."""
    folder = Path(folder)
    if folder.name == "bundles":
        return sorted(folder.glob("bundle-*.json"))
    return sorted(folder.glob("**/bundles/bundle-*.json"))


def load_bundles(base_url: str, folder: Path, *, timeout: float = 300,
                 session: requests.Session | None = None) -> int:
    """POST every transaction Bundle under ``folder``; returns the entries stored.

    Raises ``HapiError`` with the OperationOutcome text on any non-2xx answer (or any
    non-2xx entry in the transaction-response).
    """
    http = session or requests.Session()
    files = bundle_files(folder)
    if not files:
        raise HapiError(f"no bundles/bundle-*.json under {folder}")
    stored = 0
    for path in files:
        response = _check(http.post(base_url.rstrip("/"), data=path.read_bytes(), timeout=timeout,
                                    headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}),
                          f"POST transaction {path}")
        for entry in response.json().get("entry", []):
            status = entry.get("response", {}).get("status", "")
            if not status.startswith("2"):
                raise HapiError(f"transaction {path}: entry status {status!r}: "
                                f"{entry.get('response', {}).get('outcome')}")
            stored += 1
    return stored


def count(base_url: str, resource_type: str, **params: Any) -> int:
    """``Bundle.total`` of ``GET [base]/[type]?_summary=count&params``."""
    response = _check(requests.get(f"{base_url.rstrip('/')}/{resource_type}",
                                   params={**params, "_summary": "count"},
                                   headers={"Accept": FHIR_JSON}, timeout=120),
                      f"count {resource_type}")
    return int(response.json()["total"])


def search_all(base_url: str, resource_type: str, **params: Any) -> tuple[list[dict], list[dict]]:
    """Every page of a search, following ``link[next]`` as given; returns (pages, resources)."""
    url: str | None = f"{base_url.rstrip('/')}/{resource_type}"
    query: dict[str, Any] | None = params
    pages: list[dict] = []
    resources: list[dict] = []
    while url:
        page = _check(requests.get(url, params=query, headers={"Accept": FHIR_JSON}, timeout=120),
                      f"search {url}").json()
        pages.append(page)
        resources.extend(e["resource"] for e in page.get("entry", []) if "resource" in e)
        url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"),
                   None)
        query = None
    return pages, resources


def reset(base_url: str) -> None:
    """Remove every resource and all history (``$expunge`` with ``expungeEverything``)."""
    body = {"resourceType": "Parameters",
            "parameter": [{"name": "expungeEverything", "valueBoolean": True}]}
    _check(requests.post(f"{base_url.rstrip('/')}/$expunge", json=body, timeout=300,
                         headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}),
           "$expunge everything")


def bulk_export(base_url: str, path: str = "$export", *, params: Mapping[str, str] | None = None,
                timeout: float = 120, poll: float = 0.5) -> tuple[requests.Response, dict]:
    """Kick off a Bulk Data export at ``path`` and poll until it completes.

    Returns the kick-off response (202, ``Content-Location``) and the completed manifest.
    """
    kickoff = requests.get(f"{base_url.rstrip('/')}/{path}", params=params, timeout=60,
                           headers={"Accept": FHIR_JSON, "Prefer": "respond-async"})
    _check(kickoff, f"kick-off {path}")
    status_url = kickoff.headers["Content-Location"]
    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(status_url, headers={"Accept": "application/json"}, timeout=60)
        if response.status_code == 200:
            return kickoff, response.json()
        _check(response, f"poll {status_url}")
        if time.monotonic() > deadline:
            raise HapiError(f"export {status_url} still running after {timeout:.0f}s: "
                            f"{response.headers.get('X-Progress')}")
        time.sleep(poll)


def ndjson_lines(url: str) -> list[dict]:
    """Download one export output file and parse its lines."""
    response = _check(requests.get(url, headers={"Accept": "application/fhir+ndjson"},
                                   timeout=120), f"download {url}")
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]
