"""The report's figures as matplotlib ``Figure`` objects, drawn from plain DataFrames.

Every figure uses constrained layout, so titles, axis labels and tick labels get their
own room instead of spilling into the neighbouring panel (tests/analyze/test_figures.py
measures that with the renderer). Axes on a log or symlog scale get several labelled
ticks with plain numbers (``40``, ``200``, ``0.5``), never ``4×10¹`` or a single label.
What is plotted and its titles come from the endpoint registry. No pyplot state: the
figures are ``matplotlib.figure.Figure`` instances, saved by ``save``.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rcParams, ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

from cartfhir.analyze.registry import Figure as FigureSpec
from cartfhir.analyze.registry import Registry
from cartfhir.analyze.stats import small_cell

ROUND_NAMES = ("CART1", "CART2")  # the two rounds compared, registry.rounds
COLORS = ("#1f77b4", "#d62728")
EFS_COLORS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2")
MAX_PAIRED_LINES = 300  # per cytokine panel; a random (fixed-seed) sample beyond that
PANELS_PER_ROW = 4
DPI = 110


def rounds(registry: Registry) -> list[tuple[int, str, str]]:
    """(round, name, colour) of the two rounds compared."""
    return list(zip(registry.rounds, ROUND_NAMES, COLORS, strict=True))


def plain(value: float, _: object = None) -> str:
    """A tick value as people write it: ``40``, ``1,000``, ``0.5``, ``0.02``."""
    if value == 0:
        return "0"
    if abs(value) >= 1:
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
    return f"{value:.{max(1, -math.floor(math.log10(abs(value))))}f}".rstrip("0")


SIGNS = {">=": "≥", "<=": "≤"}  # as the labels are written (data) -> as a reader reads them


def typeset(text: str) -> str:
    """A label for display: ``>=``/``<=`` as ``≥``/``≤``; the data keep the ASCII."""
    for ascii_, sign in SIGNS.items():
        text = text.replace(ascii_, sign)
    return text


class ReadableLocator(ticker.Locator):
    """Ticks at round numbers that a reader can take in at a glance, on a linear, log or
    symlog axis: 3 to 7 labels, never closer than ``MIN_SPACING`` label heights, spread
    over the whole axis.

    Candidates are evenly spaced round values (steps of 1, 2, 2.5 or 5 times a power of
    ten) and, on log and symlog axes, round values per decade (1; 1-3; 1-2-5; 1-1.5-2-3-5-7,
    or 1 every few decades); a symlog axis adds 0. Of the candidates that fit, the one
    leaving the shortest unlabelled stretch wins (an end counts double: the eye cannot
    read a value past the last label), with a small cost per label against clutter.
    """

    MIN_TICKS, MAX_TICKS = 3, 7
    MIN_SPACING = 1.9  # label heights between neighbouring labels' centres
    COST_PER_TICK = 0.04  # of the axis length
    DEFAULT_HEIGHT = 200.0  # points, when the axis is not on a figure yet

    def __init__(self, scale: str = "linear", linthresh: float | None = None,
                 integer: bool = False) -> None:
        self.scale = scale  # "linear", "log" or "symlog"
        self.linthresh = linthresh
        self.integer = integer

    def __call__(self) -> list[float]:
        lo, hi = self.axis.get_view_interval()
        return self.tick_values(lo, hi)

    def _position(self, values: np.ndarray) -> np.ndarray:
        """Where values land on the axis, in the scale's own units."""
        if self.scale == "log":
            return np.log10(np.maximum(values, 1e-300))
        if self.scale == "symlog":
            c = float(self.linthresh or 1.0)
            inside = np.abs(values) <= c
            outer = np.sign(values) * c * (1 + np.log10(np.maximum(np.abs(values), c) / c))
            return np.where(inside, values, outer)
        return values

    def _room(self) -> float:
        """The axis length in label heights."""
        if self.axis is None or self.axis.axes is None:
            return self.DEFAULT_HEIGHT / rcParams["font.size"]
        box = self.axis.axes.bbox
        length = box.height if self.axis.axis_name == "y" else box.width
        points = length * 72 / self.axis.get_figure(root=True).dpi
        size = FontProperties(size=rcParams[f"{self.axis.axis_name}tick.labelsize"])
        return (points or self.DEFAULT_HEIGHT) / size.get_size_in_points()

    def _candidates(self, lo: float, hi: float) -> list[list[float]]:
        steps = [1, 2, 5, 10] if self.integer else [1, 2, 2.5, 5, 10]
        found = [list(ticker.MaxNLocator(nbins=n, steps=steps, integer=self.integer)
                      .tick_values(lo, hi)) for n in range(2, self.MAX_TICKS + 2)]
        if self.scale == "linear" or hi <= 0:
            return found
        floor_ = float(self.linthresh) if self.scale == "symlog" else max(lo, 1e-300)
        first, last = math.floor(math.log10(floor_)), math.ceil(math.log10(hi))
        below = [[0.0]]  # symlog: round values on its linear stretch around 0
        if self.scale == "symlog":
            below += [list(ticker.MaxNLocator(nbins=n).tick_values(0, self.linthresh))
                      for n in (1, 2, 4)]
        for subs in ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)):
            for every in (1, 2, 3, 4, 5) if subs == (1.0,) else (1,):
                ticks = [s * 10.0 ** e for e in range(first, last + 1)
                         if (e - first) % every == 0 for s in subs]
                if self.scale == "log":
                    found.append(ticks)
                    continue
                above = [v for v in ticks if v >= self.linthresh]
                found += [[*linear, *above] for linear in below]
        return found

    def tick_values(self, vmin: float, vmax: float) -> list[float]:
        lo, hi = sorted((float(vmin), float(vmax)))
        if self.scale == "log":
            lo = max(lo, 1e-300)
        if hi <= lo:
            return [lo]
        slack = (hi - lo) * 1e-9
        bottom, top = self._position(np.array([lo, hi]))
        room = self._room()
        best: tuple[float, list[float]] | None = None
        for ticks in self._candidates(lo, hi):
            shown = sorted({round(v, 12) for v in ticks if lo - slack <= v <= hi + slack})
            if not self.MIN_TICKS <= len(shown) <= self.MAX_TICKS:
                continue
            where = (self._position(np.array(shown)) - bottom) / (top - bottom)
            gaps = np.diff(where)
            if gaps.min() * room < self.MIN_SPACING:
                continue
            score = max(2 * where[0], 2 * (1 - where[-1]), gaps.max()) + \
                self.COST_PER_TICK * len(shown)
            if best is None or score < best[0]:
                best = (score, shown)
        if best is None:  # too short for three labels: its two ends
            return [v for v in ticker.MaxNLocator(nbins=1).tick_values(lo, hi)
                    if lo - slack <= v <= hi + slack] or [lo, hi]
        return best[1]


