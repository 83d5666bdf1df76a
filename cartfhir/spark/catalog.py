"""The Spark tables cartfhir replaces are only its own.

The transform creates the databases ``raw``, ``ref``, ``flat``, ``identity``,
``harmonized``, ``cohort`` and ``qa`` in the session's current catalog and replaces the
tables it names there. On a shared metastore (a Databricks workspace, a Hive metastore)
those names may already belong to someone else, and dropping their managed table would
delete their data. So every table cartfhir creates carries the property ``OWNED`` names,
and ``drop_own_table`` refuses to drop a table without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cartfhir.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

OWNER_PROPERTY = "cartfhir.table"
# The clause every CREATE TABLE of cartfhir's carries (after USING/PARTITIONED/LOCATION).
OWNED = f"TBLPROPERTIES ('{OWNER_PROPERTY}' = 'true')"


def drop_own_table(spark: SparkSession, name: str) -> None:
    """Drop the table or view ``name`` if cartfhir created it; nothing if it is missing.

    Raises ConfigError for a table of that name cartfhir did not create, naming the
    setting that gives cartfhir a catalog of its own.
    """
    if not spark.catalog.tableExists(name):
        return
    properties = {row[0]: row[1] for row in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}
    if properties.get(OWNER_PROPERTY) != "true":
        raise ConfigError(
            f"Spark table {name} exists and was not made by cartfhir, which would replace "
            "it; give cartfhir a catalog of its own (engine.conf: spark.sql.defaultCatalog) "
            f"or drop {name} yourself if it is a leftover")
    kind = "VIEW" if spark.catalog.getTable(name).tableType == "VIEW" else "TABLE"
    spark.sql(f"DROP {kind} {name}")


__all__ = ["OWNED", "OWNER_PROPERTY", "drop_own_table"]
