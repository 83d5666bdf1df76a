"""Data Docs: every chunk stored; pages name the run and table and load nothing from the web."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cartfhir import api
from cartfhir.expectations.gx import DocsSite, validate_suite
from cartfhir.synth import generate
from tests.expectations.gx.lab import CHUNK_ROWS, QUIET_CONDITION_PARSER, insert, lab_suite
from tests.testbed import make_config

pytestmark = QUIET_CONDITION_PARSER


def test_data_docs_show_the_suite(con, tmp_path: Path) -> None:
    site = DocsSite(tmp_path / "gx")
    insert(con, response="XX")
    outcomes = validate_suite(con, lab_suite(), chunk_rows=CHUNK_ROWS, docs=site)
    index = site.build(outcomes)

    assert not all(o.success for o in outcomes)
    assert index.name == "index.html" and index.is_file()
    assert index == tmp_path / "gx" / "index.html"
    assert "harmonized.lab" in index.read_text(encoding="utf-8")
    results = list((tmp_path / "gx").rglob("chunk-*-of-0004.json"))
    assert len(results) == 4


class _Assets(HTMLParser):
    """Collects what a page loads: script sources and stylesheet/link targets."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.loads.append(values["src"] or "")
        if tag == "link" and values.get("href"):
            self.loads.append(values["href"] or "")
        if tag == "img" and values.get("src"):
            self.loads.append(values["src"] or "")


def _remote_loads(folder: Path) -> dict[str, list[str]]:
    found = {}
    for page in folder.rglob("*.html"):
        parser = _Assets()
        parser.feed(page.read_text(encoding="utf-8"))
        remote = [u for u in parser.loads if re.match(r"(?i)(https?:)?//", u.strip())]
        if remote:
            found[str(page.relative_to(folder))] = remote
    for sheet in folder.rglob("*.css"):
        remote = re.findall(r"(?i)url\(\s*['\"]?(?:https?:)?//[^)]*\)", sheet.read_text())
        if remote:
            found[str(sheet.relative_to(folder))] = remote
    return found


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("docs")
    generate(root / "data", patients=8, seed=3, sites=["site_a"], bad_rate=0.05)
    config = make_config(root, ["site_a"])
    api.extract(config)
    api.transform(config)
    report = api.validate(config)
    return config, report


def test_validate_writes_docs_that_work_offline(validated) -> None:
    config, report = validated
    folder = config.output.folder / "gx"
    assert report.docs_index == folder / "index.html"
    assert len(list(folder.rglob("*.html"))) > 5
    assert _remote_loads(folder) == {}


def test_the_index_lists_every_suite_with_run_and_results(validated) -> None:
    _, report = validated
    page = report.docs_index.read_text(encoding="utf-8")
    suites = {o.suite for o in report.outcomes}
    assert len(suites) > 5
    for suite in suites:
        assert f"Table {html.escape(suite)}</h2>" in page
    assert page.count(f"<td>{report.run_id}</td>") == len(report.outcomes)
    failed = [o for o in report.outcomes if not o.success]
    assert page.count('class="fail">failed<') == len(failed)
    assert f"{len(report.outcomes)} expectations, {len(failed)} failed" in page
    # Every linked GX page exists.
    links = re.findall(r'href="([^"#]+)"', page)
    assert links and all((report.docs_index.parent / link).is_file() for link in links)


def test_gx_pages_name_the_run_and_the_table(validated) -> None:
    config, report = validated
    pages = list((config.output.folder / "gx").rglob(
        f"validations/cohort/episode/{report.run_id}/*/chunk-*.html"))
    assert pages
    text = pages[0].read_text(encoding="utf-8")
    assert "__none__" not in text and "Data asset: None" not in text
    assert report.run_id in text and "Data asset: cohort.episode" in text
