"""The report's figures, measured with matplotlib's own renderer: no tick label, title or
axis label overlaps another, and every log or symlog axis has several readable labels.

The figures are drawn from a real small run (tests/analyze/conftest.py) and from values
spanning many decades, where crowded or spilling labels would show first.
"""

from __future__ import annotations

import dataclasses
import itertools

import duckdb
import numpy as np
import pandas as pd
import pytest
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from cartfhir.analyze import figures, registry
from cartfhir.analyze.compare import episode_values
from cartfhir.config import POOLED_SITE

REGISTRY = registry.defaults()
SPECS = {f.key: f for f in REGISTRY.figures}


def _in_view(axis, ticks) -> list[Text]:
    lo, hi = sorted(axis.get_view_interval())
    return [t.label1 for t in ticks if lo <= t.get_loc() <= hi and t.label1.get_visible()]


def _texts(fig: Figure) -> list[tuple[int | None, str, Text]]:
    """(axes index or None, name, text) of every visible, non-empty text of the figure:
    suptitles, titles, axis labels, major and minor tick labels in view, free texts,
    legend texts and titles, and the cells of any table."""
    found: list[tuple[int | None, Text]] = [
        (None, t) for t in (fig._suptitle, fig._supxlabel, fig._supylabel, *fig.texts)
        if t is not None]
    for legend in fig.legends:
        found += [(None, t) for t in (legend.get_title(), *legend.get_texts())]
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible() or not ax.axison:
            continue
        texts = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label,
                 *ax.texts]
        for axis in (ax.xaxis, ax.yaxis):
            texts += _in_view(axis, axis.get_major_ticks())
            texts += _in_view(axis, axis.get_minor_ticks())
        if ax.get_legend() is not None:
            texts += [ax.get_legend().get_title(), *ax.get_legend().get_texts()]
        for table in ax.tables:
            texts += [cell.get_text() for cell in table.get_celld().values()]
        found += [(i, t) for t in texts]
    unique = {id(t): (i, t) for i, t in found}  # the suptitle is in fig.texts too
    return [(i, f"{'fig' if i is None else f'axes{i}'}:{t.get_text()!r}", t)
            for i, t in unique.values() if t.get_visible() and t.get_text().strip()]


def _intersect(a, b, tolerance: float = 0.5) -> bool:
    """Whether two display boxes share more than ``tolerance`` pixels both ways."""
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > tolerance
            and min(a.y1, b.y1) - max(a.y0, b.y0) > tolerance)


def overlaps(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of things that collide once drawn: two texts whose boxes intersect, or a
    text lying in the plot area of an axes other than its own."""
    fig.canvas.draw()  # constrained layout places everything on draw
    renderer = fig.canvas.get_renderer()
    texts = [(owner, name, text.get_window_extent(renderer))
             for owner, name, text in _texts(fig)]
    areas = [(i, ax.get_window_extent(renderer)) for i, ax in enumerate(fig.axes)
             if ax.get_visible() and ax.axison]
    found = [(a, b) for (_, a, box_a), (_, b, box_b) in itertools.combinations(texts, 2)
             if _intersect(box_a, box_b)]
    found += [(name, f"plot area of axes{i}") for owner, name, box in texts
              for i, area in areas if i != owner and _intersect(box, area)]
    return found


MIN_LABELS, MAX_LABELS = 3, 7
MAX_END_SHARE = 0.25  # of the axis height left without a label at either end
MIN_GAP_SHARE = 0.25  # of a label's height between two neighbouring labels


def readability_problems(ax) -> list[str]:
    """What makes the y axis of ``ax`` hard to read, measured on the drawn figure:
    too few or too many labels, labels touching, a long unlabelled stretch at either
    end of the axis, or labels in scientific notation."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in _in_view(ax.yaxis, ax.yaxis.get_major_ticks())
              + _in_view(ax.yaxis, ax.yaxis.get_minor_ticks()) if t.get_text()]
    boxes = sorted((box.y0, box.y1, t.get_text())
                   for t in labels for box in [t.get_window_extent(renderer)])
    area = ax.get_window_extent(renderer)
    texts = [text for *_, text in boxes]
    problems = []
    if not MIN_LABELS <= len(boxes) <= MAX_LABELS:
        problems.append(f"{len(boxes)} labels {texts}")
    for (_, top, a), (bottom, high, b) in itertools.pairwise(boxes):
        if bottom - top < MIN_GAP_SHARE * (high - bottom):
            problems.append(f"{a} and {b} touch")
    if boxes:
        centres = [(lo + hi) / 2 for lo, hi, _ in boxes]
        if (centres[0] - area.y0) / area.height > MAX_END_SHARE:
            problems.append(f"no label in the bottom {(centres[0] - area.y0) / area.height:.0%}")
        if (area.y1 - centres[-1]) / area.height > MAX_END_SHARE:
            problems.append(f"no label in the top {(area.y1 - centres[-1]) / area.height:.0%}")
    if any("10^" in t or "$" in t or "×" in t or "e+" in t for t in texts):
        problems.append(f"not plain numbers: {texts}")
    return [f"{ax.get_title()}: {p}" for p in problems]


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
        "efs": con.execute("SELECT definition, time_days FROM analysis.efs").df(),
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


