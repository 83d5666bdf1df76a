"""Write tests/data/sof_duckdb_sql.json.gz: the DuckDB SQL of every known view, as compiled now.

The golden file keeps the compiler's DuckDB output from drifting while its SQL text
moves behind the dialect interface: ``test_dialect`` compiles the same views and
compares. Run ``.venv/bin/python -m tests.transform.sof.golden_sql`` to regenerate,
and commit the new file with a message saying why the DuckDB SQL changed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cartfhir.transform.sof import ViewDefinitionError, compile_view

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "data" / "sof_duckdb_sql.json.gz"
SUITES = (ROOT / "tests" / "data" / "sof-conformance",
          ROOT.parent / "shared" / "conformance" / "sql-on-fhir-v2" / "tests")
PROJECT_VIEWS = ROOT / "cartfhir" / "transform" / "views"


def view_key(view: Any, source: str, passthrough: tuple[str, ...]) -> str:
    """A digest naming one compile call, so suites may gain tests without a new golden."""
    text = json.dumps([view, source, passthrough], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def known_views() -> Iterator[tuple[str, Any, str, tuple[str, ...]]]:
    """(label, view, source, passthrough) for every suite test and project view found."""
    for suite in SUITES:
        for path in sorted(suite.glob("*.json")) if suite.is_dir() else ():
            for test in json.loads(path.read_text(encoding="utf-8"))["tests"]:
                yield f"{path.name}::{test['title']}", test["view"], "resources", ()
    for path in sorted(PROJECT_VIEWS.glob("*.json")):
        view = json.loads(path.read_text(encoding="utf-8"))
        yield f"views/{path.name}", view, "raw.resources", ("site",)


def compiled_text(view: Any, source: str, passthrough: tuple[str, ...]) -> str:
    """The DuckDB SQL, or the error class and message for a view that does not compile."""
    try:
        return compile_view(view, source, passthrough=passthrough).sql
    except ViewDefinitionError as exc:
        return f"!{type(exc).__name__}: {exc}"


def main() -> None:
    golden = {view_key(v, s, p): compiled_text(v, s, p) for _, v, s, p in known_views()}
    GOLDEN.write_bytes(gzip.compress(json.dumps(golden, sort_keys=True).encode(), mtime=0))
    print(f"wrote {len(golden)} compiled views to {GOLDEN}")


if __name__ == "__main__":
    main()