def readable_axis(ax: Axes, scale: str = "linear", linthresh: float | None = None,
                  integer: bool = False) -> None:
    """A y axis on ``scale`` labelled by ReadableLocator in plain numbers, no minor labels."""
    if scale == "symlog":
        ax.set_yscale("symlog", linthresh=linthresh)
    elif scale == "log":
        ax.set_yscale("log")
    ax.yaxis.set_major_locator(ReadableLocator(scale, linthresh, integer))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(plain))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def readable_log_axis(ax: Axes, values: pd.Series) -> None:
    """A log y axis with labelled ticks in plain numbers at round values."""
    positive = values[values > 0]
    readable_axis(ax, "log")
    if positive.min() == positive.max():  # one value: give it a decade of room
        ax.set_ylim(float(positive.min()) / 3, float(positive.max()) * 3)


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure on an Agg canvas (its renderer measures text)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _grid(n: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """n panels in rows of at most PANELS_PER_ROW; spare cells switched off."""
    cols = min(n, PANELS_PER_ROW)
    rows = math.ceil(n / cols)
    fig = new_figure(width, height * rows)
    axes = list(np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel())
    for spare in axes[n:]:
        spare.set_axis_off()
    return fig, axes[:n]


def _legend(fig: Figure, axes: list[Axes]) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels),
                   frameon=False)


