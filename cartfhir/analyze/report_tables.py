"""The report's tables as DataFrames: one object per table, rendered to HTML and to CSV.

A ``Table`` is built once and shown twice, in report.html and as ``tables/<key>.csv``
next to it, so the two never disagree. Cells are formatted as the paper prints them
(median (IQR), events/n (%), journal-style p); test names are the human ones
(``stats.TEST_NAMES``). Counts arrive already suppressed when small-cell suppression is
on, and the n in a column header is suppressed the same way.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from cartfhir.analyze.figures import ROUND_NAMES, typeset
from cartfhir.analyze.registry import Registry
from cartfhir.analyze.stats import format_p, small_cell, test_name
from cartfhir.config import POOLED_SITE


@dataclass
class Table:
    """A report table: ``key`` names its CSV; ``csv`` false when an export already is it."""

    key: str
    caption: str
    frame: pd.DataFrame
    csv: bool = True
    note: str = ""
    classes: dict[str, str] = field(default_factory=dict)  # column -> CSS class


def num(value: Any, digits: int = 1) -> str:
    """A number with thousands separators, or ``–`` when missing."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
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
    return (f"{num(row[f'{prefix}_median'], digits)} "
            f"({num(row[f'{prefix}_q1'], digits)}–{num(row[f'{prefix}_q3'], digits)}); "
            f"n={n}")


def _has_data(n: Any) -> bool:
    """Whether a group (or the pairs) has values: a suppressed count (``<5``) has some."""
    return isinstance(n, str) or (n is not None and not pd.isna(n) and n > 0)


