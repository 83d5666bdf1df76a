"""The transform replaces only Spark tables it made: a table of the same name that
someone else made (a shared metastore) is refused, and keeps its rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from cartfhir.errors import ConfigError
from cartfhir.spark.catalog import OWNED, drop_own_table

pytestmark = pytest.mark.spark


def test_a_table_cartfhir_did_not_make_is_never_dropped(spark, tmp_path: Path) -> None:  # noqa: ANN001
    spark.sql(f"CREATE DATABASE IF NOT EXISTS cohort LOCATION '{tmp_path / 'cohort'}'")
    spark.sql("DROP TABLE IF EXISTS cohort.someone_elses")
    spark.sql("CREATE TABLE cohort.someone_elses USING parquet AS SELECT 1 AS x")
    try:
        with pytest.raises(ConfigError, match="spark.sql.defaultCatalog"):
            drop_own_table(spark, "cohort.someone_elses")
        assert spark.table("cohort.someone_elses").count() == 1
    finally:
        spark.sql("DROP TABLE IF EXISTS cohort.someone_elses")


def test_its_own_tables_and_views_are_dropped_and_a_missing_one_is_nothing(
        spark, tmp_path: Path) -> None:  # noqa: ANN001
    spark.sql(f"CREATE DATABASE IF NOT EXISTS cohort LOCATION '{tmp_path / 'cohort'}'")
    spark.sql(f"CREATE TABLE cohort.ours USING parquet LOCATION '{tmp_path / 'ours'}' "
              f"{OWNED} AS SELECT 1 AS x")
    spark.sql(f"CREATE VIEW cohort.ours_view {OWNED} AS SELECT 1 AS x")
    drop_own_table(spark, "cohort.ours")
    drop_own_table(spark, "cohort.ours_view")
    drop_own_table(spark, "cohort.never_made")
    assert not spark.catalog.tableExists("cohort.ours")
    assert not spark.catalog.tableExists("cohort.ours_view")
    assert (tmp_path / "ours").is_dir()  # external: its files stay
