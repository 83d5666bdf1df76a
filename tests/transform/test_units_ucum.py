"""The unit table (terminology/units.csv) checked against a UCUM-aware library.

Every row names the UCUM unit it means (``ucum``); ucumvert (UCUM parsed into pint)
converts one of it to the concept group's canonical unit, and the table's
factor/offset must agree. Mass <-> substance rows carry the analyte's molar mass.
"""

from __future__ import annotations

import csv
from importlib import resources

import pytest

ucumvert = pytest.importorskip("ucumvert")

FOLDER = resources.files("cartfhir.transform").joinpath("terminology")


def _number(text: str) -> float:
    """The table's numbers may be exact ratios ('5/9')."""
    if "/" in text:
        numerator, denominator = text.split("/")
        return float(numerator) / float(denominator)
    return float(text)


def _rows(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(FOLDER.joinpath(name).read_text(encoding="utf-8").splitlines()))


CANONICAL = {r["unit_group"]: r["canonical_unit"] for r in _rows("concepts.csv")
             if r["unit_group"]}
UNITS = _rows("units.csv")


@pytest.fixture(scope="module")
def ureg():
    return ucumvert.PintUcumRegistry()


def test_every_unit_group_has_its_canonical_unit_with_factor_one() -> None:
    for group, canonical in CANONICAL.items():
        rows = [r for r in UNITS if r["unit_group"] == group and r["unit"] == canonical]
        assert rows, f"{group}: canonical unit {canonical} missing from units.csv"
        assert _number(rows[0]["factor"]) == 1 and _number(rows[0]["offset"]) == 0


@pytest.mark.parametrize("row", UNITS, ids=lambda r: f"{r['unit_group']}:{r['unit']}")
def test_conversion_agrees_with_ucum(row: dict[str, str], ureg) -> None:
    canonical = CANONICAL[row["unit_group"]]
    if canonical == "1":  # grades are dimensionless counts; nothing to convert
        assert _number(row["factor"]) == 1
        return
    source = ureg.from_ucum(row["ucum"])
    target = ureg.from_ucum(canonical)
    factor, offset = _number(row["factor"]), _number(row["offset"])
    for value in (0.0, 1.0, 37.5):
        # Offset units (Cel, [degF]) cannot be multiplied, so keep plain magnitudes plain.
        quantity = ureg.Quantity(value * source.magnitude, source.units)
        if row["molar_mass"] and not quantity.is_compatible_with(target):
            molar = ureg.Quantity(float(row["molar_mass"]), "g/mol")
            quantity = quantity / molar if quantity.check("[mass]/[volume]") else quantity * molar
        expected = quantity.to(target.units).magnitude / target.magnitude
        if not isinstance(expected, float):
            expected = float(expected)
        got = value * factor + offset
        assert got == pytest.approx(expected, rel=5e-3, abs=1e-6), (
            f"{row['unit']} -> {canonical}: table gives {got}, UCUM gives {expected}")
