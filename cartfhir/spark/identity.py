"""``raw.patient_key`` on Spark: the same HMAC-SHA256 pseudonyms as ``transform.identity``.

Spark SQL has ``sha2`` but no ``hmac``, so the HMAC is spelled out in SQL:
``H((K ^ opad) || H((K ^ ipad) || message))``. The key's two padded forms are computed in
Python and reach Spark as rows of a small DataFrame joined on ``site``, never as literals
in SQL text: a pad is the secret XOR a constant, so a pad in a query, a plan or an error
message would give the secret away. Query text and plans name only the columns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from cartfhir.config import Site
from cartfhir.redact import register
from cartfhir.spark.catalog import OWNED, drop_own_table
from cartfhir.transform.identity import TABLES_WITH_PATIENTS, site_secret

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

BLOCK = 64  # SHA-256's block size in bytes (RFC 2104's B)
PADS_VIEW = "_cartfhir_site_pads"
# HMAC-SHA256 of 'site/patient_id', as hex (what hmac.hexdigest() gives); p is the pads row.
KEY_SQL = ("sha2(concat(p.opad, unhex(sha2(concat(p.ipad, "
           "encode(concat(k.site, '/', k.patient_id), 'utf-8')), 256))), 256)")


def hmac_pads(secret: str) -> tuple[bytes, bytes]:
    """The key XOR ipad and XOR opad (RFC 2104), for a secret of any length."""
    key = secret.encode("utf-8")
    if len(key) > BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(BLOCK, b"\0")
    pads = bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)
    for pad in pads:  # each gives the secret away: masked wherever text is shown
        register(pad.hex())
    return pads


@contextmanager
def site_pads(spark: SparkSession, sites: Sequence[Site], needed: set[str]) -> Iterator[str]:
    """A temporary view (site, ipad, opad) of the ``needed`` sites, dropped when done.

    A site with patients but no usable key raises ConfigError (``site_secret``), as the
    DuckDB transform does; sites without patients need no key.
    """
    from pyspark.sql.types import BinaryType, StringType, StructField, StructType

    rows = [(site.id, *hmac_pads(site_secret(site))) for site in sites if site.id in needed]
    schema = StructType([StructField("site", StringType(), False),
                         StructField("ipad", BinaryType(), False),
                         StructField("opad", BinaryType(), False)])
    spark.createDataFrame(rows, schema).createOrReplaceTempView(PADS_VIEW)
    try:
        yield PADS_VIEW
    finally:
        spark.catalog.dropTempView(PADS_VIEW)


def patient_ids_sql() -> str:
    """Every (site, patient_id) the flat tables name, once (as ``write_patient_keys``)."""
    return "\nUNION\n".join(f"SELECT site, patient_id FROM flat.{table} "
                            "WHERE patient_id IS NOT NULL" for table in TABLES_WITH_PATIENTS)


def patient_keys_sql(ids: str, pads: str = PADS_VIEW) -> str:
    """The rows of raw.patient_key for the (site, patient_id) rows of the query ``ids``.

    Sites without a pads row (not in the config) get no keys, as in the DuckDB transform.
    """
    return (f"SELECT /*+ BROADCAST(p) */ k.site, k.patient_id, {KEY_SQL} AS patient_key\n"
            f"FROM ({ids}) AS k JOIN {pads} AS p ON p.site = k.site")


def write_patient_keys(spark: SparkSession, sites: Sequence[Site], location: str) -> int:
    """Build ``raw.patient_key`` as Parquet at ``location`` (partitioned by site); its rows."""
    ids = patient_ids_sql()
    needed = {row[0] for row in spark.sql(f"SELECT DISTINCT site FROM ({ids})").collect()}
    spark.sql("CREATE DATABASE IF NOT EXISTS raw")
    with site_pads(spark, sites, needed):
        drop_own_table(spark, "raw.patient_key")  # external: its files stay
        spark.sql("CREATE TABLE raw.patient_key USING parquet "
                  f"PARTITIONED BY (site) LOCATION {sql_string(location)} {OWNED} AS\n"
                  f"SELECT patient_id, patient_key, site FROM ({patient_keys_sql(ids)})")
    return spark.table("raw.patient_key").count()


def sql_string(text: str) -> str:
    """A Spark SQL string literal (backslash escapes are on by default in Spark)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


__all__ = ["hmac_pads", "patient_keys_sql", "site_pads", "write_patient_keys"]
