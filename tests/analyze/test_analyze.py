"""analyze's exports: which tables leave (build.yaml's analysis stage) and in what order
(each table's grain, from its sidecar), whatever order the rows were written in."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb

from cartfhir.analyze import _export, export_tables, read_in_grain
from cartfhir.analyze.compare import read_comparison
from cartfhir.catalog.sidecars import load_sidecars, table_ddl
from cartfhir.graph import load_graph

SITES = ["site_b", "all", "site_a"]


def _analysis_db() -> duckdb.DuckDBPyConnection:
    """Every exported analysis table, empty but for rows written in a scrambled order."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA analysis")
    for table in export_tables():
        con.execute(f"CREATE TABLE {table} ({table_ddl(table)})")
    con.executemany("INSERT INTO analysis.endpoint (position, key, kind) VALUES (?, ?, ?)",
                    [(2, "age", "continuous"), (3, "crs_any", "proportion"),
                     (1, "dose", "continuous")])
    con.executemany("INSERT INTO analysis.comparison (site, endpoint, kind) VALUES (?, ?, ?)",
                    [(s, e, "continuous") for e in ("crs_any", "dose", "age") for s in SITES])
    con.executemany("INSERT INTO analysis.efs (site, patient_key, definition) VALUES (?, ?, ?)",
                    [(s, p, d) for d in ("standard", "paper") for p in ("p2", "p1")
                     for s in SITES])
    return con


def test_the_exported_tables_are_the_analysis_stage_but_pooled_ones() -> None:
    stage = load_graph().stage("analysis", pooled=True)
    assert export_tables() == [n.table for n in stage if n.when != "pooled"]
    assert "analysis.heterogeneity" not in export_tables()
    assert "analysis.efs_curve" in export_tables()


def test_rows_come_in_grain_order_whatever_the_insertion_order() -> None:
    con = _analysis_db()
    rows = read_in_grain(con, "analysis.efs")[["site", "patient_key", "definition"]]
    expected = sorted((s, p, d) for d in ("standard", "paper") for p in ("p2", "p1")
                      for s in SITES)
    assert [tuple(r) for r in rows.itertuples(index=False)] == expected


def test_the_comparison_is_pooled_first_then_by_site_and_endpoint_position() -> None:
    rows = read_comparison(_analysis_db())
    assert list(zip(rows["site"], rows["endpoint"], strict=True)) == [
        (s, e) for s in ("all", "site_a", "site_b") for e in ("dose", "age", "crs_any")]


def test_exports_follow_the_grain_and_keep_per_event_rows_in_with_k(tmp_path: Path) -> None:
    con = _analysis_db()
    shown = read_comparison(con)
    written = _export(con, tmp_path / "a", shown, None)
    names = {p.name for p in written}
    assert {f"{t.split('.')[1]}.csv" for t in export_tables()} <= names
    with (tmp_path / "a" / "efs.csv").open() as handle:
        efs = [(r["site"], r["patient_key"], r["definition"]) for r in csv.DictReader(handle)]
    assert efs == sorted(efs)
    with (tmp_path / "a" / "endpoint.csv").open() as handle:
        assert [r["key"] for r in csv.DictReader(handle)] == ["age", "crs_any", "dose"]
    written = {p.name for p in _export(con, tmp_path / "k", shown, 5)}
    # per-patient rows and the Kaplan-Meier steps (one per event) stay at the site
    assert not {"efs.csv", "efs_curve.csv", "efs.json", "efs_curve.json"} & written
    assert {"comparison.csv", "efs_summary.csv", "count_dynamics.csv"} <= written


def test_a_pooled_database_exports_its_heterogeneity_too() -> None:
    assert export_tables(pooled=True) == [n.table for n in load_graph().stage("analysis",
                                                                                pooled=True)]
    assert "analysis.heterogeneity" in export_tables(pooled=True)


def test_the_comparison_sidecar_names_every_test_the_code_can_record() -> None:
    """comparison.yml's test/paired_test descriptions list stats.TEST_NAMES' codes, and say
    paired_test is null for endpoints that are never paired (paired: false)."""
    from cartfhir.analyze.stats import TEST_NAMES

    columns = {c.name: c.description for c in load_sidecars()["analysis.comparison"][1].columns}
    paired = {n for n in TEST_NAMES if n.startswith(("mcnemar", "wilcoxon"))}
    assert all(n in columns["paired_test"] for n in paired)
    assert all(n in columns["test"] for n in set(TEST_NAMES) - paired)
    assert "paired: false" in columns["paired_test"]
