"""The transform on Spark equals the transform on DuckDB, table by table, from the same raw;
validate and analyze run on its Parquet tables and give the same comparison; a failure
leaves the previous tables and store as they were. Both transforms run through the real
CLI (``transform`` and ``transform --engine spark`` on configs that name no engine)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cartfhir import api
from cartfhir.cli import run_cli
from cartfhir.config import Config
from cartfhir.errors import ConfigError, TransformError
from cartfhir.spark import transform as spark_stage
from cartfhir.spark.compare import table_diff
from cartfhir.spark.tables import store_tables
from cartfhir.store import Store
from cartfhir.synth import generate
from cartfhir.transform.reference import load_reference
from tests.testbed import write_config
from tests.transform.truth import differences

pytestmark = pytest.mark.spark

SITES = ["site_a", "site_b", "site_c", "site_d"]
COMPARED = ("flat", "identity", "harmonized", "cohort", "qa")


def _spark_run(config: Config) -> Any:
    engine = config.engine_for("spark")
    return spark_stage.spark_transform(Store.of(config), load_reference(config), config.sites,
                                       engine, config=config)


def _last_transform(config: Config) -> dict[str, Any]:
    """The counts the last successful transform recorded in meta.runs."""
    with duckdb.connect(str(config.output.duckdb), read_only=True) as con:
        counts = con.execute("SELECT counts FROM meta.runs WHERE stage = 'transform' AND "
                             "status = 'success' ORDER BY started DESC LIMIT 1").fetchall()
    return json.loads(counts[0][0])


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    """The synthetic four-site cohort (with bad lines) extracted once, then transformed
    by ``cartfhir transform`` in one store and by ``cartfhir transform --engine spark``
    in a copy of it (its tables in the default engine.tables, <output folder>/parquet).
    site_b maps two of its spellings itself (as units.csv converts them, so the truth
    holds), so its results take the site's own conversions on both engines; site_d sends
    UTC times, read in its zone."""
    root = tmp_path_factory.mktemp("spark_transform")
    generate(root / "data", patients=15, seed=11, sites=SITES, bad_rate=0.01)
    site_config = {"site_b": {"unit_maps": ["units_b.csv"]},
                "site_d": {"timezone": "Asia/Shanghai"}}
    for engine in ("duck", "spark"):
        (root / engine).mkdir()
        (root / engine / "units_b.csv").write_text("concept,unit,ucum,factor\n"
                                                   "anc,/uL,/uL,\nil6,ng/L,,1\n")
    duck_file = write_config(root / "duck", SITES, data="../data",
                             output={"duckdb": "out/t.duckdb"}, **site_config)
    shutil.copytree(root / "duck" / "secrets", root / "spark" / "secrets")
    spark_file = write_config(root / "spark", SITES, data="../data", write_keys=False,
                              output={"duckdb": "out/t.duckdb"}, **site_config)
    duck, spark_config = api.load_config(duck_file), api.load_config(spark_file)
    api.extract(duck)
    Path(spark_config.output.duckdb).parent.mkdir(parents=True)
    shutil.copy(duck.output.duckdb, spark_config.output.duckdb)
    assert run_cli(["transform", "--config", str(duck_file)]) == 0
    assert run_cli(["transform", "--config", str(spark_file), "--engine", "spark"]) == 0
    return root, duck, spark_config


def test_every_table_equals_duckdbs(spark, built) -> None:  # noqa: ANN001
    _, duck, spark_config = built
    tables = [n.table for n in store_tables() if n.stage in COMPARED]
    problems = []
    with duckdb.connect(str(duck.output.duckdb), read_only=True) as con:
        for table in tables:
            diff = table_diff(con, f"SELECT * FROM {table}", spark, f"SELECT * FROM {table}")
            if not diff.equal:
                problems.append(f"{table}: {diff}")
    assert not problems, "\n".join(problems)
    assert spark.sql("SELECT site, count(*) FROM ref.unit_map GROUP BY site").collect() == [
        ("site_b", 2)]  # site_b's results took its own conversions
    # tables and their rows, episodes, quarantined, unmapped codes, reference hash
    assert _last_transform(spark_config) == _last_transform(duck)


def test_the_store_reads_the_parquet_and_records_the_run(built) -> None:  # noqa: ANN001
    _, duck, spark_config = built
    parquet = Path(spark_config.engine_for("spark").tables)
    assert parquet == Path(spark_config.output.duckdb).parent / "parquet"
    # One folder a site (beside them Hadoop's _SUCCESS marker and checksum files).
    assert sorted(p.name for p in (parquet / "cohort.episode_endpoints").iterdir()
                  if p.is_dir()) == [f"site={s}" for s in SITES]
    # no staging or old folders left; the one dot-file names the store the tables are for
    assert [p.name for p in parquet.iterdir() if p.name.startswith(".")] == [
        spark_stage.OWNER_FILE]
    assert (parquet / spark_stage.OWNER_FILE).read_text().strip() == str(
        Path(spark_config.output.duckdb).absolute())
    with duckdb.connect(str(spark_config.output.duckdb), read_only=True) as con:
        kinds = dict(con.execute(
            "SELECT table_schema || '.' || table_name, table_type FROM "
            "information_schema.tables").fetchall())
        assert all(kinds[n.table] == "VIEW" for n in store_tables())
        run_id, counts = con.execute(
            "SELECT run_id, counts FROM meta.runs WHERE stage = 'transform' AND "
            "status = 'success' ORDER BY started DESC LIMIT 1").fetchall()[0]
        assert '"quarantined"' in counts
        assert con.execute("SELECT count(*) FROM meta.reference_version WHERE run_id = ?",
                           [run_id]).fetchall()[0][0] > 0
        assert kinds["meta.reference_version"] == "BASE TABLE"


def test_episode_endpoints_equal_the_truth(built) -> None:  # noqa: ANN001
    root, _, spark_config = built
    problems = differences(spark_config, root / "data" / "truth" / "episodes.csv")
    assert not problems, "\n".join(problems[:40])


def test_validate_and_analyze_give_duckdbs_comparison(built) -> None:  # noqa: ANN001
    _, duck, spark_config = built
    tables = {}
    for config in (duck, spark_config):
        report = api.validate(config)
        assert report.valid, report
        api.analyze(config)
        with duckdb.connect(str(config.output.duckdb), read_only=True) as con:
            tables[config.output.duckdb] = con.execute(
                "SELECT * FROM analysis.comparison ORDER BY ALL").fetchall()
    first, second = tables.values()
    assert first and first == second


def test_going_back_to_duckdb_makes_tables_again(built, tmp_path: Path) -> None:  # noqa: ANN001
    """``transform --engine duckdb`` on a store a Spark run left views in (a copy of it)."""
    root, _, spark_config = built
    shutil.copytree(root / "spark" / "secrets", tmp_path / "secrets")
    shutil.copy(spark_config.output.duckdb, tmp_path / "back.duckdb")
    config_file = write_config(tmp_path, SITES, data=str(root / "data"), write_keys=False,
                               output={"duckdb": "back.duckdb"})
    query = ("SELECT table_type FROM information_schema.tables WHERE "
             "table_schema = 'cohort' AND table_name = 'episode'")
    with duckdb.connect(str(tmp_path / "back.duckdb"), read_only=True) as con:
        assert con.execute(query).fetchall() == [("VIEW",)]
    assert run_cli(["transform", "--config", str(config_file), "--engine", "duckdb"]) == 0
    with duckdb.connect(str(tmp_path / "back.duckdb"), read_only=True) as con:
        assert con.execute(query).fetchall() == [("BASE TABLE",)]


def test_a_failing_step_leaves_the_tables_and_store_as_they_were(built, monkeypatch) -> None:  # noqa: ANN001
    """Staged tables are discarded on a failure before the swap, and the previous folders
    put back on one after it. What the steps build does not matter here, so each view's
    and model's table is staged as a copy of the live one (a real Spark build of every
    step is what the tests above check)."""
    _, _, spark_config = built
    parquet = Path(spark_config.engine_for("spark").tables)
    store = Path(spark_config.output.duckdb)

    def files() -> dict[str, int]:
        return {str(p.relative_to(parquet)): p.stat().st_mtime_ns
                for p in parquet.rglob("*") if p.is_file()}

    def views() -> dict[str, str]:
        with duckdb.connect(str(store), read_only=True) as con:
            return dict(con.execute("SELECT schema_name || '.' || view_name, sql "
                                    "FROM duckdb_views() WHERE NOT internal").fetchall())

    with duckdb.connect(str(store), read_only=True) as con:
        episodes = con.execute("SELECT count(*) FROM cohort.episode").fetchall()[0][0]
    before, defined = files(), views()

    def staged_copy(spark, node, staging: Path) -> int:  # noqa: ANN001
        shutil.copytree(parquet / node.table, staging / node.table)
        if node.table == "cohort.episode_endpoints":
            raise TransformError("model cohort.episode_endpoints failed on Spark: test")
        return 1

    monkeypatch.setattr(spark_stage, "_build", staged_copy)
    with pytest.raises(TransformError, match="episode_endpoints"):
        _spark_run(spark_config)
    assert files() == before and views() == defined

    # a failure after the folders were swapped in (the store's commit) puts them back
    def broken(*args: Any, **kwargs: Any) -> None:
        raise TransformError("the store could not be written: test")

    monkeypatch.setattr(spark_stage, "_build", lambda spark, node, staging: (
        shutil.copytree(parquet / node.table, staging / node.table) and 1))
    monkeypatch.setattr(spark_stage, "register_parquet_tables", broken)
    with pytest.raises(TransformError, match="store could not be written"):
        _spark_run(spark_config)
    assert files() == before and views() == defined
    with duckdb.connect(str(store), read_only=True) as con:
        last = con.execute("SELECT status FROM meta.runs ORDER BY started DESC LIMIT 2"
                           ).fetchall()
        assert [r[0] for r in last] == ["failed", "failed"]
        assert con.execute("SELECT count(*) FROM cohort.episode").fetchall()[0][0] == episodes


def test_an_interrupted_swap_is_undone_by_the_next_run(tmp_path: Path) -> None:
    root = tmp_path / "tables"
    (root / "cohort.x").mkdir(parents=True)
    (root / "cohort.x" / "old.parquet").write_text("old")
    staging = root / ".staging-r1"
    (staging / "cohort.x").mkdir(parents=True)
    (staging / "cohort.x" / "new.parquet").write_text("new")
    (staging / "cohort.y").mkdir()
    old = spark_stage.swap_in(root, staging, ["cohort.x", "cohort.y"], "r1")
    assert (root / "cohort.x" / "new.parquet").exists() and (root / "cohort.y").exists()
    with duckdb.connect() as con:  # run r1 never committed
        con.execute("CREATE SCHEMA meta; CREATE TABLE meta.runs (run_id VARCHAR, "
                    "status VARCHAR)")
        spark_stage.recover(con, root)
    assert sorted(p.name for p in root.iterdir()) == ["cohort.x"]
    assert [p.name for p in (root / "cohort.x").iterdir()] == ["old.parquet"]
    assert not old.exists()


def test_a_table_store_serves_one_store(tmp_path: Path) -> None:
    """Two stores on one engine.tables would replace each other's tables: refused."""
    tables, first, second = tmp_path / "parquet", tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    first.write_bytes(b"")
    spark_stage.claim_tables(tables, first)
    spark_stage.claim_tables(tables, first)  # its own again: fine
    with pytest.raises(ConfigError, match="holds the tables of the store"):
        spark_stage.claim_tables(tables, second)
    first.unlink()  # that store is gone: its tables may be taken over
    spark_stage.claim_tables(tables, second)
    assert (tables / spark_stage.OWNER_FILE).read_text().strip() == str(second)
