"""Result objects as plain JSON: one ``to_dict`` for every stage's result.

A scheduler (``cartfhir run --json``, an Airflow task's XCom, a Dagster asset's
metadata) needs a stage's outcome as data, not tables. Results are dataclasses whose
fields say what happened; ``ResultDict.to_dict`` turns any of them, and anything a
stage adds later, into str/int/float/bool/None/list/dict, with the result's
``status`` first.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from datetime import date, datetime
from pathlib import Path
from typing import Any, ClassVar


def jsonable(value: Any) -> Any:
    """``value`` as JSON-safe data: paths as text, dataclasses and frames as dicts and
    records, NaN as None; nested results keep their own ``to_dict``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, ResultDict):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a pandas DataFrame
        return [jsonable(row) for row in value.to_dict(orient="records")]
    if hasattr(value, "item"):  # a numpy scalar
        return jsonable(value.item())
    return str(value)


class ResultDict:
    """Mixin for result dataclasses: ``to_dict()`` is the status, then every field.

    ``_derived`` names properties or no-argument methods worth having in the dict too
    (``valid``, ``summary``); the subclass says what its ``status`` is.
    """

    _derived: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": jsonable(getattr(self, "status", None))}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.name.startswith("_"):
                out[f.name] = jsonable(getattr(self, f.name))
        for name in self._derived:
            attribute = getattr(self, name)
            out[name] = jsonable(attribute() if callable(attribute) else attribute)
        return out


__all__ = ["ResultDict", "jsonable"]