def _p(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def episodes_per_round(con: duckdb.DuckDBPyConnection, registry: Registry,
                       small_cell_k: int | None) -> dict[tuple[str, int], int | str]:
    """(site, round) -> episodes of that round, pooled under POOLED_SITE too."""
    rows = con.execute(
        "SELECT coalesce(site, ?), round, count(*) FROM cohort.episode_endpoints "
        "WHERE round IN (?, ?) GROUP BY GROUPING SETS ((site, round), (round))",
        [POOLED_SITE, *registry.rounds]).fetchall()
    return {(site, rnd): small_cell(n, small_cell_k) if small_cell_k else n
            for site, rnd, n in rows}


def round_headers(counts: dict[tuple[str, int], int | str], registry: Registry,
                  site: str) -> list[str]:
    """``CART1 (n=9)``, ``CART2 (n=9)`` for one site."""
    return [f"{name} (n={counts.get((site, rnd), 0)})"
            for rnd, name in zip(registry.rounds, ROUND_NAMES, strict=True)]


def section_table(table: pd.DataFrame, registry: Registry, section: str, site: str,
                  headers: list[str]) -> pd.DataFrame:
    """One section's endpoints at one site: label, both rounds, tests and p-values."""
    rows = []
    for endpoint in (e for e in registry.endpoints if e.section == section):
        match = table[(table["site"] == site) & (table["endpoint"] == endpoint.key)]
        if match.empty:
            continue
        r = match.iloc[0]
        tested = _has_data(r["cart1_n"]) and _has_data(r["cart2_n"])
        paired = tested and test_name(r["paired_test"]) != "–" and _has_data(r["n_pairs"])
        rows.append([endpoint.label, *(_cell(r, p, endpoint.digits) for p in ("cart1", "cart2")),
                     format_p(_p(r["p_value"])) if tested else "–",
                     test_name(r["test"]) if tested else "–",
                     format_p(_p(r["paired_p_value"])) if paired else "–",
                     test_name(r["paired_test"]) if paired else "–",
                     r["n_pairs"] if paired else "–"])
    return pd.DataFrame(rows, columns=["endpoint", *headers, "p", "test", "paired p",
                                       "paired test", "pairs"])


def section_tables(con: duckdb.DuckDBPyConnection, table: pd.DataFrame, registry: Registry,
                   section: str, small_cell_k: int | None) -> dict[str, Table]:
    """The section's table per site, POOLED_SITE first (only the sites the table has)."""
    counts = episodes_per_round(con, registry, small_cell_k)
    sites = [POOLED_SITE, *sorted(s for s in table["site"].unique() if s != POOLED_SITE)]
    out = {}
    for site in (s for s in sites if (table["site"] == s).any()):
        frame = section_table(table, registry, section, site,
                              round_headers(counts, registry, site))
        out[site] = Table(f"{section}", registry.sections[section], frame,
                          classes={"p": "p", "paired p": "p", "test": "small",
                                   "paired test": "small", "pairs": "small"})
    return out


def characteristics(con: duckdb.DuckDBPyConnection, registry: Registry) -> Table:
    """Episodes, sex, age and relapse site before the infusion, by round (pooled)."""
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
    frame = pd.DataFrame([[names[r[0]], r[1], r[2], num(r[3], 0), r[4], r[5], r[6]]
                          for r in rows],
                         columns=["round", "episodes", "male", "median age (y)",
                                  "relapse: marrow only", "marrow + other",
                                  "isolated extramedullary"])
    return Table("cohort", "Cohort by round", frame)  # "characteristics" is the section


def efs_summary(con: duckdb.DuckDBPyConnection, site: str) -> Table:
    """Kaplan-Meier median EFS per definition (analysis.efs_summary; exported already)."""
    rows = con.execute("SELECT definition, n, events, median_days, median_ci_low, "
                       "median_ci_high FROM analysis.efs_summary WHERE site = ? "
                       "ORDER BY definition", [site]).fetchall()
    out = []
    for definition, n, events, median, low, high in rows:
        bounds = (num(v, 0) if v is not None and not pd.isna(v) else "not reached"
                  for v in (low, high))
        out.append([definition, n, events,
                    num(median, 0) if median is not None else "not reached",
                    "–".join(bounds)])
    frame = pd.DataFrame(out, columns=["definition", "patients", "events",
                                       "median EFS (days)", "95% CI"])
    return Table("efs_summary", "Median event-free survival after CART2", frame, csv=False,
                 note="as analysis/efs_summary.csv")


def to_html(table: Table) -> str:
    """The table as an HTML <table> with escaped cells and a <caption>."""
    head = "".join(f"<th>{html.escape(typeset(str(c)))}</th>" for c in table.frame.columns)
    body = []
    for row in table.frame.itertuples(index=False):
        cells = []
        for column, value in zip(table.frame.columns, row, strict=True):
            css = table.classes.get(column)
            shown = "–" if value is None or (not isinstance(value, str) and pd.isna(value)) \
                else str(value)
            cells.append(f"<td class={css}>" if css else "<td>")
            cells[-1] += html.escape(shown if css == "code" else typeset(shown)) + "</td>"
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table><caption>{html.escape(typeset(table.caption))}</caption><thead><tr>{head}"
            f"</tr></thead><tbody>{''.join(body)}</tbody></table>")


def csv_frame(frame: pd.DataFrame, site: str) -> pd.DataFrame:
    """A per-site table for its CSV: a ``site`` column, headers the same at every site
    (``CART1 (n=9)`` -> ``CART1``) and each group's n kept in ``cart1_n``, ``cart2_n``."""
    out = frame.copy()
    names, counts = [], {}
    for column in out.columns:
        name, sep, n = str(column).partition(" (n=")
        names.append(name)
        if sep and f"{name.lower()}_n" not in out.columns:
            n = n.removesuffix(")")
            counts[f"{name.lower()}_n"] = int(n) if n.isdigit() else n
    out.columns = names
    for column, n in counts.items():
        out[column] = n
    out.insert(0, "site", site)
    return out


def write_csv(frames: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
    """Each frame as ``<folder>/<name>.csv``; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in frames.items():
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False)
        written.append(path)
    return written
