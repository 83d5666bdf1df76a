"""The transform on Spark equals the transform on DuckDB, table by table, from the same raw;
validate and analyze run on its Parquet tables and give the same comparison; a failure
leaves the previous tables and store as they were."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from cartfhir import api
from cartfhir.errors import TransformError
from cartfhir.spark import transform as spark_stage
from cartfhir.spark.compare import table_diff
from cartfhir.spark.tables import store_tables
from cartfhir.store import Store
from cartfhir.synth import generate
from cartfhir.transform.reference import load_reference
from tests.testbed import make_config
from tests.transform.truth import differences

pytestmark = pytest.mark.spark

SITES = ["site_a", "site_b", "site_c"]
COMPARED = ("flat", "identity", "harmonized", "cohort", "qa")


def _configs(root: Path):
    duck = make_config(root, SITES)
    spark = make_config(root, SITES, output={"duckdb": "spark/t.duckdb"},
                        engine={"kind": "spark", "tables": "spark/parquet"})
    return duck, spark


def _spark_run(config, **kwargs):
    engine = config.engine_for("spark")
    return spark_stage.spark_transform(Store.of(config), load_reference(config), config.sites,
                                       engine, config=config, **kwargs)


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory: pytest.TempPathFactory):
    """The synthetic three-site cohort (with bad lines) extracted once, then transformed
    by DuckDB in one store and by Spark in a copy of it."""
    root = tmp_path_factory.mktemp("spark_transform")
    generate(root / "data", patients=15, seed=11, sites=SITES, bad_rate=0.01)
    duck, spark_config = _configs(root)
    api.extract(duck)
    Path(spark_config.output.duckdb).parent.mkdir(parents=True)
    shutil.copy(duck.output.duckdb, spark_config.output.duckdb)
    duck_result = api.transform(duck)
    spark_result = _spark_run(spark_config)
    return root, duck, spark_config, duck_result, spark_result


def test_every_table_equals_duckdbs(spark, built) -> None:
    _, duck, spark_config, duck_result, spark_result = built
    tables = [n.table for n in store_tables() if n.stage in COMPARED]
    problems = []
    with duckdb.connect(str(duck.output.duckdb), read_only=True) as con:
        for table in tables:
            diff = table_diff(con, f"SELECT * FROM {table}", spark, f"SELECT * FROM {table}")
            if not diff.equal:
                problems.append(f"{table}: {diff}")
    assert not problems, "\n".join(problems)
    assert {t: n for t, (n, _) in spark_result.tables.items()} == {
        t: n for t, (n, _) in duck_result.tables.items()}
    assert spark_result.episodes == duck_result.episodes
    assert (spark_result.quarantined, spark_result.unmapped_codes,
            spark_result.reference_hash) == (duck_result.quarantined,
                                             duck_result.unmapped_codes,
                                             duck_result.reference_hash)


def test_the_store_reads_the_parquet_and_records_the_run(built) -> None:
    _, duck, spark_config, _, spark_result = built
    parquet = Path(spark_config.engine_for("spark").tables)
    # One folder a site (beside them Hadoop's _SUCCESS marker and checksum files).
    assert sorted(p.name for p in (parquet / "cohort.episode_endpoints").iterdir()
                  if p.is_dir()) == [f"site={s}" for s in SITES]
    assert not [p.name for p in parquet.iterdir() if p.name.startswith(".")]
    with duckdb.connect(str(spark_config.output.duckdb), read_only=True) as con:
        kinds = dict(con.execute(
            "SELECT table_schema || '.' || table_name, table_type FROM "
            "information_schema.tables").fetchall())
        assert all(kinds[n.table] == "VIEW" for n in store_tables())
        status, counts = con.execute("SELECT status, counts FROM meta.runs WHERE run_id = ?",
                                     [spark_result.run_id]).fetchone()
        assert status == "success" and '"quarantined"' in counts
        assert con.execute("SELECT count(*) FROM meta.reference_version WHERE run_id = ?",
                           [spark_result.run_id]).fetchone()[0] > 0
        assert kinds["meta.reference_version"] == "BASE TABLE"


def test_episode_endpoints_equal_the_truth(built) -> None:
    root, _, spark_config, _, _ = built
    problems = differences(spark_config, root / "data" / "truth" / "episodes.csv")
    assert not problems, "\n".join(problems[:40])


def test_validate_and_analyze_give_duckdbs_comparison(built) -> None:
    _, duck, spark_config, _, _ = built
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


def test_a_failing_step_leaves_the_tables_and_store_as_they_were(built, monkeypatch) -> None:
    _, _, spark_config, _, spark_result = built
    parquet = Path(spark_config.engine_for("spark").tables)
    store = Path(spark_config.output.duckdb)

    def files() -> dict[str, int]:
        return {str(p.relative_to(parquet)): p.stat().st_mtime_ns
                for p in parquet.rglob("*") if p.is_file()}

    def views() -> dict[str, str]:
        with duckdb.connect(str(store), read_only=True) as con:
            return dict(con.execute("SELECT schema_name || '.' || view_name, sql "
                                    "FROM duckdb_views() WHERE NOT internal").fetchall())

    before, defined = files(), views()
    from cartfhir.spark import models

    build_model = models.build_model

    def failing(spark, node, location=None):
        rows = build_model(spark, node, location)  # written to staging, then the failure
        if node.table == "cohort.episode_endpoints":
            raise TransformError("model cohort.episode_endpoints failed on Spark: test")
        return rows

    monkeypatch.setattr(models, "build_model", failing)
    with pytest.raises(TransformError, match="episode_endpoints"):
        _spark_run(spark_config)
    assert files() == before and views() == defined
    monkeypatch.undo()

    # a failure after the folders were swapped in (the store's commit) puts them back
    def broken(*args, **kwargs):
        raise TransformError("the store could not be written: test")

    monkeypatch.setattr(spark_stage, "register_parquet_tables", broken)
    with pytest.raises(TransformError, match="store could not be written"):
        _spark_run(spark_config)
    assert files() == before and views() == defined
    with duckdb.connect(str(store), read_only=True) as con:
        last = con.execute("SELECT status FROM meta.runs ORDER BY started DESC LIMIT 2"
                           ).fetchall()
        assert [r[0] for r in last] == ["failed", "failed"]
        assert con.execute("SELECT count(*) FROM cohort.episode").fetchone()[0] == sum(
            n for _, _, n in spark_result.episodes)


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
