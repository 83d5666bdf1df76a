"""Nine patients, two CAR-T rounds each, as FHIR R4 resources matching what the paper reports.

Ji et al. (domain.md §1): MRD-negative CR 9/9 after CART1 versus 4/9 after CART2
(p = .029); CRES 3/9 versus 1/9; CRS as often after either round; IL-17A peaks
higher after CART1 (Mann-Whitney p = .011); more early and late infections after
CART1; one isolated testicular relapse; every patient has an event after CART2.
Coded the way a US hospital codes (LOINC, UCUM, ICD-10-CM, ICD-10-PCS, CPT), with a
local code for IL-17A and MRD that only their display names identify.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
CPT = "http://www.ama-assn.org/go/cpt"
LAB = "http://paper-hospital.example.org/lab"
SNOMED = "http://snomed.info/sct"

IL17A_CART1 = [10.5, 11.6, 13.8, 14.9, 16.1, 18.3, 21.7, 25.4, 30.2]
IL17A_CART2 = [3.1, 4.2, 5.3, 6.4, 7.5, 12.0, 13.0, 15.5, 16.0]
CRS_GRADE = {1: [1, 2, 0, 1, 3, 0, 2, 1, 0], 2: [1, 1, 0, 2, 1, 0, 1, 2, 0]}  # 6/9 both
CRES_GRADE = {1: [1, 2, 1, 0, 0, 0, 0, 0, 0], 2: [1, 0, 0, 0, 0, 0, 0, 0, 0]}  # 3/9 vs 1/9
EARLY_INFECTIONS = {1: [1, 1, 0, 1, 2, 0, 1, 0, 1], 2: [0, 1, 0, 0, 1, 0, 0, 0, 0]}
LATE_INFECTIONS = {1: [0, 1, 0, 0, 1, 0, 1, 0, 0], 2: [0, 0, 0, 0, 0, 0, 1, 0, 0]}
MRD_NEGATIVE_CR2 = {0, 2, 5, 7}  # 4/9 after CART2; all 9 after CART1
NR_CART2 = {1, 8}  # no response after CART2 (the other CART2 failures are MRD-positive CR)
AFTER_CART2 = ["relapse", "hsct", "chemotherapy", "relapse", "hsct", "death", "hsct",
               "chemotherapy", "relapse"]


class _Writer:
    def __init__(self) -> None:
        self.resources: list[dict[str, Any]] = []
        self.n = 0

    def add(self, resource: dict[str, Any]) -> str:
        self.n += 1
        resource.setdefault("id", f"paper-{resource['resourceType'].lower()}-{self.n}")
        resource["meta"] = {"versionId": "1", "lastUpdated": "2023-06-01T00:00:00Z"}
        self.resources.append(resource)
        return resource["id"]


def _at(day: date, hour: int = 9) -> str:
    return f"{day.isoformat()}T{hour:02d}:00:00+08:00"


def _lab(w: _Writer, pid: str, day: date, code: dict[str, str], value: float, unit: str,
         ucum: str, comparator: str | None = None) -> None:
    quantity: dict[str, Any] = {"value": value, "unit": unit, "system": UCUM, "code": ucum}
    if comparator:
        quantity["comparator"] = comparator
    w.add({"resourceType": "Observation", "status": "final",
           "category": [{"coding": [{
               "system": "http://terminology.hl7.org/CodeSystem/observation-category",
               "code": "laboratory"}]}],
           "code": {"coding": [code], "text": code.get("display")},
           "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": _at(day),
           "valueQuantity": quantity})


def _condition(w: _Writer, pid: str, day: date, code: str, display: str,
               body_site: tuple[str, str] | None = None, abated: bool = True) -> None:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": "resolved" if abated else "active"}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            "code": "confirmed"}]},
        "code": {"coding": [{"system": ICD10CM, "code": code, "display": display}],
                 "text": display},
        "subject": {"reference": f"Patient/{pid}"}, "onsetDateTime": _at(day)}
    if body_site:
        resource["bodySite"] = [{"coding": [{"system": SNOMED, "code": body_site[0],
                                             "display": body_site[1]}]}]
    w.add(resource)


def _procedure(w: _Writer, pid: str, day: date, system: str, code: str, text: str,
               product: str | None = None) -> None:
    resource: dict[str, Any] = {
        "resourceType": "Procedure", "status": "completed",
        "code": {"coding": [{"system": system, "code": code}], "text": text},
        "subject": {"reference": f"Patient/{pid}"}, "performedDateTime": _at(day, 10)}
    if product:
        resource["usedCode"] = [{"text": product}]
    w.add(resource)


CODES = {
    "anc": ({"system": LOINC, "code": "751-8", "display": "Neutrophils [#/volume] in Blood"},
            "10*9/L", "10*9/L"),
    "platelets": ({"system": LOINC, "code": "777-3", "display": "Platelets [#/volume] in Blood"},
                  "10*9/L", "10*9/L"),
    "hemoglobin": ({"system": LOINC, "code": "718-7", "display": "Hemoglobin [Mass/volume]"},
                   "g/L", "g/L"),
    "blasts": ({"system": LOINC, "code": "11150-0", "display": "Blasts/100 cells in Bone marrow"},
               "%", "%"),
    "mrd": ({"system": LAB, "code": "FCM-MRD",
             "display": "Minimal residual disease, bone marrow, flow cytometry"}, "%", "%"),
    "il17a": ({"system": LAB, "code": "CBA-17",
               "display": "Interleukin 17A [Mass/volume] in Serum"}, "pg/mL", "pg/mL"),
    "dose": ({"system": LAB, "code": "CART-DOSE", "display": "CAR-T cell dose per kg"},
             "10^6 cells/kg", "10*6/kg"),
}


def _obs(w: _Writer, pid: str, day: date, concept: str, value: float,
         comparator: str | None = None) -> None:
    code, unit, ucum = CODES[concept]
    _lab(w, pid, day, code, value, unit, ucum, comparator)


def build(folder: Path) -> Path:
    """Write the cohort as one NDJSON file in ``folder``; return the folder."""
    w = _Writer()
    for i in range(9):
        pid = f"paper-pt-{i + 1}"
        t1 = date(2019, 1, 10) + timedelta(days=40 * i)
        t2 = t1 + timedelta(days=220)
        patient: dict[str, Any] = {"resourceType": "Patient", "id": pid,
                                   "gender": "male" if i % 3 else "female",
                                   "birthDate": (t1 - timedelta(days=365 * (6 + i))).isoformat()}
        after = t2 + timedelta(days=60 + 10 * i)
        if AFTER_CART2[i] == "death":
            patient["deceasedDateTime"] = _at(after, 14)
        w.add(patient)
        for rnd, t0 in ((1, t1), (2, t2)):
            k = i
            testis = (i == 4 and rnd == 2)  # the isolated testicular relapse
            site = ("40689003", "Testis structure") if testis else ("14016003", "Bone marrow")
            _condition(w, pid, t0 - timedelta(days=30), "C91.02",
                       "Acute lymphoblastic leukemia, in relapse", body_site=site, abated=False)
            _procedure(w, pid, t0 - timedelta(days=4), PCS, "3E04305",
                       "Lymphodepleting chemotherapy (fludarabine + cyclophosphamide)")
            _procedure(w, pid, t0, PCS, "XW033C3", "CAR-T cell infusion",
                       product="Anti-CD19 CAR-T cells")
            _obs(w, pid, t0, "dose", 2.0 + 0.1 * k)
            grade = CRS_GRADE[rnd][k]
            if grade:
                _condition(w, pid, t0 + timedelta(days=3), f"D89.83{grade}",
                           f"Cytokine release syndrome, grade {grade}")
            grade = CRES_GRADE[rnd][k]
            if grade:
                _condition(w, pid, t0 + timedelta(days=6), f"G92.0{grade}",
                           f"Immune effector cell-associated neurotoxicity syndrome, grade {grade}")
            il17a = (IL17A_CART1 if rnd == 1 else IL17A_CART2)[k]
            _obs(w, pid, t0 + timedelta(days=5), "il17a", il17a)
            for n in range(EARLY_INFECTIONS[rnd][k]):
                _condition(w, pid, t0 + timedelta(days=9 + n), "A41.9", "Sepsis, unspecified")
            for n in range(LATE_INFECTIONS[rnd][k]):
                _condition(w, pid, t0 + timedelta(days=50 + n), "J18.9", "Pneumonia")
            for day, anc, plt, hb in ((0, 1.2, 90, 95), (7, 0.3 + 0.05 * k, 40 + 3 * k, 78),
                                      (14, 0.9, 70, 85), (28, 1.6, 130, 100)):
                _obs(w, pid, t0 + timedelta(days=day), "anc", anc)
                _obs(w, pid, t0 + timedelta(days=day), "platelets", plt)
                _obs(w, pid, t0 + timedelta(days=day), "hemoglobin", hb)
            marrow = t0 + timedelta(days=28)
            no_response = rnd == 2 and k in NR_CART2
            _obs(w, pid, marrow, "blasts", 35.0 if no_response else 1.0)
            negative = rnd == 1 or k in MRD_NEGATIVE_CR2
            if negative:
                _obs(w, pid, marrow, "mrd", 0.01, comparator="<")
            else:
                _obs(w, pid, marrow, "mrd", 8.5 if no_response else 0.8)
        event = AFTER_CART2[i]
        if event == "relapse":
            _condition(w, pid, after, "C91.02", "Acute lymphoblastic leukemia, in relapse",
                       body_site=("14016003", "Bone marrow"), abated=False)
        elif event == "hsct":
            _procedure(w, pid, after, PCS, "30243Y3", "Allogeneic stem cell transplant")
        elif event == "chemotherapy":
            _procedure(w, pid, after, CPT, "96413", "Chemotherapy course")
        if event != "death":  # a clinic visit long after the event: the last contact
            _obs(w, pid, after + timedelta(days=150), "anc", 2.5)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "paper.ndjson").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in w.resources) + "\n")
    return folder
