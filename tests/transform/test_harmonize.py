"""Harmonization on hand-made resources: units, codes, grades, episodes, config overrides.

Each test writes a small NDJSON site (one patient infused on 2024-03-01), lands it,
transforms, and reads the tables, so every rule is checked through the real SQL.
"""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cartfhir.errors import ConfigError
from cartfhir.graph import build_node, create_macros, load_graph

from .small_site import LOCAL, LOINC, T0, UCUM, Site, day, endpoint, one


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site(tmp_path)
    s.infusion(0)
    return s


# ---- units ----------------------------------------------------------------------------------
def test_counts_convert_from_per_microlitre_and_thousands(site: Site) -> None:
    a = site.lab(3, 500, "/uL", system=LOCAL, code="NEUT", display="中性粒细胞绝对值")
    b = site.lab(4, 0.8, "K/uL")
    c = site.lab(5, 0.3, "10^9/L")
    con = site.build()
    values = dict(con.execute("SELECT observation_id, value FROM harmonized.lab").fetchall())
    assert values == {a: pytest.approx(0.5), b: pytest.approx(0.8), c: pytest.approx(0.3)}
    assert endpoint(con, "anc_nadir") == pytest.approx(0.3)
    assert endpoint(con, "anc_nadir_grade") == 4 and endpoint(con, "severe_neutropenia")


def test_hemoglobin_temperature_and_cytokines_reach_canonical_units(site: Site) -> None:
    site.lab(2, 7.5, "g/dL", code="718-7", ucum="g/dL")
    site.lab(2, 4.5, "mmol/L", code="59260-0", ucum="mmol/L")
    site.lab(3, 102.2, "degF", code="8310-5", ucum="[degF]")
    site.lab(3, 0.25, "ng/mL", code="26881-3", ucum="ng/mL")
    site.lab(4, 900, "ng/L", system=LOCAL, code="CK", display="白细胞介素-6(IL-6)")
    con = site.build()
    got = dict(con.execute("SELECT concept, max(value) FROM harmonized.lab GROUP BY ALL")
               .fetchall())
    assert got["hemoglobin"] == pytest.approx(75.0)  # 7.5 g/dL; 4.5 mmol/L is 72.5 g/L
    assert got["temperature"] == pytest.approx(39.0)
    assert got["il6"] == pytest.approx(900.0)  # 0.25 ng/mL = 250 pg/mL; 900 ng/L = 900 pg/mL
    assert endpoint(con, "hemoglobin_nadir") == pytest.approx(4.5 / 0.06206, rel=1e-3)
    assert endpoint(con, "severe_anemia") is True


# Real-world unit spellings per concept (also checked against UCUM in test_units_ucum.py).
SPELLINGS = list(csv.DictReader(
    (Path(__file__).parent / "unit_spellings.csv").read_text(encoding="utf-8").splitlines()))


def _loinc(concept: str) -> str:
    """The first LOINC code the default map gives a concept."""
    text = resources.files("cartfhir.transform").joinpath("terminology/concept_map.csv")
    return next(r["code"] for r in csv.DictReader(text.read_text("utf-8").splitlines())
                if r["concept"] == concept and r["system"] == LOINC)


def test_every_real_world_spelling_converts_as_its_ucum_unit(site: Site) -> None:
    """Each spelling, sent as Quantity.unit text, gives the value its UCUM unit gives."""
    twins = {}
    for row in SPELLINGS:
        code, value = _loinc(row["concept"]), float(row["value"])
        sent = site.lab(3, value, row["spelling"], code=code)
        twins[sent] = (site.lab(4, value, row["ucum"], code=code, ucum=row["ucum"]), row)
    con = site.build()
    assert one(con, "SELECT count(*) FROM qa.quarantine") == 0
    values = dict(con.execute("SELECT observation_id, value FROM harmonized.observation_value")
                  .fetchall())
    for sent, (ucum, row) in twins.items():
        assert values[ucum] is not None, row
        assert values[sent] == pytest.approx(values[ucum]), row


