"""The generator's clinical model: one patient's course in canonical units.

It decides what happens (diagnosis, relapses, infusions, toxicities, counts,
response, later events) without any coding; ``emit`` turns a course into a
site's FHIR. Every value here is in the canonical unit of its concept
(``CANONICAL_UNIT``). Day offsets are calendar days from the infusion day.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, timedelta

CANONICAL_UNIT: dict[str, str] = {
    "anc": "10*9/L", "wbc": "10*9/L", "platelets": "10*9/L", "hemoglobin": "g/L",
    "il2": "pg/mL", "il4": "pg/mL", "il6": "pg/mL", "il10": "pg/mL", "il17a": "pg/mL",
    "ifng": "pg/mL", "tnfa": "pg/mL", "ferritin": "ug/L", "crp": "mg/L", "temperature": "Cel",
    "alt": "U/L", "ast": "U/L", "bilirubin": "umol/L", "creatinine": "umol/L",
    "fibrinogen": "g/L", "mrd_flow": "%", "marrow_blasts": "%", "cart_dose": "10*6/kg",
}
CYTOKINES = ("il2", "il4", "il6", "il10", "il17a", "ifng", "tnfa")
COUNTS = ("anc", "wbc", "hemoglobin", "platelets")
ORGAN_LABS = ("alt", "ast", "bilirubin", "creatinine", "fibrinogen")

# Pediatric reference limits in canonical units, emitted as Observation.referenceRange.
REFERENCE_RANGE: dict[str, tuple[float, float]] = {
    "alt": (5.0, 40.0), "ast": (10.0, 50.0), "bilirubin": (3.0, 21.0),
    "creatinine": (20.0, 62.0), "fibrinogen": (2.0, 4.0),
}
# Lower limit of detection of the cytokine bead assay (pg/mL).
CYTOKINE_LOD = 1.0
MRD_LOD = 0.01  # percent, multiparameter flow

CBC_DAYS = list(range(-7, 31)) + [35, 42, 49, 56, 63, 70, 77, 84, 90]
CYTOKINE_DAYS = [-1, 1, 2, 3, 5, 7, 10, 14, 21, 28]
CHEM_DAYS = [-1, 1, 3, 5, 7, 10, 14, 21, 28]
TEMPERATURE_DAYS = list(range(-3, 22))

RELAPSE_SITES = {
    "marrow": ("marrow",),
    "marrow+cns": ("marrow", "cns"),
    "marrow+testis": ("marrow", "testis"),
    "cns": ("cns",),
    "testis": ("testis",),
}
INFECTIONS = ("sepsis", "pneumonia", "bacteremia")


@dataclass
class Measurement:
    """One lab or vital value the course produces (canonical unit)."""

    concept: str
    day: int  # offset from the episode's infusion day
    value: float
    comparator: str | None = None  # '<' when below the assay's limit of detection
    # Filled by emit: the value as reported, converted back to canonical units,
    # and whether a pipeline can use it (unit present, plausible, not in error).
    reported: float | None = None
    usable: bool = True
    resource_id: str | None = None
    ref_low: float | None = None  # reference range as reported, canonical units
    ref_high: float | None = None


@dataclass
class Event:
    """A dated clinical event (Condition onset or Procedure)."""

    kind: str  # crs, icans, sepsis, pneumonia, bacteremia, febrile_neutropenia, relapse, ...
    day: int
    grade: int | None = None
    body_sites: tuple[str, ...] = ()
    end_day: int | None = None
    resource_id: str | None = None


@dataclass
class Episode:
    """One CAR-T infusion and what the generator decided happened around it."""

    round: int
    infusion: date
    dose: float  # 10*6 cells/kg
    target: str  # CD19 or CD19/CD22
    relapse_site_before: str
    measurements: list[Measurement] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    marrow_days: list[int] = field(default_factory=list)

    def on(self, day: int) -> date:
        return self.infusion + timedelta(days=day)


@dataclass
class Course:
    """A patient's whole course; absolute dates for events between episodes."""

    index: int
    sex: str  # male | female
    birth_date: date
    diagnosis: date
    episodes: list[Episode]
    relapses: list[tuple[date, tuple[str, ...]]]  # (onset, body sites)
    hsct: list[date]
    chemotherapy: list[tuple[date, date]]  # course start, end
    lymphodepletion: list[tuple[date, date]]
    death: date | None
    follow_up_end: date  # last contact: death, or the last follow-up visit
    follow_up: list[tuple[date, dict[str, float]]] = field(default_factory=list)


