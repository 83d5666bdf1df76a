"""Ground truth per infusion episode, from the generator's own clinical model.

The truth is computed from what the generator decided and emitted (values as
reported, converted back to canonical units), never from pipeline code, using
the study's default definitions (``docs/clinical-definitions.md``):

- day 0 is the local calendar day of the infusion; day offsets are local days
  (the generator writes local times; how the pipeline reads a site's local day, with
  or without ``sites[].timezone``: "Episodes and study days" there);
- an episode's windows end at its *limit day*: the day before the next CAR-T
  infusion or before an HSCT, or the day of death, whichever comes first;
- CRS and CRES/ICANS: onset in [0, 30], grade = maximum grade in the window;
- cytokine peak: maximum in [0, 14]; blood count nadir: minimum in [0, 28];
  severe = CTCAE v5 grade >= 3 (ANC < 1.0 x10^9/L, PLT < 50 x10^9/L, Hb < 80 g/L);
- organ injury: CTCAE v5 grade over [0, 30] against the reported reference
  range (creatinine also against the baseline, the last value in [-7, -1]);
  liver = max(ALT, AST, bilirubin); any organ injury = some grade >= 2;
- infections: early [0, 30], late [31, 90], lymphodepletion phase [-7, -1];
- response in [0, 90] at each marrow assessment, with the same-day (else latest
  in the 3 days before) ANC and PLT: blasts >= 5 % -> NR; blasts < 5 % -> CR when
  ANC >= 1.0 and PLT >= 100, CRi when a known count is below its cut, else NE
  (not evaluable: a count that could decide is missing; the reason names it);
  best of CR > CRi > NE > NR, an NE episode's reason from its earliest NE
  assessment. MRD-negative = flow MRD < 0.01 % (a "<0.01" result counts as
  negative) at an assessment with CR, CRi or NE (a marrow remission is CR or
  CRi whatever the counts);
- post-infusion events (round 2 only): first relapse onset, chemotherapy start
  (not lymphodepletion), HSCT or death after the infusion day.

Only usable values count: results entered in error, without a unit, or with an
implausible unit label are not usable, exactly as a careful pipeline must treat them.
At a site that reports neutrophils only as a percentage of the WBC, the ANC is the
WBC x % / 100 of one sample as reported, usable when both results are (set by emit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from cartfhir.synth.clinical import CYTOKINES, INFECTIONS, Course, Episode, Measurement

WINDOWS = {
    "crs": (0, 30), "icans": (0, 30), "cytokine": (0, 14), "nadir": (0, 28),
    "organ": (0, 30), "early_infection": (0, 30), "late_infection": (31, 90),
    "lymphodepletion_infection": (-7, -1), "response": (0, 90), "baseline": (-7, -1),
}
SEVERE = {"anc": 1.0, "platelets": 50.0, "hemoglobin": 80.0}
MRD_NEGATIVE_BELOW = 0.01
BLAST_CR_BELOW = 5.0
CR_ANC, CR_PLT = 1.0, 100.0
RESPONSE_RANK = {"NR": 0, "NE": 1, "CRi": 2, "CR": 3}
REMISSION = ("CR", "CRi", "NE")  # marrow in remission; the counts tell CR from CRi
COUNT_LOOKBACK = 3

TRUTH_COLUMNS = [
    "site", "patient_id", "patient_index", "round", "infusion_date", "limit_day", "sex",
    "age_years", "target", "dose", "relapse_site_before",
    "crs_any", "crs_max_grade", "crs_onset_day", "cres_any", "cres_max_grade", "cres_onset_day",
    *[f"{c}_peak" for c in CYTOKINES],
    "anc_nadir", "platelet_nadir", "hemoglobin_nadir",
    "severe_neutropenia", "severe_thrombocytopenia", "severe_anemia",
    "liver_injury_grade", "kidney_injury_grade", "coagulopathy_grade", "organ_injury_any",
    "early_infection", "early_infection_n", "late_infection", "late_infection_n",
    "lymphodepletion_infection", "febrile_neutropenia",
    "best_response", "response_reason", "mrd_negative", "mrd_negative_cr",
    "post_event_type", "post_event_date", "relapse_after_date", "chemotherapy_after_date",
    "hsct_after_date", "death_date", "last_contact_date",
]


@dataclass(frozen=True)
class _Window:
    lo: int
    hi: int

    def has(self, day: int) -> bool:
        return self.lo <= day <= self.hi


def limit_day(course: Course, ep: Episode) -> int:
    """Last day (offset) that still belongs to the episode."""
    limits = [10_000]
    for other in course.episodes:
        if other.infusion > ep.infusion:
            limits.append((other.infusion - ep.infusion).days - 1)
    for day in course.hsct:
        if day > ep.infusion:
            limits.append((day - ep.infusion).days - 1)
    if course.death is not None:
        limits.append((course.death - ep.infusion).days)
    return min(limits)


def episode_truth(course: Course, ep: Episode, site: str, patient_id: str) -> dict:
    limit = limit_day(course, ep)

    def window(name: str) -> _Window:
        lo, hi = WINDOWS[name]
        return _Window(lo, min(hi, limit))

    def values(concept: str, w: _Window) -> list[Measurement]:
        return [m for m in ep.measurements
                if m.concept == concept and m.usable and w.has(m.day)]

    row: dict = {
        "site": site, "patient_id": patient_id, "patient_index": course.index,
        "round": ep.round, "infusion_date": ep.infusion.isoformat(), "limit_day": limit,
        "sex": course.sex, "age_years": _age(course.birth_date, ep.infusion),
        "target": ep.target, "relapse_site_before": ep.relapse_site_before,
    }
    dose = values("cart_dose", _Window(0, 0))
    row["dose"] = dose[0].reported if dose else None

    for kind, prefix in (("crs", "crs"), ("icans", "cres")):
        w = window(kind)
        events = [e for e in ep.events if e.kind == kind and w.has(e.day)]
        row[f"{prefix}_any"] = bool(events)
        row[f"{prefix}_max_grade"] = max((e.grade or 0 for e in events), default=0)
        row[f"{prefix}_onset_day"] = min((e.day for e in events), default=None)

    for c in CYTOKINES:
        vals = [m.reported for m in values(c, window("cytokine")) if not m.comparator]
        row[f"{c}_peak"] = max(vals) if vals else None
    for concept, column in (("anc", "anc"), ("platelets", "platelet"),
                            ("hemoglobin", "hemoglobin")):
        vals = [m.reported for m in values(concept, window("nadir"))]
        nadir = min(vals) if vals else None
        row[f"{column}_nadir"] = nadir
    row["severe_neutropenia"] = _below(row["anc_nadir"], SEVERE["anc"])
    row["severe_thrombocytopenia"] = _below(row["platelet_nadir"], SEVERE["platelets"])
    row["severe_anemia"] = _below(row["hemoglobin_nadir"], SEVERE["hemoglobin"])

    organ = window("organ")
    liver = max(_grade_uln(values(c, organ), c) for c in ("alt", "ast", "bilirubin"))
    baseline = values("creatinine", window("baseline"))
    kidney = _grade_creatinine(values("creatinine", organ),
                               baseline[-1].reported if baseline else None)
    coag = _grade_fibrinogen(values("fibrinogen", organ))
    row["liver_injury_grade"], row["kidney_injury_grade"] = liver, kidney
    row["coagulopathy_grade"] = coag
    row["organ_injury_any"] = max(liver, kidney, coag) >= 2

    for name in ("early_infection", "late_infection", "lymphodepletion_infection"):
        w = window(name)
        n = sum(1 for e in ep.events if e.kind in INFECTIONS and w.has(e.day))
        row[name] = n > 0
        if name != "lymphodepletion_infection":
            row[f"{name}_n"] = n
    row["febrile_neutropenia"] = any(
        e.kind == "febrile_neutropenia" and window("early_infection").has(e.day)
        for e in ep.events)

    row.update(_response(ep, window("response")))
    row.update(_post_events(course, ep))
    return row


def _response(ep: Episode, w: _Window) -> dict:
    best: tuple[int, int, str, str | None] | None = None  # (rank, -day, response, reason)
    mrd_negative = mrd_negative_cr = False
    by_day = {(m.concept, m.day): m for m in ep.measurements if m.usable}
    for day in ep.marrow_days:
        blasts = by_day.get(("marrow_blasts", day))
        if not w.has(day) or blasts is None:
            continue
        response, reason = _judge(blasts.reported, _nearest(by_day, "anc", day),
                                  _nearest(by_day, "platelets", day), day)
        mrd = by_day.get(("mrd_flow", day))
        negative = mrd is not None and (
            (mrd.comparator == "<" and mrd.reported <= MRD_NEGATIVE_BELOW)
            or (mrd.comparator is None and mrd.reported < MRD_NEGATIVE_BELOW))
        mrd_negative = mrd_negative or negative
        mrd_negative_cr = mrd_negative_cr or (negative and response in REMISSION)
        best = max(best or (-1, 0, "", None), (RESPONSE_RANK[response], -day, response, reason))
    return {"best_response": best[2] if best else None,
            "response_reason": best[3] if best else None,
            "mrd_negative": mrd_negative, "mrd_negative_cr": mrd_negative_cr}


def _judge(blasts: float, anc: float | None, plt: float | None,
           day: int) -> tuple[str, str | None]:
    """One marrow assessment: (response, why it is not evaluable or None)."""
    if blasts >= BLAST_CR_BELOW:
        return "NR", None
    if (anc is not None and anc < CR_ANC) or (plt is not None and plt < CR_PLT):
        return "CRi", None
    if anc is not None and plt is not None:
        return "CR", None
    missing = {(True, True): "ANC or platelet count", (True, False): "ANC",
               (False, True): "platelet count"}[(anc is None, plt is None)]
    return "NE", f"no {missing} from day {day - COUNT_LOOKBACK} to the day-{day} marrow"


def _nearest(by_day: dict, concept: str, day: int) -> float | None:
    for d in range(day, day - COUNT_LOOKBACK - 1, -1):
        m = by_day.get((concept, d))
        if m is not None:
            return m.reported
    return None


def _post_events(course: Course, ep: Episode) -> dict:
    out = {k: None for k in ("post_event_type", "post_event_date", "relapse_after_date",
                             "chemotherapy_after_date", "hsct_after_date")}
    out["death_date"] = course.death.isoformat() if course.death else None
    out["last_contact_date"] = course.follow_up_end.isoformat()
    if ep.round != 2:
        return out
    t0 = ep.infusion
    lymphodepletion = {start for start, _ in course.lymphodepletion}
    firsts: dict[str, date | None] = {
        "relapse": min((d for d, _ in course.relapses if d > t0), default=None),
        "chemotherapy": min((s for s, _ in course.chemotherapy
                             if s > t0 and s not in lymphodepletion), default=None),
        "hsct": min((d for d in course.hsct if d > t0), default=None),
        "death": course.death if course.death and course.death > t0 else None,
    }
    out["relapse_after_date"] = _iso(firsts["relapse"])
    out["chemotherapy_after_date"] = _iso(firsts["chemotherapy"])
    out["hsct_after_date"] = _iso(firsts["hsct"])
    # Same-day ties go to the more definitive event.
    priority = ["death", "hsct", "relapse", "chemotherapy"]
    dated = [(d, priority.index(k), k) for k, d in firsts.items() if d is not None]
    if dated:
        d, _, kind = min(dated)
        out["post_event_type"], out["post_event_date"] = kind, d.isoformat()
    else:
        out["post_event_type"] = "none"
    return out


def _grade_uln(ms: list[Measurement], concept: str) -> int:
    """CTCAE v5 'increased' grades by multiples of ULN (ALT/AST: 3, 5, 20; bili: 1.5, 3, 10)."""
    cuts = (3, 5, 20) if concept in ("alt", "ast") else (1.5, 3, 10)
    grade = 0
    for m in ms:
        r = m.reported / m.ref_high
        g = 0 if r <= 1 else 1 if r <= cuts[0] else 2 if r <= cuts[1] else 3 if r <= cuts[2] else 4
        grade = max(grade, g)
    return grade


def _grade_creatinine(ms: list[Measurement], baseline: float | None) -> int:
    """CTCAE v5 creatinine increased: ULN multiples 1.5/3/6, baseline multiples 1.5/3."""
    grade = 0
    for m in ms:
        r = m.reported / m.ref_high
        g = 0 if r <= 1 else 1 if r <= 1.5 else 2 if r <= 3 else 3 if r <= 6 else 4
        if baseline:
            b = m.reported / baseline
            g = max(g, 3 if b > 3 else 2 if b > 1.5 else 0)
        grade = max(grade, g)
    return grade


def _grade_fibrinogen(ms: list[Measurement]) -> int:
    """CTCAE v5 fibrinogen decreased: LLN multiples 1/0.75/0.5/0.25, or < 0.5 g/L = G4."""
    grade = 0
    for m in ms:
        r = m.reported / m.ref_low
        g = 0 if r >= 1 else 1 if r >= 0.75 else 2 if r >= 0.5 else 3 if r >= 0.25 else 4
        if m.reported < 0.5:
            g = 4
        grade = max(grade, g)
    return grade


def _below(value: float | None, threshold: float) -> bool | None:
    return None if value is None else value < threshold


def _age(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d else None
