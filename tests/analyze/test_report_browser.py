"""The report of a real small run, opened in headless Chromium (Playwright driving Debian's
/usr/bin/chromium): it asks for nothing over the network, every figure loads, and no
text element lies on top of another.

``make test`` installs chromium when it is missing. Under CI=true this test always runs
(a missing browser is a failure there); elsewhere it is skipped, with the reason, when
/usr/bin/chromium or the playwright package is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")

# Text-bearing elements whose boxes must not intersect (after opening every <details>).
OVERLAP_JS = """() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const els = [...document.querySelectorAll('h1,h2,h3,p,caption,th,td,summary,img')];
  const boxes = els.map(e => [e, e.getBoundingClientRect()])
                   .filter(([e, r]) => r.width > 0 && r.height > 0);
  const name = e => e.tagName + ':' + (e.textContent || e.alt || '').trim().slice(0, 40);
  const out = [];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const [a, ra] = boxes[i], [b, rb] = boxes[j];
      if (a.contains(b) || b.contains(a)) continue;
      const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
      const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
      if (w > 1 && h > 1) out.push([name(a), name(b)]);
    }
  }
  return out;
}"""


def _require_browser() -> None:
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} is missing (make test installs Debian's chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright package is missing (pip install -e '.[test]')")
    if problems and IN_CI:
        pytest.fail("; ".join(problems) + " — CI must run the browser test")
    if problems:
        pytest.skip("; ".join(problems))


@pytest.fixture(scope="module")
def report(two_site_run) -> Path:
    _, result = two_site_run
    return result.analysis.report


def _open(page_html: str, screenshot: Path) -> tuple[list[str], list, list]:
    """Show ``page_html`` in Chromium with every non-data: request refused; return the
    URLs it asked for, its images (alt, complete, naturalWidth) and overlapping texts."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    requested: list[str] = []

    def refuse(route) -> None:
        if route.request.url.startswith("data:"):
            route.continue_()
        else:
            requested.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("**/*", refuse)
            page.set_content(page_html, wait_until="load")
            images = page.evaluate("() => [...document.images].map(i => "
                                   "[i.alt, i.complete, i.naturalWidth])")
            overlapping = page.evaluate(OVERLAP_JS)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return requested, images, overlapping


def test_the_report_reads_cleanly_in_chromium(report: Path, tmp_path: Path) -> None:
    requested, images, overlapping = _open(report.read_text("utf-8"), tmp_path / "report.png")
    assert requested == []
    assert len(images) == 4 and all(done and width > 0 for _, done, width in images), images
    assert overlapping == []
    assert (tmp_path / "report.png").stat().st_size > 0


def test_the_checks_see_a_request_a_broken_figure_and_overlapping_text(tmp_path: Path) -> None:
    bad = ('<html><body><img alt="remote" src="http://192.0.2.1/x.png">'
           '<p style="position:absolute;top:10px;left:10px">first words</p>'
           '<p style="position:absolute;top:14px;left:14px">second words</p></body></html>')
    requested, images, overlapping = _open(bad, tmp_path / "bad.png")
    assert requested == ["http://192.0.2.1/x.png"]
    assert images == [["remote", True, 0]]
    assert ["P:first words", "P:second words"] in overlapping


def test_the_report_says_what_a_clinician_needs(report: Path) -> None:
    text = report.read_text("utf-8")
    for words in ("CART1 (n=18)", "CART2 (n=18)", "CART1 (n=9)", "Mann–Whitney U test",
                  "Fisher exact test", "Methods", "Data quality by site", "Runs and validation",
                  "Site paper_copy", "HSCT 6", "Censored (no event): 0"):
        assert words in text, words
    assert "mann_whitney" not in text and "censored 0" not in text
    assert "CRS grade ≥ 3" in text and "CRS grade &gt;= 3" not in text
    assert not any(" hsct " in line for line in text.splitlines())
