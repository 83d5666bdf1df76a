"""load_suites: the sidecars' suites with the config's settings, additions and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from cartfhir.errors import ConfigError
from cartfhir.expectations.suites import load_suites
from tests.transform.conftest import make_config


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
