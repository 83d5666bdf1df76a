"""The official SQL-on-FHIR v2 conformance suite, run against ``cartfhir.transform.sof``.

One case per suite test and dialect (id ``duckdb-file::title`` / ``spark-file::title``);
both dialects must pass the same list, all of it. Rows are compared without regard
to order, as the upstream runner does, after JSON-normalising values (5 == 5.0).
When the module finishes, the results go to ``build/sof_test_report.json`` (DuckDB)
and ``build/sof_test_report_spark.json`` in the suite's ``test_report.json`` format.
Spark reads one temp view per suite file, made once, so each test is one query.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cartfhir.transform.sof import (
    ViewDefinitionError,
    compile_view,
    run_view,
    run_view_spark,
)

ROOT = Path(__file__).resolve().parents[3]
# The copy vendored with the tests (tests/data/sof-conformance, with its LICENSE) is the
# maintained one, updated from upstream; CARTFHIR_SOF_SUITE points the run elsewhere.
SUITE = Path(os.environ.get("CARTFHIR_SOF_SUITE", ROOT / "tests" / "data" / "sof-conformance"))
REPORTS = {"duckdb": ROOT / "build" / "sof_test_report.json",
           "spark": ROOT / "build" / "sof_test_report_spark.json"}

_RESULTS: dict[str, dict[str, list[dict[str, Any]]]] = {"duckdb": {}, "spark": {}}
_DATABASES: dict[str, duckdb.DuckDBPyConnection] = {}
_SPARK_VIEWS: set[str] = set()


def _load_suite() -> list[Any]:
    if not SUITE.is_dir():  # a missing suite must fail, never pass by skipping
        raise FileNotFoundError(f"conformance suite not found at {SUITE}; set "
                                "CARTFHIR_SOF_SUITE")
    params = []
    for dialect in ("duckdb", "spark"):
        for path in sorted(SUITE.glob("*.json")):
            group = json.loads(path.read_text(encoding="utf-8"))
            for test in group["tests"]:
                # Every test of the suite must pass on both dialects: none is expected to fail.
                marks = [pytest.mark.spark] if dialect == "spark" else []
                params.append(pytest.param(dialect, path.name, test, marks=marks,
                                           id=f"{dialect}-{path.name}::{test['title']}"))
    return params


def _normalise(value: Any) -> Any:
    """JSON-compare values: numbers as floats, containers recursively, bools kept."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


def _canonical(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(_normalise(r), sort_keys=True) for r in rows)


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    """Write what ran to build/sof_test_report*.json once the module is done."""
    yield
    for con in _DATABASES.values():
        con.close()
    _DATABASES.clear()
    for dialect, results in _RESULTS.items():
        if results:
            REPORTS[dialect].parent.mkdir(parents=True, exist_ok=True)
            report = {name: {"tests": tests} for name, tests in sorted(results.items())}
            REPORTS[dialect].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _database(resources: list[dict[str, Any]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE resources (resource_type VARCHAR, id VARCHAR, resource JSON)")
    con.executemany(
        "INSERT INTO resources VALUES (?, ?, ?)",
        [(r["resourceType"], r.get("id"), json.dumps(r)) for r in resources],
    )
    return con


def _spark_source(spark: Any, file_name: str) -> str:
    """The temp view holding one suite file's resources (resource_type, resource text)."""
    name = "sof_" + "".join(ch if ch.isalnum() else "_" for ch in file_name.removesuffix(".json"))
    if name not in _SPARK_VIEWS:
        group = json.loads((SUITE / file_name).read_text(encoding="utf-8"))
        rows = [(r["resourceType"], json.dumps(r)) for r in group["resources"]]
        df = spark.createDataFrame(rows, "resource_type STRING, resource STRING")
        df.createOrReplaceTempView(name)
        _SPARK_VIEWS.add(name)
    return name


def _check(dialect: str, file_name: str, test: dict[str, Any], request: Any) -> None:
    if dialect == "spark":
        spark = request.getfixturevalue("spark")
        source = _spark_source(spark, file_name)

        def run(view: Any) -> list[dict[str, Any]]:
            return run_view_spark(spark, view, source)
    else:
        if file_name not in _DATABASES:
            group = json.loads((SUITE / file_name).read_text(encoding="utf-8"))
            _DATABASES[file_name] = _database(group["resources"])
        con = _DATABASES[file_name]
        source = "resources"

        def run(view: Any) -> list[dict[str, Any]]:
            return run_view(con, view, source)
    if test.get("expectError"):
        with pytest.raises(ViewDefinitionError):
            run(test["view"])
        return
    rows = run(test["view"])
    if "expectColumns" in test:
        names = [c.name for c in compile_view(test["view"], "resources").columns]
        assert names == test["expectColumns"]
        assert all(list(r) == names for r in rows)
    assert _canonical(rows) == _canonical(test["expect"])


@pytest.mark.parametrize(("dialect", "file_name", "test"), _load_suite())
def test_conformance(dialect: str, file_name: str, test: dict[str, Any],
                     request: pytest.FixtureRequest) -> None:
    result: dict[str, Any] = {"passed": False}
    _RESULTS[dialect].setdefault(file_name, []).append({"name": test["title"],
                                                         "result": result})
    try:
        _check(dialect, file_name, test, request)
    except BaseException as exc:
        result["reason"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        raise
    result["passed"] = True
