"""Turn a patient's course into one site's FHIR R4 resources.

Coding, units and recording habits come from the site profile. Realistic
messiness is added here and recorded on the course's measurements, so the
truth can be computed from what a pipeline can actually use:

- values below an assay's limit as comparators (``<1.0 ng/L``, ``<0.01%``), or as
  the profile's text (``＜1.0``, ``阴性``);
- a few results without a unit, and a few count results reported per uL but
  labelled as 10*9/L (implausible magnitudes), both unusable for endpoints;
- the same result re-sent under another id, and some NDJSON lines repeated;
- resources entered in error (a spurious grade, count or infusion);
- amended results (versionId 2), date-only onset times;
- times in UTC ('Z') where the profile says ``timestamps: utc``, while the course's
  days stay the site's local days;
- a neutrophil percentage of the WBC instead of an absolute count where the profile
  has ``neutrophil_pct`` and no ``anc``: the course's ANC is then what a pipeline can
  compute, WBC x % / 100 of one sample, usable when both results are.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cartfhir.errors import UsageError
from cartfhir.synth.clinical import (
    COUNTS,
    CYTOKINES,
    INFECTIONS,
    ORGAN_LABS,
    REFERENCE_RANGE,
    Course,
    Episode,
    Event,
    Measurement,
)
from cartfhir.synth.profiles import to_canonical, to_site_unit

MISSING_UNIT_RATE = 0.003
MISLABELLED_UNIT_RATE = 0.002
RESENT_RATE = 0.004
REPEATED_LINE_RATE = 0.004
ENTERED_IN_ERROR_RATE = 0.15  # per episode
AMENDED_RATE = 0.01
DATE_ONLY_ONSET_RATE = 0.3

UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
COND_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
COND_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
COND_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
SEVERITY = {1: ("255604002", "Mild"), 2: ("6736007", "Moderate"), 3: ("24484000", "Severe"),
            4: ("442452003", "Life threatening severity"), 5: ("399166001", "Fatal")}

NAMES = {
    "en": (["Smith", "Johnson", "Garcia", "Miller", "Davis", "Lopez", "Wilson", "Moore"],
           ["Emma", "Liam", "Olivia", "Noah", "Ava", "Mason", "Sophia", "Lucas", "Mia"]),
    "zh": (["王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周"],
           ["子涵", "浩然", "欣怡", "宇轩", "梓萱", "俊杰", "雨桐", "一诺", "思远"]),
    "de": (["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner"],
           ["Leon", "Mia", "Finn", "Emilia", "Paul", "Hannah", "Ben", "Lina", "Jonas"]),
}


@dataclass
class Emitted:
    """One patient's resources (unique ids) and the NDJSON lines to write twice."""

    patient_id: str
    resources: list[dict[str, Any]] = field(default_factory=list)
    repeated: list[dict[str, Any]] = field(default_factory=list)


