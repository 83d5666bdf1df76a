"""`cartfhir extract` against a FHIR server over real loopback HTTP: exit 0, and 3 when partial."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import orjson
import pytest

from cartfhir.cli import run_cli
from cartfhir.synth import generate
from tests.testbed import fhir_source

from .stub_server import FakeFhir, serve


@pytest.fixture()
def server(tmp_path: Path):
    out = tmp_path / "synth"
    generate(out, patients=3, seed=2, sites=["site_b"], bundles=True)
    resources = [e["resource"] for b in sorted((out / "site_b" / "bundles").glob("*.json"))
                 for e in orjson.loads(b.read_bytes())["entry"]]
    fake = FakeFhir(resources=resources)
    srv = serve(fake)
    yield fake, srv
    srv.shutdown()


def rest_site(base_url: str, **source: object) -> dict:
    """site_b's entry: a FHIR REST source whose cohort is every patient."""
    return {"source": fhir_source(base_url, cohort={"search": ["Patient?_count=100"]}, **source)}


def test_complete_then_partial(tmp_path: Path, config_file: Callable[..., Path], server,
                               capsys: pytest.CaptureFixture[str]) -> None:
    fake, srv = server
    config = config_file(["site_b"], site_b=rest_site(srv.base_url))
    assert run_cli(["extract", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "success" in out
    con = duckdb.connect(str(tmp_path / "out" / "t.duckdb"), read_only=True)
    assert con.execute("select count(*) from raw.resources").fetchone()[0] == len(fake.resources)
    con.close()

    fake.lie_about_total = 2
    assert run_cli(["extract", "--config", str(config), "--full"]) == 3
    captured = capsys.readouterr()
    assert "partial" in captured.out and "INCOMPLETE" in captured.err
    con = duckdb.connect(str(tmp_path / "out" / "t.duckdb"), read_only=True)
    status = con.execute("select status from meta.runs order by started desc limit 1").fetchone()
    assert status[0] == "partial"


def test_bad_since_is_a_usage_error(config_file: Callable[..., Path], server,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    _, srv = server
    config = config_file(["site_b"], site_b=rest_site(srv.base_url))
    assert run_cli(["extract", "--config", str(config), "--since", "yesterday"]) == 2
    assert "not a FHIR instant" in capsys.readouterr().err


def test_unreachable_server_fails_with_exit_1(config_file: Callable[..., Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = config_file(["site_b"], site_b=rest_site(
        "http://127.0.0.1:9/fhir", http={"max_retries": 1, "retry_budget": 5}))
    assert run_cli(["extract", "--config", str(config)]) == 1
    assert "giving up on http://127.0.0.1:9/fhir/metadata" in capsys.readouterr().err
