"""The HTML report: the paper's tables (CART1, CART2, p) and figures, in one self-contained file.

Figures are drawn with matplotlib (Agg) and embedded as base64 PNG, so the file
opens anywhere without a server or network. p-values are printed journal style
(``.029``). Counts arrive already suppressed when small-cell suppression is on. What
the tables and figures show, and their labels, come from the endpoint registry
rendered with the database's windows and thresholds (``registry.effective``).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import pandas as pd  # noqa: E402

from cartfhir import __version__  # noqa: E402
from cartfhir.analyze.compare import episode_values  # noqa: E402
from cartfhir.analyze.registry import Figure, Registry  # noqa: E402
from cartfhir.analyze.stats import format_p  # noqa: E402
from cartfhir.config import POOLED_SITE  # noqa: E402

ROUND_NAMES = ("CART1", "CART2")  # the two rounds compared, registry.rounds
COLORS = ("#1f77b4", "#d62728")
EFS_COLORS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2")
MAX_PAIRED_LINES = 300  # per cytokine panel; a random (fixed-seed) sample beyond that


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    return f"{float(value):,.{digits}f}"


def _cell(row: pd.Series, prefix: str, digits: int) -> str:
    if row["kind"] == "proportion":
        events, n = row[f"{prefix}_events"], row[f"{prefix}_n"]
        if isinstance(events, str) or isinstance(n, str):
            return f"{events}/{n}"
        share = f" ({100 * events / n:.0f}%)" if n else ""
        return f"{events}/{n}{share}"
    n = row[f"{prefix}_n"]
    if not isinstance(n, str) and not n:
        return "–"
    return (f"{_num(row[f'{prefix}_median'], digits)} "
            f"({_num(row[f'{prefix}_q1'], digits)}–{_num(row[f'{prefix}_q3'], digits)}); "
            f"n={n}")


def _section_table(table: pd.DataFrame, registry: Registry, section: str) -> str:
    keys = [e for e in registry.endpoints if e.section == section]
    rows = []
    for endpoint in keys:
        match = table[(table["site"] == POOLED_SITE) & (table["endpoint"] == endpoint.key)]
        if match.empty:
            continue
        r = match.iloc[0]
        first, second = (_cell(r, prefix, endpoint.digits) for prefix in ("cart1", "cart2"))
        rows.append(
            f"<tr><td>{html.escape(endpoint.label)}</td><td>{first}</td>"
            f"<td>{second}</td><td class=p>{format_p(_p(r['p_value']))}</td>"
            f"<td class=small>{html.escape(str(r['test']))}</td>"
            f"<td class=p>{format_p(_p(r['paired_p_value']))}</td>"
            f"<td class=small>{r['n_pairs']}</td></tr>")
    return ("<table><thead><tr><th></th><th>CART1</th><th>CART2</th><th>p</th><th>test</th>"
            "<th>paired p</th><th>pairs</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")


def _p(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _rounds(registry: Registry) -> list[tuple[int, str, str]]:
    """(round, name, colour) of the two rounds compared."""
    return list(zip(registry.rounds, ROUND_NAMES, COLORS, strict=True))


def _dynamics_figure(con: duckdb.DuckDBPyConnection, registry: Registry, figure: Figure) -> str:
    panels = registry.in_figure(figure.key)
    data = con.execute("SELECT * FROM analysis.count_dynamics WHERE site = ? "
                       "ORDER BY concept, round, day", [POOLED_SITE]).df()
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for rnd, name, color in _rounds(registry):
            part = data[(data["concept"] == panel.concept) & (data["round"] == rnd)]
            if part.empty:
                continue
            ax.plot(part["day"], part["median"], color=color, label=name)
            ax.fill_between(part["day"], part["q1"], part["q3"], color=color, alpha=0.15)
        ax.set_title(panel.figure_label)
        ax.set_xlabel("days after infusion")
        if panel.symlog is not None:
            ax.set_yscale("symlog", linthresh=panel.symlog)
        ax.legend(frameon=False)
    fig.suptitle(figure.title)
    return _png(fig)


def _cytokine_figure(episodes: pd.DataFrame, registry: Registry, figure: Figure) -> str:
    panels = registry.in_figure(figure.key)
    first, second = registry.rounds
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 3.4), sharey=False, squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        column = panel.key
        wide = episodes.pivot_table(index=["site", "patient_key"], columns="round",
                                    values=column)
        if {first, second} <= set(wide.columns):
            pairs = wide.dropna()
            if len(pairs) > MAX_PAIRED_LINES:  # thousands of lines hide each other anyway
                pairs = pairs.sample(MAX_PAIRED_LINES, random_state=0)
            ax.plot([[1] * len(pairs), [2] * len(pairs)], [pairs[first], pairs[second]],
                    color="grey", alpha=0.4, lw=0.8)
        for x, (rnd, _, color) in enumerate(_rounds(registry), start=1):
            values = episodes.loc[episodes["round"] == rnd, column].dropna()
            ax.scatter([x] * len(values), values, color=color, s=10, zorder=3)
        ax.set_xticks([1, 2], list(ROUND_NAMES))
        ax.set_xlim(0.6, 2.4)
        ax.set_title(panel.figure_label)
        if (episodes[column].dropna() > 0).any():
            ax.set_yscale("log")
        else:
            ax.text(1.5, 0.5, "no results", ha="center", transform=ax.get_xaxis_transform())
    axes[0][0].set_ylabel("peak, pg/mL (log)")
    fig.suptitle(f"{figure.title} (lines join a patient's two rounds; at most "
                 f"{MAX_PAIRED_LINES} patients' lines per panel)")
    return _png(fig)


def _grade_figure(episodes: pd.DataFrame, registry: Registry, figure: Figure) -> str:
    panels = registry.in_figure(figure.key)
    grades = list(range(0, 6))
    width = 0.38
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for offset, (rnd, name, color) in zip((-width / 2, width / 2), _rounds(registry),
                                              strict=True):
            counts = episodes.loc[episodes["round"] == rnd, panel.key].value_counts()
            ax.bar([g + offset for g in grades], [counts.get(g, 0) for g in grades], width,
                   color=color, label=name)
        ax.set_xticks(grades)
        ax.set_xlabel("maximum grade")
        ax.set_ylabel("episodes")
        ax.set_title(panel.figure_label)
        ax.legend(frameon=False)
    fig.suptitle(figure.title)
    return _png(fig)


FIGURES = {"grade_distribution": _grade_figure, "cytokine_peaks": _cytokine_figure}


def _km_figure(con: duckdb.DuckDBPyConnection, registry: Registry) -> str:
    curve = con.execute("SELECT * FROM analysis.efs_curve WHERE site = ? "
                        "ORDER BY definition, time", [POOLED_SITE]).df()
    fig, ax = plt.subplots(figsize=(7, 4))
    for definition, color in zip((d.name for d in registry.efs), EFS_COLORS, strict=False):
        part = curve[curve["definition"] == definition]
        if part.empty:
            continue
        times = [0.0, *part["time"].tolist()]
        surv = [1.0, *part["survival"].tolist()]
        ax.step(times, surv, where="post", color=color, label=f"EFS ({definition} definition)")
        censored = part[part["censored"] > 0]
        ax.scatter(censored["time"], censored["survival"], marker="|", color=color, s=60)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("days after CART2")
    ax.set_ylabel("event-free survival")
    ax.legend(frameon=False)
    ax.set_title("Kaplan-Meier event-free survival after CART2")
    return _png(fig)


def _characteristics(con: duckdb.DuckDBPyConnection, registry: Registry) -> str:
    rows = con.execute("""
        SELECT round, count(*) AS episodes,
               count(*) FILTER (WHERE sex = 'male') AS male,
               median(age_years) AS age,
               count(*) FILTER (WHERE relapse_site_before = 'marrow') AS marrow,
               count(*) FILTER (WHERE relapse_site_before LIKE 'marrow+%') AS combined,
               count(*) FILTER (WHERE relapse_site_before NOT LIKE 'marrow%') AS extramedullary
        FROM cohort.episode_endpoints WHERE round IN (?, ?) GROUP BY round ORDER BY round
    """, list(registry.rounds)).fetchall()
    names = dict(zip(registry.rounds, ROUND_NAMES, strict=True))
    body = "".join(
        f"<tr><td>{names[r[0]]}</td><td>{r[1]}</td><td>{r[2]}</td><td>{_num(r[3], 0)}</td>"
        f"<td>{r[4]}</td><td>{r[5]}</td><td>{r[6]}</td></tr>" for r in rows)
    return ("<table><thead><tr><th>round</th><th>episodes</th><th>male</th>"
            "<th>median age (y)</th><th>relapse: marrow only</th><th>marrow + other</th>"
            "<th>isolated extramedullary</th></tr></thead><tbody>" + body + "</tbody></table>")


def _efs_tables(con: duckdb.DuckDBPyConnection, registry: Registry, small_cells: bool) -> str:
    summary = con.execute("SELECT * FROM analysis.efs_summary WHERE site = ? "
                          "ORDER BY definition", [POOLED_SITE]).fetchall()
    out = ["<table><thead><tr><th>definition</th><th>patients</th><th>events</th>"
           "<th>median EFS (days)</th><th>95% CI</th></tr></thead><tbody>"]
    for r in summary:
        median = _num(r[4], 0) if r[4] is not None else "not reached"
        low, high = (_num(v, 0) if v is not None and not pd.isna(v) else "NR" for v in r[5:7])
        out.append(f"<tr><td>{r[1]}</td><td>{r[2]}</td><td>{r[3]}</td><td>{median}</td>"
                   f"<td>{low}–{high}</td></tr>")
    out.append("</tbody></table>")
    if not small_cells and registry.efs:  # the first definition is the primary one
        primary = registry.efs[0].name
        types = con.execute("SELECT event_type, count(*) FROM analysis.efs WHERE definition = ? "
                            "GROUP BY ALL ORDER BY 2 DESC", [primary]).fetchall()
        out.append(f"<p>First event after CART2 ({html.escape(primary)} definition): "
                   + ", ".join(
            f"{html.escape(str(t))} {n}" for t, n in types) + "</p>")
    return "".join(out)


STYLE = """
body{font-family:Georgia,serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.4}
h1{font-size:1.6em} h2{font-size:1.25em;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{padding:.25em .7em;border-bottom:1px solid #e3e3e3;text-align:left}
thead th{border-bottom:2px solid #444} td.p{font-variant-numeric:tabular-nums}
.small{color:#666;font-size:.85em} img{max-width:100%}
.warning{background:#fde2e1;border:2px solid #c0392b;padding:.8em;font-weight:bold}
"""


def write_report(con: duckdb.DuckDBPyConnection, path: Path, table: pd.DataFrame,
                 registry: Registry, *, study: str, sites: Sequence[str],
                 small_cell_k: int | None, warning: str | None = None) -> Path:
    """Write the self-contained HTML report to ``path`` and return it."""
    episodes = episode_values(con, registry)
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f"<title>{html.escape(study)}: CART1 vs CART2</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(study)}: first versus second CAR-T infusion</h1>",
             f"<p class=small>cartfhir {__version__}, "
             f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; sites: "
             f"{', '.join(html.escape(s) for s in sites)}. Unpaired tests as in the "
             "paper (Fisher exact; Mann-Whitney U), paired tests over patients with both "
             "rounds (exact McNemar; Wilcoxon signed-rank). Medians with IQR.</p>"]
    if warning:
        parts.append(f"<p class=warning>WARNING: {html.escape(warning)}</p>")
    for i, (key, title) in enumerate(registry.sections.items()):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if i == 0:  # the first section opens with the cohort's characteristics
            parts.append(_characteristics(con, registry))
        parts.append(_section_table(table, registry, key))
        for figure in (f for f in registry.figures if f.section == key):
            if figure.key == "count_dynamics":
                parts.append(_dynamics_figure(con, registry, figure))
            else:
                parts.append(FIGURES[figure.key](episodes, registry, figure))
    parts.append("<h2>Event-free survival after CART2</h2>"
                 + _efs_tables(con, registry, bool(small_cell_k)) + _km_figure(con, registry))
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
