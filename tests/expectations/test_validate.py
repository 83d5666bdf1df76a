"""The validation stage end to end: suites over a real transformed cohort, config rules, gating."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from cartfhir import api
from cartfhir.api import extract, transform, validate
from cartfhir.errors import ConfigError, ExpectationError
from cartfhir.synth import generate
from tests.testbed import make_config

SITES = ["site_a", "site_b", "site_c"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transformed three-site cohort; tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("valid")
    generate(root / "data", patients=12, seed=21, sites=SITES)
    config = make_config(root, SITES)
    extract(config)
    transform(config)
    return root


@pytest.fixture
def copy(cohort: Path, tmp_path: Path) -> Path:
    shutil.copytree(cohort, tmp_path / "c")
    return tmp_path / "c"


def results(config) -> list[tuple]:
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    try:
        return con.execute("SELECT suite, expectation, column_name, severity, success, "
                           "unexpected_count, error FROM qa.validation_result").fetchall()
    finally:
        con.close()


def test_clean_synthetic_data_passes_every_expectation(copy: Path) -> None:
    config = make_config(copy, SITES)
    report = validate(config)
    failed = [(o.suite, o.expectation, o.column, o.error, o.unexpected_examples)
              for o in report.outcomes if not o.success]
    assert report.valid and not failed, failed
    stored = results(config)
    assert len(stored) == len(report.outcomes) > 60
    assert {r[0] for r in stored} >= {"raw.resources", "harmonized.lab", "cohort.episode",
                                      "cohort.episode_endpoints", "qa.site_completeness"}
    assert report.docs_index is not None and report.docs_index.exists()


def _tamper(config, sql: str) -> None:
    con = duckdb.connect(str(config.output.duckdb))
    con.execute(sql)
    con.close()


def test_broken_cohort_rows_fail_the_expectations_that_guard_them(copy: Path) -> None:
    config = make_config(copy, SITES)
    _tamper(config, "UPDATE cohort.episode SET round = 7 WHERE round = 2 AND site = 'site_b' "
                    "AND patient_key = (SELECT min(patient_key) FROM cohort.episode "
                    "WHERE round = 2 AND site = 'site_b')")
    _tamper(config, "UPDATE cohort.episode_endpoints SET crs_max_grade = 6 WHERE rowid = 0")
    _tamper(config, "UPDATE harmonized.lab SET canonical_unit = 'g/dL' WHERE rowid = 3")
    report = validate(config)
    failed = {(o.suite, o.expectation, o.column): o.unexpected_count
              for o in report.outcomes if not o.success}
    assert failed[("cohort.episode", "expect_column_pair_values_to_be_equal",
                   "round,expected_round")] == 1
    # A CRS grade of 6 is off the grade scale of ref.concept (crs_grade).
    assert failed[("cohort.episode_endpoints", "expect_column_values_to_be_in_set",
                   "values_plausible")] == 1
    assert failed[("harmonized.lab", "expect_column_pair_values_to_be_equal",
                   "canonical_unit,expected_unit")] == 1
    assert not report.valid


def test_a_site_without_episodes_and_too_much_quarantine_fail(copy: Path) -> None:
    (copy / "data" / "site_z").mkdir()
    (copy / "data" / "site_z" / "all.ndjson").write_text(
        '{"resourceType": "Patient", "id": "z1", "gender": "female"}\n')
    config = make_config(copy, [*SITES, "site_z"],
                         expectations={"max_quarantine_share": 0.0})
    extract(config)
    transform(config)  # the configured sites reach qa.site_completeness through ref.site
    report = validate(config)
    bad = [o for o in report.outcomes if o.suite == "qa.site_completeness" and not o.success]
    assert {o.column for o in bad} == {"episodes", "quarantine_share"}
    assert any("site_z" in str(o.unexpected_examples) or o.unexpected_count for o in bad)


def test_config_changes_severity_and_adds_site_rules(copy: Path) -> None:
    config = make_config(copy, SITES, expectations={
        "max_quarantine_share": 0.0,
        "override": [{"suite": "qa.site_completeness",
                      "type": "expect_column_values_to_be_between",
                      "column": "quarantine_share", "severity": "warn"}],
        "add": [{"suite": "cohort.episode", "type": "expect_column_values_to_be_between",
                 "kwargs": {"column": "age_years", "min_value": 100}, "site": "site_a",
                 "severity": "warn"}]})
    report = validate(config)
    assert report.valid  # only warnings failed
    warned = {(o.suite, o.column) for o in report.failed_warnings}
    assert ("qa.site_completeness", "quarantine_share") in warned
    assert ("cohort.episode", "age_years") in warned
    added = [o for o in report.outcomes if o.column == "age_years"]
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    site_a = con.execute("SELECT count(*) FROM cohort.episode WHERE site = 'site_a'").fetchone()
    con.close()
    assert added[0].unexpected_count == site_a[0]  # only site_a's rows were checked


def test_config_mistakes_are_reported_before_anything_runs(copy: Path) -> None:
    with pytest.raises(ConfigError, match="unknown suite 'cohort.nothing'"):
        validate(make_config(copy, SITES, expectations={"add": [
            {"suite": "cohort.nothing", "type": "expect_column_values_to_not_be_null",
             "kwargs": {"column": "x"}}]}))
    with pytest.raises(ConfigError, match="has no expect_column_values_to_be_unique"):
        validate(make_config(copy, SITES, expectations={"override": [
            {"suite": "cohort.episode", "type": "expect_column_values_to_be_unique",
             "severity": "warn"}]}))


def test_validating_before_transform_says_what_to_do(tmp_path: Path) -> None:
    config = make_config(tmp_path, ["site_a"])
    config.output.duckdb.parent.mkdir(parents=True)
    duckdb.connect(str(config.output.duckdb)).close()
    with pytest.raises(ExpectationError, match="run 'cartfhir extract' and 'cartfhir transform'"):
        validate(config)


def test_a_database_missing_a_table_a_suite_reads_is_refused_up_front(copy: Path) -> None:
    # e.g. built by a cartfhir from before the suites joined ref.record_status
    config = make_config(copy, SITES)
    con = duckdb.connect(str(config.output.duckdb))
    con.execute("DROP TABLE ref.record_status")
    runs = con.execute("SELECT count(*) FROM meta.runs").fetchone()[0]
    con.close()
    with pytest.raises(ExpectationError) as caught:
        validate(config)
    message = str(caught.value)
    assert "ref.record_status" in message and "flat.observation" in message
    assert "run 'cartfhir transform'" in message
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    assert con.execute("SELECT count(*) FROM meta.runs").fetchone()[0] == runs  # no run
    con.close()


def test_run_stops_on_invalid_data_unless_allowed(copy: Path) -> None:
    config = make_config(copy, SITES, expectations={"max_quarantine_share": 0.0})
    result = api.run(config)
    assert result.status == "invalid" and not result.validation.valid
    allowed = api.run(config, allow_invalid=True)
    assert allowed.status == "success" and allowed.allow_invalid
