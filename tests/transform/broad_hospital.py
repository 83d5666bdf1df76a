"""Broad, general-purpose FHIR R4 data as a US hospital (or Synthea) exports it.

A real server holds far more than a CAR-T study reads: vital signs, full CBC and
metabolic panels, urinalysis, social history, encounters, claims, immunizations
and everyday diagnoses, all in standard code systems. Some of its LOINC codes
look like study labs by their text (HbA1c, MPV, PDW, urine and stool hemoglobin,
urine bilirubin, leukocyte esterase, microalbumin/creatinine ratio) but are not
in the study's maps. ``broad_resources`` writes such a hospital for a few patients,
with the LOINC codes and displays Synthea writes, valid for fhir.resources R4B.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
CVX = "http://hl7.org/fhir/sid/cvx"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

# (code, display, value, UCUM unit) for numeric results; value None = a coded result.
VITALS = [
    ("8867-4", "Heart rate", 78, "/min"),
    ("9279-1", "Respiratory rate", 16, "/min"),
    ("29463-7", "Body Weight", 72.4, "kg"),
    ("8302-2", "Body Height", 171.2, "cm"),
    ("39156-5", "Body mass index (BMI) [Ratio]", 24.7, "kg/m2"),
    ("2708-6", "Oxygen saturation in Arterial blood", 97.0, "%"),
    ("72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported", 2, "{score}"),
    ("8310-5", "Body temperature", 36.8, "Cel"),
]
BLOOD_PRESSURE = ("85354-9", "Blood pressure panel with all children optional",
                  [("8462-4", "Diastolic Blood Pressure", 78, "mm[Hg]"),
                   ("8480-6", "Systolic Blood Pressure", 121, "mm[Hg]")])
CBC = [
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", 7.1, "10*3/uL"),
    ("789-8", "Erythrocytes [#/volume] in Blood by Automated count", 4.6, "10*6/uL"),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", 14.1, "g/dL"),
    ("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", 42.3, "%"),
    ("787-2", "MCV [Entitic volume] by Automated count", 89.5, "fL"),
    ("785-6", "MCH [Entitic mass] by Automated count", 30.1, "pg"),
    ("786-4", "MCHC [Mass/volume] by Automated count", 33.9, "g/dL"),
    ("21000-5", "Erythrocyte distribution width [Entitic volume] by Automated count", 41.2,
     "fL"),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", 262, "10*3/uL"),
    ("32207-3", "Platelet distribution width [Entitic volume] in Blood by Automated count",
     12.1, "fL"),
    ("32623-1", "Platelet mean volume [Entitic volume] in Blood by Automated count", 10.2,
     "fL"),
]
METABOLIC = [
    ("2339-0", "Glucose [Mass/volume] in Blood", 92, "mg/dL"),
    ("6299-2", "Urea nitrogen [Mass/volume] in Blood", 14, "mg/dL"),
    ("38483-4", "Creatinine [Mass/volume] in Blood", 0.9, "mg/dL"),
    ("49765-1", "Calcium [Mass/volume] in Blood", 9.4, "mg/dL"),
    ("2947-0", "Sodium [Moles/volume] in Blood", 140, "mmol/L"),
    ("6298-4", "Potassium [Moles/volume] in Blood", 4.2, "mmol/L"),
    ("2069-3", "Chloride [Moles/volume] in Blood", 104, "mmol/L"),
    ("20565-8", "Carbon dioxide, total [Moles/volume] in Blood", 25, "mmol/L"),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", 5.8, "%"),
    ("14959-1", "Microalbumin Creatinine Ratio", 12.4, "mg/g"),
    ("58453-2", "Hemoglobin.gastrointestinal [Mass/volume] in Stool by Immunoassay", 32,
     "ng/mL"),
]
URINALYSIS = [
    ("5792-7", "Glucose [Mass/volume] in Urine by Test strip", 0, "mg/dL"),
    ("5770-3", "Bilirubin.total [Mass/volume] in Urine by Test strip", 0.4, "mg/dL"),
    ("5811-5", "Specific gravity of Urine by Test strip", 1.018, "{SG}"),
    ("5803-2", "pH of Urine by Test strip", 6.0, "[pH]"),
    ("5794-3", "Hemoglobin [Presence] in Urine by Test strip", None, None),
    ("5799-2", "Leukocyte esterase [Presence] in Urine by Test strip", None, None),
    ("2335-8", "Hemoglobin.gastrointestinal [Presence] in Stool", None, None),
]
# LOINC codes whose text names a study analyte but which are not study results.
LOOK_ALIKES = {"4548-4", "32623-1", "32207-3", "5770-3", "58453-2", "2335-8", "5794-3",
               "5799-2", "14959-1", "21000-5", "786-4", "785-6"}
CONDITIONS = [
    ("444814009", "Viral sinusitis (disorder)"),
    ("195662009", "Acute viral pharyngitis (disorder)"),
    ("59621000", "Essential hypertension (disorder)"), ("15777000", "Prediabetes"),
    ("162864005", "Body mass index 30+ - obesity (finding)"),
    ("10509002", "Acute bronchitis (disorder)"),
]
PROCEDURES = [
    ("430193006", "Medication Reconciliation (procedure)"),
    ("710824005", "Assessment of health and social care needs (procedure)"),
    ("428191000124101", "Documentation of current medications"),
]


def _coded(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


class _Hospital:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.resources: list[dict[str, Any]] = []
        self.n = 0

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"broad-{prefix}-{self.n}"

    def add(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.resources.append(resource)
        return resource

    def observation(self, patient: str, encounter: str, when: str, category: str, code: str,
                    display: str, value: float | None, unit: str | None) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "Observation", "id": self._id("obs"), "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "code": _coded(LOINC, code, display),
            "subject": {"reference": f"Patient/{patient}"},
            "encounter": {"reference": f"Encounter/{encounter}"},
            "effectiveDateTime": when, "issued": when[:19] + ".000-05:00"}
        if value is None:
            resource["valueCodeableConcept"] = _coded(SNOMED, "260385009",
                                                      "Negative (qualifier value)")
        else:
            jitter = 1 + self.rng.uniform(-0.05, 0.05) if value else 1
            resource["valueQuantity"] = {"value": round(value * jitter, 3), "unit": unit,
                                         "system": UCUM, "code": unit}
        return self.add(resource)

    def visit(self, patient: str, day: date) -> None:
        when = f"{day.isoformat()}T09:{self.rng.randint(10, 59):02d}:00-05:00"
        encounter = self.add({
            "resourceType": "Encounter", "id": self._id("enc"), "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB"},
            "type": [_coded(SNOMED, "185349003", "Encounter for check up (procedure)")],
            "subject": {"reference": f"Patient/{patient}"},
            "period": {"start": when, "end": when[:11] + "10:30:00-05:00"}})["id"]
        for code, display, value, unit in VITALS:
            self.observation(patient, encounter, when, "vital-signs", code, display, value, unit)
        panel, display, parts = BLOOD_PRESSURE
        bp = self.observation(patient, encounter, when, "vital-signs", panel, display, 0, None)
        del bp["valueQuantity"]
        bp["component"] = [{"code": _coded(LOINC, c, d),
                            "valueQuantity": {"value": v, "unit": u, "system": UCUM, "code": u}}
                           for c, d, v, u in parts]
        results = [self.observation(patient, encounter, when, "laboratory", *row)
                   for row in CBC + METABOLIC + URINALYSIS]
        self.add({"resourceType": "DiagnosticReport", "id": self._id("dr"), "status": "final",
                  "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                      "v2-0074", "code": "LAB"}]}],
                  "code": _coded(LOINC, "58410-2",
                                 "CBC panel - Blood by Automated count"),
                  "subject": {"reference": f"Patient/{patient}"},
                  "encounter": {"reference": f"Encounter/{encounter}"},
                  "effectiveDateTime": when,
                  "result": [{"reference": f"Observation/{r['id']}"} for r in results[:11]]})
        self.add({
            "resourceType": "Observation", "id": self._id("obs"), "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": "social-history"}]}],
            "code": _coded(LOINC, "72166-2", "Tobacco smoking status"),
            "subject": {"reference": f"Patient/{patient}"},
            "encounter": {"reference": f"Encounter/{encounter}"}, "effectiveDateTime": when,
            "valueCodeableConcept": _coded(SNOMED, "266919005",
                                           "Never smoked tobacco (finding)")})
        code, display = self.rng.choice(CONDITIONS)
        self.add({
            "resourceType": "Condition", "id": self._id("cond"),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                     "condition-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                "code": "confirmed"}]},
            "code": _coded(SNOMED, code, display),
            "subject": {"reference": f"Patient/{patient}"},
            "encounter": {"reference": f"Encounter/{encounter}"}, "onsetDateTime": when,
            "recordedDate": when})
        code, display = self.rng.choice(PROCEDURES)
        procedure = self.add({
            "resourceType": "Procedure", "id": self._id("proc"), "status": "completed",
            "code": _coded(SNOMED, code, display),
            "subject": {"reference": f"Patient/{patient}"},
            "encounter": {"reference": f"Encounter/{encounter}"},
            "performedPeriod": {"start": when, "end": when}})
        self.add({
            "resourceType": "Immunization", "id": self._id("imm"), "status": "completed",
            "vaccineCode": _coded(CVX, "140", "Influenza, seasonal, injectable, "
                                              "preservative free"),
            "patient": {"reference": f"Patient/{patient}"},
            "encounter": {"reference": f"Encounter/{encounter}"},
            "occurrenceDateTime": when, "primarySource": True})
        self._billing(patient, encounter, procedure, when)

    def _billing(self, patient: str, encounter: str, procedure: dict[str, Any],
                 when: str) -> None:
        claim_type = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                                  "code": "professional"}]}
        insurance = [{"sequence": 1, "focal": True, "coverage": {"display": "Medicaid"}}]
        item = [{"sequence": 1, "productOrService": _coded(SNOMED, "185349003",
                                                           "Encounter for check up"),
                 "encounter": [{"reference": f"Encounter/{encounter}"}]},
                {"sequence": 2, "procedureSequence": [1],
                 "productOrService": procedure["code"],
                 "net": {"value": 431.4, "currency": "USD"}}]
        claim = self.add({
            "resourceType": "Claim", "id": self._id("claim"), "status": "active",
            "type": claim_type, "use": "claim", "patient": {"reference": f"Patient/{patient}"},
            "billablePeriod": {"start": when, "end": when}, "created": when,
            "provider": {"display": "Broad General Hospital"},
            "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                               "processpriority", "code": "normal"}]},
            "procedure": [{"sequence": 1, "procedureReference": {
                "reference": f"Procedure/{procedure['id']}"}}],
            "insurance": insurance, "item": item, "total": {"value": 560.9, "currency": "USD"}})
        self.add({
            "resourceType": "ExplanationOfBenefit", "id": self._id("eob"), "status": "active",
            "type": claim_type, "use": "claim", "patient": {"reference": f"Patient/{patient}"},
            "billablePeriod": {"start": when, "end": when}, "created": when,
            "insurer": {"display": "Medicaid"}, "provider": {"display": "Broad General Hospital"},
            "claim": {"reference": f"Claim/{claim['id']}"}, "outcome": "complete",
            "insurance": [{"focal": True, "coverage": {"display": "Medicaid"}}], "item": item,
            "total": [{"category": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/adjudication",
                "code": "submitted"}]}, "amount": {"value": 560.9, "currency": "USD"}}],
            "payment": {"amount": {"value": 448.7, "currency": "USD"}}})


def broad_resources(patients: int = 3, visits: int = 2, seed: int = 7) -> list[dict[str, Any]]:
    """Patients with ``visits`` check-ups each: about 60 resources per visit."""
    hospital = _Hospital(seed)
    for p in range(patients):
        patient = f"broad-patient-{p + 1}"
        hospital.add({"resourceType": "Patient", "id": patient,
                      "gender": hospital.rng.choice(["female", "male"]),
                      "birthDate": (date(1960, 1, 1) + timedelta(days=hospital.rng.randint(
                          0, 15000))).isoformat(),
                      "name": [{"family": f"Broad{p + 1}", "given": ["Test"]}]})
        for v in range(visits):
            hospital.visit(patient, date(2023, 1, 10) + timedelta(days=91 * v + 7 * p))
    return hospital.resources
