"""Event-free survival after CART2: per-patient times and events, and Kaplan-Meier summaries.

Two definitions (domain.md §2):
- ``paper``: the first of relapse, new chemotherapy, HSCT or death after the CART2
  infusion is an event (the paper counts consolidation as an event);
- ``standard``: death, relapse, or no response (treatment failure, at day 0) are
  events; later therapy is not (ELIANA style).
Patients without an event are censored at their last contact. Pure functions.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import pandas as pd

from cartfhir.analyze import stats

DEFINITIONS = ("paper", "standard")
SUMMARY_COLUMNS = ["site", "definition", "n", "events", "median_days", "median_ci_low",
                   "median_ci_high"]
CURVE_FIELDS = [f.name for f in dataclasses.fields(stats.KmStep)]


def _days(start: date, end: Any) -> float | None:
    if end is None or pd.isna(end):
        return None
    return float((pd.Timestamp(end) - pd.Timestamp(start)).days)


def patient_events(episodes: pd.DataFrame) -> pd.DataFrame:
    """One row per CART2 episode and definition: site, patient_key, definition, time, event."""
    rows = []
    for r in episodes.itertuples(index=False):
        censor = _days(r.infusion_date, r.last_contact_date)
        paper_event = r.post_event_type not in (None, "none") and not pd.isna(r.post_event_type)
        rows.append({"site": r.site, "patient_key": r.patient_key, "definition": "paper",
                     "event": bool(paper_event),
                     "event_type": r.post_event_type if paper_event else "censored",
                     "time_days": _days(r.infusion_date, r.post_event_date) if paper_event
                     else censor})
        failure = r.best_response is None or pd.isna(r.best_response) or r.best_response == "NR"
        dated = [(d, kind) for d, kind in ((_days(r.infusion_date, r.relapse_after_date),
                                            "relapse"),
                                           (_days(r.infusion_date, r.death_date), "death"))
                 if d is not None and d > 0]
        if failure:
            time, kind = 0.0, "no_response"
        elif dated:
            time, kind = min(dated)
        else:
            time, kind = censor, "censored"
        rows.append({"site": r.site, "patient_key": r.patient_key, "definition": "standard",
                     "event": kind != "censored", "event_type": kind, "time_days": time})
    return pd.DataFrame(rows, columns=["site", "patient_key", "definition", "event", "event_type",
                                       "time_days"])


def summaries(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Kaplan-Meier per site (and 'all') and definition: (summary rows, curve rows)."""
    summary, curve = [], []
    groups = [("all", events)] + list(events.groupby("site", sort=True))
    for site, part in groups:
        for definition in DEFINITIONS:
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
