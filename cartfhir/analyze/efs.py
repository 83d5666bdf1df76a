"""Event-free survival after CART2: per-patient times and events, and Kaplan-Meier summaries.

The definitions are data (``endpoints.yaml``, ``efs``: the paper's, which counts
consolidation as an event, and the standard ELIANA-style one; domain.md §2), evaluated
here by one rule: the earliest of the definition's events (same-day ties to the one
listed first), else censored at the censor date. ``build_efs`` writes ``analysis.efs``,
``analysis.efs_summary`` and ``analysis.efs_curve``; the rest are pure functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import duckdb
import pandas as pd

from cartfhir.analyze import registry as endpoint_registry
from cartfhir.analyze import stats
from cartfhir.analyze.registry import EfsDefinition, EfsEvent
from cartfhir.config import POOLED_SITE
from cartfhir.db import write_frame

EVENT_COLUMNS = ["site", "patient_key", "definition", "event", "event_type", "time_days"]
SUMMARY_COLUMNS = ["site", "definition", "n", "events", "median_days", "median_ci_low",
                   "median_ci_high"]
CURVE_FIELDS = [f.name for f in dataclasses.fields(stats.KmStep)]
CENSORED = "censored"


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and pd.isna(value))


def _days(start: Any, end: Any) -> float | None:
    if _missing(end):
        return None
    return float((pd.Timestamp(end) - pd.Timestamp(start)).days)


def _event_day(event: EfsEvent, episode: dict[str, Any]) -> float | None:
    """The day of ``event`` for this episode, or None when it did not happen."""
    if event.date is not None:
        day = _days(episode["infusion_date"], episode[event.date])
        return day if day is not None and day > 0 else None  # after the infusion day only
    for column, allowed in event.when:
        value = episode[column]
        if not (None in allowed if _missing(value) else value in allowed):
            return None
    return float(event.day)


def first_event(definition: EfsDefinition, episode: dict[str, Any]) -> tuple[str, float | None]:
    """(event type, day) of the episode's first event, or ('censored', censor day)."""
    happened = [(day, i, e.type) for i, e in enumerate(definition.events)
                if (day := _event_day(e, episode)) is not None]
    if happened:
        day, _, kind = min(happened)
        return kind, day
    return CENSORED, _days(episode["infusion_date"], episode[definition.censor])


def patient_events(episodes: pd.DataFrame,
                   definitions: Sequence[EfsDefinition]) -> pd.DataFrame:
    """One row per CART2 episode and definition: site, patient_key, definition, time, event."""
    rows = []
    for episode in episodes.to_dict("records"):
        for definition in definitions:
            kind, day = first_event(definition, episode)
            rows.append({"site": episode["site"], "patient_key": episode["patient_key"],
                         "definition": definition.name, "event": kind != CENSORED,
                         "event_type": kind, "time_days": day})
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


def summaries(events: pd.DataFrame,
              definitions: Sequence[EfsDefinition]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Kaplan-Meier per site (and 'all') and definition: (summary rows, curve rows)."""
    summary, curve = [], []
    groups = [(POOLED_SITE, events)] + list(events.groupby("site", sort=True))
    for site, part in groups:
        for definition in (d.name for d in definitions):
            rows = part[(part["definition"] == definition) & part["time_days"].notna()]
            if rows.empty:
                continue
            km = stats.kaplan_meier(rows["time_days"].tolist(), rows["event"].tolist())
            summary.append({"site": site, "definition": definition, "n": len(rows),
                            "events": int(rows["event"].sum()), "median_days": km.median,
                            "median_ci_low": km.median_ci_low,
                            "median_ci_high": km.median_ci_high})
            for step in km.table:
                curve.append({"site": site, "definition": definition,
                              **dataclasses.asdict(step)})
    # Explicit columns: a cohort with no CART2 episode yet still gets (empty) tables.
    return (pd.DataFrame(summary, columns=SUMMARY_COLUMNS),
            pd.DataFrame(curve, columns=["site", "definition", *CURVE_FIELDS]))


def build_efs(con: duckdb.DuckDBPyConnection, context: Any = None) -> int:
    """Builder of analysis.efs, analysis.efs_summary and analysis.efs_curve; rows of efs."""
    registry = endpoint_registry.effective(con)
    cart2 = con.execute("SELECT * FROM cohort.episode_endpoints WHERE round = ?",
                        [registry.rounds[1]]).df()
    events = patient_events(cart2, registry.efs)
    summary, curve = summaries(events, registry.efs)
    con.execute("CREATE SCHEMA IF NOT EXISTS analysis")
    write_frame(con, "analysis.efs_summary", summary)
    write_frame(con, "analysis.efs_curve", curve)
    return write_frame(con, "analysis.efs", events)
