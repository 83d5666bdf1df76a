"""load_reference: the terminology files and the config become the rows of ``ref.*``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cartfhir.config import Config
from cartfhir.errors import ConfigError
from cartfhir.transform import reference


def with_record_statuses(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    package_text = reference._package_text
    monkeypatch.setattr(reference, "_package_text", lambda name: (
        (text, f"package:{name}") if name.endswith("record_statuses.csv")
        else package_text(name)))


def test_the_configured_sites_are_ref_site(site_config: Callable[..., Config]) -> None:
    loaded = reference.load_reference(site_config(["site_a", "site_b"]))
    assert loaded.tables["site"] == [{"site": "site_a"}, {"site": "site_b"}]


@pytest.mark.parametrize(("last_line", "message"), [
    ("Observation,status,cancelled,voided", r"record_statuses.csv line 3.*'voided'.*usable, void"),
    ("Observation,status,final,void", r"line 3: Observation.status.final is listed twice"),
], ids=["unknown use", "listed twice"])
def test_a_bad_record_status_is_a_config_error_naming_its_line(
        site_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch,
        last_line: str, message: str) -> None:
    with_record_statuses(monkeypatch, "resource_type,element,status,use\n"
                                      f"Observation,status,final,usable\n{last_line}\n")
    with pytest.raises(ConfigError, match=message):
        reference.load_reference(site_config(["site_x"]))


def with_qualitative_results(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    package_text = reference._package_text
    monkeypatch.setattr(reference, "_package_text", lambda name: (
        (text, f"package:{name}") if name.endswith("qualitative_results.csv")
        else package_text(name)))


@pytest.mark.parametrize(("row", "message"), [
    ("il6,negative,1.5,", r"line 3: give value and comparator together"),
    ("il6,negative,,<", r"line 3: give value and comparator together"),
    ("il6,negative,1.5,=", r"line 3: comparator '=' must be one of <, <=, >=, >"),
    ("il6,positive,,", r"line 3: result 'positive' has no words in qualitative_words.csv"),
    ("crs,negative,,", r"line 3: 'crs' is not a measured concept"),
    ("mrd_flow,negative,,", r"line 3: mrd_flow negative is listed twice"),
    ("il6,negative,low,<", r"line 3: column value must be a number"),
], ids=["value alone", "comparator alone", "unknown comparator", "unknown result",
        "not measured", "listed twice", "not a number"])
def test_a_bad_qualitative_result_is_a_config_error_naming_its_line(
        site_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch,
        row: str, message: str) -> None:
    with_qualitative_results(monkeypatch, "concept,result,value,comparator\n"
                                          f"mrd_flow,negative,0.01,<\n{row}\n")
    with pytest.raises(ConfigError, match=message):
        reference.load_reference(site_config(["site_x"]))


def test_a_qualitative_result_is_a_limit_or_none(site_config: Callable[..., Config],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with_qualitative_results(monkeypatch, "concept,result,value,comparator\n"
                                          "mrd_flow,negative,0.01,<\nil6,negative,,\n")
    rows = reference.load_reference(site_config(["site_x"])).tables["qualitative_result"]
    assert rows == [{"concept": "mrd_flow", "result": "negative", "value": 0.01,
                     "comparator": "<"},
                    {"concept": "il6", "result": "negative", "value": None, "comparator": None}]