def test_a_chinese_lis_writing_counts_in_x10_superscript_9_per_litre(site: Site) -> None:
    """'×10⁹/L' is how Chinese LIS (and domain.md) write counts: every count converts,
    so the nadirs, grades and severe-cytopenia flags come out."""
    for offset, value in ((3, 0.3), (8, 1.6)):
        site.lab(offset, value, "×10⁹/L", system=LOCAL, code="NEUT#", display="中性粒细胞绝对值")
    site.lab(3, 0.9, "×10⁹/L", system=LOCAL, code="WBC", display="白细胞计数")
    site.lab(4, 18, "×10⁹/L", system=LOCAL, code="PLT", display="血小板计数")
    site.lab(5, 72, "g/L", system=LOCAL, code="HGB", display="血红蛋白")
    site.lab(2, 39.2, "℃", system=LOCAL, code="T", display="体温")
    con = site.build()
    assert one(con, "SELECT count(*) FROM qa.quarantine") == 0
    assert endpoint(con, "anc_nadir") == pytest.approx(0.3)
    assert endpoint(con, "anc_nadir_grade") == 4 and endpoint(con, "severe_neutropenia") is True
    assert endpoint(con, "platelet_nadir") == pytest.approx(18.0)
    assert endpoint(con, "severe_thrombocytopenia") is True
    assert endpoint(con, "hemoglobin_nadir") == pytest.approx(72.0)
    assert endpoint(con, "severe_anemia") is True


def test_a_european_site_with_giga_per_litre_and_hemoglobin_in_mmol(site: Site) -> None:
    """G/L (France), Gpt/l and /nl (Germany) are 10*9/L; Hb in mmol/L is the monomer."""
    site.lab(3, 0.4, "G/L")
    site.lab(6, 2.1, "/nl")
    site.lab(4, 30, "Gpt/l", code="777-3")
    site.lab(5, 4.5, "mmol/l", code="718-7")
    con = site.build()
    assert one(con, "SELECT count(*) FROM qa.quarantine") == 0
    assert endpoint(con, "anc_nadir") == pytest.approx(0.4)
    assert endpoint(con, "anc_nadir_grade") == 4 and endpoint(con, "severe_neutropenia") is True
    assert endpoint(con, "platelet_nadir") == pytest.approx(30.0)
    assert endpoint(con, "platelet_nadir_grade") == 3
    assert endpoint(con, "hemoglobin_nadir") == pytest.approx(4.5 / 0.06206, rel=1e-3)
    assert endpoint(con, "severe_anemia") is True


def test_a_site_spelling_converts_through_its_own_unit_map(tmp_path: Path, site: Site) -> None:
    """'109/L' (10⁹/L with the superscript lost) is no spelling to guess for every site;
    the quarantine names it and the config key that maps it, and the site's map fixes it."""
    anc = site.lab(3, 0.3, "109/L", system=LOCAL, code="NEUT", display="中性粒细胞绝对值")
    hb = site.lab(5, 7.4, "g%", code="718-7", reference=(11.0, 15.0))
    con = site.build()
    reasons = dict(con.execute("SELECT resource_id, reason FROM qa.quarantine").fetchall())
    assert "unit '109/L' is not convertible to 10*9/L for anc" in reasons[anc]
    assert "sites[].unit_maps" in reasons[anc] and "'g%'" in reasons[hb]
    assert endpoint(con, "anc_nadir") is None
    con.close()

    (tmp_path / "units.csv").write_text("concept,unit,ucum,factor\n"
                                        "anc,109/L,10*9/L,\nhemoglobin,g%,,10\n")
    con = site.build(site_x={"unit_maps": ["units.csv"]})
    assert one(con, "SELECT count(*) FROM qa.quarantine") == 0
    assert endpoint(con, "anc_nadir") == pytest.approx(0.3)
    assert endpoint(con, "hemoglobin_nadir") == pytest.approx(74.0)
    assert one(con, "SELECT reference_low, reference_high FROM harmonized.lab "
                    "WHERE observation_id = ?", hb) == (pytest.approx(110.0), pytest.approx(150.0))
    assert one(con, "SELECT origin FROM meta.reference_version WHERE name = 'site_x unit map'"
               ).endswith("units.csv")


