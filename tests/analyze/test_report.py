"""Overriding a window and a threshold changes the words as well as the numbers.

The paper's cohort is analysed with ``early_infection: [0, 21]`` and
``severe_min_grade: 4``: the report, the CLI summary and the exports
(analysis.endpoint and its CSV) say "days 0-21" and ">= 4", never the defaults.
"""

from __future__ import annotations

import html
from pathlib import Path

import duckdb
import pytest

from cartfhir import api
from cartfhir.analyze.figures import typeset
from cartfhir.cli import run_cli
from tests.testbed import write_config

from .paper_cohort import build

OVERRIDES = {"transform": {"windows": {"early_infection": [0, 21]},
                           "thresholds": {"severe_min_grade": 4}}}
NEW = ["Early infection (days 0-21)", "Severe neutropenia (CTCAE >= 4)", "CRS grade >= 4"]
OLD = ["Early infection (days 0-30)", "CTCAE >= 3", "CRS grade >= 3"]


@pytest.fixture(scope="module")
def overridden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("overridden")
    build(root / "data" / "paper")
    path = write_config(root, ["paper"], **OVERRIDES)
    api.run(api.load_config(path))
    return path


def _early_infection_label(text: str) -> str:
    return next(line for line in text.splitlines() if "Early infection" in line)


def test_the_report_says_the_windows_and_thresholds_in_use(overridden: Path) -> None:
    text = html.unescape((overridden.parent / "out" / "report.html").read_text("utf-8"))
    assert all(typeset(words) in text for words in NEW)  # the report shows >= as ≥
    assert not any(typeset(words) in text for words in OLD)


def test_the_exports_say_them_too(overridden: Path) -> None:
    out = overridden.parent / "out"
    con = duckdb.connect(str(out / "t.duckdb"), read_only=True)
    labels = dict(con.execute("SELECT key, label FROM analysis.endpoint").fetchall())
    # the numbers follow the threshold: crs_grade3plus counts grade >= 4 (the key stays)
    events = con.execute("SELECT cart1_events FROM analysis.comparison "
                         "WHERE site = 'all' AND endpoint = 'crs_grade3plus'").fetchone()[0]
    grade4 = con.execute("SELECT count(*) FILTER (WHERE crs_max_grade >= 4) "
                         "FROM cohort.episode_endpoints WHERE round = 1").fetchone()[0]
    con.close()
    assert labels["early_infection"] == NEW[0] and labels["severe_neutropenia"] == NEW[1]
    assert labels["crs_grade3plus"] == NEW[2]
    assert events == grade4 == 0  # the paper cohort has one grade-3 CRS after CART1
    exported = (out / "analysis" / "endpoint.csv").read_text("utf-8")
    assert all(words in exported for words in NEW)
    assert not any(words in exported for words in OLD)


def test_the_cli_summary_says_them(overridden: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["analyze", "--config", str(overridden)]) == 0
    shown = capsys.readouterr().out
    assert "days 0-21" in _early_infection_label(shown)
    assert "CTCAE >= 4" in shown
    assert not any(words in shown for words in OLD)