def dynamics_figure(data: pd.DataFrame, registry: Registry, spec: FigureSpec) -> Figure:
    """Blood counts by day after each infusion (median and IQR), one panel per count.

    ``data`` is analysis.count_dynamics for one site.
    """
    panels = registry.in_figure(spec.key)
    fig, axes = _grid(len(panels), 11, 3.6)
    for ax, panel in zip(axes, panels, strict=True):
        for rnd, name, color in rounds(registry):
            part = data[(data["concept"] == panel.concept) & (data["round"] == rnd)]
            if part.empty:
                continue
            part = part.sort_values("day")
            ax.plot(part["day"], part["median"], color=color, label=name)
            ax.fill_between(part["day"], part["q1"], part["q3"], color=color, alpha=0.15)
        ax.set_title(typeset(panel.figure_label))
        ax.set_xlabel("days after infusion")
        if panel.symlog is not None:
            readable_axis(ax, "symlog", panel.symlog)
        else:
            readable_axis(ax)
    fig.suptitle(typeset(spec.title))
    _legend(fig, axes)
    return fig


def cytokine_figure(episodes: pd.DataFrame, registry: Registry, spec: FigureSpec) -> Figure:
    """Each episode's cytokine peak by round, lines joining a patient's two rounds."""
    panels = registry.in_figure(spec.key)
    first, second = registry.rounds
    fig, axes = _grid(len(panels), 11, 3.0)
    for ax, panel in zip(axes, panels, strict=True):
        column = panel.key
        wide = episodes.pivot_table(index=["site", "patient_key"], columns="round",
                                    values=column)
        if {first, second} <= set(wide.columns):
            pairs = wide.dropna()
            if len(pairs) > MAX_PAIRED_LINES:  # thousands of lines hide each other anyway
                pairs = pairs.sample(MAX_PAIRED_LINES, random_state=0)
            ax.plot([[1] * len(pairs), [2] * len(pairs)], [pairs[first], pairs[second]],
                    color="grey", alpha=0.4, lw=0.8)
        for x, (rnd, _, color) in enumerate(rounds(registry), start=1):
            values = episodes.loc[episodes["round"] == rnd, column].dropna()
            ax.scatter([x] * len(values), values, color=color, s=10, zorder=3)
        ax.set_xticks([1, 2], list(ROUND_NAMES))
        ax.set_xlim(0.6, 2.4)
        ax.set_title(typeset(panel.figure_label))
        values = pd.to_numeric(episodes[column], errors="coerce").dropna()
        if (values > 0).any():
            readable_log_axis(ax, values)
        else:
            ax.text(1.5, 0.5, "no results", ha="center", transform=ax.get_xaxis_transform())
            ax.set_yticks([])
    for ax in axes[::PANELS_PER_ROW]:
        ax.set_ylabel("peak, pg/mL")
    fig.suptitle(f"{typeset(spec.title)} (log scale; lines join a patient's two rounds; at most "
                 f"{MAX_PAIRED_LINES} patients' lines per panel)")
    return fig


def grade_figure(episodes: pd.DataFrame, registry: Registry, spec: FigureSpec) -> Figure:
    """Episodes by maximum grade (0-5) and round, one panel per graded endpoint."""
    panels = registry.in_figure(spec.key)
    grades = list(range(0, 6))
    width = 0.38
    fig, axes = _grid(len(panels), 10, 3.4)
    for ax, panel in zip(axes, panels, strict=True):
        for offset, (rnd, name, color) in zip((-width / 2, width / 2), rounds(registry),
                                              strict=True):
            counts = episodes.loc[episodes["round"] == rnd, panel.key].value_counts()
            ax.bar([g + offset for g in grades], [counts.get(g, 0) for g in grades], width,
                   color=color, label=name)
        ax.set_xticks(grades)
        readable_axis(ax, integer=True)
        ax.set_xlabel("maximum grade")
        ax.set_ylabel("episodes")
        ax.set_title(typeset(panel.figure_label))
    fig.suptitle(typeset(spec.title))
    _legend(fig, axes)
    return fig