def test_a_site_unit_map_is_the_sites_own(tmp_path: Path) -> None:
    """Another site sending the same spelling for the same concept is not converted."""
    sites = {name: Site(tmp_path, name) for name in ("site_x", "site_y")}
    for one_site in sites.values():
        one_site.infusion(0)
        one_site.lab(3, 0.3, "109/L")
    sites["site_y"].write()
    (tmp_path / "units.csv").write_text("concept,unit,ucum\nanc,109/L,10*9/L\n")
    con = sites["site_x"].build("site_y", site_x={"unit_maps": ["units.csv"]})
    assert con.execute("SELECT site, reason_code FROM qa.quarantine").fetchall() == [
        ("site_y", "unit_not_convertible")]


def test_unusable_values_are_quarantined_with_the_reason(site: Site) -> None:
    no_unit = site.lab(2, 1.2)
    odd_unit = site.lab(3, 1.2, "furlongs")
    huge = site.lab(4, 52000, "10*9/L", ucum="10*9/L")
    retracted = site.lab(5, 0.01, "10*9/L", ucum="10*9/L", status="entered-in-error")
    ok = site.lab(6, 2.0, "10*9/L", ucum="10*9/L")
    con = site.build()
    reasons = dict(con.execute("SELECT resource_id, reason FROM qa.quarantine").fetchall())
    assert reasons[no_unit].startswith("no unit")
    assert "'furlongs' is not convertible to 10*9/L" in reasons[odd_unit]
    assert reasons[huge].startswith("implausible") and "per-uL" in reasons[huge]
    assert reasons[retracted].startswith("status entered-in-error")
    assert ok not in reasons
    assert endpoint(con, "anc_nadir") == pytest.approx(2.0)  # only the usable value counts
    codes = dict(con.execute("SELECT resource_id, reason_code FROM qa.quarantine").fetchall())
    assert codes == {no_unit: "no_unit", odd_unit: "unit_not_convertible",
                     huge: "implausible_magnitude", retracted: "retracted"}


def test_censored_results(site: Site) -> None:
    site.lab(10, 3.0, "%", code="11150-0", ucum="%")
    site.lab(10, "<0.01%", system=LOCAL, code="M1", display="骨髓微小残留病(MRD)流式检测")
    site.lab(10, 2.0, "10*9/L", ucum="10*9/L")
    site.lab(9, 150, "10*9/L", code="777-3", ucum="10*9/L")
    site.lab(3, 5.0, "pg/mL", code="33939-0", ucum="pg/mL", comparator="<")
    site.lab(4, 8.0, "pg/mL", code="33939-0", ucum="pg/mL")
    con = site.build()
    mrd = one(con, "SELECT value, comparator FROM harmonized.lab WHERE concept = 'mrd_flow'")
    assert mrd == (pytest.approx(0.01), "<")
    assert endpoint(con, "best_response") == "CR"  # ANC same day, platelets a day before
    assert endpoint(con, "mrd_negative_cr") is True
    assert endpoint(con, "il2_peak") == pytest.approx(8.0)  # '<5' is not a peak


