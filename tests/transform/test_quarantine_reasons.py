"""qa.quarantine names the kind of each reason from a closed set (ref.quarantine_reason)."""

from __future__ import annotations

import csv
import io
from importlib import resources

import duckdb
import pytest

from cartfhir.api import extract, transform
from cartfhir.synth import generate
from tests.testbed import make_config

SITES = ["site_a", "site_b"]


def _codes_in_csv() -> set[str]:
    text = resources.files("cartfhir.transform").joinpath(
        "terminology/quarantine_reasons.csv").read_text(encoding="utf-8")
    return {row["reason_code"] for row in csv.DictReader(io.StringIO(text))}


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    root = tmp_path_factory.mktemp("quarantine")
    generate(root / "data", patients=30, seed=5, sites=SITES, bad_rate=0.05)
    config = make_config(root, SITES)
    extract(config)
    transform(config)
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    yield con
    con.close()


def test_every_quarantined_row_has_a_code_of_the_closed_set(
        database: duckdb.DuckDBPyConnection) -> None:
    rows = database.execute("SELECT reason_code, reason FROM qa.quarantine").fetchall()
    assert len(rows) > 20  # bad data was generated, so there is something to classify
    known = _codes_in_csv()
    assert {r[0] for r in database.execute(
        "SELECT reason_code FROM ref.quarantine_reason").fetchall()} == known
    unknown = [(code, reason) for code, reason in rows if code not in known]
    assert not unknown, unknown[:5]
    reasons = {reason for _, reason in rows}
    codes = {code for code, _ in rows}
    # Many sentences (the values are in them), few kinds.
    assert len(codes) < len(reasons)
    assert len(codes) <= len(known)


def test_each_reason_matches_exactly_one_pattern(database: duckdb.DuckDBPyConnection) -> None:
    """Codes must not depend on rank by accident: the patterns tell the reasons apart."""
    counts = database.execute(
        "SELECT q.reason, count(r.reason_code) FROM (SELECT DISTINCT reason FROM qa.quarantine) "
        "AS q LEFT JOIN ref.quarantine_reason AS r ON regexp_matches(q.reason, r.pattern) "
        "GROUP BY q.reason").fetchall()
    assert counts and all(n == 1 for _, n in counts), [c for c in counts if c[1] != 1]
