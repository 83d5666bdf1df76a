"""The HTML report: the paper's tables (CART1, CART2, p) and figures, in one self-contained file.

Figures are drawn with matplotlib (Agg) and embedded as base64 PNG, so the file
opens anywhere without a server or network. p-values are printed journal style
(``.029``). Counts arrive already suppressed when small-cell suppression is on.
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
from cartfhir.analyze.compare import Endpoint  # noqa: E402
from cartfhir.analyze.stats import format_p  # noqa: E402

CART1, CART2 = "#1f77b4", "#d62728"
MAX_PAIRED_LINES = 300  # per cytokine panel; a random (fixed-seed) sample beyond that
CYTOKINES = [("il2_peak", "IL-2"), ("il4_peak", "IL-4"), ("il6_peak", "IL-6"),
             ("il10_peak", "IL-10"), ("il17a_peak", "IL-17A"), ("ifng_peak", "IFN-γ"),
             ("tnfa_peak", "TNF-α")]
COUNTS = [("anc", "ANC (10^9/L)"), ("hemoglobin", "Hemoglobin (g/L)"),
          ("platelets", "Platelets (10^9/L)")]


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


def _cell(row: pd.Series, prefix: str) -> str:
    if row["kind"] == "proportion":
        events, n = row[f"{prefix}_events"], row[f"{prefix}_n"]
        if isinstance(events, str) or isinstance(n, str):
            return f"{events}/{n}"
        share = f" ({100 * events / n:.0f}%)" if n else ""
        return f"{events}/{n}{share}"
    n = row[f"{prefix}_n"]
    if not isinstance(n, str) and not n:
        return "–"
    digits = 0 if row["kind"] == "ordinal" else 2 if "nadir" in row["endpoint"] else 1
    return (f"{_num(row[f'{prefix}_median'], digits)} "
            f"({_num(row[f'{prefix}_q1'], digits)}–{_num(row[f'{prefix}_q3'], digits)}); "
            f"n={n}")


def _section_table(table: pd.DataFrame, endpoints: list[Endpoint], section: str) -> str:
    keys = [e for e in endpoints if e.section == section]
    rows = []
    for endpoint in keys:
        match = table[(table["site"] == "all") & (table["endpoint"] == endpoint.key)]
        if match.empty:
            continue
        r = match.iloc[0]
        rows.append(
            f"<tr><td>{html.escape(endpoint.label)}</td><td>{_cell(r, 'cart1')}</td>"
            f"<td>{_cell(r, 'cart2')}</td><td class=p>{format_p(_p(r['p_value']))}</td>"
            f"<td class=small>{html.escape(str(r['test']))}</td>"
            f"<td class=p>{format_p(_p(r['paired_p_value']))}</td>"
            f"<td class=small>{r['n_pairs']}</td></tr>")
    return ("<table><thead><tr><th></th><th>CART1</th><th>CART2</th><th>p</th><th>test</th>"
            "<th>paired p</th><th>pairs</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")


def _p(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _dynamics_figure(con: duckdb.DuckDBPyConnection) -> str:
    data = con.execute("SELECT * FROM analysis.count_dynamics WHERE site = 'all' "
                       "ORDER BY concept, round, day").df()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (concept, label) in zip(axes, COUNTS, strict=True):
        for rnd, color in ((1, CART1), (2, CART2)):
            part = data[(data["concept"] == concept) & (data["round"] == rnd)]
            if part.empty:
                continue
            ax.plot(part["day"], part["median"], color=color, label=f"CART{rnd}")
            ax.fill_between(part["day"], part["q1"], part["q3"], color=color, alpha=0.15)
        ax.set_title(label)
        ax.set_xlabel("days after infusion")
        if concept != "hemoglobin":
            ax.set_yscale("symlog", linthresh=0.1 if concept == "anc" else 10)
        ax.legend(frameon=False)
    fig.suptitle("Blood counts after each infusion (median and IQR)")
    return _png(fig)


def _cytokine_figure(con: duckdb.DuckDBPyConnection) -> str:
    data = con.execute("SELECT site, patient_key, round, " +
                       ", ".join(c for c, _ in CYTOKINES) +
                       " FROM cohort.episode_endpoints WHERE round IN (1, 2)").df()
    fig, axes = plt.subplots(1, len(CYTOKINES), figsize=(15, 3.4), sharey=False)
    for ax, (column, label) in zip(axes, CYTOKINES, strict=True):
        wide = data.pivot_table(index=["site", "patient_key"], columns="round", values=column)
        if {1, 2} <= set(wide.columns):
            pairs = wide.dropna()
            if len(pairs) > MAX_PAIRED_LINES:  # thousands of lines hide each other anyway
                pairs = pairs.sample(MAX_PAIRED_LINES, random_state=0)
            ax.plot([[1] * len(pairs), [2] * len(pairs)], [pairs[1], pairs[2]],
                    color="grey", alpha=0.4, lw=0.8)
        for rnd, color in ((1, CART1), (2, CART2)):
            values = data.loc[data["round"] == rnd, column].dropna()
            ax.scatter([rnd] * len(values), values, color=color, s=10, zorder=3)
        ax.set_xticks([1, 2], ["CART1", "CART2"])
        ax.set_xlim(0.6, 2.4)
        ax.set_title(label)
        if (data[column].dropna() > 0).any():
            ax.set_yscale("log")
        else:
            ax.text(1.5, 0.5, "no results", ha="center", transform=ax.get_xaxis_transform())
    axes[0].set_ylabel("peak, pg/mL (log)")
    fig.suptitle("Cytokine peaks per patient, days 0-14 (lines join a patient's two rounds; "
                 f"at most {MAX_PAIRED_LINES} patients' lines per panel)")
    return _png(fig)


def _grade_figure(con: duckdb.DuckDBPyConnection) -> str:
    data = con.execute("SELECT round, crs_max_grade, cres_max_grade FROM "
                       "cohort.episode_endpoints WHERE round IN (1, 2)").df()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, (column, title) in zip(axes, (("crs_max_grade", "CRS"),
                                          ("cres_max_grade", "CRES/ICANS")), strict=True):
        width = 0.38
        for offset, rnd, color in ((-width / 2, 1, CART1), (width / 2, 2, CART2)):
            counts = data.loc[data["round"] == rnd, column].value_counts()
            grades = list(range(0, 6))
            ax.bar([g + offset for g in grades], [counts.get(g, 0) for g in grades], width,
                   color=color, label=f"CART{rnd}")
        ax.set_xticks(range(0, 6))
        ax.set_xlabel("maximum grade")
        ax.set_ylabel("episodes")
        ax.set_title(f"{title} grade distribution")
        ax.legend(frameon=False)
    return _png(fig)


def _km_figure(con: duckdb.DuckDBPyConnection) -> str:
    curve = con.execute("SELECT * FROM analysis.efs_curve WHERE site = 'all' "
                        "ORDER BY definition, time").df()
    fig, ax = plt.subplots(figsize=(7, 4))
    for definition, color in (("paper", "#2ca02c"), ("standard", "#9467bd")):
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


def _characteristics(con: duckdb.DuckDBPyConnection) -> str:
    rows = con.execute("""
        SELECT round, count(*) AS episodes,
               count(*) FILTER (WHERE sex = 'male') AS male,
               median(age_years) AS age,
               count(*) FILTER (WHERE relapse_site_before = 'marrow') AS marrow,
               count(*) FILTER (WHERE relapse_site_before LIKE 'marrow+%') AS combined,
               count(*) FILTER (WHERE relapse_site_before NOT LIKE 'marrow%') AS extramedullary
        FROM cohort.episode_endpoints WHERE round IN (1, 2) GROUP BY round ORDER BY round
    """).fetchall()
    body = "".join(
        f"<tr><td>CART{r[0]}</td><td>{r[1]}</td><td>{r[2]}</td><td>{_num(r[3], 0)}</td>"
        f"<td>{r[4]}</td><td>{r[5]}</td><td>{r[6]}</td></tr>" for r in rows)
    return ("<table><thead><tr><th>round</th><th>episodes</th><th>male</th>"
            "<th>median age (y)</th><th>relapse: marrow only</th><th>marrow + other</th>"
            "<th>isolated extramedullary</th></tr></thead><tbody>" + body + "</tbody></table>")


def _efs_tables(con: duckdb.DuckDBPyConnection, small_cells: bool) -> str:
    summary = con.execute("SELECT * FROM analysis.efs_summary WHERE site = 'all' "
                          "ORDER BY definition").fetchall()
    out = ["<table><thead><tr><th>definition</th><th>patients</th><th>events</th>"
           "<th>median EFS (days)</th><th>95% CI</th></tr></thead><tbody>"]
    for r in summary:
        median = _num(r[4], 0) if r[4] is not None else "not reached"
        low, high = (_num(v, 0) if v is not None and not pd.isna(v) else "NR" for v in r[5:7])
        out.append(f"<tr><td>{r[1]}</td><td>{r[2]}</td><td>{r[3]}</td><td>{median}</td>"
                   f"<td>{low}–{high}</td></tr>")
    out.append("</tbody></table>")
    if not small_cells:
        types = con.execute("SELECT event_type, count(*) FROM analysis.efs WHERE definition = "
                            "'paper' GROUP BY ALL ORDER BY 2 DESC").fetchall()
        out.append("<p>First event after CART2 (paper definition): " + ", ".join(
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
                 endpoints: list[Endpoint], sections: dict[str, str], *, study: str,
                 sites: Sequence[str], small_cell_k: int | None,
                 warning: str | None = None) -> Path:
    """Write the self-contained HTML report to ``path`` and return it."""
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
    parts.append("<h2>Patient characteristics</h2>" + _characteristics(con))
    for key, title in sections.items():
        heading = "" if key == "characteristics" else f"<h2>{html.escape(title)}</h2>"
        parts.append(heading + _section_table(table, endpoints, key))
        if key == "adverse_events":
            parts.append(_grade_figure(con))
        elif key == "cytokines":
            parts.append(_cytokine_figure(con))
        elif key == "hematologic":
            parts.append(_dynamics_figure(con))
    parts.append("<h2>Event-free survival after CART2</h2>"
                 + _efs_tables(con, bool(small_cell_k)) + _km_figure(con))
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
