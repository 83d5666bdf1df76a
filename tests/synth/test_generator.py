"""The synthetic cohort: deterministic, valid FHIR R4, messy like real sites, honest truth."""

from __future__ import annotations

import csv
import gzip
import hashlib
from collections import Counter, defaultdict
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class

from cartfhir.errors import UsageError
from cartfhir.synth import generate, split_patients
from cartfhir.synth.writer import UNKNOWN_UNITS

SITES = ["site_a", "site_b", "site_c", "site_d"]
SITE_D_ZONE = ZoneInfo("Asia/Shanghai")  # site_d's local day; it writes its times in UTC


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def ndjson_lines(folder: Path):
    for path in sorted(folder.glob("*.ndjson*")):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as fh:
            for n, line in enumerate(fh, start=1):
                yield path.name, n, line


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, patients=45, seed=11, sites=SITES, bad_rate=0.01, bundles=True)
    return out


@pytest.fixture(scope="module")
def clean_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    generate(out, patients=45, seed=11, sites=SITES, bundles=True)
    return out


@pytest.fixture(scope="module")
def truth(clean_cohort: Path) -> list[dict[str, str]]:
    with (clean_cohort / "truth" / "episodes.csv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", patients=8, seed=3, sites=SITES, bad_rate=0.02, bundles=True)
    generate(tmp_path / "b", patients=8, seed=3, sites=SITES, bad_rate=0.02, bundles=True)
    generate(tmp_path / "c", patients=8, seed=4, sites=SITES, bad_rate=0.02, bundles=True)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")


def test_a_patient_does_not_depend_on_cohort_size(tmp_path: Path) -> None:
    generate(tmp_path / "small", patients=2, seed=5, sites=["site_a"])
    generate(tmp_path / "large", patients=8, seed=5, sites=["site_a"])
    small = (tmp_path / "small" / "truth" / "episodes.csv").read_text().splitlines()
    large = (tmp_path / "large" / "truth" / "episodes.csv").read_text().splitlines()
    assert large[: len(small)] == small


def test_every_good_resource_and_bundle_is_valid_r4(clean_cohort: Path) -> None:
    seen = Counter()
    for site in SITES:
        for _, _, line in ndjson_lines(clean_cohort / site):
            resource = orjson.loads(line)
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            seen[resource["resourceType"]] += 1
        for bundle in (clean_cohort / site / "bundles").glob("*.json"):
            get_fhir_model_class("Bundle").model_validate(orjson.loads(bundle.read_bytes()))
            seen["Bundle"] += 1
    assert {"Patient", "Condition", "Procedure", "Observation", "Bundle"} <= set(seen)
    assert seen["Observation"] > 10_000


def test_manifest_lists_every_file_with_its_line_count(clean_cohort: Path) -> None:
    for site in SITES:
        manifest = orjson.loads((clean_cohort / site / "manifest.json").read_bytes())
        for output in manifest["output"]:
            lines = sum(1 for _ in (clean_cohort / site / output["url"]).open("rb"))
            assert lines == output["count"]
        assert manifest["transactionTime"].endswith("Z")


def test_bundles_hold_each_resource_once(clean_cohort: Path) -> None:
    ndjson_ids = {(r["resourceType"], r["id"]) for r in
                  (orjson.loads(x[2]) for x in ndjson_lines(clean_cohort / "site_b"))}
    bundle_ids = []
    for bundle in (clean_cohort / "site_b" / "bundles").glob("*.json"):
        for entry in orjson.loads(bundle.read_bytes())["entry"]:
            assert entry["request"]["method"] == "PUT"
            bundle_ids.append((entry["resource"]["resourceType"], entry["resource"]["id"]))
    assert len(bundle_ids) == len(set(bundle_ids))
    assert set(bundle_ids) == ndjson_ids


