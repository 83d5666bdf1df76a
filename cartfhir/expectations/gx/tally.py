"""Combining one expectation's per-chunk GX results into one ``Outcome``.

Counts and examples add up over the chunks; ``mostly`` is judged again on the totals;
each distinct GX error is kept once with the chunks it happened in. A uniqueness
failure counts every row of a duplicate group (one extra row counts 2), as GX does.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cartfhir.expectations.gx.spec import expectation_column

if TYPE_CHECKING:
    from cartfhir.expectations.gx.spec import SuiteSpec

EXAMPLES = 5


@dataclass
class Outcome:
    """One expectation's verdict over all chunks of its suite's query."""

    suite: str
    expectation: str
    column: str | None
    severity: str
    success: bool
    observed_value: str | None
    unexpected_count: int | None
    element_count: int | None
    unexpected_examples: list
    error: str | None
    kwargs: dict


@dataclass
class Tally:
    """Running combination of one expectation's results over the chunks."""

    suite: str
    kind: str
    kwargs: dict
    severity: str
    all_passed: bool = True
    errors: dict[str, list[int]] = field(default_factory=dict)  # message -> chunk numbers
    chunks: int = 0
    unexpected: int | None = None
    elements: int | None = None
    missing: int | None = None
    examples: list = field(default_factory=list)
    observed: Any = None
    observed_from_failure: bool = False

    @classmethod
    def start(cls, suite: SuiteSpec, spec: dict) -> Tally:
        severity = spec.get("meta", {}).get("severity", "error")
        return cls(suite=suite.name, kind=spec["type"], kwargs=dict(spec.get("kwargs", {})),
                   severity=severity)

    def fail(self, chunk: int, chunks: int, message: str) -> None:
        self.all_passed = False
        self.chunks = chunks
        self.errors.setdefault(message, []).append(chunk)

    def add(self, chunk: int, chunks: int, result: Any) -> None:
        """Add one chunk's GX result for this expectation (``None``: GX gave none)."""
        if result is None:
            self.fail(chunk, chunks, "GX returned no result for this expectation")
            return
        raised = _raised(result.exception_info)
        if raised:
            self.fail(chunk, chunks, raised)
            return
        if result.success is not True:
            self.all_passed = False
        details = result.result or {}
        self.unexpected = _add(self.unexpected, details.get("unexpected_count"))
        self.elements = _add(self.elements, details.get("element_count"))
        self.missing = _add(self.missing, details.get("missing_count"))
        room = EXAMPLES - len(self.examples)
        if room > 0:
            self.examples.extend(_jsonable(v) for v in details.get("partial_unexpected_list") or [])
            del self.examples[EXAMPLES:]
        if "observed_value" in details and (
                self.observed is None or (not result.success and not self.observed_from_failure)):
            self.observed = details["observed_value"]
            self.observed_from_failure = not result.success

    def outcome(self) -> Outcome:
        success = self.all_passed and not self.errors
        mostly = self.kwargs.get("mostly")
        if not self.errors and mostly is not None and self.unexpected is not None:
            # Chunks each meeting `mostly` is neither necessary nor sufficient: redo GX's
            # rule on the sums (rows considered = elements minus missing ones).
            considered = (self.elements or 0) - (self.missing or 0)
            success = considered == 0 or (considered - self.unexpected) / considered >= mostly
        return Outcome(
            suite=self.suite,
            expectation=self.kind,
            column=expectation_column(self.kwargs),
            severity=self.severity,
            success=success,
            observed_value=(None if self.observed is None
                            else json.dumps(_jsonable(self.observed))),
            unexpected_count=self.unexpected,
            element_count=self.elements,
            unexpected_examples=list(self.examples),
            error=self.error_text(),
            kwargs=dict(self.kwargs),
        )

    def error_text(self) -> str | None:
        """Each distinct GX error once, with the chunks it happened in."""
        if not self.errors:
            return None
        parts = []
        for message, chunks in self.errors.items():
            where = f"chunk {chunks[0]}" if len(chunks) == 1 else f"{len(chunks)} chunks"
            parts.append(f"{message} (in {where} of {self.chunks})")
        return "; ".join(parts)


def _add(total: int | None, value: Any) -> int | None:
    if value is None:
        return total
    return (total or 0) + int(value)


def _raised(info: Any) -> str | None:
    """GX's exception text, from either its flat or its per-metric ``exception_info``."""
    if not isinstance(info, dict):
        return None
    entries = [info] if "raised_exception" in info else list(info.values())
    messages = [str(entry.get("exception_message") or "GX raised an exception")
                for entry in entries if isinstance(entry, dict) and entry.get("raised_exception")]
    return "; ".join(dict.fromkeys(messages)) or None


def _jsonable(value: Any) -> Any:
    """Plain JSON values for GX's numpy, pandas and datetime values (NaN/NaT -> None)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):  # np.float64 is a float subclass: make it a plain float
        return None if math.isnan(value) else (float(value) if math.isfinite(value)
                                               else str(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=str)
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, Decimal):
        return float(value)
    return str(value)
