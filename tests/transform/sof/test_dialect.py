"""DuckDB SQL stays byte-identical to the golden texts while the compiler changes inside.

The golden file (``golden_sql.py`` writes it) maps a digest of each compile call to
the SQL text it gave; every suite test view and project view found now is compiled
again and must give the same text.
"""

from __future__ import annotations

import gzip
import json

import pytest

from tests.transform.sof.golden_sql import GOLDEN, compiled_text, known_views, view_key


def _golden() -> dict[str, str]:
    return json.loads(gzip.decompress(GOLDEN.read_bytes()))


def test_duckdb_sql_is_unchanged() -> None:
    golden = _golden()
    checked, changed = 0, []
    for label, view, source, passthrough in known_views():
        key = view_key(view, source, passthrough)
        if key not in golden:  # a test added to a suite since the golden was written
            continue
        checked += 1
        if compiled_text(view, source, passthrough) != golden[key]:
            changed.append(label)
    assert not changed, f"DuckDB SQL changed for {len(changed)} views: {changed[:10]}"
    # Every project view and the vendored suite are covered, not a handful.
    assert checked >= 100


def test_golden_covers_the_project_views() -> None:
    golden = _golden()
    project = [(v, s, p) for label, v, s, p in known_views() if label.startswith("views/")]
    assert project and all(view_key(v, s, p) in golden for v, s, p in project)


@pytest.mark.parametrize("label", ["views/patient.json"])
def test_golden_text_is_sql(label: str) -> None:
    golden = _golden()
    found = [(v, s, p) for name, v, s, p in known_views() if name == label]
    assert found
    assert golden[view_key(*found[0])].startswith("SELECT ")
