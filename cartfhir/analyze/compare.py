"""CART1 versus CART2, endpoint by endpoint: the rows of ``analysis.comparison``.

Endpoints are data (the registry, ``endpoints.yaml``): a key, a kind and a DuckDB
expression over ``cohort.episode_endpoints``. For each site (and ``all`` pooled) the
two rounds are compared as the paper did (unpaired: Fisher exact, Mann-Whitney U) and
as the design deserves (paired over patients with both rounds: exact McNemar,
Wilcoxon signed-rank). Pure functions over a DataFrame, and ``build_comparison``, the
builder that writes ``analysis.comparison``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import duckdb
import pandas as pd

from cartfhir.analyze import registry as endpoint_registry
from cartfhir.analyze import stats
from cartfhir.analyze.registry import Endpoint
from cartfhir.config import POOLED_SITE
from cartfhir.db import write_frame

TABLE = "analysis.comparison"  # its columns and their types: analyze/tables/comparison.yml
POOLED = POOLED_SITE


@cache
def _sidecar_columns() -> tuple[tuple[str, str], ...]:
    from cartfhir.catalog.sidecars import table_columns

    return tuple(table_columns(TABLE))


def columns() -> list[str]:
    """analysis.comparison's columns, in order (from its sidecar)."""
    return [name for name, _ in _sidecar_columns()]


def count_columns() -> list[str]:
    """Its whole-number columns (BIGINT in the sidecar): counts, null where they do not apply."""
    return [name for name, kind in _sidecar_columns() if kind == "BIGINT"]


def endpoint_sql(endpoints: Sequence[Endpoint], rounds: tuple[int, int]) -> str:
    """One row per episode of the two rounds, one column per endpoint."""
    values = ",\n       ".join(f"({e.value}) AS \"{e.key}\"" for e in endpoints)
    return (f"SELECT site, patient_key, round,\n       {values}\n"
            f"FROM cohort.episode_endpoints WHERE round IN ({int(rounds[0])}, {int(rounds[1])})")


def episode_values(con: duckdb.DuckDBPyConnection,
                   registry: endpoint_registry.Registry) -> pd.DataFrame:
    """Every endpoint's value for every episode of the two rounds compared."""
    return con.execute(endpoint_sql(registry.endpoints, registry.rounds)).df()


def _describe(values: pd.Series, kind: str) -> dict[str, Any]:
    if kind == "proportion":
        events, n = stats.count_events(values)
        return {"n": n, "events": events, "median": None, "q1": None, "q3": None,
                "min": None, "max": None}
    summary = stats.summarize(values)
    return {"n": summary.n, "events": None, "median": summary.median, "q1": summary.q1,
            "q3": summary.q3, "min": summary.min, "max": summary.max}


def compare_endpoint(frame: pd.DataFrame, endpoint: Endpoint, site: str,
                     rounds: tuple[int, int]) -> dict[str, Any]:
    """One analysis.comparison row for ``frame`` (episodes of one site, or all)."""
    first = frame[frame["round"] == rounds[0]]
    second = frame[frame["round"] == rounds[1]]
    a, b = _describe(first[endpoint.key], endpoint.kind), _describe(second[endpoint.key],
                                                                     endpoint.kind)
    both = first[["site", "patient_key", endpoint.key]].merge(
        second[["site", "patient_key", endpoint.key]], on=["site", "patient_key"],
        suffixes=("_1", "_2"))
    pairs = [(x, y) for x, y in zip(both[f"{endpoint.key}_1"], both[f"{endpoint.key}_2"],
                                    strict=True)
             if x is not None and y is not None and not pd.isna(x) and not pd.isna(y)]
    if endpoint.kind == "proportion":
        test = stats.proportion_test(a["events"], a["n"], b["events"], b["n"])
        paired = stats.paired_proportion_test([(bool(x), bool(y)) for x, y in pairs])
    else:
        unpaired = stats.ordinal_test if endpoint.kind == "ordinal" else stats.continuous_test
        test = unpaired(first[endpoint.key], second[endpoint.key])  # missing values dropped
        paired = stats.paired_continuous_test([(float(x), float(y)) for x, y in pairs])
    row: dict[str, Any] = {"site": site, "endpoint": endpoint.key, "kind": endpoint.kind}
    for prefix, d in (("cart1", a), ("cart2", b)):
        for field in ("n", "events", "median", "q1", "q3", "min", "max"):
            row[f"{prefix}_{field}"] = d[field]
    if endpoint.paired:
        row.update(paired_test=paired.name, paired_p_value=paired.p_value)
    else:  # the registry says a paired test means nothing here (e.g. age)
        row.update(paired_test=None, paired_p_value=None)
    row.update(test=test.name, p_value=test.p_value, n_pairs=len(pairs))
    return row


def comparison(frame: pd.DataFrame, endpoints: Sequence[Endpoint],
               rounds: tuple[int, int] = (1, 2)) -> pd.DataFrame:
    """Every endpoint by site and pooled (site 'all'), with exactly its sidecar's columns."""
    rows = []
    groups = [(POOLED, frame)] + [(site, part) for site, part in frame.groupby("site", sort=True)]
    for site, part in groups:
        for endpoint in endpoints:
            rows.append(compare_endpoint(part, endpoint, str(site), rounds))
    table = pd.DataFrame(rows, columns=columns())
    for column in count_columns():  # whole numbers, null where they do not apply
        table[column] = table[column].astype("Int64")
    return table


def suppress_small_cells(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """Counts below k (but above 0) shown as '<k', for anything that leaves the site."""
    out = table.copy()
    for column in count_columns():
        out[column] = pd.Series([stats.small_cell(int(v), k) if not pd.isna(v) else None
                                 for v in out[column]], dtype=object, index=out.index)
    return out


def build_comparison(con: duckdb.DuckDBPyConnection, context: Any = None) -> int:
    """Builder of analysis.comparison (the registry's endpoints, CART1 vs CART2)."""
    registry = endpoint_registry.effective(con)
    table = comparison(episode_values(con, registry), registry.endpoints, registry.rounds)
    con.execute("CREATE SCHEMA IF NOT EXISTS analysis")
    return write_frame(con, "analysis.comparison", table)


def read_comparison(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """analysis.comparison in its grain's order as ``comparison`` writes it: the pooled
    rows first, then by site, each in the registry's endpoint order (analysis.endpoint's
    position); whole counts, null where none."""
    table = con.execute(
        "SELECT c.* FROM analysis.comparison c "
        "LEFT JOIN analysis.endpoint e ON e.key = c.endpoint "
        "ORDER BY c.site <> ?, c.site, e.position, c.endpoint", [POOLED]).df()
    for column in count_columns():
        table[column] = table[column].astype("Int64")
    return table
