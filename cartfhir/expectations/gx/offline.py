"""Make GX's Data Docs pages usable on a network without internet.

GX's pages load Bootstrap, jQuery, Font Awesome and a logo from the web, end with a fixed
newsletter footer, and run inline scripts that need jQuery. Offline that means unstyled
pages, an empty Status column (the pass/fail marks are icon-font glyphs), a footer over the
content and ``$ is not defined`` on every page. After GX renders, every page here loses
what it would fetch and its scripts; the status icons become a mark with a word, and the
"Failed Only" filter gets a small script of our own (failed_only.js) instead of jQuery's.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

# Anything fetched from the web: scripts, stylesheets, images; url() and @import in CSS.
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.I | re.S)
_REMOTE_LINK = re.compile(r"""<link\b[^>]*\bhref\s*=\s*["']?\s*(?:https?:)?//[^>]*>""", re.I)
_REMOTE_IMG = re.compile(r"""<img\b[^>]*\bsrc\s*=\s*["']?\s*(?:https?:)?//[^>]*>""", re.I)
_REMOTE_CSS_URL = re.compile(r"""url\(\s*(?:&#39;|&quot;|["'])?\s*(?:https?:)?//[^)]*\)""", re.I)
_REMOTE_IMPORT = re.compile(r"""@import\s+(?:url\()?\s*["']?\s*(?:https?:)?//[^;]*;""", re.I)
# The newsletter footer and the call-to-action footer: fixed over the content, link outside.
_FOOTER = re.compile(r"<footer\b.*?</footer\s*>", re.I | re.S)
# Controls whose script (bootstrap-table on the index) is gone for good.
_DEAD_BUTTON = re.compile(r"<button\b[^>]*\bonclick\s*=\s*\"clearTableFilters[^\"]*\"[^>]*>"
                          r".*?</button\s*>", re.I | re.S)
# Font Awesome status icons (the font is not there offline): a mark and a word instead.
_ICON = re.compile(r"<i\b[^>]*\bclass\s*=\s*\"([^\"]*\bfa[srb]?\b[^\"]*)\"[^>]*>\s*</i\s*>",
                   re.I)
_MARKS = {"fa-check-circle": ("text-success", "✔ passed"),
          "fa-times": ("text-danger", "✘ failed")}
# GX's filter buttons call these; failed_only.js defines them.
_FILTER_CALL = re.compile(r"onclick\s*=\s*\"(?:showAllValidations|hideSucceededValidations)\(")


def _mark(match: re.Match[str]) -> str:
    """The icon's meaning as text; an icon with no status meaning (a tooltip's) goes."""
    classes = match.group(1).split()
    for icon, (colour, words) in _MARKS.items():
        if icon in classes:
            return f'<span class="{colour}">{words}</span>'
    return ""


def _filter_script() -> str:
    return resources.files("cartfhir.expectations.gx").joinpath(
        "failed_only.js").read_text(encoding="utf-8")


def clean_page(text: str) -> str:
    """One GX page without anything remote, scripts that cannot run, footers or icon glyphs."""
    for pattern in (_SCRIPT, _REMOTE_LINK, _REMOTE_IMG, _FOOTER, _DEAD_BUTTON):
        text = pattern.sub("", text)
    text = clean_css(text)  # <style> blocks and style="" attributes
    text = _ICON.sub(_mark, text)
    if _FILTER_CALL.search(text):
        text = re.sub(r"(</body\s*>)", lambda m: f"<script>\n{_filter_script()}</script>\n"
                      + m.group(1), text, count=1, flags=re.I)
    return text


def clean_css(text: str) -> str:
    """CSS (a sheet, a <style> block or a style attribute) without url()/@import to the web."""
    return _REMOTE_CSS_URL.sub("none", _REMOTE_IMPORT.sub("", text))


def offline(site: Path, summary_index: Path) -> None:
    """Clean every page and stylesheet of the GX site under ``site`` (see the module doc).

    GX's own index cannot draw its table without its scripts, so it gets a link to the
    summary page instead.
    """
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        cleaned = clean_page(text)
        if page == site / "index.html":
            link = Path(os.path.relpath(summary_index, page.parent)).as_posix()
            cleaned = re.sub(r"(<body[^>]*>)", rf'\1<p><a href="{link}">Results of the latest '
                             r"validation run (readable offline)</a></p>", cleaned, count=1)
        if cleaned != text:
            page.write_text(cleaned, encoding="utf-8")
    for sheet in site.rglob("*.css"):
        text = sheet.read_text(encoding="utf-8")
        cleaned = clean_css(text)
        if cleaned != text:
            sheet.write_text(cleaned, encoding="utf-8")
