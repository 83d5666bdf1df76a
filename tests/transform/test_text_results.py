"""Results written as text: a comparator, a number and a unit taken apart, censored results
kept with their comparator, qualitative words read per concept, numbers that read two ways
quarantined.

The macros are checked on their own (a table of what laboratory systems send), then a
Chinese LIS site and a European one go through land, transform and endpoints.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from cartfhir.graph import create_macros, load_graph

from .small_site import LOCAL, Site, endpoint, one

# text -> (number, comparator, unit after the number)
TEXTS = {
    "<0.5": (0.5, "<", None),
    "< 5.2 mg/L": (5.2, "<", "mg/L"),
    "＜2.0": (2.0, "<", None),  # full-width, as Chinese input methods type it
    "＞1000 pg/mL": (1000.0, ">", "pg/mL"),
    "≤0.5": (0.5, "<=", None),
    "≥ 2.0 ng/L": (2.0, ">=", "ng/L"),
    "≦3": (3.0, "<=", None),
    "<=3": (3.0, "<=", None),
    ">=10": (10.0, ">=", None),
    "<0.01%": (0.01, "<", "%"),
    "12 x10^9/L": (12.0, None, "x10^9/L"),
    "  7.25": (7.25, None, None),
    "7.25\tng/mL": (7.25, None, "ng/mL"),
    ".5": (0.5, None, None),
    "1e3": (1000.0, None, None),
    "1.2E-4": (0.00012, None, None),
    "3.5E3/uL": (3500.0, None, "/uL"),
    # a decimal comma where no thousands separator can be meant
    "0,5": (0.5, None, None),
    "<0,5 pg/mL": (0.5, "<", "pg/mL"),
    "12,5": (12.5, None, None),
    "0,500": (0.5, None, None),
    "1250,5": (1250.5, None, None),
    # a comma that may group thousands, or separators mixed: no number
    "1,250": (None, None, None),
    "<1,250 /uL": (None, "<", "/uL"),
    "1,250,000": (None, None, None),
    "1.250,5": (None, None, None),
    # words
    "negative": (None, None, None),
    "<LOD": (None, None, None),
    "": (None, None, None),
}


@pytest.fixture(scope="module")
def macros() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    create_macros(con, load_graph())
    yield con
    con.close()


@pytest.mark.parametrize("text", list(TEXTS), ids=[repr(t) for t in TEXTS])
def test_a_text_result_is_taken_apart(macros: duckdb.DuckDBPyConnection, text: str) -> None:
    got = macros.execute("SELECT value_number(?), value_comparator(?), value_unit(?)",
                         [text] * 3).fetchone()
    number, comparator, unit = TEXTS[text]
    assert got == (pytest.approx(number) if number is not None else None, comparator, unit)


@pytest.mark.parametrize("text", ["1,250", "1.250,5", "<1,250 /uL", "0,5", "1e3"])
def test_the_number_as_written_is_kept_for_the_reason(macros: duckdb.DuckDBPyConnection,
                                                        text: str) -> None:
    token = macros.execute("SELECT value_token(?)", [text]).fetchone()[0]
    assert token == text.lstrip("<").split(" ")[0]


def test_a_chinese_lis_sends_cytokines_below_the_kits_limit(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    il6 = {"system": LOCAL, "code": "CK-IL6", "display": "白细胞介素-6(IL-6)"}
    in_text = site.lab(1, "<0.5 pg/mL", **il6)
    # no unit in the text: the reference range states it
    full_width = site.lab(2, "＜2.0", "pg/mL", reference=(0.0, 7.0), **il6)
    at_most = site.lab(3, "≤1.0 ng/L", **il6)
    site.lab(4, "35.2", "pg/mL", reference=(0.0, 7.0), **il6)
    site.lab(5, 12.0, "pg/mL", system=LOCAL, code="CK-IL6", display="白细胞介素-6(IL-6)")
    undetected = site.lab(2, "未检出", system=LOCAL, code="CK-IL10",
                          display="白细胞介素-10(IL-10)")
    unitless = site.lab(3, "<0.5", system=LOCAL, code="CK-IL10",
                        display="白细胞介素-10(IL-10)")
    mrd = site.lab(12, "未检出", system=LOCAL, code="MRD-FCM",
                   display="骨髓微小残留病(MRD)流式检测")
    site.lab(12, 1.0, "%", code="11150-0", ucum="%")
    site.lab(12, 1.5, "10^9/L")
    site.lab(12, 160, "10^9/L", code="777-3")
    con = site.build()
    censored = con.execute(
        "SELECT observation_id, value, comparator, unit_original FROM harmonized.lab "
        "WHERE comparator IS NOT NULL ORDER BY observation_id").fetchall()
    assert censored == [(in_text, pytest.approx(0.5), "<", "pg/mL"),
                        (full_width, pytest.approx(2.0), "<", "pg/mL"),
                        (at_most, pytest.approx(1.0), "<=", "ng/L"),
                        (mrd, pytest.approx(0.01), "<", "%")]
    assert endpoint(con, "il6_peak") == pytest.approx(35.2)  # censored values are no peak
    assert endpoint(con, "mrd_negative_cr") is True
    quarantined = dict(con.execute(
        "SELECT resource_id, reason_code FROM qa.quarantine").fetchall())
    assert quarantined == {undetected: "no_detection_limit", unitless: "censored_no_unit"}
    reasons = dict(con.execute("SELECT resource_id, reason FROM qa.quarantine").fetchall())
    assert "'未检出'" in reasons[undetected] and "il10" in reasons[undetected]
    assert "'<0.5'" in reasons[unitless] and "pg/mL" in reasons[unitless]


def test_a_european_lis_writes_decimal_commas(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.infusion(0)
    site.lab(2, "<0,5 pg/mL", code="26881-3")
    site.lab(3, "12,5 pg/mL", code="26881-3")
    site.lab(4, "0,4 G/L")
    grouped = site.lab(5, "1,250 /uL")  # 1.25 or 1250 per microlitre: a thousand-fold apart
    site.lab(6, "<0,1 G/L")
    con = site.build()
    assert endpoint(con, "il6_peak") == pytest.approx(12.5)
    assert endpoint(con, "anc_nadir") == pytest.approx(0.1)  # a censored count is a nadir
    assert one(con, "SELECT resource_id, reason_code FROM qa.quarantine") \
        == (grouped, "ambiguous_number")
    assert "'1,250'" in one(con, "SELECT reason FROM qa.quarantine")


def _day_12_marrow_with_mrd(tmp_path: Path, text: str) -> tuple[duckdb.DuckDBPyConnection, str]:
    """A remission marrow on day 12 (blasts 1 %, ANC 1.5, platelets 160) whose flow MRD is
    written as ``text``; the built store and the MRD result's id."""
    site = Site(tmp_path)
    site.infusion(0)
    mrd = site.lab(12, text, system=LOCAL, code="MRD-FCM", display="MRD by flow cytometry")
    site.lab(12, 1.0, "%", code="11150-0", ucum="%")
    site.lab(12, 1.5, "10^9/L")
    site.lab(12, 160, "10^9/L", code="777-3")
    con = site.build()
    return con, mrd