def test_sites_code_and_measure_differently(clean_cohort: Path) -> None:
    def codes_units(site: str) -> tuple[set[str], set[str]]:
        systems, units = set(), set()
        for _, _, line in ndjson_lines(clean_cohort / site):
            r = orjson.loads(line)
            if r["resourceType"] == "Observation":
                systems.add(r["code"]["coding"][0]["system"])
                units.add(r.get("valueQuantity", {}).get("unit", ""))
        return systems, units

    a_systems, a_units = codes_units("site_a")
    b_systems, b_units = codes_units("site_b")
    c_systems, c_units = codes_units("site_c")
    assert "http://loinc.org" in a_systems and "http://loinc.org" not in b_systems
    assert {"K/uL", "g/dL", "pg/mL", "degF"} <= a_units
    assert {"/uL", "g/L", "ng/L", "℃"} <= b_units
    assert {"10^9/L", "mmol/L", "ng/mL", "µkat/L"} <= c_units
    d_systems, d_units = codes_units("site_d")
    assert "http://loinc.org" not in d_systems
    assert {"×10⁹/L", "g/L", "pg/mL", "℃", "μmol/L", "μg/L", "％", "×10⁶/kg"} <= d_units


def test_site_b_speaks_chinese_and_records_grades_as_observations(clean_cohort: Path) -> None:
    displays, grade_values = set(), []
    for _, _, line in ndjson_lines(clean_cohort / "site_b"):
        r = orjson.loads(line)
        displays.add(r.get("code", {}).get("text", ""))
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "CRS-GRADE":
            grade_values.append(r.get("valueInteger", r.get("valueString")))
    assert "细胞因子释放综合征" in displays and "CAR-T细胞回输" in displays
    assert any(isinstance(v, int) for v in grade_values)
    assert any(isinstance(v, str) and v.endswith("级") for v in grade_values)


def test_realistic_messiness_is_present(clean_cohort: Path) -> None:
    found = Counter()
    for site in SITES:
        seen_lines = set()
        for _, _, line in ndjson_lines(clean_cohort / site):
            if line in seen_lines:
                found["repeated line"] += 1
            seen_lines.add(line)
            r = orjson.loads(line)
            q = r.get("valueQuantity", {})
            if "comparator" in q or str(r.get("valueString", "")).startswith("<"):
                found["comparator"] += 1
            if q and "unit" not in q:
                found["missing unit"] += 1
            status = r.get("status") or r.get("verificationStatus", {}).get("coding", [{}])[0].get(
                "code")
            if status == "entered-in-error":
                found["entered-in-error"] += 1
            if r.get("meta", {}).get("versionId") == "2":
                found["amended"] += 1
    for kind in ("repeated line", "comparator", "missing unit", "entered-in-error", "amended"):
        assert found[kind] > 0, kind


def test_injected_lines_are_bad_in_the_way_listed(cohort: Path) -> None:
    with (cohort / "truth" / "injected.csv").open() as fh:
        injected = list(csv.DictReader(fh))
    assert {i["kind"] for i in injected} == {"broken_json", "not_a_resource",
                                             "invalid_resource", "unknown_unit"}
    lines = {(site, name, n): line for site in SITES
             for name, n, line in ndjson_lines(cohort / site)}
    for item in injected:
        line = lines[(item["site"], item["file"], int(item["line_no"]))]
        if item["kind"] == "broken_json":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(line)
            continue
        resource = orjson.loads(line)
        if item["kind"] == "not_a_resource":
            assert "resourceType" not in resource
        elif item["kind"] == "invalid_resource":
            with pytest.raises(ValueError):
                get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        else:
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            assert resource["valueQuantity"]["unit"] in UNKNOWN_UNITS


def test_bad_rate_does_not_change_the_truth(cohort: Path, clean_cohort: Path) -> None:
    assert ((cohort / "truth" / "episodes.csv").read_bytes()
            == (clean_cohort / "truth" / "episodes.csv").read_bytes())


