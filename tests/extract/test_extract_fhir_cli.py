"""`cartfhir extract` against a FHIR server over real loopback HTTP: exit 0, and 3 when partial."""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson
import pytest

from cartfhir.cli import run_cli
from cartfhir.synth import generate

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


def write_config(tmp_path: Path, base_url: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "study: {name: t}\n"
        "sites:\n"
        f"  - id: site_b\n    source: {{kind: fhir, base_url: '{base_url}',\n"
        "              cohort: {search: ['Patient?_count=100']}}\n"
        "output: {duckdb: out/t.duckdb}\n")
    return path


def test_complete_then_partial(tmp_path: Path, server, capsys: pytest.CaptureFixture[str]) -> None:
    fake, srv = server
    config = write_config(tmp_path, srv.base_url)
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


def test_bad_since_is_a_usage_error(tmp_path: Path, server,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    _, srv = server
    config = write_config(tmp_path, srv.base_url)
    assert run_cli(["extract", "--config", str(config), "--since", "yesterday"]) == 2
    assert "not a FHIR instant" in capsys.readouterr().err


def test_unreachable_server_fails_with_exit_1(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/fhir")
    text = config.read_text().replace("cohort:", "http: {max_retries: 1, retry_budget: 5},\n"
                                      "              cohort:")
    config.write_text(text)
    assert run_cli(["extract", "--config", str(config)]) == 1
    assert "giving up on http://127.0.0.1:9/fhir/metadata" in capsys.readouterr().err
