"""Builder of ``analysis.count_dynamics``: ``dynamics.sql`` with the registry's concepts and rounds.

The SQL takes the lab concepts of the report's count_dynamics figure and the rounds
compared as parameters, so neither is a literal in SQL or Python.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import duckdb

from cartfhir.analyze import registry as endpoint_registry
from cartfhir.config import POOLED_SITE

FIGURE = "count_dynamics"  # the registry figure whose concepts the table keeps


def build_count_dynamics(con: duckdb.DuckDBPyConnection, context: Any = None) -> int:
    """CREATE OR REPLACE analysis.count_dynamics; return its rows."""
    registry = endpoint_registry.effective(con)
    sql = resources.files("cartfhir.analyze").joinpath("dynamics.sql").read_text("utf-8")
    concepts = [e.concept for e in registry.in_figure(FIGURE)]
    con.execute("CREATE SCHEMA IF NOT EXISTS analysis")
    con.execute(f"CREATE OR REPLACE TABLE analysis.count_dynamics AS {sql}",
                {"concepts": concepts, "rounds": list(registry.rounds), "pooled": POOLED_SITE})
    return con.execute("SELECT count(*) FROM analysis.count_dynamics").fetchone()[0]