# ---- codes ----------------------------------------------------------------------------------
def test_unmapped_codes_are_inventoried_and_a_site_map_fixes_them(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    site.lab(3, 0.4, "10*9/L", system=LOCAL, code="ZZ-17", display="Lab 17")
    site.lab(4, 0.6, "10*9/L", system=LOCAL, code="ZZ-17", display="Lab 17")
    con = site.build()
    assert one(con, "SELECT count FROM qa.unmapped_codes WHERE code = 'ZZ-17'") == 2
    assert endpoint(con, "anc_nadir") is None
    con.close()

    (tmp_path / "map.csv").write_text(
        "resource_type,system,code,concept\nObservation," + LOCAL + ",ZZ-17,anc\n")
    con = site.build(site_x={"concept_maps": ["map.csv"]})
    assert one(con, "SELECT count(*) FROM qa.unmapped_codes") == 0
    assert endpoint(con, "anc_nadir") == pytest.approx(0.4)


def test_a_fhir_conceptmap_works_too_and_wins_over_a_default(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    site.lab(3, 0.4, "10*9/L", system=LOCAL, code="PLTX", display="platelet count")
    (tmp_path / "map.json").write_text(json.dumps({
        "resourceType": "ConceptMap", "status": "active",
        "group": [{"source": LOCAL, "target": "cartfhir:Observation",
                   "element": [{"code": "PLTX", "target": [
                       {"code": "anc", "equivalence": "equivalent"}]}]}]}))
    con = site.build(site_x={"concept_maps": ["map.json"]})
    # The text alone says platelets; the site's own map says ANC, and the site wins.
    assert one(con, "SELECT concept FROM harmonized.lab") == "anc"
    assert one(con, "SELECT matched_by FROM harmonized.code_concept WHERE concept = 'anc'") \
        == f"code {LOCAL}|PLTX"


def test_a_map_naming_an_unknown_concept_is_a_config_error(tmp_path: Path) -> None:
    site = Site(tmp_path)
    (tmp_path / "map.csv").write_text(
        "resource_type,system,code,concept\nObservation,x,y,neutrophilz\n")
    with pytest.raises(ConfigError, match="unknown concept 'neutrophilz'"):
        site.build(site_x={"concept_maps": ["map.csv"]})


def test_ambiguous_and_excluded_codes_are_quarantined(site: Site) -> None:
    amb = site.lab(3, 1.0, "10*9/L", system=LOCAL, code="A1", display="neutrophil platelet")
    igra = site.lab(3, 1.0, "IU/mL", code="71776-9")
    con = site.build()
    reasons = dict(con.execute("SELECT resource_id, reason FROM qa.quarantine").fetchall())
    assert reasons[amb].startswith("ambiguous mapping: anc, platelets")
    assert reasons[igra].startswith("excluded by code")
    codes = dict(con.execute("SELECT resource_id, reason_code FROM qa.quarantine").fetchall())
    assert codes[amb] == "ambiguous_code" and codes[igra] == "excluded_code"


# ---- grades and events ----------------------------------------------------------------------
def test_grade_sources_and_the_maximum_wins(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    site.infusion(200)
    icd = [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "D89.832"}]
    site.condition(2, coding=icd)
    site.condition(4, text="Cytokine release syndrome", stage="ASTCT grade 3")
    site.condition(3, text="ICANS", severity="6736007")  # moderate: grade 2 as a last resort
    site.lab(5, "4级", system=LOCAL, code="CRES-GRADE", display="CRES分级")
    site.condition(6, coding=[{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "D89.835"}],
                   verification="entered-in-error")
    site.condition(203, coding=icd)
    con = site.build()
    sources = dict(con.execute("SELECT grade_source, max(grade) FROM harmonized.condition "
                               "WHERE problem IS NULL GROUP BY ALL").fetchall())
    assert sources == {"code": 2, "stage": 3, "severity": 2}
    assert endpoint(con, "crs_max_grade") == 3 and endpoint(con, "crs_onset_day") == 2
    assert endpoint(con, "cres_max_grade") == 4 and endpoint(con, "cres_onset_day") == 3
    assert endpoint(con, "crs_max_grade", 2) == 2  # round 2 keeps its own events


def test_infections_by_window_and_febrile_neutropenia_from_two_codes(site: Site) -> None:
    cm = "http://hl7.org/fhir/sid/icd-10-cm"
    site.condition(-3, coding=[{"system": cm, "code": "J18.9"}])
    site.condition(5, text="脓毒症")
    site.condition(40, coding=[{"system": "http://snomed.info/sct", "code": "5758002"}])
    site.condition(8, coding=[{"system": cm, "code": "D70.1"}, {"system": cm, "code": "R50.81"}])
    con = site.build()
    assert endpoint(con, "lymphodepletion_infection") is True
    assert endpoint(con, "early_infection_n") == 1 and endpoint(con, "late_infection_n") == 1
    assert endpoint(con, "febrile_neutropenia") is True


def test_episodes_merge_same_day_records_and_ignore_retracted_ones(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0, product="Anti-CD19/CD22 bispecific CAR-T cells")
    site.infusion(0, text="CAR-T细胞回输(护理记录)")
    site.infusion(1, status="entered-in-error")
    site.infusion(150)
    site.procedure("Allogeneic hematopoietic stem cell transplant", 220)
    site.condition(120, text="急性B淋巴细胞白血病复发", body_sites=["骨髓", "睾丸"])
    site.lab(5, 2.0, "10*9/L", ucum="10*9/L")
    site.lab(149, 0.1, "10*9/L", ucum="10*9/L")  # day 149 of round 1: outside every window
    con = site.build()
    rounds = con.execute("SELECT round, infusion_date, target, limit_day, relapse_site_before, "
                         "len(procedure_ids) FROM cohort.episode ORDER BY round").fetchall()
    assert [r[0] for r in rounds] == [1, 2]
    assert rounds[0][2] == "CD19/CD22" and rounds[0][5] == 2
    assert rounds[0][3] == 149  # the day before the next infusion
    assert rounds[1][3] == 69  # the day before the HSCT on day 220
    assert rounds[1][4] == "marrow+testis"
    assert endpoint(con, "anc_nadir") == pytest.approx(2.0)
    assert one(con, "SELECT post_event_type FROM cohort.episode_endpoints WHERE round = 2") \
        == "hsct"


# ---- configuration --------------------------------------------------------------------------
def test_windows_and_thresholds_come_from_the_config(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    site.lab(10, 40.0, "pg/mL", code="26881-3", ucum="pg/mL")
    site.lab(20, 90.0, "pg/mL", code="26881-3", ucum="pg/mL")
    site.lab(7, 0.9, "10*9/L", ucum="10*9/L")
    con = site.build()
    assert endpoint(con, "il6_peak") == pytest.approx(40.0)
    assert endpoint(con, "severe_neutropenia") is True
    con.close()
    con = site.build(transform={"windows": {"cytokine": [0, 28]},
                                "thresholds": {"severe_min_grade": 4}})
    assert endpoint(con, "il6_peak") == pytest.approx(90.0)
    assert endpoint(con, "severe_neutropenia") is False


def test_an_unknown_window_or_a_missing_key_is_a_config_error(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    with pytest.raises(ConfigError, match="unknown window.*cytokines"):
        site.build(transform={"windows": {"cytokines": [0, 28]}})
    with pytest.raises(ConfigError, match="pseudonym_key is not set"):
        site.build(site_x={"pseudonym_key": None})


def test_other_hospitals_spellings_and_a_qualitative_negative_mrd(site: Site) -> None:
    site.lab(3, 0.7, "x10E9/L")
    site.lab(4, 900, "cells/uL", code="753-4")
    site.lab(5, 12.1, "gm/dL", code="718-7")
    site.lab(12, 1.0, "%", code="11150-0", ucum="%")
    site.lab(12, 1.5, "thou/uL")
    site.lab(12, 160, "thou/uL", code="777-3")
    site.lab(12, "Negative", system=LOCAL, code="MRD1", display="Minimal residual disease by FCM")
    con = site.build()
    assert one(con, "SELECT count(*) FROM qa.quarantine") == 0
    assert endpoint(con, "anc_nadir") == pytest.approx(0.7)
    assert endpoint(con, "hemoglobin_nadir") == pytest.approx(121.0)
    assert endpoint(con, "mrd_negative_cr") is True and endpoint(con, "best_response") == "CR"


def test_a_cytokine_panel_reported_as_components(site: Site) -> None:
    def component(code: str | None, text: str, value: float) -> dict:
        comp: dict[str, Any] = {"code": {"text": text}, "valueQuantity": {
            "value": value, "unit": "pg/mL", "system": UCUM, "code": "pg/mL"}}
        if code:
            comp["code"]["coding"] = [{"system": LOINC, "code": code}]
        return comp

    site.resources.append({
        "resourceType": "Observation", "id": "panel1", "status": "final",
        "code": {"coding": [{"system": LOCAL, "code": "CBA-TH17"}], "text": "Th1/Th2/Th17 panel"},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": day(4),
        "component": [component("26881-3", "IL-6", 310.0), component(None, "IL-17A", 12.5),
                      component("3074-2", "TNF-alpha", 4.0)]})
    con = site.build()
    assert endpoint(con, "il6_peak") == pytest.approx(310.0)
    assert endpoint(con, "il17a_peak") == pytest.approx(12.5)
    assert endpoint(con, "tnfa_peak") == pytest.approx(4.0)
    assert one(con, "SELECT count(*) FROM qa.unmapped_codes") == 0  # the panel code itself
    assert one(con, "SELECT resource_id FROM cohort.endpoint_provenance "
                    "WHERE endpoint = 'il6_peak'") == "panel1#0"


def test_an_infusion_recorded_as_a_medication_administration(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.resources.append({
        "resourceType": "MedicationAdministration", "id": "ma1", "status": "completed",
        "medicationCodeableConcept": {"text": "tisagenlecleucel (Kymriah) CD19 CAR-T"},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": day(0),
        "dosage": {"dose": {"value": 3.1, "unit": "10^6 cells/kg"}}})
    site.resources.append({
        "resourceType": "MedicationAdministration", "id": "ma2", "status": "completed",
        "medicationCodeableConcept": {"text": "Fludarabine 30 mg/m2"},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": day(-4)})
    site.lab(3, 0.4, "10*9/L", ucum="10*9/L")
    con = site.build()
    episode = one(con, "SELECT infusion_date, dose, target FROM cohort.episode")
    assert str(episode[0]) == T0 and episode[1] == pytest.approx(3.1) and episode[2] == "CD19"
    assert one(con, "SELECT concept FROM harmonized.procedure WHERE procedure_id = 'ma2'") \
        == "lymphodepletion"
    assert endpoint(con, "anc_nadir") == pytest.approx(0.4)


# ---- record statuses ------------------------------------------------------------------------
def test_record_statuses_come_from_ref_record_status(site: Site) -> None:
    preliminary = site.lab(3, 0.4, "10*9/L", ucum="10*9/L", status="preliminary")
    site.lab(4, 0.9, "10*9/L", ucum="10*9/L")
    site.build().close()
    con = duckdb.connect(str(site.root / "out" / "t.duckdb"))
    try:
        assert one(con, "SELECT problem FROM harmonized.observation_value WHERE "
                        "observation_id = ?", preliminary) \
            == "status preliminary: not a final result"
        # A study that accepts preliminary results says so in one place: ref.record_status.
        con.execute("UPDATE ref.record_status SET use = 'usable' WHERE resource_type = "
                    "'Observation' AND element = 'status' AND status = 'preliminary'")
        graph = load_graph()
        create_macros(con, graph)
        build_node(con, graph.node("harmonized.observation_value"))
        assert one(con, "SELECT problem FROM harmonized.observation_value WHERE "
                        "observation_id = ?", preliminary) is None
    finally:
        con.close()
