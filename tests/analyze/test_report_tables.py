"""The report's tables: what a row says when a group has no data or no paired test,
comparison signs as a reader writes them, and the CSVs beside the report (one table per
file, whole-number counts, the n of each group in its own column)."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from cartfhir.analyze import registry
from cartfhir.analyze import report_tables as tables
from cartfhir.config import POOLED_SITE


@pytest.fixture(scope="module")
def run(two_site_run):
    config, result = two_site_run
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    reg = registry.effective(con)
    yield con, reg, con.execute("SELECT * FROM analysis.comparison").df(), result
    con.close()


def _row(frame: pd.DataFrame, label: str) -> pd.Series:
    return frame[frame["endpoint"] == label].iloc[0]


def test_a_row_without_data_names_no_test_and_no_pairs(run) -> None:
    con, reg, table, _ = run
    empty = table[(table["cart1_n"] == 0) & (table["site"] == POOLED_SITE)]
    assert not empty.empty  # the run has no cytokine results
    endpoint = next(e for e in reg.endpoints if e.key == empty["endpoint"].iloc[0])
    frame = tables.section_tables(con, table, reg, endpoint.section, None)[POOLED_SITE].frame
    row = _row(frame, endpoint.label)
    assert list(row[["p", "test", "paired p", "paired test", "pairs"]]) == ["–"] * 5


def test_pairs_are_shown_only_beside_a_paired_test(run) -> None:
    con, reg, table, _ = run
    unpaired = next(e for e in reg.endpoints if not e.paired)
    paired = next(e for e in reg.endpoints if e.paired and e.section == unpaired.section)
    frame = tables.section_tables(con, table, reg, unpaired.section, None)[POOLED_SITE].frame
    assert _row(frame, unpaired.label)["pairs"] == "–"
    assert _row(frame, unpaired.label)["paired test"] == "–"
    shown = _row(frame, paired.label)
    assert shown["paired test"] != "–" and int(shown["pairs"]) > 0


def test_comparison_signs_are_typeset_in_the_html_only() -> None:
    frame = pd.DataFrame({"endpoint": ["CRS grade >= 3", "ANC <= 0.5"]})
    table = tables.Table("t", "grade >= 3", frame)
    html = tables.to_html(table)
    assert "≥ 3" in html and "≤ 0.5" in html and "&gt;=" not in html and "&lt;=" not in html
    assert list(table.frame["endpoint"]) == ["CRS grade >= 3", "ANC <= 0.5"]  # data as is
    code = tables.Table("t", "", frame, classes={"endpoint": "code"})
    assert "CRS grade &gt;= 3" in tables.to_html(code)  # an expression is shown as written


def test_a_per_site_csv_frame_keeps_the_n_of_each_group() -> None:
    frame = pd.DataFrame([["dose", "1 (0–2)", "1 (0–1)"]],
                         columns=["endpoint", "CART1 (n=9)", "CART2 (n=<5)"])
    out = tables.csv_frame(frame, "site_a")
    assert list(out.columns) == ["site", "endpoint", "CART1", "CART2", "cart1_n", "cart2_n"]
    assert out.iloc[0].tolist() == ["site_a", "dose", "1 (0–2)", "1 (0–1)", 9, "<5"]


def test_the_csvs_beside_the_report_are_one_table_each_with_whole_counts(run) -> None:
    *_, result = run
    folder = result.analysis.report.parent / "tables"
    for path in folder.glob("*.csv"):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        blank = [c for c in frame.columns if (frame[c] == "").all()]
        assert blank == [], (path.name, blank)  # no column from another table
    cohort = pd.read_csv(folder / "cohort.csv", dtype=str)
    counts = cohort.drop(columns=["round", "median age (y)"])
    assert counts.map(str.isdigit).all().all(), cohort  # 40, not 40.0
    assert list(cohort["episodes"]) == ["18", "18"]
    section = pd.read_csv(folder / "characteristics.csv", dtype=str)
    assert {"site", "endpoint", "cart1_n", "cart2_n"} <= set(section.columns)
    assert set(section.loc[section["site"] == POOLED_SITE, "cart1_n"]) == {"18"}
    assert all(v.isdigit() or v == "–" for v in section["pairs"]), list(section["pairs"])
