"""A coding in a standard system is authoritative: never guessed from its display text.

A broad hospital export (vitals, panels, urinalysis, claims) is landed next to a
CAR-T site through the CLI. LOINC codes that name a study analyte in their text
but are not in a map (HbA1c, MPV, urine bilirubin, stool hemoglobin...) must be
inventoried as unmapped, with a note saying why they are out of scope, and must
neither reach harmonized.lab nor fail the site's completeness expectations.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from cartfhir.cli import cli
from cartfhir.errors import ConfigError
from cartfhir.synth import generate
from tests.testbed import write_config

from .broad_hospital import LOOK_ALIKES, broad_resources
from .small_site import LOCAL, Site, one

SITE = "site_a"


@pytest.fixture(scope="module")
def broad_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A small CAR-T site plus a few hundred broad resources, run through 'cartfhir run'."""
    root = tmp_path_factory.mktemp("broad")
    generate(root / "data", patients=2, seed=5, sites=[SITE])
    resources = broad_resources(patients=3, visits=2)
    assert len(resources) > 250
    (root / "data" / SITE / "broad.ndjson").write_text(
        "\n".join(json.dumps(r) for r in resources) + "\n")
    result = CliRunner().invoke(cli, ["run", "--config", str(write_config(root, [SITE]))])
    return root, result


def _db(root: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(root / "out" / "t.duckdb"), read_only=True)


def test_look_alike_loinc_codes_never_become_study_labs(broad_site) -> None:
    root, _ = broad_site
    con = _db(root)
    leaked = con.execute(
        "SELECT DISTINCT json_extract_string(r.codings[1], '$.code') AS code, l.concept "
        "FROM harmonized.lab AS l JOIN harmonized.resource_code AS r "
        "ON r.site = l.site AND r.resource_type = 'Observation' "
        "AND r.resource_id = l.observation_id WHERE l.observation_id LIKE 'broad-%'"
    ).fetchall()
    assert not [row for row in leaked if row[0] in LOOK_ALIKES], leaked
    # The broad hospital's real study codes (718-7, 777-3, 6690-2, 8310-5...) still map.
    assert {row[0] for row in leaked} == {"6690-2", "718-7", "777-3", "38483-4", "8310-5"}
    quarantined = con.execute("SELECT count(*) FROM qa.quarantine "
                              "WHERE resource_id LIKE 'broad-%'").fetchone()[0]
    assert quarantined == 0


def test_look_alikes_are_inventoried_with_an_out_of_scope_note(broad_site) -> None:
    root, _ = broad_site
    con = _db(root)
    rows = {code: (count, note) for code, count, note in con.execute(
        "SELECT code, count, scope_note FROM qa.unmapped_codes "
        "WHERE system = 'http://loinc.org'").fetchall()}
    assert set(rows) >= LOOK_ALIKES, LOOK_ALIKES - set(rows)
    assert rows["5770-3"] == (6, "out of study scope: urine specimen; test strip screen")
    assert "stool specimen" in rows["58453-2"][1] and "stool specimen" in rows["2335-8"][1]
    assert "urine specimen" in rows["5794-3"][1] and "urine specimen" in rows["5799-2"][1]
    assert "ratio" in rows["14959-1"][1] and "ratio" in rows["4548-4"][1]
    assert all("cell index" in rows[code][1] for code in ("32623-1", "32207-3", "786-4"))
    assert "vital sign" in rows["8867-4"][1]
    assert rows["2339-0"][1] is None  # glucose: simply not a study analyte, nothing to say


def test_broad_data_does_not_fail_the_sites_completeness(broad_site) -> None:
    root, result = broad_site
    assert result.exit_code == 0, result.output
    con = _db(root)
    failed = con.execute("SELECT suite, column_name, observed_value FROM qa.validation_result "
                         "WHERE NOT success AND severity = 'error'").fetchall()
    assert failed == []