def at_risk(curve: pd.DataFrame, times: list[float], n: int) -> list[int]:
    """Patients still at risk (time >= t) at each of ``times``, from the Kaplan-Meier steps.

    The number at risk at t is the step's ``at_risk`` at the first observed time >= t
    (nobody leaves between steps); ``n`` before the first step, 0 after the last.
    """
    steps = curve.sort_values("time")
    counts = []
    for t in times:
        later = steps[steps["time"] >= t]
        counts.append(n if t <= 0 else int(later["at_risk"].iloc[0]) if len(later) else 0)
    return counts


def km_figure(curve: pd.DataFrame, registry: Registry, n: dict[str, int],
              small_cell_k: int | None = None) -> Figure:
    """Kaplan-Meier EFS after CART2 per definition, with its pointwise 95 % band
    (analysis.efs_curve's ci_low/ci_high) and the numbers at risk under the axis.

    ``curve`` is analysis.efs_curve for one site; ``n`` the patients per definition.
    Numbers at risk below ``small_cell_k`` are shown as ``<k``.
    """
    definitions = [d.name for d in registry.efs if not curve[curve["definition"] == d.name].empty]
    fig = new_figure(8, 4.6 + 0.3 * len(definitions))
    ax, table = fig.subplots(2, 1, sharex=True, height_ratios=[5, 0.5 + 0.4 * len(definitions)])
    for definition, color in zip(definitions, EFS_COLORS, strict=False):
        part = curve[curve["definition"] == definition].sort_values("time")
        times = [0.0, *part["time"].tolist()]
        surv = [1.0, *part["survival"].tolist()]
        low = [1.0, *pd.to_numeric(part["ci_low"]).tolist()]
        high = [1.0, *pd.to_numeric(part["ci_high"]).tolist()]
        ax.step(times, surv, where="post", color=color, label=f"EFS ({definition} definition)")
        ax.fill_between(times, low, high, step="post", color=color, alpha=0.15, lw=0)
        censored = part[part["censored"] > 0]
        ax.scatter(censored["time"], censored["survival"], marker="|", color=color, s=60)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("event-free survival")
    ax.legend(frameon=False, title="shaded: pointwise 95% CI (log-log)", loc="upper right")
    ax.set_title("Kaplan-Meier event-free survival after CART2")
    top = float(curve["time"].max()) if len(curve) else 1.0
    ax.set_xlim(-top * 0.02, top * 1.02)  # a fall at day 0 shows clear of the y axis
    ticks = [t for t in ticker.MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10],
                                           integer=True).tick_values(0, top) if 0 <= t <= top]
    ax.set_xticks(ticks)
    for row, (definition, color) in enumerate(zip(definitions, EFS_COLORS, strict=False)):
        part = curve[curve["definition"] == definition]
        for t, count in zip(ticks, at_risk(part, ticks, n.get(definition, 0)), strict=True):
            shown = small_cell(count, small_cell_k) if small_cell_k else count
            table.text(t, row, str(shown), ha="center", va="center", color=color, fontsize=9)
    table.set_ylim(len(definitions) - 0.5, -0.5)
    table.set_yticks(range(len(definitions)), definitions)
    table.tick_params(axis="y", length=0, pad=14)  # clear of the numbers at day 0
    for side in ("top", "right", "left"):
        table.spines[side].set_visible(False)
    table.set_title("number at risk", loc="left", fontsize=9)
    table.set_xlabel("days after CART2")
    return fig


def png_data_uri(fig: Figure) -> tuple[bytes, str]:
    """The figure as PNG bytes and as an <img>-ready data: URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    data = buffer.getvalue()
    return data, "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def save(fig: Figure, folder: Path, name: str) -> tuple[str, list[Path]]:
    """Write ``<name>.png`` and ``<name>.svg`` to ``folder``; return the PNG's data: URI."""
    folder.mkdir(parents=True, exist_ok=True)
    data, uri = png_data_uri(fig)
    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    png.write_bytes(data)
    fig.savefig(svg, format="svg")
    return uri, [png, svg]
