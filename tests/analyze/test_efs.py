"""EFS after CART2 when a cohort (or a site) has no second infusion yet."""

from __future__ import annotations

import duckdb
import pandas as pd

from cartfhir.analyze.efs import patient_events, summaries
from cartfhir.db import write_frame


def test_no_cart2_episode_gives_empty_tables_with_their_columns() -> None:
    no_episodes = pd.DataFrame(columns=["site", "patient_key", "infusion_date",
                                        "last_contact_date", "post_event_type",
                                        "post_event_date", "best_response",
                                        "relapse_after_date", "death_date"])
    events = patient_events(no_episodes)
    summary, curve = summaries(events)
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
    from cartfhir.analyze import analyze
    from tests.analyze.paper_cohort import build
    from tests.transform.conftest import make_config

    build(tmp_path / "data" / "paper")
    config = make_config(tmp_path, ["paper"])
    api.run(config)
    con = duckdb.connect(str(config.output.duckdb))
    con.execute("DELETE FROM cohort.episode_endpoints WHERE round = 2")
    con.close()
    result = analyze(config)
    assert result.tables["analysis.efs"] == 0 and result.tables["analysis.efs_curve"] == 0
    assert result.report.exists()
