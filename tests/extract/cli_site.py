"""Run ``cartfhir extract`` against a misbehaving server on loopback, as a user would.

The ``hostile`` fixture (conftest) serves a ``FakeFhir`` whose ``faults`` a test
fills with the lies it wants told; ``extract`` writes a one-site config, runs the
CLI and returns the exit code, stdout, stderr and a read-only look at the DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb
import pytest

from cartfhir.cli import run_cli
from tests.testbed import bulk_source, fhir_source, write_config

from .stub_server import json_response


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    db: Path

    def rows(self, sql: str) -> list[tuple]:
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def run_row(self) -> tuple[str, str]:
        """(status, message) of the latest run."""
        return self.rows("select status, message from meta.runs order by started desc limit 1")[0]


def patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "active": True,
            "meta": {"versionId": "1", "lastUpdated": "2025-06-01T00:00:00Z"}}


def bundle(entries: list[Any], total: Any = None, next_url: str | None = None,
           **extra: Any) -> tuple[int, dict, bytes]:
    """A searchset page: ``entries`` are resources (wrapped) or raw entry values."""
    body: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset",
                            "entry": [{"resource": e, "search": {"mode": "match"}}
                                      if isinstance(e, dict) and "resourceType" in e else e
                                      for e in entries], **extra}
    if total is not None:
        body["total"] = total
    if next_url:
        body["link"] = [{"relation": "next", "url": next_url}]
    return json_response(body)


def searching(rtype: str, request: Any) -> dict[str, list[str]] | None:
    """The query of ``request`` when it is a search for ``rtype`` (cohort or pull), else None."""
    parts = urlsplit(request.url)
    return parse_qs(parts.query) if parts.path.endswith(f"/{rtype}") else None


def extract(tmp_path: Path, capsys: pytest.CaptureFixture[str], base_url: str, *,
            source: dict[str, Any] | None = None, args: tuple[str, ...] = (),
            options: tuple[str, ...] = (), kind: str = "fhir") -> Outcome:
    """Write a one-site config (Patient only; ``source`` adds or replaces source fields)
    and run extract.

    ``options`` go before the command (``--verbose``), ``args`` after it (``--full``).
    """
    if kind == "fhir":
        body = fhir_source(base_url, cohort={"search": ["Patient?active=true"]},
                           resources=[{"type": "Patient"}])
    else:
        body = bulk_source(base_url, level="system", types=["Patient"])
    config = write_config(tmp_path, ["site_x"], site_x={"source": {**body, **(source or {})}})
    code = run_cli([*options, "extract", "--config", str(config), *args])
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err, tmp_path / "out" / "t.duckdb")
