"""Models that work on distinct values and join back give what a per-row reading gives.

harmonized.resource_code hashes each distinct code once, harmonized.observation_value
turns each distinct unit spelling into a conversion once, cohort.episode_lab lists windows
once per episode day. Each test builds a site whose records share and vary those values
(code.text or not, codings in another key order, units as UCUM code, as text, in
a text value, in a reference range of another unit, in components, a qualitative result,
in the site's own unit map) and compares the table with the same columns computed record by record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cartfhir.graph import create_macros

from .small_site import LOCAL, LOINC, UCUM, Site, day

COLUMNS_DIFFER = """
    SELECT count(*) FROM (SELECT * FROM ({got}) EXCEPT ALL SELECT * FROM ({want}))
    UNION ALL
    SELECT count(*) FROM (SELECT * FROM ({want}) EXCEPT ALL SELECT * FROM ({got}))
"""


def observation(site: Site, offset: int, code: dict[str, Any], **value: Any) -> str:
    oid = f"o{len(site.resources)}"
    site.resources.append({"resourceType": "Observation", "id": oid, "status": "final",
                           "code": code, "subject": {"reference": "Patient/p1"},
                           "effectiveDateTime": day(offset), **value})
    return oid


def quantity(value: float, unit: str | None = None, ucum: str | None = None) -> dict:
    q: dict[str, Any] = {"value": value}
    if unit is not None:
        q["unit"] = unit
    if ucum is not None:
        q.update(system=UCUM, code=ucum)
    return q


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = Site(tmp_path_factory.mktemp("per_row"))
    site.infusion(0)
    site.infusion(120)  # a second episode: results on both day axes
    anc = {"system": LOINC, "code": "751-8"}
    anc_reordered = {"code": "751-8", "system": LOINC}
    for offset in (-8, -7, -1, 0, 1, 14, 15, 28, 29, 30, 31, 90, 91, 118, 127, 150, 210):
        site.lab(offset, 0.4 + offset / 100, "10*9/L", ucum="10*9/L",
                 reference=(1.8, 7.7))
        site.lab(offset, 400 + offset, "/uL")  # text unit only
    # the same code written with and without text, its keys in another order
    observation(site, 2, {"coding": [anc]}, valueQuantity=quantity(0.5, "10^9/L"))
    observation(site, 2, {"coding": [anc], "text": "ANC"}, valueQuantity=quantity(0.6, "K/uL"))
    observation(site, 4, {"coding": [anc_reordered]}, valueQuantity=quantity(0.7, "x10E9/L"))
    observation(site, 4, {"coding": [anc], "text": "ANC"},
                valueQuantity=quantity(0.8, "thou/uL", "10*3/uL"))
    observation(site, 5, {"text": "absolute neutrophil count"}, valueString="< 0.3 10^9/L")
    observation(site, 6, {"coding": [anc]}, valueString="450 cells/uL")
    # reference ranges in units no value uses, and one without a unit
    observation(site, 8, {"coding": [anc]}, valueQuantity=quantity(0.9, "10*9/L", "10*9/L"),
                referenceRange=[{"low": {"value": 1.8, "unit": "10^3/mm3"},
                                 "high": {"value": 7.7, "unit": "x10^9/L"}}])
    observation(site, 9, {"coding": [anc]}, valueQuantity=quantity(1.1, "10*9/L", "10*9/L"),
                referenceRange=[{"low": {"value": 2.0}, "high": {"value": 8000,
                                                                 "code": "/mm3"}}])
    site.lab(10, 0.25, "ng/mL", code="26881-3", ucum="ng/mL", reference=(0.0, 0.007))
    site.lab(10, 12.0, "mg/dL", code="1988-5")  # a unit CRP's group does not know
    site.lab(12, "Negative", system=LOCAL, code="MRD1", display="Minimal residual disease")
    site.lab(12, 2.0, "furlongs")
    observation(site, 11, {"coding": [{"system": LOCAL, "code": "CBA"}], "text": "panel"},
                component=[
                    {"code": {"coding": [{"system": LOINC, "code": "26881-3"}]},
                     "valueQuantity": quantity(310.0, "pg/mL", "pg/mL"),
                     "referenceRange": [{"high": {"value": 0.007, "unit": "ng/mL"}}]},
                    {"code": {"text": "IL-6"}, "valueQuantity": quantity(0.3, "ng/mL")},
                    {"code": {"text": "IL-6"}, "valueString": "42 pg/mL"}])
    # the site's own spellings: one units.csv lacks, one it converts otherwise (Hb tetramer)
    site.lab(13, 0.35, "109/L", reference=(1.8, 7.7))
    site.lab(13, 1.2, "mmol/L", code="718-7", reference=(1.7, 2.5))
    (site.root / "units.csv").write_text("concept,unit,ucum,factor\nanc,109/L,10*9/L,\n"
                                         "hemoglobin,mmol/L,,64.458\n")
    site.build(site_x={"unit_maps": ["units.csv"]}).close()
    return site.root / "out" / "t.duckdb"


@pytest.fixture
def con(built: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(str(built))
    create_macros(con)
    try:
        yield con
    finally:
        con.close()


def differ(con: duckdb.DuckDBPyConnection, got: str, want: str) -> list[int]:
    return [n for (n,) in con.execute(COLUMNS_DIFFER.format(got=got, want=want)).fetchall()]


def test_resource_code_hashes_as_record_by_record(con: duckdb.DuckDBPyConnection) -> None:
    codes = con.execute("SELECT count(DISTINCT signature), count(*) FROM "
                        "harmonized.resource_code").fetchone()
    assert 1 < codes[0] < codes[1]  # signatures are shared
    want = """
        SELECT site, 'Observation', observation_id, code_text, coalesce(codings, empty_list())
        FROM flat.observation
        UNION ALL
        SELECT site, 'Observation', observation_id || '#' || component_index, code_text,
               coalesce(codings, empty_list())
        FROM flat.observation_component
        UNION ALL
        SELECT site, 'Procedure', procedure_id, code_text, coalesce(codings, empty_list())
        FROM flat.procedure"""
    got = """SELECT site, resource_type, resource_id, code_text, codings
             FROM harmonized.resource_code"""
    assert differ(con, got, want) == [0, 0]
    assert con.execute("""
        SELECT count(*) FROM harmonized.resource_code
        WHERE signature IS DISTINCT FROM md5(concat_ws('|', site, resource_type,
                                                       coalesce(code_text, ''),
                                                       codings_key(codings)))""").fetchone()[0] == 0


def test_observation_value_converts_as_record_by_record(con: duckdb.DuckDBPyConnection) -> None:
    kinds = con.execute("""
        SELECT count(*) FILTER (WHERE observation_id LIKE '%#%' AND value IS NOT NULL),
               count(*) FILTER (WHERE reference_low IS NOT NULL),
               count(*) FILTER (WHERE problem_code = 'unit_not_convertible'),
               count(*) FILTER (WHERE concept = 'mrd_flow' AND value IS NOT NULL),
               count(*) FILTER (WHERE unit_original IN ('109/L', 'mmol/L') AND value > 0)
        FROM harmonized.observation_value""").fetchone()
    assert all(kinds), kinds
    got = """SELECT observation_id, problem_code, value, reference_low, reference_high
             FROM harmonized.observation_value"""
    want = """
        WITH records AS (
            SELECT site, observation_id, reference_low, reference_low_unit,
                   reference_low_unit_code, reference_high, reference_high_unit,
                   reference_high_unit_code
            FROM flat.observation
            UNION ALL
            SELECT site, observation_id || '#' || component_index, reference_low,
                   reference_low_unit, reference_low_unit_code, reference_high,
                   reference_high_unit, reference_high_unit_code
            FROM flat.observation_component
        ),
        units AS (
            SELECT v.*, r.reference_low AS low, r.reference_high AS high, c.unit_group,
                   unit_key(v.unit_original) AS value_key,
                   coalesce(nullif(r.reference_low_unit_code, ''),
                            nullif(r.reference_low_unit, ''), v.unit_original) AS low_unit,
                   coalesce(nullif(r.reference_high_unit_code, ''),
                            nullif(r.reference_high_unit, ''), v.unit_original) AS high_unit
            FROM harmonized.observation_value AS v
            JOIN records AS r USING (site, observation_id)
            JOIN ref.concept AS c USING (concept)
        ),
        -- a spelling's conversion: the site's own for the concept, else its unit group's
        conversions AS (
            SELECT site, concept, unit_key, factor, "offset", 1 AS rank FROM ref.unit_map
            UNION ALL
            SELECT s.site, c.concept, u.unit_key, u.factor, u."offset", 2
            FROM ref.unit AS u JOIN ref.concept AS c USING (unit_group)
            CROSS JOIN (SELECT DISTINCT site FROM units) AS s
        ),
        conversion AS (
            SELECT * FROM conversions
            QUALIFY rank = min(rank) OVER (PARTITION BY site, concept, unit_key)
        )
        SELECT v.observation_id, v.problem_code,
               CASE WHEN v.problem IS NULL
                    THEN round(v.value_original * u.factor + u.offset, 9) END,
               rl.factor * v.low + rl.offset, rh.factor * v.high + rh.offset
        FROM units AS v
        LEFT JOIN conversion AS u ON u.site = v.site AND u.concept = v.concept
         AND u.unit_key = v.value_key
        LEFT JOIN conversion AS rl ON rl.site = v.site AND rl.concept = v.concept
         AND rl.unit_key = unit_key(v.low_unit)
        LEFT JOIN conversion AS rh ON rh.site = v.site AND rh.concept = v.concept
         AND rh.unit_key = unit_key(v.high_unit)"""
    assert differ(con, got, want) == [0, 0]
    # and no unit is called not convertible that converts
    assert con.execute("""
        SELECT count(*) FROM harmonized.observation_value AS v
        JOIN ref.concept AS c USING (concept)
        WHERE v.problem_code = 'unit_not_convertible' AND unit_key(v.unit_original) IN (
            SELECT u.unit_key FROM ref.unit AS u WHERE u.unit_group = c.unit_group
            UNION ALL
            SELECT m.unit_key FROM ref.unit_map AS m
            WHERE m.site = v.site AND m.concept = v.concept)""").fetchone()[0] == 0


def test_episode_lab_lists_windows_as_result_by_result(con: duckdb.DuckDBPyConnection) -> None:
    counts = con.execute("SELECT count(DISTINCT round), count(*) FILTER (WHERE len(windows) > 1)"
                         " FROM cohort.episode_lab").fetchone()
    assert counts[0] == 2 and counts[1] > 0
    got = "SELECT site, patient_key, round, observation_id, day, windows FROM cohort.episode_lab"
    want = """
        SELECT l.site, l.patient_key, l.round, l.observation_id, l.day,
               coalesce((SELECT list(w.name ORDER BY w.lo, w.name) FROM cohort.episode_window AS w
                         WHERE w.site = l.site AND w.patient_key = l.patient_key
                           AND w.round = l.round AND l.day BETWEEN w.lo AND w.hi), [])
        FROM cohort.episode_lab AS l"""
    assert differ(con, got, want) == [0, 0]
    # every usable result within the windows' span of an episode, once per episode
    placed = """
        SELECT e.site, e.patient_key, e.round, l.observation_id,
               date_diff('day', e.infusion_date, l.effective_date)
        FROM cohort.episode AS e JOIN harmonized.lab AS l USING (site, patient_key)
        WHERE date_diff('day', e.infusion_date, l.effective_date)
              BETWEEN (SELECT min(lo) FROM ref.window) AND (SELECT max(hi) FROM ref.window)"""
    assert differ(con, "SELECT site, patient_key, round, observation_id, day "
                       "FROM cohort.episode_lab", placed) == [0, 0]