def _pick(rng: random.Random, weights: dict) -> object:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _bell(day: int, peak_day: float, width: float) -> float:
    return math.exp(-(((day - peak_day) / width) ** 2))


# Round-dependent toxicity model (round 3 behaves like round 2). Tuned to the
# paper's direction of effects: similar CRS, more CRES, IL-17A, infections and
# MRD-negative remissions after the first infusion.
CRS_P = {1: 0.85, 2: 0.85}
CRS_GRADES = {1: {1: 45, 2: 30, 3: 17, 4: 8}, 2: {1: 55, 2: 30, 3: 10, 4: 5}}
CRES_P = {1: 0.33, 2: 0.12}
CRES_GRADES = {1: 50, 2: 30, 3: 15, 4: 5}
EARLY_INFECTION_P = {1: 0.6, 2: 0.35}
LATE_INFECTION_P = {1: 0.35, 2: 0.15}
LD_INFECTION_P = 0.08
REMISSION_P = {1: 0.95, 2: 0.75}
MRD_NEG_GIVEN_REMISSION_P = {1: 0.93, 2: 0.6}
SEVERE_NEUTROPENIA_P = {1: 0.9, 2: 0.8}
SEVERE_THROMBOCYTOPENIA_P = {1: 0.6, 2: 0.5}
SEVERE_ANEMIA_P = {1: 0.45, 2: 0.4}
ORGAN_GRADE = {0: 78, 1: 12, 2: 6, 3: 3, 4: 1}
# Ranges of value/ULN (or value/LLN for fibrinogen) that land in each CTCAE grade.
ULN_RATIO_FOR_GRADE = {0: (0.4, 0.9), 1: (1.2, 2.8), 2: (3.2, 4.8), 3: (5.5, 18.0), 4: (22, 30)}
BILI_RATIO_FOR_GRADE = {0: (0.3, 0.9), 1: (1.1, 1.4), 2: (1.6, 2.9), 3: (3.3, 9.0), 4: (11, 15)}
CREAT_RATIO_FOR_GRADE = {0: (0.5, 0.9), 1: (1.1, 1.4), 2: (1.6, 2.9), 3: (3.3, 5.5), 4: (6.5, 9)}
FIB_RATIO_FOR_GRADE = {0: (1.05, 1.6), 1: (0.78, 0.97), 2: (0.53, 0.72), 3: (0.28, 0.47),
                       4: (0.1, 0.22)}
CYTOKINE_BASELINE = {"il2": (1.2, 4), "il4": (1.2, 3), "il6": (2, 10), "il10": (2, 8),
                     "il17a": (1.2, 5), "ifng": (2, 10), "tnfa": (1.2, 4)}
# Peak fold over baseline for a CRS grade g is fold[0] * fold[1] ** g (times noise).
CYTOKINE_FOLD = {"il2": (1.5, 1.6), "il4": (1.3, 1.4), "il6": (4, 3.2), "il10": (3, 2.6),
                 "il17a": (1.5, 1.3), "ifng": (5, 3.0), "tnfa": (1.5, 1.6)}
IL17A_ROUND_FACTOR = {1: 3.0, 2: 1.0}


def _round(n: int) -> int:
    return 1 if n == 1 else 2


