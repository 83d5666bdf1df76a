"""The HTML report: the paper's tables (CART1, CART2, p) and figures, in one self-contained file.

Figures are drawn with matplotlib (cartfhir/analyze/figures.py) and embedded as base64
PNG, so the file opens anywhere without a server or network; the same figures are
written as PNG and SVG to ``figures/`` and the report's tables as CSV to ``tables/``
next to it, for a manuscript. p-values are printed journal style (``.029``). Counts
arrive already suppressed when small-cell suppression is on. What the tables and
figures show, and their labels, come from the endpoint registry rendered with the
database's windows and thresholds (``registry.effective``); the methods, runs and data
quality come from the database (methods.py, quality.py).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from cartfhir import __version__
from cartfhir.analyze import figures, methods, quality
from cartfhir.analyze import report_tables as tables
from cartfhir.analyze.compare import episode_values
from cartfhir.analyze.efs import CENSORED
from cartfhir.analyze.registry import Registry
from cartfhir.analyze.report_tables import Table
from cartfhir.analyze.stats import format_p
from cartfhir.config import POOLED_SITE

STYLE = """
body{font-family:Georgia,serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;
line-height:1.4}
h1{font-size:1.6em} h2{font-size:1.25em;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
caption{text-align:left;font-style:italic;padding:.2em 0}
th,td{padding:.25em .7em;border-bottom:1px solid #e3e3e3;text-align:left;vertical-align:top}
thead th{border-bottom:2px solid #444} td.p{font-variant-numeric:tabular-nums}
td.code{font-family:monospace;font-size:.85em;overflow-wrap:anywhere}
.small{color:#666;font-size:.85em} img{max-width:100%;height:auto;display:block}
details{margin:.6em 0} summary{cursor:pointer;color:#345}
.warning{background:#fde2e1;border:2px solid #c0392b;padding:.8em;font-weight:bold}
"""


@dataclass
class Report:
    """The report and what was written next to it."""

    path: Path
    figures: list[Path] = field(default_factory=list)  # PNG and SVG of every figure
    tables: list[Path] = field(default_factory=list)  # CSV of every report table


class _Writer:
    """Collects the report's HTML parts, its figure files and its tables' CSV frames."""

    def __init__(self, folder: Path) -> None:
        self.parts: list[str] = []
        self.folder = folder
        self.figure_files: list[Path] = []
        self.csv: dict[str, list[pd.DataFrame]] = {}

    def figure(self, fig, name: str, alt: str) -> None:
        uri, paths = figures.save(fig, self.folder / "figures", name)
        self.figure_files += paths
        self.parts.append(f'<img alt="{html.escape(alt)}" src="{uri}">')

    def table(self, table: Table, site: str | None = None) -> None:
        self.parts.append(tables.to_html(table))
        if table.csv:
            frame = table.frame
            if site is not None:  # per-site copies go into one CSV with a site column
                frame = tables.csv_frame(frame, site)
            self.csv.setdefault(table.key, []).append(frame)


def _sites_of(table: pd.DataFrame) -> list[str]:
    return sorted(s for s in table["site"].unique() if s != POOLED_SITE)


def _section(w: _Writer, con: duckdb.DuckDBPyConnection, table: pd.DataFrame,
             registry: Registry, key: str, k: int | None) -> None:
    per_site = tables.section_tables(con, table, registry, key, k)
    if POOLED_SITE in per_site:
        w.table(per_site[POOLED_SITE], POOLED_SITE)
    sites = [s for s in per_site if s != POOLED_SITE]
    if sites:
        w.parts.append(f"<details><summary>{html.escape(registry.sections[key])} by site "
                       f"({len(sites)} sites)</summary>")
        for site in sites:
            w.parts.append(f"<h3>Site {html.escape(site)}</h3>")
            w.table(per_site[site], site)
        w.parts.append("</details>")


def _first_events(con: duckdb.DuckDBPyConnection, registry: Registry) -> str:
    """The primary definition's first events by label; censored patients said apart."""
    primary = registry.efs[0].name
    counts = dict(con.execute("SELECT event_type, count(*) FROM analysis.efs "
                              "WHERE definition = ? GROUP BY ALL", [primary]).fetchall())
    censored = counts.pop(CENSORED, 0)
    order = [e.type for e in registry.efs[0].events]
    events = ", ".join(f"{html.escape(registry.efs_labels.get(t, t))} {counts[t]}"
                       for t in sorted(counts, key=lambda t: (order.index(t)
                                                              if t in order else len(order))))
    return (f"<p>First event after CART2 ({html.escape(primary)} definition): "
            f"{events or 'none'}. {html.escape(registry.efs_labels.get(CENSORED, CENSORED))}: "
            f"{censored}.</p>")


def _efs(w: _Writer, con: duckdb.DuckDBPyConnection, registry: Registry,
         k: int | None) -> None:
    w.parts.append("<h2>Event-free survival after CART2</h2>")
    w.table(tables.efs_summary(con, POOLED_SITE))
    if not k and registry.efs:  # per-event counts stay at the site under suppression
        w.parts.append(_first_events(con, registry))
    curve = con.execute("SELECT * FROM analysis.efs_curve WHERE site = ? "
                        "ORDER BY definition, time", [POOLED_SITE]).df()
    n = dict(con.execute("SELECT definition, n FROM analysis.efs_summary WHERE site = ?",
                         [POOLED_SITE]).fetchall())
    w.figure(figures.km_figure(curve, registry, n, k), "efs_kaplan_meier",
             "Kaplan-Meier event-free survival after CART2 with numbers at risk")
    sites = [s for (s,) in con.execute("SELECT DISTINCT site FROM analysis.efs_summary "
                                        "WHERE site <> ? ORDER BY site",
                                        [POOLED_SITE]).fetchall()]
    if sites:
        w.parts.append("<details><summary>Event-free survival by site</summary>")
        for site in sites:
            w.parts.append(f"<h3>Site {html.escape(site)}</h3>")
            w.table(tables.efs_summary(con, site))
        w.parts.append("</details>")


def heterogeneity(con: duckdb.DuckDBPyConnection, registry: Registry) -> Table | None:
    """analysis.heterogeneity by endpoint label with journal-style p, or None when this is
    not a pooled database (the table exists only there)."""
    if not quality.exists(con, "analysis.heterogeneity"):
        return None
    rows = [[registry.label(key), sites, tables.num(odds, 2), format_p(cmh), format_p(bd)]
            for key, sites, odds, cmh, bd in con.execute(
                "SELECT h.endpoint, h.sites, h.mh_odds_ratio, h.cmh_p_value, "
                "h.breslow_day_p_value FROM analysis.heterogeneity AS h "
                "LEFT JOIN analysis.endpoint AS e ON e.key = h.endpoint "
                "ORDER BY e.position").fetchall()]
    return Table("heterogeneity", "Heterogeneity between sites: CART1 against CART2 "
                 "stratified by site", pd.DataFrame(rows, columns=[
                     "endpoint", "sites", "Mantel-Haenszel odds ratio",
                     "p (Cochran-Mantel-Haenszel)", "p (Breslow-Day, equal odds ratios)"]),
                 csv=False, classes={"p (Cochran-Mantel-Haenszel)": "p",
                                     "p (Breslow-Day, equal odds ratios)": "p"})


def _methods(w: _Writer, con: duckdb.DuckDBPyConnection, table: pd.DataFrame,
             registry: Registry, k: int | None) -> None:
    w.parts.append("<h2>Methods</h2>")
    w.parts.append(
        "<p>CART1 and CART2 episodes are compared as independent groups (the published "
        "analysis) and, as a sensitivity analysis, paired over patients with both rounds, "
        "except for endpoints where pairing means nothing. Medians with interquartile "
        "range; p-values two-sided."
        + (f" Counts below {k} are shown as &lt;{k}." if k else "")
        + (" " + html.escape(note) if (note := methods.later_episodes_note(con, registry))
           else "")
        + (" Between sites, each proportion marked for it is tested with the "
           "Cochran-Mantel-Haenszel test (site-stratified, no continuity correction) and "
           "the Breslow-Day test of equal odds ratios." if quality.exists(
               con, "analysis.heterogeneity") else "") + "</p>")
    w.table(methods.tests_used(table, registry))
    w.table(methods.grading(registry))
    w.table(methods.response(registry))
    w.table(methods.efs_definitions(registry))
    w.parts.append("<details><summary>Endpoint definitions, windows, thresholds and "
                   "grading</summary>")
    w.table(methods.definitions(registry))
    for ref in methods.reference_tables(con):
        w.table(ref)
    w.parts.append("</details>")
    w.table(methods.software())


def _figures_of(w: _Writer, con: duckdb.DuckDBPyConnection, registry: Registry,
                episodes: pd.DataFrame, section: str) -> None:
    for spec in (f for f in registry.figures if f.section == section):
        if spec.key == "count_dynamics":
            data = con.execute("SELECT * FROM analysis.count_dynamics WHERE site = ? "
                               "ORDER BY concept, round, day", [POOLED_SITE]).df()
            fig = figures.dynamics_figure(data, registry, spec)
        else:
            draw = {"grade_distribution": figures.grade_figure,
                    "cytokine_peaks": figures.cytokine_figure}[spec.key]
            fig = draw(episodes, registry, spec)
        w.figure(fig, spec.key, spec.title)


def write_report(con: duckdb.DuckDBPyConnection, path: Path, table: pd.DataFrame,
                 registry: Registry, *, study: str, sites: Sequence[str],
                 small_cell_k: int | None, warning: str | None = None,
                 run_id: str = "") -> Report:
    """Write the self-contained HTML report to ``path``, its figures (PNG, SVG) to
    ``figures/`` and its tables (CSV) to ``tables/`` beside it."""
    k = small_cell_k
    w = _Writer(path.parent)
    episodes = episode_values(con, registry)
    w.parts += [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
                f"<title>{html.escape(study)}: CART1 vs CART2</title>"
                f"<style>{STYLE}</style></head><body>",
                f"<h1>{html.escape(study)}: first versus second CAR-T infusion</h1>",
                f"<p class=small>cartfhir {html.escape(__version__)}, "
                f"{quality.when(datetime.now(UTC))}; analysis run "
                f"{html.escape(run_id)}; sites: "
                f"{', '.join(html.escape(s) for s in sites)}. Tests and definitions: see "
                "Methods.</p>"]
    if warning:
        w.parts.append(f"<p class=warning>WARNING: {html.escape(warning)}</p>")
    if stale := quality.stale_validation(con):
        w.parts.append(f"<p class=warning>Validation: {html.escape(stale)}.</p>")
    w.table(quality.runs(con, run_id))
    if (packages := quality.site_runs(con)) is not None:
        w.table(packages)
    for i, (key, title) in enumerate(registry.sections.items()):
        w.parts.append(f"<h2>{html.escape(title)}</h2>")
        if i == 0:  # the first section opens with the cohort's characteristics
            w.table(tables.characteristics(con, registry))
            if note := methods.later_episodes_note(con, registry):
                w.parts.append(f"<p>{html.escape(note)}</p>")
        _section(w, con, table, registry, key, k)
        _figures_of(w, con, registry, episodes, key)
    _efs(w, con, registry, k)
    if (between := heterogeneity(con, registry)) is not None:
        w.parts.append("<h2>Heterogeneity between sites</h2>")
        w.table(between)
    w.parts.append("<h2>Data quality</h2>")
    w.table(quality.data_quality(con, list(sites)))
    _methods(w, con, table, registry, k)
    w.parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(w.parts), encoding="utf-8")
    written = tables.write_csv({key: pd.concat(frames, ignore_index=True)
                                for key, frames in w.csv.items()}, path.parent / "tables")
    return Report(path, w.figure_files, written)