def test_rounds_are_consecutive_and_months_apart(truth: list[dict[str, str]]) -> None:
    by_patient = defaultdict(list)
    for row in truth:
        by_patient[(row["site"], row["patient_id"])].append(row)
    counts = Counter(len(rows) for rows in by_patient.values())
    assert counts[1] and counts[2]
    for rows in by_patient.values():
        assert [int(r["round"]) for r in rows] == list(range(1, len(rows) + 1))
        dates = [date.fromisoformat(r["infusion_date"]) for r in rows]
        assert all((b - a).days >= 120 for a, b in zip(dates, dates[1:], strict=False))


def test_truth_is_filled_where_defined(truth: list[dict[str, str]]) -> None:
    for row in truth:
        assert row["crs_max_grade"] in {"0", "1", "2", "3", "4"}
        assert (row["crs_any"] == "True") == (row["crs_max_grade"] != "0")
        assert row["relapse_site_before"] in {"marrow", "marrow+cns", "marrow+testis",
                                              "cns", "testis"}
        assert (row["post_event_type"] != "") == (row["round"] == "2")
        if row["site"] == "site_c":
            assert row["dose"] == ""  # site C records no structured dose
    assert any(r["post_event_type"] == "relapse" for r in truth)


def _patient_observations(folder: Path, code: str) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for _, _, line in ndjson_lines(folder):
        r = orjson.loads(line)
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == code:
            out[r["subject"]["reference"].split("/")[1]].append(r)
    return out


def test_truth_il6_peak_matches_the_emitted_observations(clean_cohort: Path,
                                                         truth: list[dict[str, str]]) -> None:
    """An independent reading of site A's NDJSON reproduces the truth's IL-6 peaks."""
    il6 = _patient_observations(clean_cohort / "site_a", "26881-3")
    checked = 0
    for row in truth:
        if row["site"] != "site_a" or not row["il6_peak"]:
            continue
        t0 = date.fromisoformat(row["infusion_date"])
        hi = min(14, int(row["limit_day"]))
        values = [o["valueQuantity"]["value"] for o in il6[row["patient_id"]]
                  if 0 <= (date.fromisoformat(o["effectiveDateTime"][:10]) - t0).days <= hi
                  and o["status"] != "entered-in-error" and "unit" in o["valueQuantity"]
                  and "comparator" not in o["valueQuantity"]]
        assert max(values) == pytest.approx(float(row["il6_peak"]))
        checked += 1
    assert checked > 10


def test_truth_anc_nadir_matches_site_b_per_microlitre(clean_cohort: Path,
                                                       truth: list[dict[str, str]]) -> None:
    """Site B reports ANC per uL; the truth is in 10*9/L."""
    anc = _patient_observations(clean_cohort / "site_b", "NEUT#")
    checked = 0
    for row in truth:
        if row["site"] != "site_b":
            continue
        t0 = date.fromisoformat(row["infusion_date"])
        hi = min(28, int(row["limit_day"]))
        values = [o["valueQuantity"]["value"] / 1000 for o in anc[row["patient_id"]]
                  if 0 <= (date.fromisoformat(o["effectiveDateTime"][:10]) - t0).days <= hi
                  and o["status"] != "entered-in-error"
                  and o["valueQuantity"].get("unit") == "/uL"]
        assert min(values) == pytest.approx(float(row["anc_nadir"]))
        checked += 1
    assert checked > 10


def _local_day(when: str) -> date:
    """site_d's local day of a dateTime it wrote in UTC."""
    return datetime.fromisoformat(when).astimezone(SITE_D_ZONE).date()


def test_site_d_writes_utc_times_and_early_mornings_fall_on_the_previous_utc_day(
        clean_cohort: Path) -> None:
    times = []
    for _, _, line in ndjson_lines(clean_cohort / "site_d"):
        r = orjson.loads(line)
        for key in ("effectiveDateTime", "onsetDateTime", "recordedDate", "performedDateTime",
                    "deceasedDateTime"):
            if "T" in r.get(key, ""):
                times.append(r[key])
        times += [v for v in r.get("performedPeriod", {}).values() if "T" in v]
    assert times and all(t.endswith("Z") for t in times)
    shifted = [t for t in times if _local_day(t) != date.fromisoformat(t[:10])]
    assert shifted and all(t[11:13] >= "16" for t in shifted)  # 00:00-07:59 in Shanghai


