"""docs/clinical-definitions.md: its numbers are generated from the files the code reads."""

from __future__ import annotations

import pytest

from cartfhir.catalog.definitions import BLOCKS, DOC, render_block, update


def test_the_committed_page_is_generated_from_the_study_files() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text == update(text), (
        "docs/clinical-definitions.md is stale: run "
        "'.venv/bin/python -m cartfhir.catalog.definitions'")


def test_blocks_read_the_values_where_they_live() -> None:
    assert "| late_infection | 31 to 90 |" in render_block("windows")
    assert "| severe_min_grade | 3 | 'severe' cytopenia" in render_block("thresholds")
    assert "| platelets | absolute | below | 50 | 3 |" in render_block("grade_cuts")
    # labels are filled with the default windows and thresholds, never left as templates
    endpoints = render_block("endpoints")
    assert "| crs_any | proportion | CRS, any grade (days 0-30) |" in endpoints
    assert "{" not in endpoints
    assert "LOINC: 751-8" in render_block("concepts")


def test_a_page_missing_a_block_or_naming_an_unknown_one_is_refused() -> None:
    page = "".join(f"<!-- generated: {name} -->\nSTALE\n<!-- end: {name} -->\n" for name in BLOCKS)
    assert "STALE" not in update(page)
    with pytest.raises(KeyError, match="lacks generated blocks: windows"):
        update(page.replace("generated: windows", "x").replace("end: windows", "y"))
    with pytest.raises(KeyError, match="unknown generated block 'nope'"):
        update(page + "<!-- generated: nope -->\n<!-- end: nope -->\n")


def test_grading_and_response_come_from_the_registry_with_default_thresholds() -> None:
    grading = render_block("grading")
    assert "ASTCT 2019" in grading and "CAPD" in grading and "as recorded" in grading
    response = render_block("response")
    assert "< 0.01%" in response and "< 5%" in response and "{" not in response
    assert "no circulating blasts" in response  # said as not evaluated
