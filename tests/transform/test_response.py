"""Best response through the pipeline: the blood counts around a marrow assessment decide
CR against CRi, and a remission whose deciding counts are missing is not evaluable (NE),
with the reason, never guessed as CRi."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.transform.small_site import LOCAL, Site, endpoint

MARROW_DAY = 28
NO_COUNTS = "no ANC or platelet count from day 25 to the day-28 marrow"


def _marrow(site: Site, day: int, blasts: float) -> None:
    site.lab(day, blasts, "%", code="11150-0", ucum="%")


def _anc(site: Site, day: int, value: float) -> None:
    site.lab(day, value, "10*9/L", code="751-8", ucum="10*9/L")


def _platelets(site: Site, day: int, value: float) -> None:
    site.lab(day, value, "10*9/L", code="777-3", ucum="10*9/L")


def _analysis_value(con: duckdb.DuckDBPyConnection, key: str) -> Any:
    """An endpoint of analyze/endpoints.yaml for the one episode, as the analysis reads it."""
    from cartfhir.analyze import registry
    from cartfhir.analyze.compare import endpoint_sql

    rendered = registry.effective(con)
    frame = con.execute(endpoint_sql(rendered.endpoints, rendered.rounds)).df()
    value = frame.loc[frame["round"] == 1, key].item()
    return None if value is None or value != value else bool(value)


@pytest.mark.parametrize(("counts", "response", "reason"), [
    ([], "NE", NO_COUNTS),
    ([(_anc, 24, 2.0), (_platelets, 24, 150.0)], "NE", NO_COUNTS),  # before the lookback
    ([(_anc, 28, 1.5)], "NE", "no platelet count from day 25 to the day-28 marrow"),
    ([(_platelets, 26, 150.0)], "NE", "no ANC from day 25 to the day-28 marrow"),
    ([(_anc, 28, 0.5)], "CRi", None),  # a known low count decides, whatever the other
    ([(_anc, 27, 1.5), (_platelets, 28, 40.0)], "CRi", None),
    ([(_anc, 25, 1.0), (_platelets, 28, 100.0)], "CR", None),  # at the cuts, in the lookback
], ids=["no counts", "counts too early", "no platelets", "no ANC", "ANC low, no platelets",
        "platelets low", "counts at the cuts"])
def test_the_counts_near_the_marrow_decide_cr_cri_or_not_evaluable(
        tmp_path: Path, counts: list, response: str, reason: str | None) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    _marrow(site, MARROW_DAY, 2.0)
    site.lab(MARROW_DAY, "<0.01%", system=LOCAL, code="M1", display="骨髓微小残留病(MRD)流式检测")
    for add, day, value in counts:
        add(site, day, value)
    con = site.build()
    assert endpoint(con, "best_response") == response
    assert endpoint(con, "response_reason") == reason
    # A marrow remission is CR or CRi whatever the counts (domain.md §4), so NE counts
    # as a complete remission, MRD-negative here; endpoints.yaml names NE to say so.
    assert endpoint(con, "mrd_negative_cr") is True
    assert _analysis_value(con, "cr") is True
    assert _analysis_value(con, "mrd_negative_cr") is True
    con.close()


@pytest.mark.parametrize(("other_marrow", "response", "reason"), [
    ((42, 1.0, [(_anc, 42, 0.4), (_platelets, 42, 30.0)]), "CRi", None),
    ((60, 40.0, []), "NE", "no ANC or platelet count from day 11 to the day-14 marrow"),
    ((7, 2.0, []), "NE", "no ANC or platelet count from day 4 to the day-7 marrow"),
], ids=["an evaluable remission wins", "NE beats NR", "the earliest NE gives the reason"])
def test_ne_ranks_below_an_evaluable_remission_and_above_nr(
        tmp_path: Path, other_marrow: tuple, response: str, reason: str | None) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    _marrow(site, 14, 3.0)  # a remission without counts: NE
    day, blasts, counts = other_marrow
    _marrow(site, day, blasts)
    for add, count_day, value in counts:
        add(site, count_day, value)
    con = site.build()
    assert (endpoint(con, "best_response"), endpoint(con, "response_reason")) == (response,
                                                                                   reason)
    assert _analysis_value(con, "cr") is True
    con.close()


def test_nr_is_not_a_remission_whatever_the_counts(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    _marrow(site, MARROW_DAY, 5.0)  # at the cut: not < 5 %
    con = site.build()
    assert (endpoint(con, "best_response"), endpoint(con, "response_reason")) == ("NR", None)
    assert _analysis_value(con, "cr") is False
    con.close()
