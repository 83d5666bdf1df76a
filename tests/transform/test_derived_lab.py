"""ANC derived from a WBC and a neutrophil percentage of the same specimen time.

Many labs send the WBC and the differential as percentages, and no absolute neutrophil
count. harmonized.derived_lab computes ANC = WBC x neutrophil % / 100 where no ANC was
measured at that time, harmonized.lab marks each value measured or derived, and the
endpoints and their provenance say when a nadir was derived and from which records.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from .small_site import LOCAL, Site, day, endpoint, one

WBC = {"code": "6690-2", "ucum": "10*9/L"}
NEUTROPHIL_PCT = {"code": "770-8", "ucum": "%",
                  "display": "Neutrophils/100 leukocytes in Blood by Automated count"}


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site(tmp_path)
    s.infusion(0)
    return s


def at(site: Site, observation_id: str, offset: int, time: str) -> None:
    """Move a result to another time of day (the same specimen has one time)."""
    resource = next(r for r in site.resources if r["id"] == observation_id)
    resource["effectiveDateTime"] = day(offset, time)


def derived(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute("SELECT effective_date, value, comparator, derivation "
                       "FROM harmonized.lab WHERE derivation <> 'measured' "
                       "ORDER BY effective_date, value").fetchall()


def provenance(con: duckdb.DuckDBPyConnection, endpoint_name: str) -> dict[str, str]:
    return dict(con.execute("SELECT resource_id, role FROM cohort.endpoint_provenance "
                            "WHERE endpoint = ?", [endpoint_name]).fetchall())


def test_a_site_sending_wbc_and_neutrophil_percent_only_gets_a_derived_anc_nadir(
        site: Site) -> None:
    ids = {}
    for offset, wbc, pct in [(3, 2.0, 40.0), (5, 1.0, 30.0), (7, 3.0, 50.0)]:
        ids[offset] = (site.lab(offset, wbc, "10*9/L", **WBC),
                       site.lab(offset, pct, "%", **NEUTROPHIL_PCT))
    wbc_low, pct_low = ids[5]
    con = site.build()
    assert [(v, c, d) for _, v, c, d in derived(con)] == [
        (pytest.approx(0.8), None, "wbc_x_neutrophil_pct"),  # days 3, 5 and 7
        (pytest.approx(0.3), None, "wbc_x_neutrophil_pct"),
        (pytest.approx(1.5), None, "wbc_x_neutrophil_pct")]
    assert one(con, "SELECT count(*) FROM harmonized.lab WHERE concept = 'anc' "
                    "AND derivation = 'measured'") == 0
    # the percentages are results of their own concept, not quarantined ANCs
    assert one(con, "SELECT count(*) FROM harmonized.lab WHERE concept = 'neutrophil_pct'") == 3
    assert one(con, "SELECT count(*) FROM qa.quarantine") == 0
    assert endpoint(con, "anc_nadir") == pytest.approx(0.3)
    assert endpoint(con, "anc_nadir_grade") == 4 and endpoint(con, "severe_neutropenia") is True
    assert endpoint(con, "anc_nadir_derived") is True
    # the nadir traces back to the two records it was computed from, never a made-up id
    assert provenance(con, "anc_nadir") == {
        wbc_low: "nadir value: the WBC it was derived from",
        pct_low: "nadir value: the neutrophil % it was derived from"}


def test_a_measured_anc_is_used_and_nothing_is_derived_at_its_time(site: Site) -> None:
    measured = site.lab(3, 0.6, "10*9/L", ucum="10*9/L")
    site.lab(3, 1.0, "10*9/L", **WBC)
    site.lab(3, 20.0, "%", **NEUTROPHIL_PCT)  # would derive 0.2, below the measured 0.6
    site.lab(6, 2.0, "10*9/L", **WBC)
    site.lab(6, 45.0, "%", **NEUTROPHIL_PCT)
    con = site.build()
    assert [(str(d), v) for d, v, _, _ in derived(con)] == [("2024-03-07", pytest.approx(0.9))]
    assert endpoint(con, "anc_nadir") == pytest.approx(0.6)
    assert endpoint(con, "anc_nadir_derived") is False
    assert provenance(con, "anc_nadir") == {measured: "nadir value"}


def test_a_differential_at_another_time_of_the_day_is_another_specimen(site: Site) -> None:
    wbc = site.lab(4, 1.0, "10*9/L", **WBC)
    pct = site.lab(4, 20.0, "%", **NEUTROPHIL_PCT)
    site.lab(4, 0.7, "10*9/L", ucum="10*9/L")  # measured, at 08:00
    at(site, wbc, 4, "14:00:00+08:00")
    at(site, pct, 4, "14:00:00+08:00")
    con = site.build()
    assert [v for _, v, _, _ in derived(con)] == [pytest.approx(0.2)]
    assert endpoint(con, "anc_nadir") == pytest.approx(0.2)
    assert endpoint(con, "anc_nadir_derived") is True


def test_resent_copies_give_one_derived_value_and_disagreeing_ones_none(site: Site) -> None:
    for _ in range(2):  # the same CBC sent twice, under new ids
        site.lab(3, 2.0, "10*9/L", **WBC)
        site.lab(3, 40.0, "%", **NEUTROPHIL_PCT)
    site.lab(3, 2.0, "10^9/L", code="6690-2")  # a third copy, spelled otherwise
    site.lab(5, 2.0, "10*9/L", **WBC)
    site.lab(5, 3.0, "10*9/L", **WBC)  # two WBCs at one time: which one is the specimen's?
    site.lab(5, 40.0, "%", **NEUTROPHIL_PCT)
    con = site.build()
    assert [(str(d), v) for d, v, _, _ in derived(con)] == [("2024-03-04", pytest.approx(0.8))]
    assert one(con, "SELECT count(DISTINCT observation_id) FROM harmonized.lab "
                    "WHERE derivation <> 'measured'") == 1


def test_segmented_and_band_forms_add_up_and_a_censored_count_stays_censored(
        site: Site) -> None:
    wbc = site.lab(3, 2.0, "10*9/L", **WBC)
    seg = site.lab(3, 30.0, "%", code="32200-8", ucum="%",
                   display="Segmented neutrophils/100 leukocytes in Blood by Automated count")
    band = site.lab(3, 10.0, "%", system=LOCAL, code="BAND", display="Band neutrophils %")
    site.lab(5, 0.5, "10*9/L", comparator="<", **WBC)
    site.lab(5, 60.0, "%", system=LOCAL, code="SEG", display="Segmented neutrophils %")
    con = site.build()
    assert [(v, c, d) for _, v, c, d in derived(con)] == [
        (pytest.approx(0.8), None, "wbc_x_segmented_band_pct"),  # 2.0 x (30 + 10) / 100
        (pytest.approx(0.3), "<", "wbc_x_segmented_pct")]  # < 0.5 x 60 / 100
    ids = one(con, "SELECT count_observation_id, percent_observation_id, band_observation_id "
                   "FROM harmonized.derived_lab WHERE value > 0.5")
    assert ids == (wbc, seg, band)
    assert endpoint(con, "anc_nadir") == pytest.approx(0.3)  # censored values count in nadirs


def test_parts_adding_up_to_more_than_the_whole_derive_nothing(site: Site) -> None:
    """Segmented 80 % plus band 30 % is no differential (each part alone is plausible): an
    ANC of 1.1 times the WBC is not derived."""
    site.lab(3, 2.0, "10*9/L", **WBC)
    site.lab(3, 80.0, "%", system=LOCAL, code="SEG", display="Segmented neutrophils %")
    site.lab(3, 30.0, "%", system=LOCAL, code="BAND", display="Band neutrophils %")
    con = site.build()
    assert derived(con) == []


LOCAL_DISPLAYS = [
    ("中性粒细胞百分比", "neutrophil_pct"),
    ("中性粒细胞比率", "neutrophil_pct"),
    ("Neutrophils %", "neutrophil_pct"),
    ("NEUT%", "neutrophil_pct"),
    ("Neutrophile Granulozyten relativ", "neutrophil_pct"),
    ("Polynucléaires neutrophiles (pourcentage)", "neutrophil_pct"),
    ("中性分叶核粒细胞", "segmented_neutrophil_pct"),
    ("Segmentkernige Neutrophile %", "segmented_neutrophil_pct"),
    ("中性杆状核粒细胞", "band_neutrophil_pct"),
    ("Stabkernige Neutrophile", "band_neutrophil_pct"),
    ("Neutrophiles non segmentés", "band_neutrophil_pct"),
]


def test_local_percent_codes_are_percent_concepts_not_anc(site: Site) -> None:
    # One differential result a day, each beside its own WBC; the absolute count stays ANC.
    percents = {}
    for offset, (display, concept) in enumerate(LOCAL_DISPLAYS, start=1):
        site.lab(offset, 1.5, "10^9/L", system=LOCAL, code="WBC", display="白细胞计数")
        percents[site.lab(offset, 40.0, "%", system=LOCAL, code=f"N{offset}",
                          display=display)] = concept
    absolute = site.lab(20, 0.9, "10^9/L", system=LOCAL, code="NEUT#", display="中性粒细胞绝对值")
    con = site.build()
    concepts = dict(con.execute("SELECT observation_id, concept FROM harmonized.lab "
                                "WHERE derivation = 'measured'").fetchall())
    assert {i: concepts.get(i) for i in percents} == percents
    assert concepts[absolute] == "anc"
    assert one(con, "SELECT count(*) FROM qa.quarantine") == 0
    # band forms alone are no ANC: every other day derives 1.5 x 40 / 100
    bands = sum(concept == "band_neutrophil_pct" for concept in percents.values())
    assert [v for _, v, _, _ in derived(con)] == [pytest.approx(0.6)] * (len(percents) - bands)
