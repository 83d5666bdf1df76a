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
