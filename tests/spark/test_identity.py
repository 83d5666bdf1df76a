"""raw.patient_key on Spark equals the DuckDB transform's HMAC pseudonyms, and no query
text or plan shows the site secret (or the pads derived from it)."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest

from cartfhir.errors import ConfigError
from cartfhir.spark.catalog import OWNED
from cartfhir.spark.identity import (
    hmac_pads,
    patient_keys_sql,
    site_pads,
    write_patient_keys,
)
from cartfhir.transform.identity import TABLES_WITH_PATIENTS, patient_key
from tests.testbed import make_config

pytestmark = pytest.mark.spark

# Secrets of every length class: short, one block exactly, longer than a block (hashed
# first, RFC 2104), and non-ASCII (UTF-8 bytes, not characters).
SECRETS = {
    "site_a": "0123456789abcdef",
    "site_b": "k" * 64,
    "site_c": "a-much-longer-secret-than-one-sha256-block-" * 3,
    "site_d": "clé-secrète-ünïcødé-ключ-鍵-🔑",
}
IDS = ([f"p{i}" for i in range(150)]
       + ["", " ", "José", "Müller-Lüdenscheidt", "患者-42", "пациент", "🙂🙂", "a'b",
          "back\\slash", "tab\there", "new\nline", "x" * 300, "é" * 70, "a/b/c"])


def _config(tmp_path: Path, secrets: dict[str, str]):
    config = make_config(tmp_path, list(secrets))
    for site, secret in secrets.items():  # write_keys wrote the default; use ours
        (tmp_path / "secrets" / f"{site}.key").write_text(secret, encoding="utf-8")
    return config


def test_pads_give_the_standard_hmac() -> None:
    import hashlib

    for secret in SECRETS.values():
        ipad, opad = hmac_pads(secret)
        message = b"site/patient"
        inner = hashlib.sha256(ipad + message).digest()
        assert hashlib.sha256(opad + inner).hexdigest() == hmac.new(
            secret.encode(), message, hashlib.sha256).hexdigest()


def test_keys_equal_the_duckdb_transform_for_many_ids(spark, tmp_path: Path) -> None:
    config = _config(tmp_path, SECRETS)
    rows = [(site, pid) for site in SECRETS for pid in IDS]
    spark.createDataFrame(rows, "site string, patient_id string") \
        .createOrReplaceTempView("_ids")
    with site_pads(spark, config.sites, set(SECRETS)) as pads:
        found = {(r.site, r.patient_id): r.patient_key
                 for r in spark.sql(patient_keys_sql("SELECT * FROM _ids", pads)).collect()}
    expected = {(site, pid): patient_key(SECRETS[site], site, pid) for site, pid in rows}
    assert found == expected


def test_no_query_or_plan_shows_the_secret(spark, tmp_path: Path) -> None:
    secrets = {"site_a": "s3cr3t-value-that-must-stay-hidden"}
    config = _config(tmp_path, secrets)
    spark.createDataFrame([("site_a", "p1")], "site string, patient_id string") \
        .createOrReplaceTempView("_ids")
    ipad, opad = hmac_pads(secrets["site_a"])
    hidden = [secrets["site_a"], ipad.hex(), opad.hex(), ipad.hex().upper(), opad.hex().upper()]
    with site_pads(spark, config.sites, {"site_a"}) as pads:
        sql = patient_keys_sql("SELECT * FROM _ids", pads)
        frame = spark.sql(sql)
        plans = "\n".join([sql, *(spark.sql(f"EXPLAIN {mode} {sql}").first()[0]
                                 for mode in ("EXTENDED", "FORMATTED", "CODEGEN"))])
        assert "ipad" in plans and "opad" in plans  # the pads are read, by column name
        assert frame.count() == 1
    assert not [h for h in hidden if h in plans]


def _flat_tables(spark, tmp_path: Path, rows: list[tuple[str, str | None]]) -> None:
    spark.sql("CREATE DATABASE IF NOT EXISTS flat")
    for i, table in enumerate(TABLES_WITH_PATIENTS):
        part = rows[i::len(TABLES_WITH_PATIENTS)] or [("site_a", None)]
        spark.createDataFrame(part, "site string, patient_id string") \
            .write.mode("overwrite").option("path", str(tmp_path / "flat" / table)) \
            .saveAsTable(f"flat.{table}")
        spark.sql(f"ALTER TABLE flat.{table} SET {OWNED}")  # as the transform's own


def test_write_patient_keys_covers_every_flat_table_once(spark, tmp_path: Path) -> None:
    secrets = {"site_a": "0123456789abcdef-a", "site_b": "0123456789abcdef-b"}
    config = _config(tmp_path, secrets)
    rows = [("site_a", f"p{i % 7}") for i in range(20)] + [("site_b", "José"),
                                                           ("site_b", None),
                                                           ("site_x", "not-in-config")]
    _flat_tables(spark, tmp_path, rows)
    n = write_patient_keys(spark, config.sites, str(tmp_path / "raw.patient_key"))
    got = sorted(tuple(r) for r in spark.sql(
        "SELECT site, patient_id, patient_key FROM raw.patient_key").collect())
    expected = sorted({(s, p, patient_key(secrets[s], s, p)) for s, p in rows
                       if p is not None and s in secrets})
    assert got == expected and n == len(expected)
    assert sorted(p.name for p in (tmp_path / "raw.patient_key").glob("site=*")) == [
        "site=site_a", "site=site_b"]


def test_a_site_with_patients_and_no_key_is_refused(spark, tmp_path: Path) -> None:
    config = make_config(tmp_path, ["site_a"], site_a={"pseudonym_key": None})
    _flat_tables(spark, tmp_path, [("site_a", "p1")])
    with pytest.raises(ConfigError, match="pseudonym_key is not set"):
        write_patient_keys(spark, config.sites, str(tmp_path / "raw.patient_key"))
