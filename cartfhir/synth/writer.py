"""Write one synthetic site to disk the way a Bulk Data export lays it out.

Per site folder: one NDJSON file per resource type (split every ``max_lines``),
a bulk-style ``manifest.json`` and, optionally, FHIR transaction Bundles for
loading a server. ``--bad-rate`` adds broken lines *next to* the good ones
(never instead of them), and every injected line is listed so tests can check
that landing rejected exactly those.
"""

from __future__ import annotations

import gzip
import io
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

BAD_KINDS = ("broken_json", "not_a_resource", "invalid_resource", "unknown_unit")
UNKNOWN_UNITS = ("IU/mL", "mEq/dL", "cells/hpf")
# A field per type whose value fails FHIR R4 datatype validation.
INVALID_FIELD = {
    "Observation": ("effectiveDateTime", "the day after infusion"),
    "Condition": ("onsetDateTime", "yesterday"),
    "Procedure": ("performedDateTime", "last week"),
    "Patient": ("birthDate", "31/12/2010"),
}


@dataclass
class Injected:
    site: str
    file: str
    line_no: int
    kind: str
    resource_type: str | None
    id: str | None


@dataclass
class SiteWriter:
    """Streams resources of one site into NDJSON files; call ``close`` at the end."""

    folder: Path
    site: str
    compress: bool = False
    max_lines: int = 1_000_000
    bundle_size: int = 0  # resources per transaction Bundle; 0 = no bundles
    bad_rate: float = 0.0
    on_injected: Callable[[Injected], None] = lambda item: None  # streams the bad-line list
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    injected: int = 0
    _files: dict[str, tuple[io.BufferedWriter | gzip.GzipFile, str, int]] = field(
        default_factory=dict)
    _outputs: list[dict[str, Any]] = field(default_factory=list)
    _bundle: list[dict[str, Any]] = field(default_factory=list)
    _bundle_no: int = 0
    _last_updated: str = ""

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.bundle_size:
            (self.folder / "bundles").mkdir(exist_ok=True)

    # ---- NDJSON --------------------------------------------------------------------
    def _handle(self, rtype: str) -> tuple[Any, str, int]:
        entry = self._files.get(rtype)
        if entry is not None and entry[2] >= self.max_lines:
            self._close_file(rtype)
            entry = None
        if entry is None:
            part = sum(1 for o in self._outputs if o["type"] == rtype)
            name = f"{rtype}.{part:03d}.ndjson" + (".gz" if self.compress else "")
            path = self.folder / name
            fh = gzip.open(path, "wb", compresslevel=5) if self.compress else open(path, "wb")  # noqa: SIM115
            entry = (fh, name, 0)
            self._files[rtype] = entry
        return entry

    def _close_file(self, rtype: str) -> None:
        fh, name, n = self._files.pop(rtype)
        fh.close()
        self._outputs.append({"type": rtype, "url": name, "count": n})

    def _line(self, rtype: str, data: bytes) -> tuple[str, int]:
        fh, name, n = self._handle(rtype)
        fh.write(data + b"\n")
        self._files[rtype] = (fh, name, n + 1)
        return name, n + 1

    def write_patient(self, resources: list[dict[str, Any]], repeated: list[dict[str, Any]],
                      rng_value: Any) -> None:
        """Write one patient's resources (plus repeated lines and injected bad lines)."""
        repeated_ids = {id(r) for r in repeated}
        for resource in resources:
            rtype = resource["resourceType"]
            data = orjson.dumps(resource)
            self._line(rtype, data)
            self.counts[rtype] += 1
            self._last_updated = max(self._last_updated, resource["meta"]["lastUpdated"])
            if id(resource) in repeated_ids:
                self._line(rtype, data)
            if self.bad_rate and rng_value.random() < self.bad_rate:
                self._inject(rng_value, resource, data)
        if self.bundle_size:
            self._bundle.extend(resources)
            if len(self._bundle) >= self.bundle_size:
                self._flush_bundle()

    def _inject(self, rng: Any, resource: dict[str, Any], data: bytes) -> None:
        rtype, kind = resource["resourceType"], rng.choice(BAD_KINDS)
        bad_id = f"bad-{resource['id']}"
        if kind == "broken_json":
            payload, rid = data[: max(10, len(data) // 2)], None
        elif kind == "not_a_resource":
            stray = {"id": bad_id, "note": "exported by a misconfigured job"}
            payload, rid = orjson.dumps(stray), None
        elif kind == "unknown_unit" and "valueQuantity" in resource:
            copy = dict(resource, id=bad_id)
            copy["valueQuantity"] = {"value": resource["valueQuantity"]["value"],
                                     "unit": rng.choice(UNKNOWN_UNITS)}
            payload, rid = orjson.dumps(copy), bad_id
            self.counts[rtype] += 1  # a valid resource: it lands, transform quarantines it
        else:
            kind = "invalid_resource"
            field_name, value = INVALID_FIELD[rtype]
            payload, rid = orjson.dumps(dict(resource, id=bad_id, **{field_name: value})), bad_id
        name, line_no = self._line(rtype, payload)
        self.injected += 1
        self.on_injected(Injected(self.site, name, line_no, kind, rtype, rid))
        if kind == "unknown_unit" and self.bundle_size:
            self._bundle.append(orjson.loads(payload))

    # ---- Bundles ---------------------------------------------------------------------
    def _flush_bundle(self) -> None:
        if not self._bundle:
            return
        self._bundle_no += 1
        bundle = {
            "resourceType": "Bundle", "type": "transaction",
            "entry": [{"fullUrl": f"urn:uuid:{r['id']}" if _is_uuid(r["id"]) else None,
                       "resource": r,
                       "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                      for r in self._bundle],
        }
        for entry in bundle["entry"]:
            if entry["fullUrl"] is None:
                del entry["fullUrl"]
        path = self.folder / "bundles" / f"bundle-{self._bundle_no:04d}.json"
        path.write_bytes(orjson.dumps(bundle))
        self._bundle = []

    # ---- finish ----------------------------------------------------------------------
    def close(self, request: str) -> Path:
        for rtype in list(self._files):
            self._close_file(rtype)
        if self.bundle_size:
            self._flush_bundle()
        manifest = {
            "transactionTime": self._last_updated or None,
            "request": request,
            "requiresAccessToken": False,
            "output": sorted(self._outputs, key=lambda o: o["url"]),
            "error": [],
        }
        path = self.folder / "manifest.json"
        path.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        return path


def _is_uuid(text: str) -> bool:
    return len(text) == 36 and text.count("-") == 4
