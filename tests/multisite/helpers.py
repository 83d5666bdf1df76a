"""Helpers for pooling tests: truth-based analysis, identifier scans, file hashes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pandas as pd

from cartfhir.analyze.compare import comparison, endpoint_sql, load_endpoints


def truth_comparison(truth_files: list[Path], thresholds: pd.DataFrame) -> pd.DataFrame:
    """analysis.comparison computed from the generator's truth instead of the pipeline."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA cohort")
    con.execute("CREATE SCHEMA ref")
    con.register("thresholds", thresholds)
    con.execute("CREATE TABLE ref.threshold AS SELECT * FROM thresholds")
    files = ", ".join(f"'{f}'" for f in truth_files)
    # The truth divides by the site's factor (5.199999999999999); the pipeline rounds to
    # 9 decimals, so the truth does too, or float noise would change ties and p-values.
    casts = ", ".join(
        (f"round(TRY_CAST(nullif({c}, '') AS DOUBLE), 9) AS {c}" if t == "DOUBLE" else
         f"TRY_CAST(nullif({c}, '') AS {t}) AS {c}") for c, t in _types().items())
    con.execute(f"CREATE TABLE cohort.episode_endpoints AS SELECT * REPLACE "
                f"(CAST(round AS INTEGER) AS round, {casts}), patient_id AS patient_key "
                f"FROM read_csv([{files}], header = true, all_varchar = true)")
    endpoints, _ = load_endpoints()
    frame = con.execute(endpoint_sql(endpoints, (1, 2))).df()
    con.close()
    return comparison(frame, endpoints)


def _types() -> dict[str, str]:
    booleans = ["crs_any", "cres_any", "severe_neutropenia", "severe_thrombocytopenia",
                "severe_anemia", "organ_injury_any", "early_infection", "late_infection",
                "lymphodepletion_infection", "febrile_neutropenia", "mrd_negative",
                "mrd_negative_cr"]
    doubles = ["dose", "il2_peak", "il4_peak", "il6_peak", "il10_peak", "il17a_peak",
               "ifng_peak", "tnfa_peak", "anc_nadir", "platelet_nadir", "hemoglobin_nadir"]
    integers = ["age_years", "crs_max_grade", "cres_max_grade", "liver_injury_grade",
                "kidney_injury_grade", "coagulopathy_grade", "early_infection_n",
                "late_infection_n"]
    return ({c: "BOOLEAN" for c in booleans} | {c: "DOUBLE" for c in doubles}
            | {c: "INTEGER" for c in integers})


def assert_same_comparison(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    got = got[got["site"] == "all"].set_index("endpoint")
    expected = expected[expected["site"] == "all"].set_index("endpoint")
    problems = []
    for endpoint, row in expected.iterrows():
        for column, value in row.items():
            other = got.loc[endpoint, column]
            if pd.isna(value) and pd.isna(other):
                continue
            if isinstance(value, float | int) and not isinstance(value, bool):
                if pd.isna(other) or abs(float(value) - float(other)) > 1e-9 * max(
                        1.0, abs(float(value))):
                    problems.append(f"{endpoint}.{column}: truth {value}, pooled {other}")
            elif value != other:
                problems.append(f"{endpoint}.{column}: truth {value!r}, pooled {other!r}")
    assert not problems, "\n".join(problems[:30])


def identifiers(data_folder: Path) -> set[str]:
    """Every identifying string of the synthetic cohort: ids, MRNs, names, births, addresses."""
    found: set[str] = set()
    for file in data_folder.rglob("*.ndjson"):
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(r, dict) or "id" not in r:
                continue
            found.add(str(r["id"]))
            if r.get("resourceType") == "Patient":
                found |= {i["value"] for i in r.get("identifier", []) if "value" in i}
                for n in r.get("name", []):
                    found |= set(n.get("given", [])) | ({n["family"]} if "family" in n else set())
                if "birthDate" in r:
                    found.add(r["birthDate"])
                for a in r.get("address", []):
                    found |= set(a.get("line", [])) | {a.get("postalCode", "")}
                found |= {t["value"] for t in r.get("telecom", [])}
    return {f for f in found if f}


def leaked(package: Path, secrets: set[str]) -> list[str]:
    """Identifiers found in any cell of any Parquet file of a package folder."""
    con = duckdb.connect()
    found = []
    for file in sorted(package.glob("*.parquet")):
        for row in con.execute(f"SELECT * FROM read_parquet('{file}')").fetchall():
            for cell in row:
                values = cell if isinstance(cell, list) else [cell]
                for value in values:
                    text = str(value)
                    if text in secrets or any(s in text for s in secrets if len(s) >= 8):
                        found.append(f"{file.name}: {text}")
    con.close()
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
