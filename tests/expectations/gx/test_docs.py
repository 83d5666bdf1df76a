"""Data Docs: every chunk's result is stored and the rendered site names the suite."""

from __future__ import annotations

from pathlib import Path

from cartfhir.expectations.gx import DocsSite, validate_suite
from tests.expectations.gx.lab import CHUNK_ROWS, QUIET_CONDITION_PARSER, insert, lab_suite

pytestmark = QUIET_CONDITION_PARSER


def test_data_docs_show_the_suite(con, tmp_path: Path) -> None:
    site = DocsSite(tmp_path / "gx")
    insert(con, response="XX")
    outcomes = validate_suite(con, lab_suite(), chunk_rows=CHUNK_ROWS, docs=site)
    index = site.build()

    assert not all(o.success for o in outcomes)
    assert index.name == "index.html" and index.is_file()
    assert "harmonized.lab" in index.read_text(encoding="utf-8")
    results = list((tmp_path / "gx").rglob("chunk-*-of-0004.json"))
    assert len(results) == 4
