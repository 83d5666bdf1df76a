"""Who decides a record's concept when rules disagree: a site's own maps and patterns beat the
study's, the study's beat the package defaults, whatever their priorities; priority only orders
the rules of one origin (harmonized.code_concept)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from .small_site import LOCAL, Site, one

MAP_HEADER = "resource_type,system,code,concept,priority\n"
PATTERN_HEADER = "resource_type,concept,priority,pattern,refines\n"


def _site_with_a_fludarabine_course_after_cart2(root: Path) -> Site:
    """Two infusions and, after CART2, a course the site codes CHEMO-1 whose text names
    fludarabine: the text alone would make it lymphodepletion, which is no post-CART2 event."""
    site = Site(root)
    site.infusion(0)
    site.infusion(100)
    site.procedure("Fludarabine + cytarabine consolidation", 130,
                   coding={"system": LOCAL, "code": "CHEMO-1"})
    (root / "map.csv").write_text(f"{MAP_HEADER}Procedure,{LOCAL},CHEMO-1,chemotherapy,\n")
    return site


def _course(con: duckdb.DuckDBPyConnection) -> tuple:
    return one(con, "SELECT status, concept, matched_by FROM harmonized.code_concept "
                    "WHERE matched_by LIKE '%CHEMO-1%' OR code_text LIKE 'Fludarabine%'")


def test_a_site_map_is_not_refined_by_a_default_pattern(tmp_path: Path) -> None:
    site = _site_with_a_fludarabine_course_after_cart2(tmp_path)
    con = site.build(site_x={"concept_maps": ["map.csv"]})
    assert _course(con) == ("mapped", "chemotherapy", f"code {LOCAL}|CHEMO-1")
    assert one(con, "SELECT post_event_type, post_event_date FROM cohort.episode_endpoints "
                    "WHERE round = 2") == ("chemotherapy", one(
                        con, "SELECT start_date FROM harmonized.procedure "
                             "WHERE concept = 'chemotherapy'"))


def test_a_site_refines_its_own_map_with_its_own_pattern(tmp_path: Path) -> None:
    site = _site_with_a_fludarabine_course_after_cart2(tmp_path)
    (tmp_path / "tp.csv").write_text(
        f"{PATTERN_HEADER}Procedure,lymphodepletion,20,fludarabin,chemotherapy\n")
    con = site.build(site_x={"concept_maps": ["map.csv"], "text_patterns": ["tp.csv"]})
    assert _course(con) == ("mapped", "lymphodepletion", "text /fludarabin/")
    assert one(con, "SELECT post_event_type FROM cohort.episode_endpoints WHERE round = 2") \
        == "none"


def test_a_site_map_beats_a_study_map_of_any_priority(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    lab = site.lab(3, 0.4, "10*9/L", system=LOCAL, code="NEU#")
    (tmp_path / "study.csv").write_text(f"{MAP_HEADER}Observation,{LOCAL},NEU#,wbc,50\n")
    (tmp_path / "map.csv").write_text(f"{MAP_HEADER}Observation,{LOCAL},NEU#,anc,\n")
    con = site.build(transform={"concept_maps": ["study.csv"]},
                     site_x={"concept_maps": ["map.csv"]})
    assert one(con, "SELECT observation_id, concept FROM harmonized.lab") == (lab, "anc")
    assert one(con, "SELECT anc_nadir FROM cohort.episode_endpoints") == 0.4


def test_a_site_pattern_beats_a_default_exclusion_of_any_priority(tmp_path: Path) -> None:
    """The defaults exclude hs-CRP (priority 30); a site whose only CRP assay is the
    high-sensitivity one says so with a pattern at a lower priority, and it counts as CRP."""
    site = Site(tmp_path)
    site.infusion(0)
    hs = site.lab(3, 85.0, "mg/L", system=LOCAL, code="C1", display="hs-CRP")
    (tmp_path / "tp.csv").write_text(f"{PATTERN_HEADER}Observation,crp,5,^hs-crp$,\n")
    con = site.build(site_x={"text_patterns": ["tp.csv"]})
    assert one(con, "SELECT status, concept, matched_by FROM harmonized.code_concept "
                    "WHERE resource_type = 'Observation'") == ("mapped", "crp", "text /^hs-crp$/")
    assert one(con, "SELECT observation_id, concept FROM harmonized.lab") == (hs, "crp")
    assert one(con, "SELECT count(*) FROM qa.quarantine") == 0


def test_without_the_site_pattern_the_default_exclusion_stands(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    site.lab(3, 85.0, "mg/L", system=LOCAL, code="C1", display="hs-CRP")
    con = site.build()
    assert one(con, "SELECT status FROM harmonized.code_concept "
                    "WHERE resource_type = 'Observation'") == "excluded"
    assert one(con, "SELECT count(*) FROM harmonized.lab") == 0
