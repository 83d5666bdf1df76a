"""The report's methods: definitions, windows, thresholds, grading, tests and software.

Nothing here is restated: the endpoint definitions and EFS definitions come from the
registry, the windows, thresholds and lab grade cut-offs from the database's own ref.*
tables (what its data was built with), the tests from the comparison table's rows
(their human names from ``stats.TEST_NAMES``), and the versions from the installed
packages.
"""

from __future__ import annotations

import platform
from importlib import metadata

import duckdb
import pandas as pd

from cartfhir.analyze.registry import Registry
from cartfhir.analyze.report_tables import Table
from cartfhir.analyze.stats import test_name
from cartfhir.catalog.sidecars import load_sidecars
from cartfhir.config import POOLED_SITE

# The packages whose code computes or draws the report's numbers.
PACKAGES = ("cartfhir", "duckdb", "pandas", "numpy", "scipy", "statsmodels", "matplotlib")


def software() -> Table:
    """Python and the installed versions of PACKAGES."""
    rows = [["Python", platform.python_version()]]
    for name in PACKAGES:
        try:
            rows.append([name, metadata.version(name)])
        except metadata.PackageNotFoundError:
            rows.append([name, "not installed"])
    return Table("software", "Software", pd.DataFrame(rows, columns=["package", "version"]))


def definitions(registry: Registry) -> Table:
    """Every endpoint: its label, kind and the expression over cohort.episode_endpoints."""
    frame = pd.DataFrame(
        [[registry.sections[e.section], e.label, e.kind, e.value,
          "yes" if e.paired else "no"] for e in registry.endpoints],
        columns=["section", "endpoint", "kind", "definition (cohort.episode_endpoints)",
                 "paired test"])
    return Table("definitions", "Endpoint definitions", frame, classes={
        "definition (cohort.episode_endpoints)": "code"})


def _ref(con: duckdb.DuckDBPyConnection, table: str, sql: str, key: str,
         columns: list[str]) -> Table:
    caption = load_sidecars()[table][1].description or table
    return Table(key, f"{caption} ({table})",
                 pd.DataFrame(con.execute(sql).fetchall(), columns=columns))


def reference_tables(con: duckdb.DuckDBPyConnection) -> list[Table]:
    """The windows, thresholds and lab grade cut-offs this database was built with."""
    return [
        _ref(con, "ref.window", "SELECT name, lo, hi FROM ref.window ORDER BY name",
             "windows", ["window", "from day", "to day"]),
        _ref(con, "ref.threshold", "SELECT name, value FROM ref.threshold ORDER BY name",
             "thresholds", ["threshold", "value"]),
        _ref(con, "ref.grade_cut", "SELECT concept, basis, direction, bound, grade "
             "FROM ref.grade_cut ORDER BY concept, grade", "grade_cuts",
             ["concept", "basis", "direction", "bound", "grade"]),
    ]


def tests_used(table: pd.DataFrame, registry: Registry) -> Table:
    """Which tests ran for each kind of endpoint (pooled rows), by their human names."""
    pooled = table[table["site"] == POOLED_SITE]
    rows = []
    for kind in dict.fromkeys(e.kind for e in registry.endpoints):
        part = pooled[pooled["kind"] == kind]
        unpaired = sorted({test_name(t) for t in part["test"].dropna()})
        paired = sorted({test_name(t) for t in part["paired_test"].dropna()})
        rows.append([kind, "; ".join(unpaired) or "–", "; ".join(paired) or "–"])
    return Table("tests", "Tests (two-sided)", pd.DataFrame(
        rows, columns=["endpoint kind", "unpaired test", "paired test (patients with both "
                       "rounds)"]))


def later_episodes(con: duckdb.DuckDBPyConnection, registry: Registry) -> int:
    """Episodes after the later round compared (cohort.episode), which no table compares."""
    return con.execute("SELECT count(*) FROM cohort.episode WHERE round > ?",
                       [max(registry.rounds)]).fetchone()[0]


def later_episodes_note(con: duckdb.DuckDBPyConnection, registry: Registry) -> str:
    """The sentence saying how many later episodes were left out, or "" when none were."""
    n = later_episodes(con, registry)
    last = max(registry.rounds)
    return (f"Episodes after infusion round {last} (round ≥ {last + 1}): {n}, not compared "
            "(the tables compare CART1 and CART2 only)." if n else "")


def grading(registry: Registry) -> Table:
    """The grading scale of each toxicity endpoint and how its grade is obtained."""
    return Table("grading", "Grading scales", pd.DataFrame(
        [[g.name, g.scale, g.how] for g in registry.grading],
        columns=["endpoint", "grading scale", "how the grade is obtained"]))


def response(registry: Registry) -> Table:
    """The response definitions as evaluated, with the criteria the data cannot check."""
    return Table("response", "Response definitions", pd.DataFrame(
        [[r.name, r.definition, r.not_evaluated or "–"] for r in registry.response],
        columns=["response", "evaluated as", "not evaluated"]))


def efs_definitions(registry: Registry) -> Table:
    """The EFS definitions: events in tie-break order and the censoring date."""
    rows = [[d.name, d.description,
             ", ".join(registry.efs_labels.get(e.type, e.type) for e in d.events), d.censor]
            for d in registry.efs]
    return Table("efs_definitions", "Event-free survival definitions", pd.DataFrame(
        rows, columns=["definition", "description", "events (same-day ties: first listed)",
                       "censored at"]))
