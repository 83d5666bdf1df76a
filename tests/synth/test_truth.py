"""Truth rules on hand-built courses: windows, truncation, grading, response, events."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from cartfhir.synth.clinical import Course, Episode, Event, Measurement
from cartfhir.synth.truth import episode_truth, limit_day

T1 = date(2021, 3, 1)
T2 = date(2021, 9, 1)


def m(concept: str, day: int, value: float, **kw: object) -> Measurement:
    out = Measurement(concept, day, value, **kw)  # type: ignore[arg-type]
    out.reported = value if out.reported is None else out.reported
    return out


def course(episodes: list[Episode], **kw: object) -> Course:
    base = dict(index=0, sex="male", birth_date=date(2012, 5, 2), diagnosis=date(2019, 1, 1),
                relapses=[], hsct=[], chemotherapy=[], lymphodepletion=[], death=None,
                follow_up_end=date(2022, 6, 1))
    base.update(kw)
    return Course(episodes=episodes, **base)  # type: ignore[arg-type]


def episode(rnd: int = 1, t0: date = T1, **kw: object) -> Episode:
    return Episode(round=rnd, infusion=t0, dose=2.0, target="CD19",
                   relapse_site_before="marrow", **kw)  # type: ignore[arg-type]


def test_window_ends_the_day_before_hsct_and_on_the_day_of_death() -> None:
    ep = episode()
    assert limit_day(course([ep], hsct=[T1 + timedelta(days=50)]), ep) == 49
    assert limit_day(course([ep], death=T1 + timedelta(days=40)), ep) == 40
    assert limit_day(course([ep, episode(2, T2)]), ep) == (T2 - T1).days - 1
    assert limit_day(course([ep], hsct=[T1 - timedelta(days=300)]), ep) == 10_000


def test_late_infection_after_transplant_belongs_to_no_episode() -> None:
    ep = episode(events=[Event("sepsis", 10), Event("pneumonia", 60), Event("bacteremia", -3)])
    row = episode_truth(course([ep], hsct=[T1 + timedelta(days=55)]), ep, "s", "p")
    assert row["early_infection"] and row["early_infection_n"] == 1
    assert not row["late_infection"] and row["late_infection_n"] == 0
    assert row["lymphodepletion_infection"]


def test_crs_grade_is_the_window_maximum_and_onset_the_first_day() -> None:
    ep = episode(events=[Event("crs", 2, grade=1), Event("crs", 4, grade=3),
                         Event("crs", 35, grade=4), Event("icans", 6, grade=2)])
    row = episode_truth(course([ep]), ep, "s", "p")
    assert (row["crs_any"], row["crs_max_grade"], row["crs_onset_day"]) == (True, 3, 2)
    assert (row["cres_any"], row["cres_max_grade"]) == (True, 2)


def test_no_crs_is_grade_zero() -> None:
    ep = episode()
    row = episode_truth(course([ep]), ep, "s", "p")
    assert (row["crs_any"], row["crs_max_grade"], row["crs_onset_day"]) == (False, 0, None)


def test_peaks_and_nadirs_use_only_usable_values_in_window() -> None:
    unusable = m("il6", 4, 9999.0)
    unusable.usable = False
    ep = episode(measurements=[
        m("il6", -1, 1.0, comparator="<"), m("il6", 3, 250.0), unusable, m("il6", 20, 800.0),
        m("anc", -2, 0.1), m("anc", 9, 0.4), m("anc", 30, 0.05),
        m("platelets", 10, 49.9), m("hemoglobin", 12, 80.0),
    ])
    row = episode_truth(course([ep]), ep, "s", "p")
    assert row["il6_peak"] == 250.0 and row["il2_peak"] is None
    assert row["anc_nadir"] == 0.4 and row["severe_neutropenia"] is True
    assert row["severe_thrombocytopenia"] is True
    assert row["severe_anemia"] is False  # 80 g/L is grade 2, not < 80


def test_ctcae_organ_grades() -> None:
    def lab(concept: str, day: int, value: float, low: float, high: float) -> Measurement:
        out = m(concept, day, value)
        out.ref_low, out.ref_high = low, high
        return out

    ep = episode(measurements=[
        lab("alt", 3, 40 * 3.0, 5, 40),      # exactly 3 x ULN: grade 1
        lab("ast", 5, 50 * 3.01, 10, 50),    # just over 3 x ULN: grade 2
        lab("bilirubin", 5, 21 * 1.2, 3, 21),
        lab("creatinine", -1, 30.0, 20, 62),  # baseline
        lab("creatinine", 4, 50.0, 20, 62),   # under ULN but > 1.5 x baseline: grade 2
        lab("fibrinogen", 6, 0.45, 2.0, 4.0),  # < 0.5 g/L: grade 4
    ])
    row = episode_truth(course([ep]), ep, "s", "p")
    assert (row["liver_injury_grade"], row["kidney_injury_grade"],
            row["coagulopathy_grade"]) == (2, 2, 4)
    assert row["organ_injury_any"] is True


def test_response_cr_cri_nr_and_mrd() -> None:
    ep = episode(marrow_days=[28, 63], measurements=[
        m("marrow_blasts", 28, 1.0), m("mrd_flow", 28, 0.01, comparator="<"),
        m("anc", 27, 0.8), m("platelets", 27, 150.0),
        m("marrow_blasts", 63, 2.0), m("mrd_flow", 63, 0.5),
        m("anc", 63, 1.5), m("platelets", 63, 120.0),
    ])
    row = episode_truth(course([ep]), ep, "s", "p")
    # Day 28: CRi (ANC < 1.0, from day 27), MRD negative. Day 63: CR, MRD positive.
    assert row["best_response"] == "CR"
    assert row["mrd_negative"] and row["mrd_negative_cr"]


@pytest.mark.parametrize(("counts", "response", "reason"), [
    ([], "NE", "no ANC or platelet count from day 25 to the day-28 marrow"),
    ([m("anc", 24, 2.0), m("platelets", 24, 150.0)], "NE",
     "no ANC or platelet count from day 25 to the day-28 marrow"),  # before the lookback
    ([m("anc", 28, 1.5)], "NE", "no platelet count from day 25 to the day-28 marrow"),
    ([m("anc", 28, 1.5), m("platelets", 26, 150.0, usable=False)], "NE",
     "no platelet count from day 25 to the day-28 marrow"),  # an unusable count is none
    ([m("platelets", 25, 150.0)], "NE", "no ANC from day 25 to the day-28 marrow"),
    ([m("anc", 28, 0.5)], "CRi", None),  # a known low count decides, whatever the other
    ([m("anc", 25, 1.0), m("platelets", 28, 100.0)], "CR", None),
])
def test_a_remission_without_the_deciding_counts_is_not_evaluable(
        counts: list, response: str, reason: str | None) -> None:
    ep = episode(marrow_days=[28], measurements=[
        m("marrow_blasts", 28, 2.0), m("mrd_flow", 28, 0.001), *counts])
    row = episode_truth(course([ep]), ep, "s", "p")
    assert (row["best_response"], row["response_reason"]) == (response, reason)
    assert row["mrd_negative_cr"]  # CR or CRi whatever the counts: NE is a remission


def test_ne_ranks_below_cr_and_cri_and_above_nr() -> None:
    def best(*marrows: tuple[int, float, list]) -> tuple[str, str | None]:
        ms = [x for day, blasts, counts in marrows for x in (m("marrow_blasts", day, blasts),
                                                             *counts)]
        ep = episode(marrow_days=[d for d, _, _ in marrows], measurements=ms)
        row = episode_truth(course([ep]), ep, "s", "p")
        return row["best_response"], row["response_reason"]

    ne_14 = (14, 3.0, [])
    low = [m("anc", 42, 0.4), m("platelets", 42, 30.0)]
    assert best(ne_14, (42, 1.0, low)) == ("CRi", None)
    assert best(ne_14, (60, 40.0, [])) == (
        "NE", "no ANC or platelet count from day 11 to the day-14 marrow")
    assert best((7, 2.0, []), ne_14) == (
        "NE", "no ANC or platelet count from day 4 to the day-7 marrow")  # the earliest


def test_mrd_exactly_at_threshold_is_positive_and_nr_is_not_cr() -> None:
    ep = episode(marrow_days=[28], measurements=[
        m("marrow_blasts", 28, 30.0), m("mrd_flow", 28, 0.001)])
    row = episode_truth(course([ep]), ep, "s", "p")
    assert row["best_response"] == "NR" and row["mrd_negative"] and not row["mrd_negative_cr"]
    ep2 = episode(marrow_days=[28], measurements=[
        m("marrow_blasts", 28, 1.0), m("mrd_flow", 28, 0.01)])
    assert not episode_truth(course([ep2]), ep2, "s", "p")["mrd_negative"]


def test_post_cart2_first_event_skips_lymphodepletion() -> None:
    ep1, ep2 = episode(1, T1), episode(2, T2)
    third_ld = T2 + timedelta(days=200)
    c = course([ep1, ep2], lymphodepletion=[(T2 - timedelta(days=5), T2 - timedelta(days=3)),
                                            (third_ld, third_ld + timedelta(days=2))],
               chemotherapy=[(third_ld, third_ld + timedelta(days=2)),
                             (T2 + timedelta(days=250), T2 + timedelta(days=253))],
               relapses=[(T2 + timedelta(days=300), ("marrow",))],
               death=T2 + timedelta(days=400), follow_up_end=T2 + timedelta(days=400))
    row = episode_truth(c, ep2, "s", "p")
    assert row["post_event_type"] == "chemotherapy"
    assert row["post_event_date"] == (T2 + timedelta(days=250)).isoformat()
    assert row["death_date"] == (T2 + timedelta(days=400)).isoformat()
    assert episode_truth(c, ep1, "s", "p")["post_event_type"] is None


def test_post_cart2_none_when_nothing_happened() -> None:
    ep1, ep2 = episode(1, T1), episode(2, T2)
    row = episode_truth(course([ep1, ep2]), ep2, "s", "p")
    assert row["post_event_type"] == "none" and row["post_event_date"] is None