def test_site_d_writes_text_results_as_its_lis_prints_them(clean_cohort: Path) -> None:
    """Censored cytokines as '＜1.0' (the unit in the reference range) or '<1.0 pg/mL', a
    negative MRD as a word."""
    texts: dict[str, set[str]] = defaultdict(set)
    for _, _, line in ndjson_lines(clean_cohort / "site_d"):
        r = orjson.loads(line)
        if r["resourceType"] == "Observation" and "valueString" in r:
            texts[r["code"]["coding"][0]["code"]].add(r["valueString"])
            if r["valueString"].startswith("＜"):
                assert r["referenceRange"][0]["high"]["unit"] == "pg/mL"
    assert texts["MRD"] == {"阴性", "未检出"}
    cytokine_texts = set().union(*(texts[c] for c in ("IL-2", "IL-4", "IL-6", "IL-10",
                                                      "IFN-γ", "IL-17A", "TNF-α")))
    assert {"＜1.0", "<1.0 pg/mL"} <= cytokine_texts


def test_site_d_anc_is_the_wbc_times_the_neutrophil_percentage_of_one_sample(
        clean_cohort: Path, truth: list[dict[str, str]]) -> None:
    """site_d reports no absolute count: the truth's ANC nadir is WBC x % / 100 of the
    results sharing one effective time, on the local day of their UTC time."""
    assert not _patient_observations(clean_cohort / "site_d", "NEUT#")

    def usable(code: str, unit: str) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = defaultdict(dict)
        for patient, rows in _patient_observations(clean_cohort / "site_d", code).items():
            for o in rows:
                if o["status"] != "entered-in-error" and o["valueQuantity"].get("unit") == unit:
                    out[patient][o["effectiveDateTime"]] = o["valueQuantity"]["value"]
        return out

    wbc, pct = usable("WBC", "×10⁹/L"), usable("NEUT%", "%")
    checked = 0
    for row in truth:
        if row["site"] != "site_d":
            continue
        t0 = date.fromisoformat(row["infusion_date"])
        hi = min(28, int(row["limit_day"]))
        patient = row["patient_id"]
        values = [wbc[patient][t] * pct[patient][t] / 100 for t in wbc[patient]
                  if t in pct[patient] and 0 <= (_local_day(t) - t0).days <= hi]
        assert min(values) == pytest.approx(float(row["anc_nadir"]), rel=1e-12)
        checked += 1
    assert checked > 10


def test_gzip_output(tmp_path: Path) -> None:
    generate(tmp_path, patients=2, seed=1, sites=["site_a"], compress=True)
    files = list((tmp_path / "site_a").glob("*.ndjson.gz"))
    assert files
    for path in files:
        with gzip.open(path) as fh:
            assert fh.readline().startswith(b"{")


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    generate(tmp_path, patients=1, seed=1, sites=["site_a"])
    with pytest.raises(UsageError, match="--force"):
        generate(tmp_path, patients=1, seed=1, sites=["site_a"])
    generate(tmp_path, patients=1, seed=2, sites=["site_a"], overwrite=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"patients": 0}, "--patients"), ({"bad_rate": 0.9}, "--bad-rate"),
    ({"sites": ["site_x"]}, "unknown site profile"), ({"sites": []}, "one or more"),
])
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        generate(tmp_path, **kwargs)


def test_split_patients() -> None:
    assert split_patients(9, 2) == [5, 4]
    assert split_patients(100_000, 3) == [33334, 33333, 33333]
    assert sum(split_patients(7, 7)) == 7