def test_count_axes_have_three_to_seven_plain_labels_apart_over_the_whole_axis(
        run_data) -> None:
    fig = _run_figures(run_data)["dynamics"]
    assert [p for ax in fig.axes[:3] for p in readability_problems(ax)] == []


def _dynamics(values: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Median, IQR by day for each count, from ``low`` at day 7 to ``high`` at day 28."""
    rows = []
    for concept, (low, high) in values.items():
        for rnd in REGISTRY.rounds:
            for day, median in ((0, (low + high) / 2), (7, low), (14, (low + high) / 3),
                                (28, high)):
                rows.append({"concept": concept, "round": rnd, "day": day, "median": median,
                             "q1": median * 0.9, "q3": median * 1.05})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("values", [
    # the red team's platelets: 30 to 190 on the symlog axis (linear below 10)
    {"anc": (0.3, 1.5), "platelets": (30, 190), "hemoglobin": (70, 101)},
    {"anc": (0.01, 12), "platelets": (2, 450), "hemoglobin": (40, 160)},
    {"anc": (0, 0.09), "platelets": (0, 8), "hemoglobin": (99, 101)},
    {"anc": (1.1, 1.3), "platelets": (140, 160), "hemoglobin": (0, 180)},
    {"anc": (0, 40), "platelets": (0, 1200), "hemoglobin": (5, 9)},
])
def test_count_axes_read_well_whatever_the_range(values) -> None:
    fig = figures.dynamics_figure(_dynamics(values), REGISTRY, SPECS["count_dynamics"])
    assert [p for ax in fig.axes[:3] for p in readability_problems(ax)] == []
    assert overlaps(fig) == []


def _wide_episodes(low: float = -0.7, high: float = 5.3) -> pd.DataFrame:
    """Cytokine peaks from 10**low to 10**high pg/mL (0.2 to 200,000: six decades, where
    labels crowd)."""
    rng = np.random.default_rng(0)
    rows = []
    for patient in range(40):
        for rnd in REGISTRY.rounds:
            row = {"site": "s", "patient_key": f"p{patient}", "round": rnd}
            for panel in REGISTRY.in_figure("cytokine_peaks"):
                row[panel.key] = float(10 ** rng.uniform(low, high))
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("decades", [(-0.7, 5.3), (1.0, 1.4), (0.2, 2.6), (-2, 7)])
def test_cytokine_panels_stay_apart_and_read_well(decades) -> None:
    fig = figures.cytokine_figure(_wide_episodes(*decades), REGISTRY, SPECS["cytokine_peaks"])
    assert overlaps(fig) == []
    assert [p for ax in fig.axes if ax.axison for p in readability_problems(ax)] == []


def test_cytokine_panels_of_the_run_read_well(run_data) -> None:
    fig = _run_figures(run_data)["cytokine"]
    drawn = [ax for ax in fig.axes if ax.axison and ax.get_yscale() == "log"]
    assert drawn
    assert [p for ax in drawn for p in readability_problems(ax)] == []


def test_the_overlap_check_sees_an_overlap() -> None:
    fig = Figure(figsize=(3, 2))  # no layout engine: two wide panels collide
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.set_title("a long title that runs into the next panel")
    right.set_title("another long title")
    assert overlaps(fig)


def test_the_overlap_check_sees_a_tick_label_in_the_next_panel() -> None:
    fig = Figure(figsize=(4, 2))  # tight, long labels, no layout engine
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax in axes:
        ax.set_yticks([0, 0.5, 1], ["4×10¹ pg/mL", "2×10² pg/mL", "1×10³ pg/mL"])
    found = overlaps(fig)
    assert any(b.startswith("plot area of axes") and "10" in a for a, b in found), found


def test_the_overlap_check_sees_crowded_minor_labels() -> None:
    fig = Figure(figsize=(3, 3), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_yscale("log")
    ax.set_ylim(1, 1e4)
    ax.yaxis.set_major_formatter(ticker.NullFormatter())
    ax.yaxis.set_minor_formatter(ticker.FuncFormatter(figures.plain))
    assert overlaps(fig)
    assert readability_problems(ax)


def test_the_readability_check_sees_the_red_teams_platelet_axis() -> None:
    fig = figures.new_figure(4, 3.6)
    ax = fig.subplots()
    ax.plot([0, 28], [30, 190])
    ax.set_yscale("symlog", linthresh=10)
    ax.yaxis.set_major_locator(ticker.FixedLocator([30, 40, 50, 60, 70, 80, 90, 100]))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(figures.plain))
    problems = " ".join(readability_problems(ax))
    assert "8 labels" in problems and "no label in the top" in problems


def test_numbers_at_risk_count_those_not_yet_out() -> None:
    curve = pd.DataFrame({"time": [5.0, 10.0, 30.0], "at_risk": [4, 3, 1]})
    assert figures.at_risk(curve, [0, 5, 6, 10, 20, 30, 40], 4) == [4, 4, 3, 3, 1, 1, 0]


def test_the_numbers_at_risk_are_those_followed_at_least_that_long(run_data) -> None:
    fig = _run_figures(run_data)["km"]
    plot, table = fig.axes[:2]
    ticks = [t for t in plot.get_xticks() if t >= 0]
    efs = run_data["efs"]
    definitions = [d.name for d in run_data["registry"].efs]
    shown = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text()
             for t in table.texts}
    assert len(shown) == len(ticks) * len(definitions)
    for row, definition in enumerate(definitions):
        times = efs.loc[efs["definition"] == definition, "time_days"]
        expected = [str(int((times >= t).sum())) for t in ticks]
        assert [shown[(round(t), row)] for t in ticks] == expected, definition
    assert any(n not in ("0", str(len(times))) for n in expected)  # counts that moved


def _step_at(line, x: float) -> float:
    xs, ys = line.get_xdata(), line.get_ydata()
    return float(ys[np.searchsorted(xs, x, side="right") - 1])


def _band_at(band, x: float) -> tuple[float, float]:
    """The band's lowest and highest y at ``x`` (its outline crossed at x)."""
    ys = []
    for path in band.get_paths():
        v = path.vertices
        for (x0, y0), (x1, y1) in itertools.pairwise(v):
            if min(x0, x1) <= x <= max(x0, x1) and x0 != x1:
                ys.append(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    return min(ys), max(ys)


def test_the_km_curves_start_at_one_drop_at_day_zero_and_lie_in_their_band(run_data) -> None:
    fig = _run_figures(run_data)["km"]
    plot = fig.axes[0]
    curve = run_data["curve"]
    lines = [ln for ln in plot.get_lines() if ln.get_label().startswith("EFS")]
    bands = [c for c in plot.collections if c.get_paths() and c.get_alpha() == 0.15]
    assert len(lines) == len(bands) == len(run_data["n"])
    day0 = 0
    for line, band, efs in zip(lines, bands, run_data["registry"].efs, strict=True):
        xs, ys = list(line.get_xdata()), list(line.get_ydata())
        assert (xs[0], ys[0]) == (0, 1.0), efs.name
        part = curve[curve["definition"] == efs.name].sort_values("time")
        at_zero = part[part["time"] == 0]
        if len(at_zero):  # events on day 0: the curve falls at x=0
            day0 += 1
            assert (xs[1], ys[1]) == (0, float(at_zero["survival"].iloc[0]))
        defined = part.dropna(subset=["ci_low"])
        for a, b in itertools.pairwise([0.0, *defined["time"]]):
            mid = (a + b) / 2
            low, high = _band_at(band, mid)
            assert low - 1e-9 <= _step_at(line, mid) <= high + 1e-9, (efs.name, mid)
    assert day0  # the run has day-0 events (standard definition: no response)
    assert plot.get_xlim()[0] < 0  # so the drop at day 0 is not hidden by the axis


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


def test_figure_texts_show_comparison_signs_as_signs() -> None:
    endpoints = tuple(dataclasses.replace(e, figure_label=f"{e.figure_label} >= 3")
                      if e.figure == "grade_distribution" else e for e in REGISTRY.endpoints)
    reg = dataclasses.replace(REGISTRY, endpoints=endpoints)
    spec = dataclasses.replace(SPECS["grade_distribution"], title="grade <= 5")
    episodes = _wide_episodes().assign(**{e.key: 1 for e in reg.in_figure(spec.key)})
    fig = figures.grade_figure(episodes, reg, spec)
    shown = [t.get_text() for _, _, t in _texts(fig)]
    assert any("≥ 3" in t for t in shown) and any("≤ 5" in t for t in shown), shown
    assert not any(">=" in t or "<=" in t for t in shown)
