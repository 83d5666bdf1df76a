"""The SQL models state each rule once and take clinical facts from ``ref.*``, never literals.

These read the model files as text: a status code, a window selection or the grade-0 rule
written into a second model would be a second place to change when the study changes.
"""

from __future__ import annotations

import csv
import re
from importlib import resources
from pathlib import Path

MODELS = Path(str(resources.files("cartfhir.transform").joinpath("models")))
TERMINOLOGY = Path(str(resources.files("cartfhir.transform").joinpath("terminology")))


def model_sql() -> dict[str, str]:
    return {str(p.relative_to(MODELS)): p.read_text(encoding="utf-8")
            for p in sorted(MODELS.rglob("*.sql"))}


def terminology(name: str, column: str) -> set[str]:
    with (TERMINOLOGY / name).open(encoding="utf-8") as rows:
        return {row[column] for row in csv.DictReader(rows)}


def test_no_model_names_a_fhir_status() -> None:
    # 'relapse' is a clinicalStatus and a study concept; concepts are the models' words.
    statuses = (terminology("record_statuses.csv", "status")
                - terminology("concepts.csv", "concept"))
    found = {(name, status) for name, sql in model_sql().items() for status in statuses
             if f"'{status}'" in sql}
    assert not found, "statuses belong in terminology/record_statuses.csv (ref.record_status)"


def test_only_episode_lab_places_labs_in_windows() -> None:
    # cohort.episode_lab lists each result's windows; the models that read labs by window
    # pick from that list instead of joining cohort.episode_window again.
    both = [name for name, sql in model_sql().items() if "cohort.episode_window" in sql
            and ("cohort.episode_lab" in sql or "harmonized.lab" in sql)]
    assert both == ["cohort/episode_lab.sql"]


def test_the_grade_0_rule_is_written_once() -> None:
    # Once per engine: in the DuckDB macro (macros.sql) and in its Spark twin
    # (macros.spark.sql); no model, nor a model's .spark.sql override, spells it again.
    places = [name for name, sql in model_sql().items()
              for _ in re.finditer(r"\bgrade\s*=\s*0\b", sql)]
    assert sorted(places) == ["macros.spark.sql", "macros.sql"]
    # and the twins state the same rule
    rule = re.compile(r"NOT\s*\(\s*source_type\s*=\s*'Observation'\s+AND\s+grade\s*=\s*0\s*\)")
    for name in places:
        assert len(rule.findall(model_sql()[name])) == 1, name
