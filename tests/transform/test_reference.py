"""load_reference: the terminology files and the config become the rows of ``ref.*``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from cartfhir.config import Config
from cartfhir.errors import ConfigError
from cartfhir.graph import create_macros, load_graph
from cartfhir.transform import reference


def with_record_statuses(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    package_text = reference._package_text
    monkeypatch.setattr(reference, "_package_text", lambda name: (
        (text, f"package:{name}") if name.endswith("record_statuses.csv")
        else package_text(name)))


def test_the_configured_sites_are_ref_site(site_config: Callable[..., Config]) -> None:
    loaded = reference.load_reference(site_config(["site_a", "site_b"],
                                                  site_b={"timezone": "Asia/Shanghai"}))
    assert loaded.tables["site"] == [{"site": "site_a", "timezone": None},
                                     {"site": "site_b", "timezone": "Asia/Shanghai"}]


def test_a_zone_duckdb_does_not_know_is_a_config_error(
        site_config: Callable[..., Config]) -> None:
    """The config checks a zone against the host's tzdata; DuckDB reads its own (ICU), which
    may be older: the build says so before a model fails on it."""
    loaded = reference.load_reference(site_config(["site_a"]))
    loaded.tables["site"] = [{"site": "site_a", "timezone": "Mars/Olympus_Mons"}]
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        create_macros(con, load_graph())
        with pytest.raises(ConfigError, match=r"sites\[site_a\]\.timezone 'Mars/Olympus_Mons'"):
            reference.write_reference(con, loaded, "run-1")


@pytest.mark.parametrize(("last_line", "message"), [
    ("Observation,status,cancelled,voided", r"record_statuses.csv line 3.*'voided'.*usable, void"),
    ("Observation,status,final,void", r"line 3: Observation.status.final is listed twice"),
], ids=["unknown use", "listed twice"])
def test_a_bad_record_status_is_a_config_error_naming_its_line(
        site_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch,
        last_line: str, message: str) -> None:
    with_record_statuses(monkeypatch, "resource_type,element,status,use\n"
                                      f"Observation,status,final,usable\n{last_line}\n")
    with pytest.raises(ConfigError, match=message):
        reference.load_reference(site_config(["site_x"]))


def with_qualitative_results(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    package_text = reference._package_text
    monkeypatch.setattr(reference, "_package_text", lambda name: (
        (text, f"package:{name}") if name.endswith("qualitative_results.csv")
        else package_text(name)))


@pytest.mark.parametrize(("row", "message"), [
    ("il6,negative,1.5,", r"line 3: give value and comparator together"),
    ("il6,negative,,<", r"line 3: give value and comparator together"),
    ("il6,negative,1.5,=", r"line 3: comparator '=' must be one of <, <=, >=, >"),
    ("il6,positive,,", r"line 3: result 'positive' has no words in qualitative_words.csv"),
    ("crs,negative,,", r"line 3: 'crs' is not a measured concept"),
    ("mrd_flow,negative,,", r"line 3: mrd_flow negative is listed twice"),
    ("il6,negative,low,<", r"line 3: column value must be a number"),
], ids=["value alone", "comparator alone", "unknown comparator", "unknown result",
        "not measured", "listed twice", "not a number"])
def test_a_bad_qualitative_result_is_a_config_error_naming_its_line(
        site_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch,
        row: str, message: str) -> None:
    with_qualitative_results(monkeypatch, "concept,result,value,comparator\n"
                                          f"mrd_flow,negative,0.01,<\n{row}\n")
    with pytest.raises(ConfigError, match=message):
        reference.load_reference(site_config(["site_x"]))


def test_a_qualitative_result_is_a_limit_or_none(site_config: Callable[..., Config],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with_qualitative_results(monkeypatch, "concept,result,value,comparator\n"
                                          "mrd_flow,negative,0.01,<\nil6,negative,,\n")
    rows = reference.load_reference(site_config(["site_x"])).tables["qualitative_result"]
    assert rows == [{"concept": "mrd_flow", "result": "negative", "value": 0.01,
                     "comparator": "<"},
                    {"concept": "il6", "result": "negative", "value": None, "comparator": None}]


def _with_unit_map(site_config: Callable[..., Config], root: Path, text: str) -> Config:
    (root / "units.csv").write_text(text, encoding="utf-8")
    return site_config(["site_x", "site_y"], site_x={"unit_maps": ["units.csv"]})


def test_a_site_unit_map_is_hashed_and_resolved_to_factors(
        site_config: Callable[..., Config], tmp_path: Path) -> None:
    config = _with_unit_map(site_config, tmp_path, "concept,unit,ucum,factor,offset\n"
                            "anc,109/L,10*9/L,,\nwbc,Zellen/nl,/uL,,\n"
                            "hemoglobin,g%,,10,\ntemperature,F,,5/9,-160/9\n")
    loaded = reference.load_reference(config)
    got = {(r["site"], r["concept"], r["unit"]): (r["factor"], r["offset"])
           for r in loaded.tables["unit_map"]}
    # a UCUM unit takes the factor units.csv gives it in the concept's unit group
    units = {(r["unit_group"], r["unit"]): (r["factor"], r["offset"])
             for r in loaded.tables["unit"]}
    assert got == {("site_x", "anc", "109/L"): units["count", "10*9/L"],
                   ("site_x", "wbc", "Zellen/nl"): units["count", "/uL"],
                   ("site_x", "hemoglobin", "g%"): (10.0, 0.0),
                   ("site_x", "temperature", "F"): (pytest.approx(5 / 9),
                                                    pytest.approx(-160 / 9))}
    source = [s for s in loaded.sources if s.origin == str(tmp_path / "units.csv")]
    assert [s.name for s in source] == ["site_x unit map"]
    before = reference.reference_hash(loaded)
    (tmp_path / "units.csv").write_text("concept,unit,factor\nanc,109/L,1000\n")
    assert reference.reference_hash(reference.load_reference(config)) != before


@pytest.mark.parametrize(("text", "message"), [
    ("concept,unit,ucum\nil99,109/L,10*9/L\n", r"units.csv line 2: unknown concept 'il99'"),
    ("concept,unit,ucum\ncrs,x,1\n", r"line 2: crs has no units"),
    ("concept,unit,ucum\nanc,,10*9/L\n", r"line 2: no unit text for anc"),
    ("concept,unit,ucum,factor\nanc,109/L,10*9/L,1\n", r"line 2: give either ucum or factor"),
    ("concept,unit\nanc,109/L\n", r"line 2: give either ucum or factor"),
    ("concept,unit,ucum,offset\nanc,109/L,10*9/L,3\n", r"line 2: an offset needs a factor"),
    ("concept,unit,ucum\nanc,109/L,g/L\n",
     r"line 2: 'g/L' is not a UCUM unit the count group converts.*10\*9/L"),
    ("concept,unit,factor\nanc,109/L,one\n", r"column factor must be a number"),
    ("concept,unit,factor\nanc,109/L,-1\n", r"line 2: factor -1 must be above 0"),
    ("concept,text,ucum\nanc,109/L,10*9/L\n", r"missing column\(s\) unit"),
    ("concept,unit,factor\nanc,109/L,nan\n", r"column factor must be a number"),
    ("concept,unit,factor\nanc,109/L,inf\n", r"column factor must be a number"),
    ("concept,unit,factor\nanc,109/L,1e400\n", r"column factor must be a number"),
    ("concept,unit,factor\nanc,109/L,1/1e-320\n", r"column factor must be a number"),
    ("concept,unit,factor\nanc,109/L,1_000\n", r"column factor must be a number"),
    ("concept,unit,factor,offset\ntemperature,F,5/9,nan\n", r"column offset must be a number"),
], ids=["unknown concept", "no unit group", "no unit", "both", "neither", "offset alone",
        "unknown ucum", "not a number", "negative factor", "no unit column", "nan", "inf",
        "overflow", "ratio overflow", "underscore", "nan offset"])
def test_a_bad_unit_map_is_a_config_error_naming_its_line(
        site_config: Callable[..., Config], tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        reference.load_reference(_with_unit_map(site_config, tmp_path, text))


def test_a_unit_map_saved_as_latin_1_is_a_config_error_saying_so(
        site_config: Callable[..., Config], tmp_path: Path) -> None:
    """Excel on Windows saves CSV in the local code page: 'µmol/L' arrives as byte 0xB5."""
    config = _with_unit_map(site_config, tmp_path, "")
    (tmp_path / "units.csv").write_bytes("concept,unit,ucum\ncreatinine,µmol/L,umol/L\n"
                                         .encode("latin-1"))
    with pytest.raises(ConfigError, match=r"units.csv is not UTF-8 text.*save it as UTF-8"):
        reference.load_reference(config)


def test_a_unit_map_with_a_byte_order_mark_reads_as_without(
        site_config: Callable[..., Config], tmp_path: Path) -> None:
    config = _with_unit_map(site_config, tmp_path, "")
    (tmp_path / "units.csv").write_bytes(b"\xef\xbb\xbf" + b"concept,unit,factor\nanc,109/L,1\n")
    rows = reference.load_reference(config).tables["unit_map"]
    assert [(r["concept"], r["unit"], r["factor"]) for r in rows] == [("anc", "109/L", 1.0)]


def test_two_spellings_of_one_unit_with_different_factors_are_refused(
        site_config: Callable[..., Config], tmp_path: Path) -> None:
    config = _with_unit_map(site_config, tmp_path, "concept,unit,ucum,factor\n"
                            "anc,109/L,10*9/L,\nanc, 109 / l ,,1000\n")
    with duckdb.connect() as con:
        create_macros(con)
        with pytest.raises(ConfigError, match=r"units.csv: 109 / l, 109/L are one spelling "
                                              r"of anc at site_x with different conversions"):
            reference.write_reference(con, reference.load_reference(config), "run")
