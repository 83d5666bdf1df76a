"""load_suites: the sidecars' suites with the config's settings, additions and overrides."""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path

import pytest

from cartfhir.config import Expectations
from cartfhir.errors import ConfigError
from cartfhir.expectations.suites import expectation_suites, load_suites, package_suites
from tests.testbed import make_config


def rules(suites: list, name: str) -> list[dict]:
    (suite,) = [s for s in suites if s.name == name]
    return suite.expectations


def test_a_setting_in_kwargs_is_the_expectations_config_value(tmp_path: Path) -> None:
    config = make_config(tmp_path, ["site_a"], expectations={
        "max_unmapped_share": 0.3,
        "add": [{"suite": "cohort.episode", "type": "expect_column_values_to_be_between",
                 "kwargs": {"column": "dose", "max_value": {"setting": "max_rejected_share"}}}]})
    suites = load_suites(config)

    added = rules(suites, "cohort.episode")[-1]
    assert added["kwargs"] == {"column": "dose", "max_value": 0.01}  # the default
    ceilings = {e["kwargs"]["column"]: e["kwargs"].get("max_value")
                for e in rules(suites, "qa.site_completeness")}
    assert ceilings["unmapped_share"] == 0.3
    assert ceilings["quarantine_share"] == 0.05 and ceilings["rejected_share"] == 0.01


def test_an_unknown_setting_is_a_config_error(tmp_path: Path) -> None:
    config = make_config(tmp_path, ["site_a"], expectations={
        "add": [{"suite": "cohort.episode", "type": "expect_column_values_to_be_between",
                 "kwargs": {"column": "dose", "max_value": {"setting": "max_dose"}}}]})
    with pytest.raises(ConfigError, match=r"cohort.episode.*'max_dose'.*max_quarantine_share"):
        load_suites(config)


def terminology(name: str) -> list[dict[str, str]]:
    text = resources.files("cartfhir.transform").joinpath("terminology", name).read_text(
        encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def test_no_suite_restates_a_terminology_file() -> None:
    # Rules that need reference data join ref.* in the suite's query instead.
    lists = [{r["target"] for r in terminology("targets.csv")},
             {r["event"] for r in terminology("post_events.csv")},
             {r["status"] for r in terminology("record_statuses.csv")}]
    ranges = {(float(r["plausible_min"]), float(r["plausible_max"]))
              for r in terminology("concepts.csv") if r["plausible_min"] and r["plausible_max"]}
    copied = []
    for suite in package_suites():
        for rule in suite["expectations"]:
            kwargs = rule["kwargs"]
            value_set = set(map(str, kwargs.get("value_set", [])))
            if any(len(value_set & listed) > 1 for listed in lists):
                copied.append((suite["name"], kwargs["column"], kwargs["value_set"]))
            if "min_value" in kwargs and "max_value" in kwargs and (
                    (kwargs["min_value"], kwargs["max_value"]) in ranges):
                copied.append((suite["name"], kwargs["column"], kwargs["max_value"]))
    assert copied == []


def test_suites_need_no_config_file(tmp_path: Path) -> None:
    # The pool checks a pooled database with the default settings and some suites only.
    (suite,) = expectation_suites(Expectations(), names=["qa.site_completeness"])
    ceilings = {e["kwargs"]["column"]: e["kwargs"].get("max_value") for e in suite.expectations}
    assert ceilings["quarantine_share"] == Expectations().max_quarantine_share


@pytest.mark.parametrize("setting", [["x"], 3, "nope", {"a": 1}, None])
def test_a_setting_that_is_not_a_known_name_is_a_config_error_naming_the_rule(
        tmp_path: Path, setting: object, capsys: pytest.CaptureFixture[str]) -> None:
    from cartfhir.cli import run_cli
    from tests.testbed import write_config

    config = write_config(tmp_path, ["site_a"], expectations={"add": [
        {"suite": "cohort.episode", "type": "expect_column_values_to_not_be_null",
         "kwargs": {"column": "dose"}},
        {"suite": "cohort.patient", "type": "expect_column_values_to_be_between",
         "kwargs": {"column": "age_years", "max_value": {"setting": setting}}}]})
    code = run_cli(["validate", "--config", str(config)])  # the CLI's exit codes
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert "internal error" not in stderr
    assert "expectations.add[1]" in stderr and "max_quarantine_share" in stderr


def test_an_override_matching_no_rule_lists_the_suites_rules(tmp_path: Path) -> None:
    # Rules were renamed in issue 12 (e.g. flat.observation's status -> known_status):
    # the error shows the suite's rules so the user finds the new name.
    config = make_config(tmp_path, ["site_a"], expectations={"override": [
        {"suite": "flat.observation", "type": "expect_column_values_to_be_in_set",
         "column": "status", "severity": "warn"}]})
    with pytest.raises(ConfigError) as error:
        load_suites(config)
    message = str(error.value)
    assert "expectations.override[0]" in message
    (suite,) = [s for s in package_suites() if s["name"] == "flat.observation"]
    for rule in suite["expectations"]:
        column = rule["kwargs"].get("column")
        assert rule["type"] in message and (column is None or column in message)
    assert "known_status" in message


def test_suites_come_in_the_graphs_stage_order_then_by_name() -> None:
    from cartfhir.graph import STAGES, load_graph

    names = [s["name"] for s in package_suites()]
    graph = load_graph()
    assert names == sorted(names, key=lambda t: (STAGES.index(graph.node(t).stage), t))
    assert names[0] == "raw.resources" and names[-1] == "qa.site_completeness"