# ---- precedence on hand-made records ---------------------------------------------------------
def test_text_patterns_still_map_records_with_only_local_codes_or_text(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    local = site.lab(3, 0.4, "10*9/L", system=LOCAL, code="NEU", display="Neutrophils abs")
    text_only = site.lab(4, 9.5, "g/dL", system="", code="", text="Hemoglobin")
    site.resources[-1]["code"] = {"text": "Hemoglobin"}
    con = site.build()
    concepts = dict(con.execute("SELECT observation_id, concept FROM harmonized.lab").fetchall())
    assert concepts == {local: "anc", text_only: "hemoglobin"}


def test_a_standard_system_without_a_code_is_only_text(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    site.lab(3, 310.0, "pg/mL", code="-", display="Interleukin 6", ucum="pg/mL")
    del site.resources[-1]["code"]["coding"][0]["code"]
    con = site.build()
    assert one(con, "SELECT concept FROM harmonized.lab") == "il6"


def test_an_unmapped_standard_code_is_not_rescued_by_a_local_coding_text(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    both = site.lab(3, 5.8, "%", code="4548-4", display="Hemoglobin A1c/Hemoglobin.total in Blood")
    site.resources[-1]["code"]["coding"].append(
        {"system": LOCAL, "code": "HBA1C", "display": "Hemoglobin A1c"})
    con = site.build()
    assert one(con, "SELECT count(*) FROM harmonized.observation_value") == 0
    codes = {r[0] for r in con.execute("SELECT code FROM qa.unmapped_codes").fetchall()}
    assert codes == {"4548-4", "HBA1C"} and both


def test_an_explicit_map_of_any_coding_wins_over_an_unmapped_standard_one(
        tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    site.lab(3, 0.6, "10*9/L", code="26444-0", display="Basophils [#/volume] in Blood")
    site.resources[-1]["code"]["coding"].append({"system": LOCAL, "code": "ANC-X"})
    (tmp_path / "map.csv").write_text(
        "resource_type,system,code,concept\nObservation," + LOCAL + ",ANC-X,anc\n")
    con = site.build(site_x={"concept_maps": ["map.csv"]})
    assert one(con, "SELECT concept, matched_by FROM harmonized.code_concept "
                    "WHERE status = 'mapped' AND resource_type = 'Observation'") \
        == ("anc", f"code {LOCAL}|ANC-X")


def test_a_loinc_code_sent_under_its_oid_is_still_loinc(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    site.lab(3, 0.6, "10*9/L", system="urn:oid:2.16.840.1.113883.6.1", code="751-8")
    site.lab(4, 5.8, "%", system="urn:oid:2.16.840.1.113883.6.1", code="4548-4",
             display="Hemoglobin A1c/Hemoglobin.total in Blood")
    con = site.build()
    assert one(con, "SELECT concept FROM harmonized.lab") == "anc"
    assert one(con, "SELECT code FROM qa.unmapped_codes") == "4548-4"


def test_a_mapped_standard_code_is_still_refined_by_its_text(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    site.procedure("Lymphodepleting chemotherapy (fludarabine + cyclophosphamide)", -4,
                   coding={"system": "http://www.cms.gov/Medicare/Coding/ICD10",
                           "code": "3E04305"})
    site.procedure("Chemotherapy course", -40,
                   coding={"system": "http://www.cms.gov/Medicare/Coding/ICD10",
                           "code": "3E04305"})
    con = site.build()
    concepts = sorted(r[0] for r in con.execute(
        "SELECT concept FROM harmonized.procedure WHERE concept <> 'cart_infusion'").fetchall())
    assert concepts == ["chemotherapy", "lymphodepletion"]


# ---- through 'cartfhir run': product codes, system spellings, code case, site patterns -------
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
Q2042_DESCRIPTOR = ("Tisagenlecleucel, up to 600 million CAR-positive viable T cells, including "
                    "leukapheresis and dose preparation procedures, per therapeutic dose")


def _run(site: Site, **site_config: object) -> tuple[object, duckdb.DuckDBPyConnection | None]:
    """Write the site's NDJSON and a config, run 'cartfhir run'; the result and the database."""
    folder = site.root / "data" / site.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "all.ndjson").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in site.resources) + "\n")
    path = write_config(site.root, [site.name], **{site.name: site_config})
    result = CliRunner().invoke(cli, ["run", "--config", str(path)])
    db = site.root / "out" / "t.duckdb"
    return result, duckdb.connect(str(db), read_only=True) if db.exists() else None


def _product(site: Site, system: str, code: str, display: str) -> None:
    site.resources.append({"resourceType": "Procedure", "id": "product", "status": "completed",
                           "code": {"coding": [{"system": system, "code": code,
                                                "display": display}]},
                           "subject": {"reference": "Patient/p1"},
                           "performedDateTime": "2024-03-01T10:00:00+08:00"})


def _assert_infusion_counted(site: Site) -> None:
    """The site's one product Procedure maps to cart_infusion and makes one episode."""
    _, con = _run(site)
    assert one(con, "SELECT status, concept FROM harmonized.code_concept "
                    "WHERE resource_type = 'Procedure'") == ("mapped", "cart_infusion")
    assert one(con, "SELECT count(*) FROM cohort.episode") == 1


def test_a_hcpcs_product_code_is_not_excluded_by_its_cms_descriptor(tmp_path: Path) -> None:
    site = Site(tmp_path)
    _product(site, HCPCS, "Q2042", Q2042_DESCRIPTOR)
    site.lab(3, 0.4, "10*9/L")
    _assert_infusion_counted(site)


def test_a_site_map_is_not_overruled_by_an_unrelated_text_pattern(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    site.procedure("Leukapheresis for CAR-T manufacturing", -30,
                   coding={"system": LOCAL, "code": "CHEMO-1"})
    (tmp_path / "map.csv").write_text(
        "resource_type,system,code,concept\nProcedure," + LOCAL + ",CHEMO-1,chemotherapy\n")
    _, con = _run(site, concept_maps=["map.csv"])
    assert one(con, "SELECT concept FROM harmonized.code_concept "
                    "WHERE matched_by LIKE '%CHEMO-1%'") == "chemotherapy"


def test_a_refining_pattern_names_a_known_concept(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    (tmp_path / "tp.csv").write_text("resource_type,concept,priority,pattern,refines\n"
                                     "Procedure,lymphodepletion,20,flu,chemotheraphy\n")
    result, _ = _run(site, text_patterns=["tp.csv"])
    assert isinstance(result.exception, ConfigError), result.output
    assert "chemotheraphy" in str(result.exception)


@pytest.mark.parametrize("loinc", ["http://loinc.org/", "https://loinc.org", "HTTP://LOINC.ORG",
                                   " http://loinc.org ", "http://www.loinc.org"])
def test_loinc_spellings_real_servers_send_are_loinc(tmp_path: Path, loinc: str) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    site.lab(3, 0.6, "10*9/L", system=loinc, code="751-8")
    band = site.lab(4, 0.05, "10*9/L", system=loinc, code="26507-4",
                    display="Neutrophils.band [#/volume] in Blood")
    _, con = _run(site)
    assert one(con, "SELECT concept FROM harmonized.lab") == "anc"
    assert one(con, "SELECT count(*) FROM harmonized.lab WHERE observation_id = ?", band) == 0
    assert one(con, "SELECT code FROM qa.unmapped_codes") == "26507-4"


@pytest.mark.parametrize("system", ["http://snomed.info/sct/900000000000207008",
                                    "http://snomed.info/sct|20230131",
                                    "http://snomed.info/sct/731000124108/version/20230301",
                                    "http://hl7.org/fhir/sid/icd-10-CM",
                                    "http://hl7.org/fhir/sid/icd-10-cm/"])
def test_snomed_and_icd_spellings_are_standard(tmp_path: Path, system: str) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    code = "Z87.01" if "icd" in system else "161525003"  # history of pneumonia: no infection
    site.condition(5, coding=[{"system": system, "code": code,
                               "display": "Personal history of pneumonia (recurrent)"}])
    _, con = _run(site)
    assert one(con, "SELECT count(*) FROM harmonized.condition") == 0
    assert one(con, "SELECT standard, code FROM qa.unmapped_codes") == (True, code)


def test_a_map_written_with_another_spelling_still_matches(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    site.lab(3, 0.6, "10*9/L", code="99999-9", display="Neutrophil look-alike")
    (tmp_path / "map.csv").write_text(
        "resource_type,system,code,concept\nObservation,HTTPS://LOINC.ORG/,99999-9,anc\n")
    _, con = _run(site, concept_maps=["map.csv"])
    assert one(con, "SELECT concept FROM harmonized.lab") == "anc"


@pytest.mark.parametrize(("system", "code"), [(PCS, "xw033c7"), (HCPCS, "q2042"),
                                              ("http://www.ama-assn.org/go/cpt", "0540t")])
def test_case_insensitive_codes_match_in_any_case(tmp_path: Path, system: str, code: str) -> None:
    site = Site(tmp_path)
    _product(site, system, code, "CAR-T")
    site.lab(3, 0.4, "10*9/L", code="751-8")
    _assert_infusion_counted(site)


def test_site_patterns_keep_their_escapes_and_match_any_case(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    # Lower-casing the pattern would turn \\S (not a space) into \\s (a space).
    leuk = site.lab(3, 6.1, "10*9/L", system=LOCAL, code="L1", display="LEUKX")
    site.lab(4, 6.1, "10*9/L", system=LOCAL, code="L2", display="LEUK ")
    (tmp_path / "tp.csv").write_text("resource_type,concept,priority,pattern\n"
                                     "Observation,wbc,9,^LEUK\\S+$\n")
    _, con = _run(site, text_patterns=["tp.csv"])
    assert con.execute("SELECT observation_id, concept FROM harmonized.lab").fetchall() \
        == [(leuk, "wbc")]


def test_a_pattern_duckdb_cannot_run_is_a_config_error_naming_it(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    site.lab(3, 0.6, "10*9/L", system=LOCAL, code="N1", display="Neutrophils")
    (tmp_path / "tp.csv").write_text("resource_type,concept,priority,pattern\n"
                                     "Observation,wbc,6,leukocyte\n"
                                     "Observation,anc,6,neut(?=rophil)\n")
    result, _ = _run(site, text_patterns=["tp.csv"])
    assert isinstance(result.exception, ConfigError), result.output
    message = str(result.exception)
    assert "tp.csv line 3" in message and "neut(?=rophil)" in message
