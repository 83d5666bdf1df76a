"""Pseudonymous patient keys: HMAC-SHA256 of site and patient id with a per-site secret.

Raw patient ids stay in the ``raw`` schema (``raw.patient_key`` maps them); every
harmonized and cohort table carries only ``patient_key``. Without the site's key
nobody can recompute or reverse the mapping, and the same patient at two sites
gets unrelated keys.
"""

from __future__ import annotations

import hashlib
import hmac

import duckdb
import pandas as pd

from cartfhir.config import Site
from cartfhir.db import registered
from cartfhir.errors import ConfigError
from cartfhir.graph import BuildContext

MIN_KEY_LENGTH = 16
TABLES_WITH_PATIENTS = ("patient", "observation", "condition", "procedure",
                        "medication_administration")


def keyed_hash(secret: str, namespace: str, value: str) -> str:
    """Hex HMAC-SHA256 of 'namespace/value' with a site's secret: every pseudonym is one."""
    return hmac.new(secret.encode("utf-8"), f"{namespace}/{value}".encode(),
                    hashlib.sha256).hexdigest()


def patient_key(secret: str, site: str, patient_id: str) -> str:
    """The pseudonym of one patient: the keyed hash of 'site/patient_id'."""
    return keyed_hash(secret, site, patient_id)


def site_secret(site: Site) -> str:
    if site.pseudonym_key is None:
        raise ConfigError(
            f"sites[{site.id}].pseudonym_key is not set: transform needs a per-site secret to "
            "pseudonymize patients, e.g. pseudonym_key: {file: secrets/" + site.id + ".key} "
            "holding at least 16 random characters (openssl rand -hex 32 > that file)")
    secret = site.pseudonym_key.resolve()
    if len(secret) < MIN_KEY_LENGTH:
        raise ConfigError(f"sites[{site.id}].pseudonym_key ({site.pseudonym_key.describe()}) is "
                          f"shorter than {MIN_KEY_LENGTH} characters; use a long random secret")
    return secret


def write_patient_keys(con: duckdb.DuckDBPyConnection, sites: list[Site]) -> int:
    """Rebuild ``raw.patient_key`` for every Patient referenced or landed; return its rows.

    Ids come from the Patient resources and from every subject reference, so results of
    a patient whose Patient resource is missing still get a key.
    """
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    con.execute("CREATE OR REPLACE TABLE raw.patient_key (site VARCHAR NOT NULL, "
                "patient_id VARCHAR NOT NULL, patient_key VARCHAR NOT NULL, "
                "PRIMARY KEY (site, patient_id))")
    total = 0
    for site in sites:
        sql = " UNION ".join(
            f"SELECT patient_id FROM flat.{table} WHERE site = ? AND patient_id IS NOT NULL"
            for table in TABLES_WITH_PATIENTS)
        ids = [row[0] for row in con.execute(sql, [site.id] * len(TABLES_WITH_PATIENTS))
               .fetchall()]
        if not ids:
            continue
        secret = site_secret(site)
        keys = pd.DataFrame({"site": site.id, "patient_id": ids,
                             "patient_key": [patient_key(secret, site.id, pid) for pid in ids]})
        with registered(con, "_patient_keys", keys):  # one insert, not one per patient
            con.execute("INSERT INTO raw.patient_key SELECT * FROM _patient_keys")
        total += len(ids)
    return total


def build_patient_keys(con: duckdb.DuckDBPyConnection, context: BuildContext) -> int:
    """Graph builder of ``raw.patient_key`` (build.yaml, stage identity) for ``context.sites``."""
    return write_patient_keys(con, context.sites)