def simulate(rng: random.Random, index: int, start: date, end: date) -> Course:
    """Decide one patient's course with infusions between ``start`` and ``end``."""
    sex = "male" if rng.random() < 0.58 else "female"
    n_rounds = int(_pick(rng, {1: 35, 2: 55, 3: 10}))
    first = start + timedelta(days=rng.randrange((end - start).days))
    age_days = rng.randrange(3 * 365, 18 * 365)
    birth = first - timedelta(days=age_days)
    diagnosis = first - timedelta(days=rng.randrange(400, min(1800, age_days - 300)))

    infusions = [first]
    for _ in range(n_rounds - 1):
        infusions.append(infusions[-1] + timedelta(days=rng.randrange(130, 400)))

    relapses: list[tuple[date, tuple[str, ...]]] = []
    hsct: list[date] = []
    chemo: list[tuple[date, date]] = []
    lymphodepletion: list[tuple[date, date]] = []
    episodes: list[Episode] = []
    for k, t0 in enumerate(infusions, start=1):
        # The relapse that led to this round, and lymphodepletion on days -5..-3.
        sites_w = {"marrow": 60, "marrow+cns": 12, "cns": 12}
        if sex == "male":
            sites_w.update({"marrow+testis": 8, "testis": 8})
        relapse_site = str(_pick(rng, sites_w))
        relapse_day = t0 - timedelta(days=rng.randrange(20, 46))
        relapses.append((relapse_day, RELAPSE_SITES[relapse_site]))
        if k > 1 and rng.random() < 0.5:  # bridging chemotherapy after the relapse
            s = relapse_day + timedelta(days=rng.randrange(3, 8))
            chemo.append((s, s + timedelta(days=rng.randrange(3, 6))))
        ld_start = t0 - timedelta(days=rng.choice([5, 4]))
        lymphodepletion.append((ld_start, ld_start + timedelta(days=2)))
        if k < n_rounds and rng.random() < 0.3:  # consolidative transplant before relapse
            hsct_day = t0 + timedelta(days=rng.randrange(60, 100))
            if hsct_day < infusions[k] - timedelta(days=60):  # before the next relapse
                hsct.append(hsct_day)
        episodes.append(_episode(rng, k, t0, relapse_site, sex))

    # What happens after the last infusion (the post-CART2 events for 2-round patients).
    last = infusions[-1]
    death: date | None = None
    after = str(_pick(rng, {"relapse": 35, "hsct": 30, "chemotherapy": 15, "death": 8,
                            "none": 12}))
    event_end = last
    if after == "relapse":
        d = last + timedelta(days=rng.randrange(60, 400))
        relapses.append((d, RELAPSE_SITES[str(_pick(rng, {"marrow": 70, "cns": 15,
                                                          "marrow+cns": 15}))]))
        event_end = d
        if rng.random() < 0.3:
            death = d + timedelta(days=rng.randrange(30, 200))
    elif after == "hsct":
        event_end = last + timedelta(days=rng.randrange(45, 120))
        hsct.append(event_end)
    elif after == "chemotherapy":
        s = last + timedelta(days=rng.randrange(30, 120))
        chemo.append((s, s + timedelta(days=rng.randrange(3, 6))))
        event_end = s
    elif after == "death":
        death = last + timedelta(days=rng.randrange(20, 300))
    follow_up_end = max(event_end, last + timedelta(days=90)) + timedelta(
        days=rng.randrange(30, 180)
    )
    if death is not None:
        follow_up_end = death
    hsct.sort()
    chemo.sort()
    course = Course(index=index, sex=sex, birth_date=birth, diagnosis=diagnosis,
                    episodes=episodes, relapses=sorted(relapses), hsct=hsct, chemotherapy=chemo,
                    lymphodepletion=lymphodepletion, death=death, follow_up_end=follow_up_end)
    _follow_up(rng, course, infusions)
    _end_at_death(course)
    return course


def _follow_up(rng: random.Random, course: Course, infusions: list[date]) -> None:
    """Monthly clinic blood counts between rounds and after the last one."""
    stops = [t - timedelta(days=10) for t in infusions[1:]] + [course.follow_up_end]
    for t0, stop in zip(infusions, stops, strict=True):
        visit = t0 + timedelta(days=120)
        while visit < stop:
            course.follow_up.append((visit, _clinic_counts(rng)))
            visit += timedelta(days=30)
    if course.death is None:
        course.follow_up.append((course.follow_up_end, _clinic_counts(rng)))


