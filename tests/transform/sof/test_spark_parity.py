"""The project's own views give the same rows on Spark as on DuckDB (the Spark transform
runs them), over the synthetic three-site cohort with its bad lines.

The cohort's NDJSON lines that parse are loaded into both engines as they are landed
(``site``, ``resource_type``, resource JSON; the text on Spark); lines that do not
parse never reach ``raw.resources`` (extract quarantines them), so they are dropped
here too. Rows are compared both ways by ``cartfhir.spark.compare.table_diff``; JSON
columns are compared as parsed JSON, since key order and spacing are not values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cartfhir.spark.compare import table_diff
from cartfhir.synth import generate
from cartfhir.transform.sof import compile_view

pytestmark = pytest.mark.spark

VIEWS = Path(__file__).resolve().parents[3] / "cartfhir" / "transform" / "views"
SITES = ["site_a", "site_b", "site_c"]
EMPTY_IN_COHORT = {"medication_administration.json", "observation_component.json"}


def _resources(root: Path) -> list[tuple[str, str, str]]:
    rows = []
    for site in SITES:
        for path in sorted((root / site).glob("*.ndjson")):
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    resource = json.loads(line)
                except ValueError:
                    continue
                if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                    rows.append((site, resource["resourceType"], json.dumps(resource)))
    return rows


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory,
            spark: Any) -> Iterator[tuple[duckdb.DuckDBPyConnection, Any]]:
    root = tmp_path_factory.mktemp("cohort")
    generate(root, patients=15, seed=11, sites=SITES, bad_rate=0.01)
    rows = _resources(root)
    con = duckdb.connect()
    con.create_function("canonical_json", _canonical_text, ["VARCHAR"], "VARCHAR")
    con.execute("CREATE SCHEMA raw")
    con.execute("CREATE TABLE raw.resources (site VARCHAR, resource_type VARCHAR, "
                "resource JSON)")
    con.executemany("INSERT INTO raw.resources VALUES (?, ?, ?)", rows)
    df = spark.createDataFrame(rows, "site STRING, resource_type STRING, resource STRING")
    df.createOrReplaceTempView("sof_parity_resources")
    yield con, spark
    con.close()


@pytest.mark.parametrize("view_file", sorted(p.name for p in VIEWS.glob("*.json")))
def test_view_rows_equal_on_spark(view_file: str, engines: tuple[Any, Any]) -> None:
    con, spark = engines
    view = json.loads((VIEWS / view_file).read_text(encoding="utf-8"))
    duck = compile_view(view, "raw.resources", passthrough=("site",))
    sprk = compile_view(view, "sof_parity_resources", passthrough=("site",), dialect="spark")
    assert [c.name for c in duck.columns] == [c.name for c in sprk.columns]
    # JSON values as canonical text on both sides (DuckDB re-reads Spark's JSON text).
    json_cols = {c.name: c.collection for c in duck.columns
                 if c.duckdb_type.startswith("JSON")}
    duck_sql = _canonical_json(duck.sql, ["site", *(c.name for c in duck.columns)], json_cols,
                               spark_side=False)
    spark_sql = _canonical_json(sprk.sql, ["site", *(c.name for c in sprk.columns)], json_cols,
                                spark_side=True)
    diff = table_diff(con, duck_sql, spark, spark_sql)
    # The generator writes no MedicationAdministration and no Observation.component.
    assert diff.rows_duckdb > 0 or view_file in EMPTY_IN_COHORT, str(diff)
    assert diff.equal, f"{view_file}: {diff}"


def _canonical_text(text: str | None) -> str | None:
    """JSON text as Spark's ``to_json(parse_json(...))`` writes it: keys sorted, compact,
    and numbers by value (a VARIANT keeps 1.0 as 1)."""
    if text is None:
        return None

    def number(t: str) -> float | int:
        value = float(t)
        return int(value) if value.is_integer() and abs(value) < 2**53 else value

    value = json.loads(text, parse_float=number)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical_json(sql: str, names: list[str], json_cols: dict[str, bool], *,
                    spark_side: bool) -> str:
    """Select ``names`` from ``sql``, JSON columns (``name: collection``) as canonical text."""
    cols = []
    for name in names:
        if name not in json_cols:
            cols.append(f"`{name}`" if spark_side else f'"{name}"')
        elif spark_side:  # VARIANT sorts object keys; to_json writes them in that order
            one = "to_json(parse_json({}))"
            expr = (f"transform(`{name}`, _j -> {one.format('_j')})" if json_cols[name]
                    else one.format(f"`{name}`"))
            cols.append(f"{expr} AS `{name}`")
        else:
            expr = (f'list_transform("{name}"::VARCHAR[], lambda _j: canonical_json(_j))'
                    if json_cols[name] else f'canonical_json("{name}"::VARCHAR)')
            cols.append(f'{expr} AS "{name}"')
    return f"SELECT {', '.join(cols)} FROM ({sql}) AS _q"
