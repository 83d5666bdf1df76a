"""Kill the extracting process mid-pull (SIGKILL), run again: complete, nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import orjson

from cartfhir.synth import generate
from tests.testbed import fhir_source, write_config

from .stub_server import FakeFhir, serve

ROOT = Path(__file__).resolve().parents[2]


def test_killed_pull_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    generate(out, patients=4, seed=4, sites=["site_a"], bundles=True)
    resources = [e["resource"] for b in sorted((out / "site_a" / "bundles").glob("*.json"))
                 for e in orjson.loads(b.read_bytes())["entry"]]
    fake = FakeFhir(resources=resources)
    fake.delay = 0.03
    server = serve(fake)
    config = write_config(tmp_path, ["site_a"], site_a={"source": fhir_source(
        server.base_url, cohort={"search": ["Patient?_count=100"]}, page_size=20,
        patients_per_query=1, http={"max_connections": 2})})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "cartfhir", "extract", "--config", str(config)]
    try:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while fake.served < 25 and time.monotonic() < deadline:  # well into the pull
            time.sleep(0.02)
        assert proc.poll() is None, "the first run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

        db = tmp_path / "out" / "t.duckdb"
        con = duckdb.connect(str(db), read_only=True)
        before = dict(con.execute("select resource_type || '/' || id, content_hash "
                                  "from raw.resources").fetchall())
        status = con.execute("select status from meta.runs").fetchall()
        con.close()
        assert status == [("running",)]  # the killed run says so honestly
        assert before, "searches that finished before the kill stay landed"

        fake.delay = 0.0
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        con = duckdb.connect(str(db), read_only=True)
        rows = con.execute("select resource_type || '/' || id, content_hash "
                           "from raw.resources").fetchall()
        con.close()
    finally:
        server.shutdown()
    keys = [k for k, _ in rows]
    assert len(keys) == len(set(keys))  # nothing twice
    assert set(keys) == {f"{r['resourceType']}/{r['id']}" for r in resources}  # nothing missing
    after = dict(rows)
    assert all(after[k] == h for k, h in before.items())  # nothing already landed was lost
