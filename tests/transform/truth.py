"""Compare cohort.episode_endpoints with the generator's truth, column by column."""

from __future__ import annotations

import csv
import math
from collections.abc import Collection
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from cartfhir.config import Config
from cartfhir.synth.truth import TRUTH_COLUMNS
from cartfhir.transform.identity import patient_key

IDENTITY = ("site", "patient_id", "patient_index", "round")
# The quarantine reasons a record gets for how it is written rather than for what it is: a
# unit spelling, a result written as text (a comparator, a word), a neutrophil percentage
# taken for a count (its '%' is not convertible to 10*9/L). The synthetic sites write only
# spellings the pipeline reads, so none of these may appear (bar injected unknown units).
SPELLING_REASONS = ("unit_not_convertible", "censored_no_unit", "no_detection_limit",
                    "ambiguous_number", "no_value")
NO_LIMIT = "10000"  # truth's limit_day when nothing ends the episode; the table has null


def _same(expected: str, got: Any) -> bool:
    if got is None or (isinstance(got, float) and math.isnan(got)):
        return expected == "" or (expected == NO_LIMIT)
    if expected == "":
        return False
    if isinstance(got, bool):
        return expected == str(got)
    if isinstance(got, date):
        return expected == got.isoformat()
    if isinstance(got, int | float):
        try:
            return math.isclose(float(expected), float(got), rel_tol=1e-9, abs_tol=1e-9)
        except ValueError:
            return False
    return expected == str(got)


def quarantined_for_spelling(config: Config, injected: Collection[str] = ()) -> list[tuple]:
    """qa.quarantine's rows whose reason is a spelling (SPELLING_REASONS), except the
    lines ``injected`` (resource ids) with units no system sends on purpose."""
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    try:
        rows = con.execute(
            "SELECT site, resource_id, concept, reason_code, reason FROM qa.quarantine "
            f"WHERE reason_code IN ({', '.join('?' for _ in SPELLING_REASONS)}) "
            "ORDER BY ALL", list(SPELLING_REASONS)).fetchall()
    finally:
        con.close()
    return [r for r in rows if r[1] not in injected]


def differences(config: Config, truth_file: Path) -> list[str]:
    """Every (episode, column) where the table and the truth disagree, described."""
    secrets = {s.id: s.pseudonym_key.resolve() for s in config.sites if s.pseudonym_key}
    with truth_file.open(encoding="utf-8") as fh:
        truth = list(csv.DictReader(fh))
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    try:
        cursor = con.execute("SELECT * FROM cohort.episode_endpoints")
        names = [d[0] for d in cursor.description]
        table = {(r["site"], r["patient_key"], r["round"]): r
                 for r in (dict(zip(names, row, strict=True)) for row in cursor.fetchall())}
    finally:
        con.close()
    problems = []
    missing_columns = [c for c in TRUTH_COLUMNS if c not in IDENTITY and c not in names]
    if missing_columns:
        problems.append(f"cohort.episode_endpoints lacks columns {missing_columns}")
    seen = set()
    for row in truth:
        key = (row["site"], patient_key(secrets[row["site"]], row["site"], row["patient_id"]),
               int(row["round"]))
        seen.add(key)
        episode = f"{row['site']} patient {row['patient_index']} round {row['round']}"
        got = table.get(key)
        if got is None:
            problems.append(f"{episode}: no episode in cohort.episode_endpoints")
            continue
        for column in TRUTH_COLUMNS:
            if column in IDENTITY or column not in got:
                continue
            if not _same(row[column], got[column]):
                problems.append(
                    f"{episode}, {column}: truth {row[column]!r}, table {got[column]!r}")
    for key in sorted(set(table) - seen):
        problems.append(f"{key[0]} round {key[2]}: episode in the table but not in the truth")
    return problems
