"""A hand-made NDJSON site: one patient infused on 2024-03-01, the resources a test adds,
landed and transformed through the real SQL; and readers of one value from the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb

from cartfhir.api import extract, transform
from tests.testbed import make_config

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
LOCAL = "http://hospital-x.example/lis"
T0 = "2024-03-01"


def day(offset: int, time: str | None = "08:00:00+08:00") -> str:
    """Day ``offset`` from T0 at ``time`` (written with its offset), or the date alone when
    ``time`` is None."""
    from datetime import date, timedelta

    date_text = (date(2024, 3, 1) + timedelta(days=offset)).isoformat()
    return date_text if time is None else f"{date_text}T{time}"


class Site:
    """Resources of one synthetic patient, written as NDJSON."""

    def __init__(self, root: Path, name: str = "site_x") -> None:
        self.root, self.name = root, name
        self.resources: list[dict[str, Any]] = [
            {"resourceType": "Patient", "id": "p1", "gender": "female",
             "birthDate": "2014-06-15"}]
        self.n = 0

    def _id(self) -> str:
        self.n += 1
        return f"r{self.n}"

    def infusion(self, offset: int = 0, status: str = "completed",
                 text: str = "CAR-T cell infusion", product: str | None = None,
                 time: str = "10:00:00+08:00") -> str:
        """A CAR-T Procedure performed at ``time`` (with its offset) on day ``offset``."""
        resource: dict[str, Any] = {
            "resourceType": "Procedure", "id": self._id(), "status": status,
            "code": {"text": text}, "subject": {"reference": "Patient/p1"},
            "performedDateTime": day(offset, time)}
        if product:
            resource["usedCode"] = [{"text": product}]
        self.resources.append(resource)
        return resource["id"]

    def procedure(self, text: str, offset: int, coding: dict | None = None) -> None:
        code: dict[str, Any] = {"text": text}
        if coding:
            code["coding"] = [coding]
        self.resources.append({"resourceType": "Procedure", "id": self._id(),
                               "status": "completed", "code": code,
                               "subject": {"reference": "Patient/p1"},
                               "performedDateTime": day(offset)})

    def lab(self, offset: int, value: Any, unit: str | None = None, *, system: str = LOINC,
            code: str = "751-8", display: str | None = None, text: str | None = None,
            ucum: str | None = None, status: str = "final", comparator: str | None = None,
            reference: tuple[float, float] | None = None,
            time: str | None = "08:00:00+08:00") -> str:
        coding: dict[str, Any] = {"system": system, "code": code}
        if display:
            coding["display"] = display
        resource: dict[str, Any] = {
            "resourceType": "Observation", "id": self._id(), "status": status,
            "code": {"coding": [coding], **({"text": text} if text else {})},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": day(offset, time)}
        if isinstance(value, str):
            resource["valueString"] = value
        elif isinstance(value, int) and unit is None and ucum is None and code.endswith("GRADE"):
            resource["valueInteger"] = value
        else:
            quantity: dict[str, Any] = {"value": value}
            if unit:
                quantity["unit"] = unit
            if ucum:
                quantity.update(system=UCUM, code=ucum)
            if comparator:
                quantity["comparator"] = comparator
            resource["valueQuantity"] = quantity
        if reference:
            resource["referenceRange"] = [{"low": {"value": reference[0], "unit": unit},
                                           "high": {"value": reference[1], "unit": unit}}]
        self.resources.append(resource)
        return resource["id"]

    def condition(self, offset: int, *, coding: list[dict] | None = None, text: str | None = None,
                  verification: str = "confirmed", stage: str | None = None,
                  severity: str | None = None, clinical: str = "active",
                  body_sites: list[str] | None = None, time: str | None = None) -> str:
        """A Condition with its onset on day ``offset``: the date alone unless ``time``."""
        resource: dict[str, Any] = {
            "resourceType": "Condition", "id": self._id(),
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                "code": verification}]},
            "code": {"coding": coding or [], **({"text": text} if text else {})},
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": day(offset, time)}
        if verification != "entered-in-error":
            resource["clinicalStatus"] = {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": clinical}]}
        if stage:
            resource["stage"] = [{"summary": {"text": stage}}]
        if severity:
            resource["severity"] = {"coding": [{"system": "http://snomed.info/sct",
                                                "code": severity}]}
        if body_sites:
            resource["bodySite"] = [{"text": s} for s in body_sites]
        self.resources.append(resource)
        return resource["id"]

    def write(self) -> None:
        """Write this site's resources as NDJSON under root/data/<name>."""
        folder = self.root / "data" / self.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "all.ndjson").write_text(
            "\n".join(json.dumps(r, ensure_ascii=False) for r in self.resources) + "\n")

    def build(self, *others: str, **config: Any) -> duckdb.DuckDBPyConnection:
        """Land and transform this site (and the configured sites ``others``, written
        before)."""
        self.write()
        cfg = make_config(self.root, [self.name, *others], **config)
        extract(cfg)
        transform(cfg)
        return duckdb.connect(str(cfg.output.duckdb), read_only=True)


def one(con: duckdb.DuckDBPyConnection, sql: str, *params: Any) -> Any:
    rows = con.execute(sql, list(params)).fetchall()
    assert len(rows) == 1, rows
    return rows[0][0] if len(rows[0]) == 1 else rows[0]


def endpoint(con: duckdb.DuckDBPyConnection, column: str, round_: int = 1) -> Any:
    return one(con, f"SELECT {column} FROM cohort.episode_endpoints WHERE round = ?", round_)