def _clinic_counts(rng: random.Random) -> dict[str, float]:
    anc = rng.uniform(0.8, 4.5)
    return {"anc": anc, "wbc": anc / rng.uniform(0.45, 0.7) + 0.3,
            "platelets": rng.uniform(60, 300), "hemoglobin": rng.uniform(90, 135)}


def _end_at_death(course: Course) -> None:
    """Nothing is measured or happens after the day of death."""
    if course.death is None:
        return
    for ep in course.episodes:
        ep.measurements = [m for m in ep.measurements if ep.on(m.day) <= course.death]
        ep.events = [e for e in ep.events if ep.on(e.day) <= course.death]
        ep.marrow_days = [d for d in ep.marrow_days if ep.on(d) <= course.death]
    course.follow_up = [v for v in course.follow_up if v[0] <= course.death]
    course.relapses = [r for r in course.relapses if r[0] <= course.death]
    course.hsct = [d for d in course.hsct if d <= course.death]
    course.chemotherapy = [c for c in course.chemotherapy if c[0] <= course.death]


def _episode(rng: random.Random, k: int, t0: date, relapse_site: str, sex: str) -> Episode:
    r = _round(k)
    ep = Episode(round=k, infusion=t0, dose=round(rng.lognormvariate(math.log(2.5), 0.45), 2),
                 target=rng.choice(["CD19", "CD19", "CD19/CD22"]),
                 relapse_site_before=relapse_site)
    crs_grade = int(_pick(rng, CRS_GRADES[r])) if rng.random() < CRS_P[r] else 0
    crs_onset = rng.randrange(1, 6)
    crs_peak = crs_onset + rng.randrange(0, 3)
    crs_end = crs_peak + rng.randrange(2, 7)
    if crs_grade:
        ep.events.append(Event("crs", crs_onset, grade=crs_grade, end_day=crs_end))
        # The grade is often lower at onset and escalates to the maximum.
        if crs_grade > 1 and crs_peak > crs_onset:
            ep.events[-1].grade = rng.randrange(1, crs_grade)
            ep.events.append(Event("crs", crs_peak, grade=crs_grade, end_day=crs_end))
    if rng.random() < CRES_P[r]:
        onset = max(crs_onset, 1) + rng.randrange(1, 6)
        ep.events.append(Event("icans", onset, grade=int(_pick(rng, CRES_GRADES)),
                               end_day=onset + rng.randrange(1, 6)))
    for p, lo, hi in ((LD_INFECTION_P, -7, -1), (EARLY_INFECTION_P[r], 0, 30),
                      (LATE_INFECTION_P[r], 31, 90)):
        if rng.random() < p:
            for _ in range(1 if rng.random() < 0.75 else 2):
                ep.events.append(Event(rng.choice(INFECTIONS), rng.randrange(lo, hi + 1)))

    _cytokines(rng, ep, crs_grade, crs_peak, r)
    nadir_day = _counts(rng, ep, r)
    _temperature(rng, ep, crs_grade, crs_onset, crs_end)
    _inflammation(rng, ep, crs_grade, crs_peak)
    _organ(rng, ep, r)
    _marrow(rng, ep, r, nadir_day)
    ep.measurements.append(Measurement("cart_dose", 0, ep.dose))
    # Febrile neutropenia: documented when a fever falls on a day of ANC < 1.0.
    anc = {m.day: m.value for m in ep.measurements if m.concept == "anc"}
    fever = {m.day for m in ep.measurements if m.concept == "temperature" and m.value > 38.3}
    fn_days = sorted(d for d in fever if d >= 0 and anc.get(d, 9) < 1.0)
    if fn_days:
        ep.events.append(Event("febrile_neutropenia", fn_days[0]))
    ep.events.sort(key=lambda e: (e.day, e.kind))
    return ep


