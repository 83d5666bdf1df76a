"""The engine on the command line with Spark: ``view --engine spark`` writes Parquet equal
to DuckDB's view. (``transform --engine spark`` and ``--engine duckdb`` after it run in
tests/spark/test_transform.py, on the cohort its parity tests build.)"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from cartfhir import api
from cartfhir.cli import run_cli
from cartfhir.errors import ExitCode
from tests.test_cli_engine import SITES, extracted  # noqa: F401 - the module's fixture

pytestmark = pytest.mark.spark

VIEW = {"resourceType": "ViewDefinition", "name": "patient_gender", "resource": "Patient",
        "status": "active",
        "select": [{"column": [{"name": "id", "path": "id", "type": "id"},
                               {"name": "gender", "path": "gender", "type": "code"}]}]}


def test_view_on_spark_gives_duckdbs_rows(spark, extracted: Path,  # noqa: ANN001, F811
                                         tmp_path: Path) -> None:
    view_file = tmp_path / "view.json"
    view_file.write_text(json.dumps(VIEW), encoding="utf-8")
    duck_out = tmp_path / "duck.parquet"
    assert run_cli(["view", str(view_file), "--config", str(extracted), "--out",
                    str(duck_out)]) == 0
    spark_out = tmp_path / "spark_view"
    assert run_cli(["view", str(view_file), "--config", str(extracted), "--engine", "spark",
                    "--out", str(spark_out)]) == 0
    assert (spark_out / "_SUCCESS").exists()
    assert sorted(p.name for p in spark_out.iterdir() if p.is_dir()) == [
        f"site={s}" for s in SITES]
    with duckdb.connect() as con:
        duck = con.execute(f"SELECT site, id, gender FROM '{duck_out}' ORDER BY ALL").fetchall()
        back = con.execute(f"SELECT site, id, gender FROM read_parquet('{spark_out}/**/*.parquet'"
                           ", hive_partitioning = true) ORDER BY ALL").fetchall()
    assert back == duck and {row[0] for row in duck} == set(SITES)
    # a second run replaces its own output; a folder of something else is refused
    assert run_cli(["view", str(view_file), "--config", str(extracted), "--engine", "spark",
                    "--out", str(spark_out)]) == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    assert run_cli(["view", str(view_file), "--config", str(extracted), "--engine", "spark",
                    "--out", str(tmp_path / "mine")]) == ExitCode.USAGE
    assert (tmp_path / "mine" / "keep.txt").exists()
    # another Spark job's output (its _SUCCESS too) is not ours to replace
    (tmp_path / "mine" / "_SUCCESS").write_text("")
    assert run_cli(["view", str(view_file), "--config", str(extracted), "--engine", "spark",
                    "--out", str(tmp_path / "mine")]) == ExitCode.USAGE
    assert (tmp_path / "mine" / "keep.txt").exists()
    # the store's resources exported for the command do not stay behind
    tables = api.load_config(extracted).engine_for("spark").tables
    assert not (Path(tables) / "_raw").exists()
    assert run_cli(["view", str(view_file), "--db", "x.duckdb", "--engine", "spark",
                    "--out", str(spark_out)]) == ExitCode.USAGE
