"""The local day of a record when a server sends times in another offset (sites[].timezone).

The rule (docs/clinical-definitions.md, "Episodes and study days"): with a site time zone, a
date-time that carries an offset or Z counts on its calendar day in that zone; without one,
and for a date alone, the day is the one written. A New York infusion at 23:30 local sent as
04:30Z, and a Shanghai result at 07:30 local sent as 23:30Z the day before, stay on their
local days.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pytest

from cartfhir.graph import create_macros, load_graph

from .small_site import LOCAL, T0, Site, day, one

NEW_YORK, SHANGHAI = "America/New_York", "Asia/Shanghai"


def local(offset: int) -> date:
    return date.fromisoformat(day(offset, None))


# ---- the macro, on its own ------------------------------------------------------------------
DAYS = [  # (dateTime as sent, site zone, the local day)
    ("2024-03-02T04:30:00Z", NEW_YORK, "2024-03-01"),  # 23:30 EST
    ("2024-03-12T04:30:00Z", NEW_YORK, "2024-03-12"),  # 00:30 EDT: DST began on 10 March
    ("2024-03-12T03:30:00Z", NEW_YORK, "2024-03-11"),  # 23:30 EDT
    ("2024-03-01T23:30:00-05:00", NEW_YORK, "2024-03-01"),  # the site's own offset
    ("2024-03-02T23:30:00Z", SHANGHAI, "2024-03-03"),  # 07:30 local
    ("2024-03-02T14:00:00Z", SHANGHAI, "2024-03-02"),  # 22:00 local: the same day
    ("2024-03-03T07:30:00+08:00", SHANGHAI, "2024-03-03"),
    ("2024-03-03T07:30+08:00", SHANGHAI, "2024-03-03"),  # no seconds
    ("2024-03-02T23:30:00.123456789Z", SHANGHAI, "2024-03-03"),  # nanoseconds
    ("2024-03-02T20:00:00-05:00", "Asia/Kolkata", "2024-03-03"),  # 06:30, half-hour zone
    ("2024-03-02", SHANGHAI, "2024-03-02"),  # a date alone is as written
    ("2024-03", SHANGHAI, None),
    ("2024-03-02T23:30:00", SHANGHAI, "2024-03-02"),  # no offset: as written
    ("2024-03-02T24:00:00Z", SHANGHAI, "2024-03-02"),  # not a FHIR time: as written
    ("2024-02-30T23:30:00Z", SHANGHAI, None),
    ("2024-03-02T04:30:00Z", None, "2024-03-02"),  # no site zone: as written
    (None, SHANGHAI, None),
]


@pytest.mark.parametrize(("sent", "zone", "expected"), DAYS)
def test_site_date_is_the_day_in_the_site_zone(sent: str | None, zone: str | None,
                                                expected: str | None) -> None:
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        create_macros(con, load_graph())
        got = con.execute("SELECT site_date(CAST(? AS VARCHAR), CAST(? AS VARCHAR))",
                          [sent, zone]).fetchone()[0]
    assert got == (None if expected is None else date.fromisoformat(expected))


# ---- through the pipeline -------------------------------------------------------------------
def _new_york(root: Path) -> Site:
    """An infusion at 23:30 on T0 in New York, sent by a server that writes UTC."""
    site = Site(root, "site_ny")
    site.infusion(1, time="04:30:00Z")
    return site


def _shanghai(root: Path) -> tuple[Site, dict[str, str]]:
    """A Shanghai patient whose records, but two, are sent in UTC: each at 07:30 local, so
    each lands on the day before in UTC. Returns the site and the ids of its records."""
    site = Site(root, "site_sh")
    ids = {"infusion": site.infusion(0, time="02:00:00Z"),  # 10:00 local
           "anc": site.lab(2, 0.4, "10*9/L", ucum="10*9/L", time="23:30:00Z"),  # day 3
           "own_offset": site.lab(5, 0.6, "10*9/L", ucum="10*9/L", time="07:30:00+08:00"),
           "date_only": site.lab(6, 0.7, "10*9/L", ucum="10*9/L", time=None),
           "crs": site.condition(3, text="Cytokine release syndrome", stage="grade 2",
                                 time="23:30:00Z"),  # day 4
           "cres": site.lab(4, "2级", system=LOCAL, code="CRES-GRADE", display="CRES分级",
                            time="23:30:00Z")}  # day 5
    site.resources[0]["deceasedDateTime"] = day(59, "23:30:00Z")  # day 60
    return site, ids


def _build(root: Path, zones: dict[str, str | None]) -> tuple[duckdb.DuckDBPyConnection,
                                                               dict[str, str]]:
    new_york = _new_york(root)
    new_york.write()
    shanghai, ids = _shanghai(root)
    config = {site: {"timezone": zone} for site, zone in zones.items() if zone}
    return shanghai.build(new_york.name, **config), ids


def test_a_new_york_infusion_at_2330_sent_as_utc_is_on_its_local_day(tmp_path: Path) -> None:
    con, _ = _build(tmp_path, {"site_ny": NEW_YORK, "site_sh": SHANGHAI})
    assert one(con, "SELECT start_date FROM harmonized.procedure WHERE site = 'site_ny'") \
        == date.fromisoformat(T0)
    assert one(con, "SELECT infusion_date FROM cohort.episode WHERE site = 'site_ny'") \
        == date.fromisoformat(T0)
    assert one(con, "SELECT first_infusion_date FROM cohort.patient WHERE site = 'site_ny'") \
        == date.fromisoformat(T0)


def test_shanghai_records_sent_in_utc_count_on_their_local_days(tmp_path: Path) -> None:
    con, ids = _build(tmp_path, {"site_ny": NEW_YORK, "site_sh": SHANGHAI})
    days = dict(con.execute(
        "SELECT observation_id, effective_date FROM harmonized.observation_value "
        "WHERE site = 'site_sh'").fetchall())
    assert days == {ids["anc"]: local(3), ids["own_offset"]: local(5),
                    ids["date_only"]: local(6)}
    assert one(con, "SELECT day FROM cohort.episode_lab "
               "WHERE site = 'site_sh' AND observation_id = ?",
               ids["anc"]) == 3
    assert one(con, "SELECT start_date FROM harmonized.procedure "
               "WHERE site = 'site_sh' AND procedure_id = ?", ids["infusion"]) == local(0)
    assert one(con, "SELECT onset_date FROM harmonized.condition WHERE condition_id = ?",
               ids["crs"]) == local(4)
    assert one(con, "SELECT assessed_date FROM harmonized.grade_assessment "
               "WHERE observation_id = ?", ids["cres"]) == local(5)
    assert one(con, "SELECT death_date FROM cohort.patient WHERE site = 'site_sh'") == local(60)
    endpoints = con.execute("SELECT crs_onset_day, cres_onset_day, anc_nadir "
                            "FROM cohort.episode_endpoints WHERE site = 'site_sh'").fetchall()
    assert endpoints == [(4, 5, pytest.approx(0.4))]


def test_without_a_site_time_zone_the_day_is_the_one_written(tmp_path: Path) -> None:
    con, ids = _build(tmp_path, {"site_ny": None, "site_sh": None})
    assert one(con, "SELECT start_date FROM harmonized.procedure WHERE site = 'site_ny'") \
        == local(1)
    days = dict(con.execute(
        "SELECT observation_id, effective_date FROM harmonized.observation_value "
        "WHERE site = 'site_sh'").fetchall())
    assert days == {ids["anc"]: local(2), ids["own_offset"]: local(5),
                    ids["date_only"]: local(6)}
    assert one(con, "SELECT onset_date FROM harmonized.condition WHERE condition_id = ?",
               ids["crs"]) == local(3)
    assert one(con, "SELECT assessed_date FROM harmonized.grade_assessment "
               "WHERE observation_id = ?", ids["cres"]) == local(4)
    assert one(con, "SELECT death_date FROM cohort.patient WHERE site = 'site_sh'") == local(59)


def test_each_site_reads_its_own_zone(tmp_path: Path) -> None:
    """New York's zone moves New York's infusion only; Shanghai without one stays as written."""
    con, ids = _build(tmp_path, {"site_ny": NEW_YORK, "site_sh": None})
    assert one(con, "SELECT start_date FROM harmonized.procedure WHERE site = 'site_ny'") \
        == local(0)
    assert one(con, "SELECT effective_date FROM harmonized.observation_value "
               "WHERE site = 'site_sh' AND observation_id = ?", ids["anc"]) == local(2)
