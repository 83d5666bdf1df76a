"""ICD-10 codes nest: a map row for a category covers the codes that extend it.

Real hospitals send ICD-10-CM subcodes the exact-code map does not list, ICD-10-CM
codes without their dot, and national extensions of WHO ICD-10 (the Chinese clinical
edition's A41.900, J18.900x001) under http://hl7.org/fhir/sid/icd-10. They must reach
the study's endpoints through ``cartfhir run``; ICD-10-PCS, whose characters are axes,
must not be matched by prefix, and a code under no mapped category stays unmapped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from cartfhir.cli import cli
from cartfhir.errors import ConfigError
from tests.testbed import write_config

from .small_site import Site, one

CM = "http://hl7.org/fhir/sid/icd-10-cm"
WHO = "http://hl7.org/fhir/sid/icd-10"
PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
SNOMED = "http://snomed.info/sct"
US, CN = "site_us", "site_cn"


def _write(site: Site) -> None:
    """The NDJSON folder Site.build writes, left for the CLI to land."""
    folder = site.root / "data" / site.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "all.ndjson").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in site.resources) + "\n")


def _cm(code: str) -> list[dict[str, Any]]:
    return [{"system": CM, "code": code}]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    """Two hospitals, one patient each, run through the CLI with a site map for PCS."""
    root = tmp_path_factory.mktemp("hierarchy")
    us = Site(root, US)
    us.infusion(0)
    us.infusion(150)  # a second round, as in the study (its events all fall in round 1)
    us.condition(2, coding=_cm("D89832"))  # CRS grade 2, ICD-10-CM without its dot
    us.condition(3, coding=_cm("G9203"))  # ICANS grade 3, without its dot
    us.condition(5, coding=_cm("A40.0"))  # sepsis due to group A streptococcus
    us.condition(6, coding=_cm("J10.01"))  # influenza with the same other pneumonia
    us.condition(12, coding=_cm("B3781"))  # candidal esophagitis, dotless
    us.condition(45, coding=_cm("B44.1"))  # other pulmonary aspergillosis
    us.condition(50, coding=_cm("T80.211A"))  # bloodstream infection due to a CVC
    us.condition(60, coding=_cm("E11.9"))  # type 2 diabetes: no infection category
    us.procedure("High-dose interleukin-2 into central vein", -20,
                 coding={"system": PCS, "code": "3E04302"})
    _write(us)
    cn = Site(root, CN)
    cn.infusion(0)
    cn.infusion(150)
    cn.condition(-3, coding=[{"system": WHO, "code": "B37.000", "display": "口腔念珠菌病"}])
    cn.condition(4, coding=[{"system": WHO, "code": "A41.900", "display": "脓毒症"}])
    cn.condition(40, coding=[{"system": WHO, "code": "J18.900x001", "display": "肺炎"}])
    cn.condition(70, coding=[{"system": WHO, "code": "N39.000", "display": "泌尿道感染"}])
    _write(cn)
    # A site map written as if PCS were hierarchical: the 6-character prefix must not
    # make 3E04302 (high-dose IL-2) chemotherapy.
    (root / "pcs_map.csv").write_text(
        f"resource_type,system,code,concept\nProcedure,{PCS},3E0430,chemotherapy\n")
    config = write_config(root, [US, CN], **{US: {"concept_maps": ["pcs_map.csv"]}},
                          study={"name": "hierarchy"}, output={"duckdb": "out/h.duckdb"})
    result = CliRunner().invoke(cli, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    return duckdb.connect(str(root / "out" / "h.duckdb"), read_only=True)


def _endpoints(con: duckdb.DuckDBPyConnection, site: str, columns: str) -> Any:
    return one(con, f"SELECT {columns} FROM cohort.episode_endpoints "
                    "WHERE site = ? AND round = 1", site)


def test_icd10cm_subcodes_and_dotless_codes_reach_the_endpoints(run) -> None:
    assert _endpoints(run, US, "crs_any, crs_max_grade, cres_any, cres_max_grade") \
        == (True, 2, True, 3)
    assert _endpoints(run, US, "early_infection_n, late_infection_n") == (3, 2)
    events = run.execute("SELECT day, event FROM cohort.adverse_event WHERE site = ? "
                         "AND round = 1 AND category = 'infection' ORDER BY day", [US]).fetchall()
    assert events == [(5, "sepsis"), (6, "pneumonia"), (12, "infection"), (45, "infection"),
                      (50, "infection")]


def test_chinese_clinical_edition_codes_reach_the_endpoints(run) -> None:
    assert _endpoints(run, CN, "lymphodepletion_infection, early_infection_n, "
                               "late_infection_n") == (True, 1, 2)
    events = dict(run.execute("SELECT day, event FROM cohort.adverse_event "
                              "WHERE site = ? AND round = 1", [CN]).fetchall())
    assert events == {-3: "infection", 4: "sepsis", 40: "pneumonia", 70: "infection"}
    assert one(run, "SELECT matched_by FROM harmonized.condition AS c "
                    "JOIN cohort.adverse_event AS a ON a.source_id = c.condition_id "
                    "AND a.site = c.site WHERE a.site = ? AND a.round = 1 AND a.day = 40", CN) \
        == f"code {WHO}|J18.900x001 under J18"


def test_pcs_prefix_does_not_match_and_uncategorised_codes_stay_unmapped(run) -> None:
    unmapped = {(s, c) for s, c in run.execute(
        "SELECT system, code FROM qa.unmapped_codes WHERE site = ?", [US]).fetchall()}
    assert {(PCS, "3E04302"), (CM, "E11.9")} <= unmapped
    assert one(run, "SELECT count(*) FROM harmonized.procedure WHERE site = ? "
                    "AND concept = 'chemotherapy'", US) == 0


# ---- the longest-prefix rule on hand-made records --------------------------------------
def _concepts(con: duckdb.DuckDBPyConnection) -> dict[str, tuple]:
    return {row[0]: row[1:] for row in con.execute(
        "SELECT json_extract_string(codings[1], '$.code'), status, concept, grade "
        "FROM harmonized.code_concept WHERE resource_type = 'Condition'").fetchall()}


def test_the_longest_matching_map_code_wins(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    for n, code in enumerate(("D89.831", "D89.83", "B37.7", "B37.0", "C91.02", "C91.00",
                              "A41", "A4")):
        site.condition(n + 1, coding=_cm(code))
    # A study map's category row at a higher priority than the defaults' subcode rows:
    # the deeper default row still decides D89.831 (and its grade).
    (tmp_path / "study.csv").write_text(
        f"resource_type,system,code,concept\nCondition,{CM},D89.83,crs\n")
    con = site.build(transform={"concept_maps": ["study.csv"]})
    assert _concepts(con) == {
        "D89.831": ("mapped", "crs", 1),  # D89.831 (grade 1) over the D89.83 category
        "D89.83": ("mapped", "crs", None),
        "B37.7": ("mapped", "sepsis", None),  # candidal sepsis over candidiasis (B37)
        "B37.0": ("mapped", "infection", None),
        "C91.02": ("mapped", "relapse", None),  # in relapse, over ALL (C91.0)
        "C91.00": ("mapped", "b_all", None),
        "A41": ("mapped", "sepsis", None),
        "A4": ("unmapped", None, None),  # shorter than any map code: not a descendant
    }


def test_who_r65_2_is_not_sepsis_but_icd10cm_r65_2_is(tmp_path: Path) -> None:
    """WHO R65.2 is SIRS of non-infectious origin; in ICD-10-CM R65.2x is severe sepsis."""
    site = Site(tmp_path)
    site.infusion(0)
    site.condition(3, coding=[{"system": WHO, "code": "R65.2"}])
    site.condition(4, coding=_cm("R65.21"))
    con = site.build()
    assert {code: row[:2] for code, row in _concepts(con).items()} == {
        "R65.2": ("unmapped", None), "R65.21": ("mapped", "sepsis")}


def test_a_map_row_without_a_code_is_a_config_error(tmp_path: Path) -> None:
    """In a prefix system an empty code would extend to every code: refused, with where."""
    site = Site(tmp_path)
    site.infusion(0)
    (tmp_path / "map.csv").write_text(
        f"resource_type,system,code,concept\nCondition,{CM},,sepsis\n")
    with pytest.raises(ConfigError, match=r"map.csv: a .*icd-10-cm row for 'sepsis' has no code"):
        site.build(site_x={"concept_maps": ["map.csv"]})


def test_an_icd10cm_oid_takes_the_hierarchy_of_its_canonical_system(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    site.condition(3, coding=[{"system": "urn:oid:2.16.840.1.113883.6.90", "code": "A40.0"}])
    con = site.build()
    assert one(con, "SELECT concept, matched_by FROM harmonized.code_concept "
                    "WHERE resource_type = 'Condition'") \
        == ("sepsis", "code urn:oid:2.16.840.1.113883.6.90|A40.0 under A40")