class _Emitter:
    def __init__(self, profile: dict[str, Any], course: Course, seed: int) -> None:
        self.p = profile
        self.course = course
        self.rng = random.Random(f"{seed}:{profile['id']}:{course.index}:emit")
        self.tz = _parse_tz(profile["timezone"])
        self.ns = uuid.uuid5(uuid.NAMESPACE_URL, f"cartfhir-synth:{seed}:{profile['id']}")
        self.counter = 0
        self.out = Emitted(patient_id=self._id("Patient"))
        # One sample's results share one time (profile 'same_sample'), drawn once per day.
        self.same_sample = frozenset(profile.get("same_sample", ()))
        self.sample_times: dict[date, datetime] = {}
        # A site without an absolute neutrophil count reports a percentage of the WBC.
        obs = profile["observations"]
        self.anc_as_percent = "anc" not in obs and "neutrophil_pct" in obs

    # ---- helpers -----------------------------------------------------------------
    def _id(self, kind: str) -> str:
        self.counter += 1
        return str(uuid.uuid5(self.ns, f"{self.course.index}/{kind}/{self.counter}"))

    def _at(self, day: date, hour: int, minute: int = 0) -> datetime:
        return datetime.combine(day, time(hour, minute), tzinfo=self.tz)

    def _dt(self, when: datetime) -> str:
        if self.p.get("timestamps") == "utc":  # an interface engine that sends UTC
            return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return when.isoformat(timespec="seconds")

    def _lab_time(self, concept: str, day: date) -> datetime:
        """When a lab result was taken: a random morning time, the same for one sample."""
        if concept not in self.same_sample:
            return self._at(day, self.rng.randrange(5, 10), self.rng.randrange(60))
        if day not in self.sample_times:
            self.sample_times[day] = self._at(day, self.rng.randrange(5, 10),
                                              self.rng.randrange(60))
        return self.sample_times[day]

    def _meta(self, when: datetime, version: str = "1") -> dict[str, Any]:
        updated = (when + timedelta(hours=self.rng.randrange(1, 7))).astimezone(UTC)
        return {"versionId": version,
                "lastUpdated": updated.isoformat(timespec="seconds").replace("+00:00", "Z")}

    def _subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.out.patient_id}"}

    def _add(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.out.resources.append(resource)
        if self.rng.random() < REPEATED_LINE_RATE:
            self.out.repeated.append(resource)
        return resource

    @staticmethod
    def _concept(codings: list[dict[str, str]], text: str | None = None,
                 **fmt: Any) -> dict[str, Any]:
        out = [{k: (v.format(**fmt) if isinstance(v, str) else v) for k, v in c.items()}
               for c in codings]
        return {"coding": out, "text": text or out[0]["display"]}

    # ---- resources -------------------------------------------------------------------
    def patient(self) -> None:
        c, p = self.course, self.p
        families, givens = NAMES[p["names"]]
        addr = p["address"]
        resource: dict[str, Any] = {
            "resourceType": "Patient", "id": self.out.patient_id,
            "meta": self._meta(self._at(c.diagnosis, 9)),
            "identifier": [{
                "use": "usual",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                     "code": "MR"}]},
                "system": p["mrn_system"],
                "value": f"{p['mrn_prefix']}{700000 + c.index * 7 + self.rng.randrange(7):08d}",
            }],
            "name": [{"use": "official", "family": self.rng.choice(families),
                      "given": [self.rng.choice(givens)]}],
            "telecom": [{"system": "phone", "use": "home",
                         "value": f"+0-555-{self.rng.randrange(10**6, 10**7)}"}],
            "gender": c.sex,
            "birthDate": c.birth_date.isoformat(),
            "address": [{"use": "home", "line": [f"{self.rng.randrange(1, 999)} Example Road"],
                         "city": addr["city"], "state": addr["state"], "country": addr["country"],
                         "postalCode": f"{addr['postal']}{self.rng.randrange(100, 999)}"}],
        }
        if c.death is not None:
            resource["deceasedDateTime"] = self._dt(self._at(c.death, self.rng.randrange(0, 24)))
        self._add(resource)

    def condition(self, concept: str, day: date, *, grade: int | None = None,
                  body_sites: tuple[str, ...] = (), status: str = "active",
                  entered_in_error: bool = False, resolved: date | None = None) -> str:
        p = self.p
        when = self._at(day, self.rng.randrange(8, 20), self.rng.randrange(60))
        codings = p["conditions"][concept]
        code = self._concept(codings, grade=grade)
        resource: dict[str, Any] = {
            "resourceType": "Condition", "id": self._id("Condition"), "meta": self._meta(when),
            "verificationStatus": {"coding": [{
                "system": COND_VERIFICATION,
                "code": "entered-in-error" if entered_in_error else "confirmed"}]},
            "category": [{"coding": [{"system": COND_CATEGORY, "code": "encounter-diagnosis",
                                      "display": "Encounter Diagnosis"}]}],
            "code": code, "subject": self._subject(),
            "onsetDateTime": (day.isoformat() if self.rng.random() < DATE_ONLY_ONSET_RATE
                              else self._dt(when)),
            "recordedDate": self._dt(when + timedelta(hours=2)),
        }
        if not entered_in_error:  # con-5: no clinicalStatus on entered-in-error
            resource["clinicalStatus"] = {"coding": [{
                "system": COND_CLINICAL, "code": "resolved" if resolved else status}]}
        if resolved:
            resource["abatementDateTime"] = resolved.isoformat()
        if body_sites:
            resource["bodySite"] = [_body_site(p["body_sites"][s]) for s in body_sites]
        if grade is not None and p["grade_style"] == "stage":
            scale = "ASTCT" if concept == "crs" else "ICANS"
            resource["stage"] = [{"summary": {"text": f"{scale} grade {grade}"}}]
            sev_code, sev_display = SEVERITY[grade]
            resource["severity"] = {"coding": [{"system": "http://snomed.info/sct",
                                                "code": sev_code, "display": sev_display}]}
        return self._add(resource)["id"]

    def procedure(self, concept: str, start: date, end: date | None = None, *,
                  text_key: str | None = None, product: str | None = None,
                  entered_in_error: bool = False) -> str:
        when = self._at(start, self.rng.randrange(9, 16), self.rng.randrange(60))
        resource: dict[str, Any] = {
            "resourceType": "Procedure", "id": self._id("Procedure"), "meta": self._meta(when),
            "status": "entered-in-error" if entered_in_error else "completed",
            "code": self._concept(self.p["procedures"][concept],
                                  self.p["texts"][text_key or concept]),
            "subject": self._subject(),
        }
        if end is not None:
            resource["performedPeriod"] = {"start": self._dt(when),
                                           "end": self._dt(self._at(end, 17))}
        else:
            resource["performedDateTime"] = self._dt(when)
        if product:
            resource["usedCode"] = [{"text": self.p["texts"]["product"][product]}]
        return self._add(resource)["id"]

    def observation(self, m: Measurement, day: date, *, focus: str | None = None,
                    entered_in_error: bool = False) -> None:
        spec = self.p["observations"].get(m.concept)
        if spec is None:  # this site does not record the concept at all
            m.usable = False
            return
        # A result made by mistake is no part of the day's sample: it has its own time.
        when = (self._at(day, self.rng.randrange(5, 10), self.rng.randrange(60))
                if entered_in_error else self._lab_time(m.concept, day))
        amended = self.rng.random() < AMENDED_RATE
        status = "entered-in-error" if entered_in_error else "amended" if amended else "final"
        if entered_in_error:
            m.usable = False
        resource: dict[str, Any] = {
            "resourceType": "Observation", "id": self._id("Observation"),
            "meta": self._meta(when, "2" if amended else "1"),
            "status": status,
            "category": [{"coding": [{"system": OBS_CATEGORY,
                                      "code": spec.get("category", "laboratory")}]}],
            "code": self._concept([{k: spec[k] for k in ("system", "code", "display")}]),
            "subject": self._subject(),
            "effectiveDateTime": self._dt(when),
        }
        if focus:
            resource["partOf"] = [{"reference": f"Procedure/{focus}"}]
        reported = to_site_unit(spec, m.value)
        m.reported = to_canonical(spec, reported)
        if m.comparator and self.p["comparator_style"] == "string":
            resource["valueString"] = self._censored_text(spec, reported, m.comparator)
        else:
            resource["valueQuantity"] = self._quantity(spec, reported, m)
        if m.concept in REFERENCE_RANGE:
            low, high = (to_site_unit(spec, v) for v in REFERENCE_RANGE[m.concept])
            m.ref_low, m.ref_high = to_canonical(spec, low), to_canonical(spec, high)
            resource["referenceRange"] = [{"low": self._bare(spec, low),
                                           "high": self._bare(spec, high)}]
        elif "reference_range" in spec:  # the lab's own range (not used by the truth)
            low, high = spec["reference_range"]
            resource["referenceRange"] = [{"low": self._bare(spec, low),
                                           "high": self._bare(spec, high)}]
        m.resource_id = resource["id"]
        self._add(resource)
        if m.usable and self.rng.random() < RESENT_RATE:  # an interface re-sends the result
            again = dict(resource, id=self._id("Observation"))
            self._add(again)

    def _censored_text(self, spec: dict[str, Any], reported: float, comparator: str) -> str:
        """A result below the assay's limit as the LIS prints it: by default with its unit
        ('<1 ng/L', '<0.01%'); a profile's words ('阴性') or its text ('＜{value}')."""
        if "censored_words" in spec:
            return self.rng.choice(spec["censored_words"])
        if "censored_text" in spec:
            value = f"{reported:.{spec['decimals']}f}"
            return spec["censored_text"].format(value=value, unit=spec["unit"])
        unit = "%" if spec["unit"] == "%" else f" {spec['unit']}"
        return f"{comparator}{_num(reported)}{unit}"

    def neutrophil_percent(self, anc: Measurement, wbc: Measurement, day: date) -> Measurement:
        """The neutrophil percentage of the WBC where a site reports no absolute count.

        The percentage is the course's ANC over its WBC, as the analyser counts it; the
        ANC's reported value is filled by ``settle_anc`` once the WBC is emitted.
        """
        pct = Measurement("neutrophil_pct", anc.day, anc.value / wbc.value * 100)
        self.observation(pct, day)
        anc.resource_id = pct.resource_id
        return pct

    @staticmethod
    def settle_anc(anc: Measurement, wbc: Measurement, pct: Measurement) -> None:
        """The ANC a pipeline can compute: WBC x % / 100, usable when both results are."""
        anc.usable = anc.usable and wbc.usable and pct.usable
        anc.reported = wbc.reported * pct.reported / 100  # type: ignore[operator]

    def _bare(self, spec: dict[str, Any], value: float) -> dict[str, Any]:
        q: dict[str, Any] = {"value": value, "unit": spec["unit"]}
        if self.p["unit_style"] == "ucum":
            q.update(system=UCUM, code=spec["ucum"])
        return q

    def _quantity(self, spec: dict[str, Any], reported: float, m: Measurement) -> dict[str, Any]:
        q = self._bare(spec, reported)
        if m.comparator:
            q["comparator"] = m.comparator
        roll = self.rng.random()
        if roll < MISSING_UNIT_RATE:
            m.usable = False
            return {"value": reported}
        if (m.concept in ("anc", "wbc", "platelets") and m.value > 1.0
                and roll < MISSING_UNIT_RATE + MISLABELLED_UNIT_RATE):
            # Reported per uL but labelled as 10*9/L: a thousand-fold implausible value.
            m.usable = False
            q = {"value": round(m.value * 1000), "unit": "10^9/L"}
            if self.p["unit_style"] == "ucum":
                q.update(system=UCUM, code="10*9/L")
        return q

    def grade_observation(self, concept: str, day: date, grade: int,
                          entered_in_error: bool = False) -> None:
        spec = self.p["grade_observations"][concept]
        when = self._at(day, self.rng.randrange(8, 12), self.rng.randrange(60))
        resource: dict[str, Any] = {
            "resourceType": "Observation", "id": self._id("Observation"), "meta": self._meta(when),
            "status": "entered-in-error" if entered_in_error else "final",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": "survey"}]}],
            "code": self._concept([spec]), "subject": self._subject(),
            "effectiveDateTime": self._dt(when),
        }
        if self.rng.random() < 0.5:
            resource["valueInteger"] = grade
        else:
            resource["valueString"] = f"{grade}级"
        self._add(resource)

    # ---- the course ----------------------------------------------------------------
    def emit(self) -> Emitted:
        c = self.course
        self.patient()
        self.condition("b_all", c.diagnosis)
        for onset, sites in c.relapses:
            if self.p.get("relapse_clinical_status"):
                self.condition("b_all", onset, body_sites=sites,
                               status=self.p["relapse_clinical_status"])
            else:
                self.condition("relapse", onset, body_sites=sites)
        for start, end in c.lymphodepletion:
            self.procedure("lymphodepletion", start, end)
        for start, end in c.chemotherapy:
            self.procedure("chemotherapy", start, end)
        for day in c.hsct:
            self.procedure("hsct", day)
        for ep in c.episodes:
            self.episode(ep)
        for day, values in c.follow_up:
            counts = [Measurement(concept, 0, values[concept]) for concept in COUNTS]
            self.labs(counts, lambda _, visit=day: visit)  # a visit: offsets do not apply
        return self.out

    def labs(self, measurements: list[Measurement], on: Callable[[int], date],
             focus: dict[str, str] | None = None) -> None:
        """Each measurement as an Observation on its day (``on(day offset)``); at a site
        that reports neutrophils as a percentage, the ANC as that of the same-day WBC."""
        focus = focus or {}
        wbc = ({m.day: m for m in measurements if m.concept == "wbc"}
               if self.anc_as_percent else {})
        pairs = []
        for m in measurements:
            if m.concept == "anc" and self.anc_as_percent:
                pairs.append((m, wbc[m.day], self.neutrophil_percent(m, wbc[m.day], on(m.day))))
                continue
            self.observation(m, on(m.day), focus=focus.get(m.concept))
        for anc, count, pct in pairs:
            self.settle_anc(anc, count, pct)

    def episode(self, ep: Episode) -> None:
        infusion = self.procedure("cart_infusion", ep.infusion, product=ep.target)
        if self.rng.random() < self.p.get("same_day_duplicate_infusion", 0):
            self.procedure("cart_infusion", ep.infusion, product=ep.target,
                           text_key="cart_infusion_duplicate")
        self.labs(ep.measurements, ep.on, focus={"cart_dose": infusion})
        for kind in ("crs", "icans"):
            self.graded(ep, [e for e in ep.events if e.kind == kind])
        for e in ep.events:
            if e.kind in INFECTIONS or e.kind == "febrile_neutropenia":
                e.resource_id = self.condition(e.kind, ep.on(e.day))
        if self.rng.random() < ENTERED_IN_ERROR_RATE:
            self.entered_in_error(ep, infusion)

    def graded(self, ep: Episode, events: list[Event]) -> None:
        """CRS or ICANS: grade codes, grade in the stage, or daily grade observations."""
        if not events:
            return
        kind, style = events[0].kind, self.p["grade_style"]
        end = ep.on(max(e.end_day or e.day for e in events))
        if style in ("condition_code", "stage"):
            for e in events:
                e.resource_id = self.condition(kind, ep.on(e.day), grade=e.grade, resolved=end)
            return
        first = self.condition(kind, ep.on(events[0].day), resolved=end)
        for e in events:
            e.resource_id = first
        last_day = max(e.end_day or e.day for e in events)
        for d in range(events[0].day, last_day + 1):
            grade = max(e.grade or 0 for e in events if e.day <= d)
            self.grade_observation(kind, ep.on(d), grade)

    def entered_in_error(self, ep: Episode, infusion: str) -> None:
        """A record made by mistake and retracted; a pipeline must ignore it."""
        choice = self.rng.choice(["grade", "count", "infusion"])
        if choice == "grade":
            if self.p["grade_style"] == "observation":
                self.grade_observation("crs", ep.on(2), 4, entered_in_error=True)
            else:
                self.condition("crs", ep.on(2), grade=4, entered_in_error=True)
        elif choice == "count":
            concept = "wbc" if self.anc_as_percent else "anc"
            self.observation(Measurement(concept, 3, 0.001), ep.on(3), entered_in_error=True)
        else:
            self.procedure("cart_infusion", ep.on(1), product=ep.target, entered_in_error=True)


def _parse_tz(text: str) -> tzinfo:
    """A profile's time zone: a fixed offset ('+08:00') or an IANA name ('Asia/Shanghai')."""
    if text[:1] in "+-":
        sign = -1 if text.startswith("-") else 1
        hours, minutes = text.lstrip("+-").split(":")
        return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(f"synthetic profile time zone {text!r} is neither an offset "
                         "('+08:00') nor an IANA zone name ('Asia/Shanghai')") from exc


def _body_site(spec: dict[str, str]) -> dict[str, Any]:
    if "code" in spec:
        return {"coding": [dict(spec)], "text": spec["display"]}
    return {"text": spec["text"]}


def _num(value: float) -> str:
    return f"{value:g}"


def emit_course(profile: dict[str, Any], course: Course, seed: int) -> Emitted:
    """All FHIR resources of one patient at one site (fills the course's reported values)."""
    return _Emitter(profile, course, seed).emit()


__all__ = ["CYTOKINES", "ORGAN_LABS", "Emitted", "emit_course"]
