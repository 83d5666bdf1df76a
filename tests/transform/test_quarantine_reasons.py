"""qa.quarantine names the kind of each reason from a closed set (ref.quarantine_reason)."""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path

import duckdb
import pytest

from cartfhir.api import extract, transform
from cartfhir.synth import generate
from tests.testbed import make_config
from tests.transform.small_site import LOCAL, Site

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


def test_the_codes_are_data_without_patterns() -> None:
    """The harmonized models name the code where they decide; nothing parses the sentence."""
    text = resources.files("cartfhir.transform").joinpath(
        "terminology/quarantine_reasons.csv").read_text(encoding="utf-8")
    assert csv.DictReader(io.StringIO(text)).fieldnames == ["reason_code", "description"]


def test_the_code_comes_from_the_harmonized_model(database: duckdb.DuckDBPyConnection) -> None:
    for table in ("observation_value", "grade_assessment", "condition", "procedure"):
        mismatched = database.execute(
            f"SELECT count(*) FROM harmonized.{table} "
            "WHERE (problem IS NULL) <> (problem_code IS NULL)").fetchone()[0]
        assert mismatched == 0, table
    assert database.execute(
        "SELECT count(*) FROM qa.quarantine AS q JOIN harmonized.observation_value AS o "
        "ON o.site = q.site AND o.observation_id = q.resource_id AND o.problem = q.reason "
        "WHERE o.problem_code <> q.reason_code").fetchone()[0] == 0


def _targeted(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    """One small site with a record for every kind of reason the synthetic data never makes
    (and the others once more, in every harmonized model that can raise them)."""
    s = Site(tmp_path)
    s.infusion(0)
    made: dict[str, list[str]] = {}

    def add(code: str, record_id: str) -> None:
        made.setdefault(code, []).append(record_id)

    def drop(record_id: str, *keys: str) -> None:
        resource = next(r for r in s.resources if r["id"] == record_id)
        for key in keys:
            resource.pop(key)

    add("retracted", s.lab(2, 1.0, "10*9/L", ucum="10*9/L", status="entered-in-error"))
    add("retracted", s.condition(2, text="Cytokine release syndrome",
                                 verification="entered-in-error"))
    add("not_performed", s.infusion(1, status="not-done"))
    add("not_final", s.lab(3, 1.0, "10*9/L", ucum="10*9/L", status="preliminary"))
    add("not_final", s.infusion(2, status="unknown"))
    add("not_final", s.lab(3, "2级", system=LOCAL, code="CRES-GRADE", display="CRES分级",
                           status="registered"))
    patientless = s.lab(4, 1.0, "10*9/L", ucum="10*9/L")
    drop(patientless, "subject")
    add("no_patient", patientless)
    undated = s.lab(4, 1.0, "10*9/L", ucum="10*9/L")
    drop(undated, "effectiveDateTime")
    add("no_date", undated)
    undated_condition = s.condition(5, text="Cytokine release syndrome")
    drop(undated_condition, "onsetDateTime")
    add("no_date", undated_condition)
    add("no_value", s.lab(5, "see comment"))
    add("ambiguous_number", s.lab(5, "1,250 /uL"))
    add("censored_no_unit", s.lab(5, "<0.5", code="26881-3"))
    add("no_detection_limit", s.lab(5, "未检出", system=LOCAL, code="CK-IL6",
                                    display="白细胞介素-6(IL-6)"))
    add("no_unit", s.lab(5, 1.2))
    add("unit_not_convertible", s.lab(5, 1.2, "furlongs"))
    add("implausible_magnitude", s.lab(6, 52000, "10*9/L", ucum="10*9/L"))
    add("no_grade", s.lab(6, "unknown", system=LOCAL, code="CRES-GRADE", display="CRES分级"))
    add("ambiguous_code", s.lab(7, 1.0, "10*9/L", system=LOCAL, code="A1",
                                display="neutrophil platelet"))
    add("excluded_code", s.lab(7, 1.0, "IU/mL", code="71776-9"))
    con = s.build()
    con.execute("CREATE TEMP TABLE made (reason_code TEXT, resource_id TEXT)")
    con.executemany("INSERT INTO made VALUES (?, ?)",
                    [(code, rid) for code, ids in made.items() for rid in ids])
    return con


def test_every_code_is_reached_by_a_targeted_record(tmp_path: Path) -> None:
    con = _targeted(tmp_path)
    got = con.execute(
        "SELECT m.reason_code, m.resource_id, q.reason_code, q.reason FROM made AS m "
        "LEFT JOIN qa.quarantine AS q ON q.resource_id = m.resource_id "
        "ORDER BY m.resource_id").fetchall()
    wrong = [row for row in got if row[0] != row[2]]
    assert not wrong, wrong
    assert {row[0] for row in got} == _codes_in_csv()
