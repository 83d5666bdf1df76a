"""The report's figures, measured with matplotlib's own renderer: no tick label, title or
axis label overlaps another, and every log or symlog axis has several readable labels.

The figures are drawn from a real small run (tests/analyze/conftest.py) and from values
spanning many decades, where crowded or spilling labels would show first.
"""

from __future__ import annotations

import itertools

import duckdb
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from cartfhir.analyze import figures, registry
from cartfhir.analyze.compare import episode_values
from cartfhir.config import POOLED_SITE

REGISTRY = registry.defaults()
SPECS = {f.key: f for f in REGISTRY.figures}


def _texts(fig: Figure) -> list[tuple[str, Text]]:
    """(owner, text) of every visible, non-empty title, axis label, tick label and text."""
    found = []
    if fig._suptitle is not None:
        found.append(("suptitle", fig._suptitle))
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible() or not ax.axison:
            continue
        labels = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label,
                  *ax.texts]
        xlo, xhi = sorted(ax.get_xlim())
        ylo, yhi = sorted(ax.get_ylim())
        for tick in ax.xaxis.get_major_ticks():
            if xlo <= tick.get_loc() <= xhi and tick.label1.get_visible():
                labels.append(tick.label1)
        for tick in ax.yaxis.get_major_ticks():
            if ylo <= tick.get_loc() <= yhi and tick.label1.get_visible():
                labels.append(tick.label1)
        found += [(f"axes{i}", t) for t in labels if t.get_visible() and t.get_text()]
    return found


def overlaps(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of texts whose rendered bounding boxes intersect."""
    fig.canvas.draw()  # constrained layout places everything on draw
    renderer = fig.canvas.get_renderer()
    boxes = [(f"{owner}:{text.get_text()!r}", text.get_window_extent(renderer))
             for owner, text in _texts(fig)]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
            if box_a.overlaps(box_b)]


def _labelled_y_ticks(ax) -> list[str]:
    ax.figure.canvas.draw()
    lo, hi = sorted(ax.get_ylim())
    return [t.label1.get_text() for t in ax.yaxis.get_major_ticks()
            if lo <= t.get_loc() <= hi and t.label1.get_text()]


@pytest.fixture(scope="module")
def run_data(two_site_run):
    config, _ = two_site_run
    con = duckdb.connect(str(config.output.duckdb), read_only=True)
    reg = registry.effective(con)
    data = {
        "registry": reg,
        "episodes": episode_values(con, reg),
        "dynamics": con.execute("SELECT * FROM analysis.count_dynamics WHERE site = ?",
                                [POOLED_SITE]).df(),
        "curve": con.execute("SELECT * FROM analysis.efs_curve WHERE site = ?",
                             [POOLED_SITE]).df(),
        "n": dict(con.execute("SELECT definition, n FROM analysis.efs_summary WHERE site = ?",
                              [POOLED_SITE]).fetchall()),
    }
    con.close()
    return data


def _run_figures(d) -> dict[str, Figure]:
    reg = d["registry"]
    specs = {f.key: f for f in reg.figures}
    return {
        "grade": figures.grade_figure(d["episodes"], reg, specs["grade_distribution"]),
        "cytokine": figures.cytokine_figure(d["episodes"], reg, specs["cytokine_peaks"]),
        "dynamics": figures.dynamics_figure(d["dynamics"], reg, specs["count_dynamics"]),
        "km": figures.km_figure(d["curve"], reg, d["n"]),
    }


@pytest.mark.parametrize("name", ["grade", "cytokine", "dynamics", "km"])
def test_no_text_of_a_run_figure_overlaps_another(run_data, name: str) -> None:
    fig = _run_figures(run_data)[name]
    assert fig.get_layout_engine() is not None  # constrained layout
    assert overlaps(fig) == []


def test_count_axes_have_several_plain_labels(run_data) -> None:
    fig = _run_figures(run_data)["dynamics"]
    for ax in fig.axes[:3]:
        labels = _labelled_y_ticks(ax)
        assert len(labels) >= 3, (ax.get_title(), labels)
        assert not any("10^" in label or "$" in label or "×" in label for label in labels)


def _wide_episodes() -> pd.DataFrame:
    """Cytokine peaks from 0.2 to 200,000 pg/mL: five decades, where labels crowd."""
    rng = np.random.default_rng(0)
    rows = []
    for patient in range(40):
        for rnd in REGISTRY.rounds:
            row = {"site": "s", "patient_key": f"p{patient}", "round": rnd}
            for panel in REGISTRY.in_figure("cytokine_peaks"):
                row[panel.key] = float(10 ** rng.uniform(-0.7, 5.3))
            rows.append(row)
    return pd.DataFrame(rows)


def test_cytokine_panels_over_five_decades_stay_apart_and_plain() -> None:
    fig = figures.cytokine_figure(_wide_episodes(), REGISTRY, SPECS["cytokine_peaks"])
    assert overlaps(fig) == []
    for ax in fig.axes:
        if ax.axison:
            labels = _labelled_y_ticks(ax)
            assert len(labels) >= 3 and not any("$" in label for label in labels), labels


def test_the_overlap_check_sees_an_overlap() -> None:
    fig = Figure(figsize=(3, 2))  # no layout engine: two wide panels collide
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.set_title("a long title that runs into the next panel")
    right.set_title("another long title")
    assert overlaps(fig)


def test_numbers_at_risk_count_those_not_yet_out() -> None:
    curve = pd.DataFrame({"time": [5.0, 10.0, 30.0], "at_risk": [4, 3, 1]})
    assert figures.at_risk(curve, [0, 5, 6, 10, 20, 30, 40], 4) == [4, 4, 3, 3, 1, 1, 0]


def test_the_km_figure_has_a_band_and_a_table_of_numbers_at_risk(run_data) -> None:
    fig = _run_figures(run_data)["km"]
    plot, table = fig.axes[:2]
    assert plot.collections and any(c.get_alpha() == 0.15 for c in plot.collections)
    numbers = [t.get_text() for t in table.texts]
    assert len(numbers) == len(plot.get_xticks()) * len(run_data["n"])
    assert numbers[0] == str(run_data["n"][REGISTRY.efs[0].name])


def test_plain_tick_numbers() -> None:
    assert [figures.plain(v) for v in (0, 40, 2000, 0.5, 0.02, 1.5)] == [
        "0", "40", "2,000", "0.5", "0.02", "1.5"]


def test_count_lines_run_in_day_order_whatever_the_row_order(run_data) -> None:
    shuffled = run_data["dynamics"].sample(frac=1, random_state=1)
    fig = figures.dynamics_figure(shuffled, run_data["registry"],
                                  SPECS["count_dynamics"])
    for ax in fig.axes[:3]:
        for line in ax.get_lines():
            days = list(line.get_xdata())
            assert days == sorted(days), ax.get_title()
