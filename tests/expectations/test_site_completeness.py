"""qa.site_completeness judges study-relevant records, not everything a server holds.

Quarantine is a share of study records (mapped, or ambiguous between study
concepts); unmapped is a share of records that carry only local codes or text.
A standard code no map knows, and a code excluded on purpose, are decided as not
the study's and count in neither share, so ordinary hospital data cannot fail a
site by its volume, while a site whose own codes nobody mapped still does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from cartfhir.api import validate
from tests.testbed import make_config
from tests.transform.small_site import LOCAL, Site

SNOMED = "http://snomed.info/sct"


def completeness(site: Site, *others: str, **config: Any) -> tuple[dict[str, Any], set[str]]:
    """The site's qa.site_completeness row (made by transform) and the checks that failed.

    ``others``: more configured sites, each with one patient and nothing else.
    """
    for other in others:
        (site.root / "data" / other).mkdir(parents=True)
        (site.root / "data" / other / "all.ndjson").write_text(
            '{"resourceType": "Patient", "id": "p1", "gender": "male"}\n')
    site.build(*others, **config).close()
    cfg = make_config(site.root, [site.name, *others], **config)
    report = validate(cfg)
    failed = {(o.column, o.unexpected_count) for o in report.outcomes
              if o.suite == "qa.site_completeness" and not o.success}
    con = duckdb.connect(str(cfg.output.duckdb), read_only=True)
    try:
        cursor = con.execute("SELECT * FROM qa.site_completeness WHERE site = ?", [site.name])
        names = [d[0] for d in cursor.description]
        row = dict(zip(names, cursor.fetchone(), strict=True))
    finally:
        con.close()
    return row, {column for column, _ in failed}


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site(tmp_path)
    s.infusion(0)
    for offset in range(1, 6):
        s.lab(offset, 1.0, "10*9/L", ucum="10*9/L")
    return s


def test_standard_codes_outside_the_study_do_not_count_as_unmapped(site: Site) -> None:
    for offset in range(40):
        site.lab(offset % 20, 72, "/min", code="8867-4", display="Heart rate", ucum="/min")
        site.condition(offset % 20, coding=[{"system": SNOMED, "code": "444814009",
                                             "display": "Viral sinusitis (disorder)"}])
    row, failed = completeness(site)
    assert row["unmapped"] == 0 and row["out_of_scope"] == 80
    assert row["unmapped_share"] == 0 and not failed


def test_unknown_local_codes_still_count_against_the_site(site: Site) -> None:
    for offset in range(3):
        site.lab(offset, 3.0, "mg/L", system=LOCAL, code="X-9", display="Lab X9")
    row, failed = completeness(site)
    assert row["unmapped"] == 3 and row["study_records"] == 6  # 5 ANC + the infusion
    assert row["unmapped_share"] == pytest.approx(3 / 9)
    assert failed == {"unmapped_share"}


def test_codes_excluded_on_purpose_are_not_quarantined_study_records(site: Site) -> None:
    # A chemistry panel sends high-sensitivity CRP, which is not merged with CRP.
    for offset in range(1, 6):
        site.lab(offset, 1.2, "mg/L", code="30522-7", ucum="mg/L",
                 display="C reactive protein [Mass/volume] in Serum or Plasma by High "
                         "sensitivity method")
    row, failed = completeness(site)
    assert row["quarantined"] == 0 and row["quarantine_share"] == 0 and not failed


def test_quarantined_and_ambiguous_study_records_still_count(site: Site) -> None:
    site.lab(7, 1.2)  # ANC without a unit
    site.lab(8, 1.0, "10*9/L", system=LOCAL, code="A1", display="neutrophil platelet")
    row, failed = completeness(site)
    assert row["study_records"] == 8 and row["quarantined"] == 2
    assert failed == {"quarantine_share"}


def test_the_ceilings_are_the_expectations_config(site: Site) -> None:
    for offset in range(3):
        site.lab(offset, 3.0, "mg/L", system=LOCAL, code="X-9", display="Lab X9")
    row, failed = completeness(site, expectations={"max_unmapped_share": 0.34})
    assert row["unmapped_share"] == pytest.approx(3 / 9) and not failed


def test_a_configured_site_that_produced_nothing_fails(site: Site) -> None:
    row, failed = completeness(site, "site_y")
    assert row["episodes"] == 1 and failed == {"episodes"}
