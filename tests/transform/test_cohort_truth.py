"""The cohort tables reproduce the synthetic cohort's truth, site by site, column by column."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import duckdb
import pytest

from cartfhir.api import extract, transform
from cartfhir.synth import generate
from tests.testbed import make_config

from .truth import differences, quarantined_for_spelling

SITES = ["site_a", "site_b", "site_c", "site_d"]
# site_d's server writes its times in UTC: its zone puts each record on its local day. The
# sites need no unit or code maps: the default spellings and patterns read them all.
SITE_CONFIG = {"site_d": {"timezone": "Asia/Shanghai"}}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cohort")
    generate(root / "data", patients=45, seed=11, sites=SITES, bad_rate=0.01)
    config = make_config(root, SITES, **SITE_CONFIG)
    extract(config)
    result = transform(config)
    return root, config, result


def test_episode_endpoints_equal_the_truth(built) -> None:
    root, config, result = built
    problems = differences(config, root / "data" / "truth" / "episodes.csv")
    assert not problems, "\n".join(problems[:40])
    assert {site for site, _, _ in result.episodes} == set(SITES)


def test_every_site_maps_every_code_and_quarantines_only_the_bad(built) -> None:
    root, config, result = built
    assert result.unmapped_codes == 0
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    quarantined = con.execute("SELECT resource_id, reason FROM qa.quarantine").fetchall()
    con.close()
    with (root / "data" / "truth" / "injected.csv").open() as fh:
        unknown_units = {r["id"] for r in csv.DictReader(fh) if r["kind"] == "unknown_unit"}
    by_id = dict(quarantined)
    assert unknown_units and all("is not convertible" in by_id[i] for i in unknown_units)
    # Besides those: what the generator makes unusable on purpose, and nothing else.
    others = {reason.split(":")[0] for rid, reason in quarantined if rid not in unknown_units}
    assert others <= {"no unit", "implausible", "status entered-in-error",
                      "verification entered-in-error"}, others


def _injected(root: Path, kind: str) -> set[str]:
    with (root / "data" / "truth" / "injected.csv").open() as fh:
        return {r["id"] for r in csv.DictReader(fh) if r["kind"] == kind}


def test_no_record_is_quarantined_for_how_it_is_written(built) -> None:
    """Superscript units (×10⁹/L), text results ('＜1.0', '<1.0 pg/mL', 阴性/未检出), a
    neutrophil percentage beside the WBC: each site's spellings are read, none quarantined."""
    root, config, _ = built
    assert not quarantined_for_spelling(config, _injected(root, "unknown_unit"))


def test_site_d_anc_is_derived_from_its_wbc_and_neutrophil_percentage(built) -> None:
    _, config, _ = built
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    rows = dict(con.execute("SELECT derivation, count(*) FROM harmonized.lab "
                            "WHERE site = 'site_d' AND concept = 'anc' GROUP BY ALL").fetchall())
    percents = con.execute("SELECT count(*) FROM harmonized.lab WHERE site = 'site_d' "
                           "AND concept = 'neutrophil_pct'").fetchone()[0]
    con.close()
    assert set(rows) == {"wbc_x_neutrophil_pct"} and percents >= rows["wbc_x_neutrophil_pct"]


def test_censored_results_are_kept_with_their_comparator(built) -> None:
    """Every site sends results below a limit ('<1 ng/L' as text at site_b, a quantity
    comparator elsewhere); each is a usable censored result, quarantined only when retracted."""
    _, config, _ = built
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    rows = con.execute("SELECT site, problem_code, count(*) FROM harmonized.observation_value "
                       "WHERE comparator IS NOT NULL GROUP BY site, problem_code").fetchall()
    con.close()
    assert {site for site, code, _ in rows if code is None} == set(SITES)
    assert {code for _, code, _ in rows} <= {None, "retracted"}, rows


def test_no_raw_patient_id_outside_the_raw_schema(built) -> None:
    _, config, _ = built
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    ids = {r[0] for r in con.execute("SELECT patient_id FROM raw.patient_key").fetchall()}
    tables = con.execute("SELECT table_schema, table_name FROM information_schema.tables "
                         "WHERE table_schema IN ('harmonized', 'cohort', 'qa')").fetchall()
    for schema, table in tables:
        text = repr(con.execute(f"SELECT * FROM {schema}.{table}").fetchall())
        leaked = [i for i in ids if i in text]
        assert not leaked, f"{schema}.{table} contains raw patient ids"
    con.close()


def _tables(path: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(path), read_only=True)
    names = [f"{s}.{t}" for s, t in con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema IN ('flat', 'harmonized', 'cohort', 'qa')").fetchall()]
    out = {n: sorted(con.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}
    con.close()
    return out


def test_incremental_extraction_then_transform_equals_a_full_rebuild(tmp_path: Path) -> None:
    generate(tmp_path / "all", patients=12, seed=5, sites=["site_b"])
    full = make_config(tmp_path / "full", ["site_b"])
    shutil.copytree(tmp_path / "all" / "site_b", tmp_path / "full" / "data" / "site_b")
    extract(full)
    transform(full)

    step = make_config(tmp_path / "step", ["site_b"])
    target = tmp_path / "step" / "data" / "site_b"
    target.mkdir(parents=True)
    held_back = []
    for f in sorted((tmp_path / "all" / "site_b").glob("*.ndjson")):
        if f.name.startswith(("Observation", "Procedure")):
            held_back.append(f)
        else:
            shutil.copy(f, target / f.name)
    extract(step)
    transform(step)  # a first transform on part of the data
    for f in held_back:
        shutil.copy(f, target / f.name)
    extract(step)
    transform(step)
    assert _tables(step.output.duckdb) == _tables(full.output.duckdb)


def test_every_endpoint_value_traces_back_to_its_records(built) -> None:
    _, config, _ = built
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    untraced = con.execute("""
        SELECT e.site, e.round, x.endpoint
        FROM cohort.episode_endpoints AS e
        CROSS JOIN (VALUES ('il6_peak'), ('il17a_peak'), ('anc_nadir'), ('platelet_nadir'),
                           ('crs'), ('cres'), ('dose'), ('best_response')) AS x(endpoint)
        WHERE CASE x.endpoint WHEN 'il6_peak' THEN e.il6_peak IS NOT NULL
                              WHEN 'il17a_peak' THEN e.il17a_peak IS NOT NULL
                              WHEN 'anc_nadir' THEN e.anc_nadir IS NOT NULL
                              WHEN 'platelet_nadir' THEN e.platelet_nadir IS NOT NULL
                              WHEN 'crs' THEN e.crs_any
                              WHEN 'cres' THEN e.cres_any
                              WHEN 'dose' THEN e.dose IS NOT NULL
                              ELSE e.best_response IS NOT NULL END
          AND NOT EXISTS (SELECT 1 FROM cohort.endpoint_provenance AS p
                          WHERE p.site = e.site AND p.patient_key = e.patient_key
                            AND p.round = e.round AND p.endpoint = x.endpoint)
    """).fetchall()
    # The peak's record really holds the peak value.
    wrong = con.execute("""
        SELECT e.site, e.round FROM cohort.episode_endpoints AS e
        JOIN cohort.endpoint_provenance AS p USING (site, patient_key, round)
        JOIN harmonized.lab AS l ON l.site = p.site AND l.observation_id = p.resource_id
        WHERE p.endpoint = 'il6_peak' AND abs(l.value - e.il6_peak) > 1e-9
    """).fetchall()
    con.close()
    assert not untraced and not wrong, (untraced[:5], wrong[:5])
