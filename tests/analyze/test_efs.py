"""EFS after CART2: each definition of the registry on hand-made episodes, and a cohort
(or a site) with no second infusion yet."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from cartfhir.analyze.efs import patient_events, summaries
from cartfhir.db import write_frame


def test_no_cart2_episode_gives_empty_tables_with_their_columns() -> None:
    no_episodes = pd.DataFrame(columns=["site", "patient_key", "infusion_date",
                                        "last_contact_date", "post_event_type",
                                        "post_event_date", "best_response",
                                        "relapse_after_date", "chemotherapy_after_date",
                                        "hsct_after_date", "death_date"])
    definitions = list(_definitions().values())
    events = patient_events(no_episodes, definitions)
    summary, curve = summaries(events, definitions)
    assert summary.empty and curve.empty
    assert {"site", "definition", "n", "events", "median_days"} <= set(summary.columns)
    assert {"site", "definition", "time", "survival", "censored"} <= set(curve.columns)
    con = duckdb.connect()
    for name, frame in (("efs", events), ("efs_summary", summary), ("efs_curve", curve)):
        write_frame(con, name, frame)  # failed: "Need a DataFrame with at least one column"
    assert con.execute("SELECT count(*), max(time) FROM efs_curve WHERE site = 'all'"
                       ).fetchone() == (0, None)


def test_analyze_a_cohort_without_second_infusions(tmp_path) -> None:
    """A site early in the study has no CART2 yet: analyze reports, it does not crash."""
    from cartfhir import api
    from cartfhir.api import analyze
    from tests.analyze.paper_cohort import build
    from tests.testbed import make_config

    build(tmp_path / "data" / "paper")
    config = make_config(tmp_path, ["paper"])
    api.run(config)
    con = duckdb.connect(str(config.output.duckdb))
    con.execute("DELETE FROM cohort.episode_endpoints WHERE round = 2")
    con.close()
    result = analyze(config)
    assert result.tables["analysis.efs"] == 0 and result.tables["analysis.efs_curve"] == 0
    assert result.report.exists()


def _definitions() -> dict:
    from cartfhir.analyze import registry

    return {d.name: d for d in registry.defaults().efs}


EPISODE = {"site": "s", "infusion_date": "2024-01-10", "last_contact_date": "2024-12-31",
           "best_response": "CR", "relapse_after_date": None, "chemotherapy_after_date": None,
           "hsct_after_date": None, "death_date": None}


def _events(definition: str, **episode) -> list[tuple]:
    frame = pd.DataFrame([{**EPISODE, "patient_key": "p", **episode}])
    for column in ("infusion_date", "last_contact_date", "relapse_after_date",
                   "chemotherapy_after_date", "hsct_after_date", "death_date"):
        frame[column] = pd.to_datetime(frame[column]).dt.date
    rows = patient_events(frame, [_definitions()[definition]])
    return [(r.event, r.event_type, r.time_days) for r in rows.itertuples()]


@pytest.mark.parametrize(("episode", "expected"), [
    ({"relapse_after_date": "2024-03-10", "death_date": "2024-06-01"},
     (True, "relapse", 60.0)),                                    # relapse, then death
    ({"hsct_after_date": "2024-02-09"}, (True, "hsct", 30.0)),   # consolidation is an event
    ({"chemotherapy_after_date": "2024-02-01", "relapse_after_date": "2024-02-01"},
     (True, "relapse", 22.0)),                                    # same day: relapse first
    ({"death_date": "2024-02-01", "hsct_after_date": "2024-02-01"},
     (True, "death", 22.0)),                                      # same day: death first
    ({"best_response": "NR"}, (False, "censored", 356.0)),       # no response: not an event
    ({}, (False, "censored", 356.0)),                            # censored at last contact
    ({"death_date": "2024-01-10"}, (False, "censored", 356.0)),  # day 0 is not after CART2
    ({"last_contact_date": None}, (False, "censored", None)),    # no date to censor at
])
def test_paper_definition(episode: dict, expected: tuple) -> None:
    assert _events("paper", **episode) == [expected]


@pytest.mark.parametrize(("episode", "expected"), [
    ({"relapse_after_date": "2024-03-10", "death_date": "2024-06-01"},
     (True, "relapse", 60.0)),                                    # relapse, then death
    ({"hsct_after_date": "2024-02-09", "chemotherapy_after_date": "2024-02-01"},
     (False, "censored", 356.0)),                                 # later therapy: no event
    ({"best_response": "NR", "relapse_after_date": "2024-03-10"},
     (True, "no_response", 0.0)),                                 # treatment failure, day 0
    ({"best_response": None}, (True, "no_response", 0.0)),       # no assessment: failure
    ({"best_response": "CRi"}, (False, "censored", 356.0)),
    ({"best_response": "NE"}, (False, "censored", 356.0)),      # a marrow remission: no failure
    ({"death_date": "2024-02-01", "relapse_after_date": "2024-02-01"},
     (True, "death", 22.0)),                                      # same day: death first
    ({"death_date": "2024-01-10"}, (False, "censored", 356.0)),  # day 0 is not after CART2
    ({"relapse_after_date": None, "last_contact_date": None}, (False, "censored", None)),
])
def test_standard_definition(episode: dict, expected: tuple) -> None:
    assert _events("standard", **episode) == [expected]
