"""The unit table (terminology/units.csv) checked against a UCUM-aware library.

Every row names the UCUM unit it means (``ucum``); ucumvert (UCUM parsed into pint)
converts one of it to the concept group's canonical unit, and the table's
factor/offset must agree. Mass <-> substance rows carry the analyte's molar mass.
The same check covers the spellings real systems send (unit_spellings.csv, per concept):
each, reduced by ``unit_key``, must find the conversion UCUM gives for what it means.
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import duckdb
import pytest

from cartfhir.graph import create_macros
from cartfhir.synth.writer import UNKNOWN_UNITS
from cartfhir.transform.reference import load_reference, write_reference
from tests.testbed import make_config

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
GROUP = {r["concept"]: r["unit_group"] for r in _rows("concepts.csv") if r["unit_group"]}
UNITS = _rows("units.csv")
# Real-world spellings per concept: what LIS send, the UCUM unit each means, a typical value.
SPELLINGS = list(csv.DictReader(
    (Path(__file__).parent / "unit_spellings.csv").read_text(encoding="utf-8").splitlines()))


@pytest.fixture(scope="module")
def ureg():
    return ucumvert.PintUcumRegistry()


@pytest.fixture(scope="module")
def ref_unit(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    """ref.unit as a transform writes it (keys from the unit_key macro), in memory."""
    config = make_config(tmp_path_factory.mktemp("units"), ["site_x"])
    con = duckdb.connect()
    create_macros(con)
    write_reference(con, load_reference(config), "test")
    return con


def _ucum_conversion(ureg, ucum: str, canonical: str, value: float,  # noqa: ANN001
                     molar_mass: str = "") -> float:
    """value in ``ucum`` expressed in ``canonical``, as UCUM defines both."""
    source = ureg.from_ucum(ucum)
    target = ureg.from_ucum(canonical)
    # Offset units (Cel, [degF]) cannot be multiplied, so keep plain magnitudes plain.
    quantity = ureg.Quantity(value * source.magnitude, source.units)
    if molar_mass and not quantity.is_compatible_with(target):
        molar = ureg.Quantity(float(molar_mass), "g/mol")
        quantity = quantity / molar if quantity.check("[mass]/[volume]") else quantity * molar
    return float(quantity.to(target.units).magnitude / target.magnitude)


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
    factor, offset = _number(row["factor"]), _number(row["offset"])
    for value in (0.0, 1.0, 37.5):
        expected = _ucum_conversion(ureg, row["ucum"], canonical, value, row["molar_mass"])
        got = value * factor + offset
        assert got == pytest.approx(expected, rel=5e-3, abs=1e-6), (
            f"{row['unit']} -> {canonical}: table gives {got}, UCUM gives {expected}")


@pytest.mark.parametrize("row", SPELLINGS, ids=lambda r: f"{r['concept']}:{r['spelling']}")
def test_a_real_world_spelling_converts_as_ucum_says(row: dict[str, str], ureg,  # noqa: ANN001
                                                     ref_unit: duckdb.DuckDBPyConnection) -> None:
    group = GROUP[row["concept"]]
    found = ref_unit.execute("SELECT factor, \"offset\" FROM ref.unit "
                             "WHERE unit_group = ? AND unit_key = unit_key(?)",
                             [group, row["spelling"]]).fetchall()
    assert found, f"{row['spelling']!r} ({row['concept']}) has no conversion in units.csv"
    (factor, offset), = found
    molar_mass = next((u["molar_mass"] for u in UNITS
                       if u["unit_group"] == group and u["molar_mass"]), "")
    for value in (1.0, float(row["value"])):
        expected = _ucum_conversion(ureg, row["ucum"], CANONICAL[group], value, molar_mass)
        assert value * factor + offset == pytest.approx(expected, rel=5e-3, abs=1e-6), (
            f"{row['spelling']!r} read as {row['ucum']}: factor {factor}, offset {offset}")


@pytest.mark.parametrize("unit", UNKNOWN_UNITS)
def test_the_synthetic_unknown_units_stay_unconvertible(
        unit: str, ref_unit: duckdb.DuckDBPyConnection) -> None:
    """The generator injects these as units no table converts; a looser key must not
    start converting them (the truth test counts them as quarantined)."""
    assert ref_unit.execute("SELECT list(unit_group) FROM ref.unit WHERE unit_key = unit_key(?)",
                            [unit]).fetchone()[0] is None
