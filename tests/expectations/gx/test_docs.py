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


# --- GX's own pages, offline: nothing remote anywhere, visible status marks, no script errors.

_CSS_REMOTE = re.compile(r"""(?i)(?:url\(\s*['"]?|@import\s+['"])\s*(?:https?:)?//""")
# Plain links a reader may follow when online: GX's documentation and its credit line.
_DOCS_HOSTS = ("https://docs.greatexpectations.io/",)
_CREDIT = "https://greatexpectations.io"


class _Everything(HTMLParser):
    """Every URL a page would fetch, every <a href> leaving the site, and the status cells."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.fetched: list[str] = []  # src/href of anything but <a>, and url()/@import in CSS
        self.links: list[str] = []  # <a href>
        self.status_cells: list[str] = []
        self._style_depth = 0
        self._headers: list[list[str]] = []  # per open table: its header texts
        self._cell: list[str] | None = None
        self._column = 0
        self._in_th = False
        self.icons = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        for name in ("src", "href", "srcset", "data", "poster", "background"):
            if values.get(name):
                (self.links if tag == "a" and name == "href" else self.fetched).append(
                    values[name])
        if _CSS_REMOTE.search(values.get("style", "")):
            self.fetched.append(values["style"])
        if tag == "i" and re.search(r"\bfa[srb]?\b", values.get("class", "")):
            self.icons += 1
        if tag == "style":
            self._style_depth += 1
        if tag == "table":
            self._headers.append([])
        if tag == "th":
            self._in_th = True
            if self._headers:
                self._headers[-1].append("")
        if tag == "tr":
            self._column = 0
        if tag == "td":
            self._column += 1
            if (self._headers and self._headers[-1][:1] == ["Status"] and self._column == 1
                    and self._cell is None):
                self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._style_depth -= 1
        if tag == "th":
            self._in_th = False
            if self._headers and self._headers[-1]:
                self._headers[-1][-1] = self._headers[-1][-1].strip()
        if tag == "table" and self._headers:
            self._headers.pop()
        if tag == "td" and self._cell is not None:
            self.status_cells.append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._style_depth and _CSS_REMOTE.search(data):
            self.fetched.append(data.strip()[:80])
        if self._in_th and self._headers and self._headers[-1]:
            self._headers[-1][-1] += data
        if self._cell is not None:
            self._cell.append(data)


def _parse(page: Path) -> _Everything:
    parser = _Everything()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_no_gx_page_or_stylesheet_names_anything_remote(validated) -> None:
    config, _ = validated
    folder = config.output.folder / "gx"
    problems = {}
    for page in folder.rglob("*.html"):
        parsed = _parse(page)
        remote = [u for u in parsed.fetched if re.match(r"(?i)\s*(https?:)?//", u)
                  or _CSS_REMOTE.search(u)]
        remote += [u for u in parsed.links if re.match(r"(?i)\s*(https?:)?//", u)
                   and not u.startswith(_DOCS_HOSTS) and u != _CREDIT]
        if remote:
            problems[str(page.relative_to(folder))] = remote
    for sheet in folder.rglob("*.css"):
        if _CSS_REMOTE.search(sheet.read_text(encoding="utf-8")):
            problems[str(sheet.relative_to(folder))] = ["url()/@import to the web"]
    assert problems == {}


def test_every_status_cell_shows_a_mark_and_a_word(validated) -> None:
    config, report = validated
    pages = list((config.output.folder / "gx").rglob(f"validations/**/{report.run_id}/*/*.html"))
    assert pages
    cells = []
    for page in pages:
        parsed = _parse(page)
        assert parsed.icons == 0, page  # Font Awesome is not there offline
        cells += parsed.status_cells
    assert len(cells) >= len(report.outcomes)
    assert set(cells) <= {"✔ passed", "✘ failed"}, set(cells)
    assert "✘ failed" in cells and "✔ passed" in cells


def test_gx_pages_have_no_footer_and_no_script_of_bootstrap_or_jquery(validated) -> None:
    config, _ = validated
    for page in (config.output.folder / "gx").rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "<footer" not in text, page
        assert not re.search(r"\$\(|jQuery[.(]|bootstrapTable|clearTableFilters", text), page


def test_a_validation_page_works_in_chromium_without_network(validated, tmp_path: Path) -> None:
    """No page error, the collapsed details visible, and 'Failed Only' hides passed rows."""
    from tests.analyze.test_report_browser import ARGS, CHROMIUM, _require_browser

    _require_browser()
    from playwright.sync_api import sync_playwright

    config, report = validated
    failed = next(o for o in report.outcomes if not o.success)
    pages = sorted((config.output.folder / "gx").rglob(
        f"validations/{failed.suite.replace('.', '/')}/{report.run_id}/*/*.html"))
    page_path = next(p for p in pages if "✘ failed" in p.read_text(encoding="utf-8"))
    errors: list[str] = []
    requested: list[str] = []

    def refuse(route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            requested.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.route("**/*", refuse)
            page.goto(page_path.as_uri(), wait_until="load")
            # The first word of every visible row whose first cell is a status mark.
            shown = ("() => [...document.querySelectorAll('tr')].filter(r => r.cells[0] && "
                     "r.offsetParent !== null).map(r => r.cells[0].textContent.trim()"
                     ".split(/\\s+/)[0]).filter(w => w === '✔' || w === '✘')")
            before = page.evaluate(shown)
            details = page.evaluate("() => [...document.querySelectorAll('.collapse')]"
                                    ".every(e => e.offsetParent !== null)")
            page.get_by_text("Failed Only").click()
            after = page.evaluate(shown)
            page.get_by_text("Show All").click()
            again = page.evaluate(shown)
        finally:
            browser.close()
    assert errors == [] and requested == []
    assert details
    assert "✔" in before and "✘" in before
    assert after and set(after) == {"✘"}
    assert again == before