def _cytokines(rng: random.Random, ep: Episode, grade: int, peak_day: int, r: int) -> None:
    for c in CYTOKINES:
        base = rng.uniform(*CYTOKINE_BASELINE[c])
        f0, f1 = CYTOKINE_FOLD[c]
        fold = f0 * f1**grade * rng.uniform(0.6, 1.6)
        if c == "il17a":
            fold *= IL17A_ROUND_FACTOR[r]
        peak = base * max(fold, 1.2)
        c_peak_day = peak_day + rng.choice([-1, 0, 0, 1])
        width = rng.uniform(2.0, 4.0)
        for d in CYTOKINE_DAYS:
            if d < 0:
                v = base * rng.uniform(0.3, 1.1)
                if v < CYTOKINE_LOD:
                    ep.measurements.append(Measurement(c, d, CYTOKINE_LOD, comparator="<"))
                    continue
            else:
                v = base + (peak - base) * _bell(d, c_peak_day, width)
                v = max(v * rng.uniform(0.9, 1.1), CYTOKINE_LOD * 1.2)
            ep.measurements.append(Measurement(c, d, v))


def _curve(day: int, points: list[tuple[int, float]]) -> float:
    """Log-linear interpolation through (day, value) points."""
    if day <= points[0][0]:
        return points[0][1]
    for (d0, v0), (d1, v1) in zip(points, points[1:], strict=False):
        if day <= d1:
            w = (day - d0) / (d1 - d0)
            return math.exp(math.log(v0) * (1 - w) + math.log(v1) * w)
    return points[-1][1]


def _counts(rng: random.Random, ep: Episode, r: int) -> int:
    nadir_day = rng.randrange(5, 13)
    hold = rng.randrange(0, 8)
    recover = nadir_day + hold + rng.randrange(8, 16)
    anc_base = rng.uniform(0.8, 4.0)
    anc_nadir = (rng.uniform(0.02, 0.9) if rng.random() < SEVERE_NEUTROPENIA_P[r]
                 else rng.uniform(1.05, 1.5))
    anc_nadir = min(anc_nadir, anc_base * 0.9)
    anc_pts = [(-4, anc_base), (nadir_day, anc_nadir), (nadir_day + hold, anc_nadir * 1.05),
               (recover, rng.uniform(1.0, 3.5))]
    plt_base = rng.uniform(40, 250)
    plt_nadir = (rng.uniform(5, 45) if rng.random() < SEVERE_THROMBOCYTOPENIA_P[r]
                 else rng.uniform(52, 120))
    plt_nadir = min(plt_nadir, plt_base * 0.9)
    plt_day = nadir_day + rng.randrange(0, 8)
    plt_pts = [(-3, plt_base), (plt_day, plt_nadir), (plt_day + rng.randrange(10, 25),
                                                      rng.uniform(60, 220))]
    hb_base = rng.uniform(85, 125)
    hb_nadir = (rng.uniform(58, 78) if rng.random() < SEVERE_ANEMIA_P[r]
                else rng.uniform(81, 95))
    hb_nadir = min(hb_nadir, hb_base * 0.95)
    hb_day = nadir_day + rng.randrange(0, 6)
    hb_pts = [(-3, hb_base), (hb_day, hb_nadir), (hb_day + 20, rng.uniform(90, 125))]
    for d in CBC_DAYS:
        noise = rng.uniform(0.93, 1.07)
        anc = max(_curve(d, anc_pts) * noise, 0.01)
        ep.measurements.append(Measurement("anc", d, anc))
        ep.measurements.append(Measurement("wbc", d, anc / rng.uniform(0.45, 0.7) + 0.3))
        ep.measurements.append(Measurement("platelets", d, max(_curve(d, plt_pts) * noise, 1)))
        ep.measurements.append(Measurement("hemoglobin", d, _curve(d, hb_pts) * noise))
    return nadir_day


