"""README.md and docs/*.md point only at files inside the clone, and those files exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _targets(text: str) -> list[str]:
    """Relative targets of markdown links (no URLs, no in-page anchors)."""
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


UP = re.compile(r"(?:\.\.[/\\])+[^\s)`'\"]*")


def _outside(page: Path, text: str) -> list[str]:
    """Every '../' path in the text (link or not) that, from the page's folder, leaves the
    clone or names nothing in it: '../shared/x.md' does; '../README.md' in docs/ does not."""
    out = []
    for path in UP.findall(text):
        target = (page.parent / path).resolve()
        if not target.is_relative_to(REPO) or not target.exists():
            out.append(path)
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_path_leaves_the_clone(page: Path) -> None:
    outside = _outside(page, page.read_text(encoding="utf-8"))
    assert not outside, f"{page.name} points outside the repository: {outside}"


def test_a_path_up_is_outside_only_when_it_leaves_the_clone() -> None:
    text = "see ../shared/domain.md and `../../x` or [r](../README.md)"
    assert _outside(REPO / "README.md", text) == ["../shared/domain.md", "../../x",
                                                  "../README.md"]
    assert _outside(REPO / "docs" / "x.md", text) == ["../shared/domain.md", "../../x"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_target_exists(page: Path) -> None:
    missing = []
    for target in _targets(page.read_text(encoding="utf-8")):
        path = (page.parent / target).resolve()
        if not path.is_relative_to(REPO) or not path.exists():
            missing.append(target)
    assert not missing, f"{page.name} links to missing or outside files: {missing}"


def test_the_link_finder_sees_relative_links_only() -> None:
    text = ("[a](docs/x.md) [b](https://example.org/y) [c](#top) [d](../shared/z.md#s) "
            '[e](docs/e.md "title")')
    assert _targets(text) == ["docs/x.md", "../shared/z.md", "docs/e.md"]
