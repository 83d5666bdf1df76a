"""The paper's cohort, end to end: land, transform, validate and analyze nine patients.

The published figures (domain.md §1) must come out of the pipeline: MRD-negative
CR 9/9 vs 4/9 (p = .029), CRES 3/9 vs 1/9 (p = .576), CRS equally often, IL-17A
peaks higher after CART1 (unpaired p = .011), more early and late infections after
CART1, and an event after CART2 for every patient.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from cartfhir import api
from cartfhir.analyze.stats import format_p
from tests.testbed import make_config

from .paper_cohort import build


@pytest.fixture(scope="module")
def paper(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("paper")
    build(root / "data" / "paper")
    config = make_config(root, ["paper"])
    result = api.run(config)
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    rows = con.execute("SELECT * FROM analysis.comparison WHERE site = 'all'").df()
    efs = con.execute("SELECT * FROM analysis.efs WHERE definition = 'paper'").df()
    con.close()
    return result, rows.set_index("endpoint"), efs


def test_the_whole_pipeline_runs_and_validates(paper) -> None:
    result, _, _ = paper
    assert result.status == "success", [
        (o.suite, o.expectation, o.column, o.error) for o in result.validation.failed_errors]
    assert result.analysis is not None and result.analysis.report.exists()


def test_mrd_negative_complete_remission(paper) -> None:
    _, rows, _ = paper
    r = rows.loc["mrd_negative_cr"]
    assert (r.cart1_events, r.cart1_n, r.cart2_events, r.cart2_n) == (9, 9, 4, 9)
    assert r.test == "fisher_exact" and format_p(r.p_value) == ".029"
    assert r.paired_test == "mcnemar_exact" and r.paired_p_value == pytest.approx(0.0625)


def test_cres_and_crs(paper) -> None:
    _, rows, _ = paper
    cres = rows.loc["cres_any"]
    assert (cres.cart1_events, cres.cart2_events) == (3, 1)
    assert format_p(cres.p_value) == ".576"
    crs = rows.loc["crs_any"]
    assert crs.cart1_events == crs.cart2_events == 6 and crs.p_value == pytest.approx(1.0)


def test_il17a_peaks_are_higher_after_cart1(paper) -> None:
    _, rows, _ = paper
    r = rows.loc["il17a_peak"]
    assert r.cart1_median > r.cart2_median
    assert r.test == "mann_whitney_exact" and format_p(r.p_value) == ".011"


def test_more_infections_after_cart1(paper) -> None:
    _, rows, _ = paper
    for key in ("early_infection", "late_infection"):
        assert rows.loc[key].cart1_events > rows.loc[key].cart2_events, key
    assert rows.loc["early_infection_n"].cart1_median >= rows.loc["early_infection_n"].cart2_median


def test_every_patient_has_an_event_after_cart2(paper) -> None:
    _, _, efs = paper
    assert len(efs) == 9 and efs["event"].all()
    assert sorted(efs["event_type"].value_counts().to_dict().items()) == [
        ("chemotherapy", 2), ("death", 1), ("hsct", 3), ("relapse", 3)]


def test_the_report_shows_the_published_p_values(paper) -> None:
    result, _, _ = paper
    text = Path(result.analysis.report).read_text(encoding="utf-8")
    assert ".029" in text and ".576" in text and ".011" in text
    assert text.count("data:image/png;base64,") >= 4  # figures are embedded