def _temperature(rng: random.Random, ep: Episode, grade: int, onset: int, end: int) -> None:
    infection_days = {e.day for e in ep.events if e.kind in INFECTIONS}
    for d in TEMPERATURE_DAYS:
        if (grade and onset <= d <= end) or d in infection_days:
            t = rng.uniform(38.4, 39.2 + 0.3 * grade)
        else:
            t = rng.uniform(36.4, 37.6)
        ep.measurements.append(Measurement("temperature", d, t))


def _inflammation(rng: random.Random, ep: Episode, grade: int, peak_day: int) -> None:
    crp_base, fer_base = rng.uniform(2, 10), rng.uniform(300, 1500)
    crp_peak = crp_base + (rng.uniform(40, 120) * grade if grade else rng.uniform(0, 10))
    fer_peak = fer_base * (1 + (rng.uniform(1, 6) ** grade if grade else 0.2))
    for d in CHEM_DAYS:
        w = _bell(d, peak_day + 1, 3.0) if d >= 0 else 0.0
        ep.measurements.append(Measurement("crp", d, crp_base + (crp_peak - crp_base) * w))
        ep.measurements.append(Measurement("ferritin", d, fer_base + (fer_peak - fer_base) * w))


def _organ(rng: random.Random, ep: Episode, r: int) -> None:
    liver = int(_pick(rng, ORGAN_GRADE))
    kidney = int(_pick(rng, ORGAN_GRADE))
    coag = int(_pick(rng, ORGAN_GRADE))
    peak_day = rng.choice([3, 5, 7, 10])
    spec = {
        "alt": (ULN_RATIO_FOR_GRADE, liver), "ast": (ULN_RATIO_FOR_GRADE, liver),
        "bilirubin": (BILI_RATIO_FOR_GRADE, max(liver - 1, 0)),
        "creatinine": (CREAT_RATIO_FOR_GRADE, kidney), "fibrinogen": (FIB_RATIO_FOR_GRADE, coag),
    }
    for concept, (ratios, g) in spec.items():
        low, high = REFERENCE_RANGE[concept]
        limit = low if concept == "fibrinogen" else high
        base = limit * (rng.uniform(1.1, 1.7) if concept == "fibrinogen"
                        else rng.uniform(0.75, 0.95) if concept == "creatinine"
                        else rng.uniform(0.5, 0.8))
        peak = limit * rng.uniform(*ratios[g])
        if concept == "creatinine" and g == 0:
            peak = base * rng.uniform(1.0, 1.3)  # stay inside 1.5x baseline when uninjured
        for d in CHEM_DAYS:
            w = _bell(d, peak_day, 2.5) if d >= 0 else 0.0
            v = base + (peak - base) * w if g else base * rng.uniform(0.95, 1.05)
            ep.measurements.append(Measurement(concept, d, v))


def _marrow(rng: random.Random, ep: Episode, r: int, nadir_day: int) -> None:
    # Assessments fall on days with a blood count, so CR and CRi can be told apart.
    days = [rng.randrange(21, 31)]
    if rng.random() < 0.4:
        days.append(rng.choice([56, 63, 70, 77, 84]))
    remission = rng.random() < REMISSION_P[_round(r)]
    mrd_neg = remission and rng.random() < MRD_NEG_GIVEN_REMISSION_P[_round(r)]
    for i, d in enumerate(days):
        late_relapse = i > 0 and rng.random() < 0.1
        if remission and not late_relapse:
            blasts = rng.uniform(0.0, 2.5)
            if mrd_neg:
                if rng.random() < 0.7:
                    ep.measurements.append(Measurement("mrd_flow", d, MRD_LOD, comparator="<"))
                else:
                    ep.measurements.append(Measurement("mrd_flow", d, rng.uniform(0.001, 0.009)))
            else:
                ep.measurements.append(Measurement("mrd_flow", d, rng.uniform(0.02, 4.0)))
        else:
            blasts = rng.uniform(6, 80)
            ep.measurements.append(Measurement("mrd_flow", d, blasts * rng.uniform(0.8, 1.0)))
        ep.measurements.append(Measurement("marrow_blasts", d, blasts))
        ep.marrow_days.append(d)
