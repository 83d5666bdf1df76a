"""Helpers for pooling tests: truth-based analysis, identifier scans, file hashes, and
hostile copies of genuine packages pooled through the CLI."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from cartfhir.analyze import registry
from cartfhir.analyze.compare import comparison, endpoint_sql
from cartfhir.cli import run_cli
from tests.testbed import ndjson_source, write_config

SITES = ["site_a", "site_c"]  # the sites of the shared pooling fixture (conftest.packaged)


def site_a_config(packaged: dict, folder: Path, **extra: Any) -> Path:
    """folder/config.yaml for site_a of the shared run (its data, keys and database, by
    absolute path); ``extra`` as in testbed.config_dict (``site_a={...}`` updates the site)."""
    root = packaged["root"]
    site = {"source": ndjson_source(root / "data" / "site_a"),
            "pseudonym_key": {"file": str(root / "secrets" / "site_a.key")},
            "signing_key": {"file": str(root / "site_keys" / "site_a.key")},
            **extra.pop("site_a", {})}
    extra.setdefault("output", {"duckdb": str(root / "out" / "t.duckdb")})
    return write_config(folder, ["site_a"], write_keys=False, site_a=site, **extra)


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
    # the values need the thresholds; the labels' windows do not matter here
    thresholds = dict(con.execute("SELECT name, value FROM ref.threshold").fetchall())
    rendered = registry.render(registry.load(), registry.defaults().windows, thresholds)
    frame = con.execute(endpoint_sql(rendered.endpoints, rendered.rounds)).df()
    con.close()
    return comparison(frame, rendered.endpoints, rendered.rounds)


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


# --- hostile packages: edit a copy of a genuine package, then pool it through the CLI

def unpack(package: Path, to: Path) -> Path:
    """A folder copy of a package (folder or zip) to edit; the test's own files, so trusted."""
    if package.is_dir():
        shutil.copytree(package, to)
    else:
        with zipfile.ZipFile(package) as zf:
            zf.extractall(to)
    return to


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def edit_manifest(folder: Path, edit: Callable[[dict], object]) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    edit(manifest)
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def rewrite_table(folder: Path, table: str, select: str) -> None:
    """Replace a table's Parquet with ``select`` (over ``t``, the old rows) and fix its hashes,
    as someone who edits a package and recomputes the checksums would."""
    file = folder / f"{table}.parquet"
    old = folder / "old.parquet"
    file.rename(old)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{old}')")
    con.execute(f"COPY ({select}) TO '{file}' (FORMAT parquet)")
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{file}')").fetchone()[0]
    con.close()
    old.unlink()
    rehash(folder, table, rows)


def rehash(folder: Path, table: str, rows: int | None = None) -> None:
    def fix(manifest: dict) -> None:
        entry = manifest["tables"][table]
        entry["sha256"] = sha256(folder / entry["file"])
        if rows is not None:
            entry["rows"] = rows
    edit_manifest(folder, fix)


def zip_folder(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    return out


def files_under(root: Path) -> dict[str, str]:
    """Every file under root with its SHA-256: what a refused pool must leave unchanged."""
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def pool_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run 'cartfhir pool ARGS' as a user would; the exit code and what went to stderr."""
    capsys.readouterr()
    code = run_cli(["pool", *args])
    return code, capsys.readouterr().err


def assert_refused(args: list[str], watch: Path, capsys: pytest.CaptureFixture[str],
                   match: str) -> str:
    """The pool is refused with a clear message, and no file under ``watch`` changed or
    appeared (the pooled database included)."""
    before = files_under(watch)
    code, err = pool_cli(args, capsys)
    assert code == 1, err
    assert "internal error" not in err
    assert re.search(match, err), err
    assert files_under(watch) == before
    return err