@pytest.mark.parametrize("text", ["Negative (<0.1%)", "阴性(<0.1%)", "neg 0.05%",
                                  "未见明显异常细胞, 0.3%"])
def test_a_word_with_a_number_is_not_read_as_the_word(tmp_path: Path, text: str) -> None:
    """'Negative (<0.1%)' states the lab's own limit: reading the word as the study's
    < 0.01 % would count an MRD-negative remission the lab did not report."""
    con, mrd = _day_12_marrow_with_mrd(tmp_path, text)
    assert one(con, "SELECT count(*) FROM harmonized.lab WHERE observation_id = ?", mrd) == 0
    assert one(con, "SELECT resource_id, reason_code FROM qa.quarantine") \
        == (mrd, "ambiguous_number")
    assert f"'{text}'" in one(con, "SELECT reason FROM qa.quarantine")
    assert endpoint(con, "mrd_negative_cr") is not True


@pytest.mark.parametrize("text", ["Negative", " negative. ", "阴性。", "未检出", "NEG)",
                                  "Negative (qualifier value)"])
def test_a_bare_word_is_read_as_the_word(tmp_path: Path, text: str) -> None:
    con, mrd = _day_12_marrow_with_mrd(tmp_path, text)
    assert one(con, "SELECT value, comparator FROM harmonized.lab WHERE observation_id = ?",
               mrd) == (pytest.approx(0.01), "<")
    assert endpoint(con, "mrd_negative_cr") is True
