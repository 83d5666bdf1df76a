"""A self-contained ``index.html`` of one validation run, readable without internet.

GX's own Data Docs pages pull Bootstrap, jQuery and fonts from CDNs, and their index
table is drawn by JavaScript, so on a hospital network without internet the index is
empty. This page is plain HTML with its style inline: per suite (named by its table)
every expectation's severity, verdict and observed value, with links to GX's pages for
the chunk details. No external URL is referenced.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from cartfhir.expectations.gx.tally import Outcome

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.6rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.5rem; text-align: left;
         vertical-align: top; overflow-wrap: anywhere; }
th { background: #f2f2f2; }
.fail { color: #a40000; font-weight: bold; } .pass { color: #1b6e1b; }
.meta { color: #555; }
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _verdict(outcome: Outcome) -> str:
    if outcome.success:
        return '<span class="pass">passed</span>'
    return '<span class="fail">failed</span>'


def render(run_id: str, outcomes: Sequence[Outcome],
           pages: dict[str, list[str]]) -> str:
    """The page's HTML: ``pages`` maps a suite to GX result pages (relative links)."""
    suites: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        suites.setdefault(outcome.suite, []).append(outcome)
    failed = sum(1 for o in outcomes if not o.success)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Validation run {_e(run_id)}</title>", f"<style>{_STYLE}</style>",
        "</head><body>",
        f"<h1>Validation run {_e(run_id)}</h1>",
        f'<p class="meta">{len(suites)} suites, {len(outcomes)} expectations, '
        f"{failed} failed.</p>",
        "<table><thead><tr><th>table</th><th>expectations</th><th>failed</th></tr></thead>"
        "<tbody>",
    ]
    for number, (suite, rows) in enumerate(suites.items(), start=1):
        bad = sum(1 for o in rows if not o.success)
        cls = ' class="fail"' if bad else ""
        parts.append(f'<tr><td><a href="#suite-{number}">{_e(suite)}</a></td>'
                     f"<td>{len(rows)}</td><td{cls}>{bad}</td></tr>")
    parts.append("</tbody></table>")
    for number, (suite, rows) in enumerate(suites.items(), start=1):
        parts.append(f'<h2 id="suite-{number}">Table {_e(suite)}</h2>')
        parts.append(f'<p class="meta">run {_e(run_id)}')
        links = pages.get(suite, [])
        if links:
            parts.append(" &middot; GX pages per chunk: " + ", ".join(
                f'<a href="{_e(link)}">{_e(Path(link).stem)}</a>' for link in links))
        parts.append("</p>")
        parts.append("<table><thead><tr><th>run id</th><th>table</th><th>expectation</th>"
                     "<th>column</th><th>severity</th><th>success</th><th>observed</th>"
                     "<th>unexpected / rows</th></tr></thead><tbody>")
        for o in rows:
            observed = o.error or o.observed_value
            counts = ("" if o.unexpected_count is None
                      else f"{o.unexpected_count} / {_e(o.element_count)}")
            parts.append(
                f"<tr><td>{_e(run_id)}</td><td>{_e(o.suite)}</td><td>{_e(o.expectation)}</td>"
                f"<td>{_e(o.column)}</td><td>{_e(o.severity)}</td><td>{_verdict(o)}</td>"
                f"<td>{_e(observed)}</td><td>{counts}</td></tr>")
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
