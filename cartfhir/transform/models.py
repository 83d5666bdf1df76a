"""Build the SQL models (harmonized, cohort, qa) in the order their manifest declares.

Each model is one SELECT in ``models/<schema>/<table>.sql``, materialized as
``CREATE OR REPLACE TABLE <schema>.<table>``; the comment block at the top of the
file documents its grain and columns. A failing model raises TransformError
naming the file, so nothing half-built is mistaken for a result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import duckdb
import yaml

from cartfhir.errors import TransformError

PACKAGE = "cartfhir.transform"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Model:
    schema: str
    table: str
    sql: str

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


def _models_folder() -> Traversable:
    return resources.files(PACKAGE).joinpath("models")


def load_models() -> list[Model]:
    """The models in build order, read from ``models/manifest.yaml``."""
    folder = _models_folder()
    manifest = yaml.safe_load(folder.joinpath("manifest.yaml").read_text(encoding="utf-8"))
    models = []
    for entry in manifest["models"]:
        schema, table = entry.split("/")
        sql = folder.joinpath(f"{entry}.sql").read_text(encoding="utf-8")
        models.append(Model(schema, table, sql))
    return models


def create_macros(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_models_folder().joinpath("macros.sql").read_text(encoding="utf-8"))


def build_model(con: duckdb.DuckDBPyConnection, model: Model) -> tuple[int, float]:
    """Materialize one model; return (rows, seconds)."""
    started = time.perf_counter()
    log.info("building %s", model.name, extra={"table": model.name})
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {model.schema}")
    try:
        con.execute(f"CREATE OR REPLACE TABLE {model.name} AS\n{model.sql}")
    except duckdb.Error as exc:
        raise TransformError(
            f"model {model.name} (cartfhir/transform/models/{model.schema}/{model.table}.sql) "
            f"failed: {exc}") from None
    rows = con.execute(f"SELECT count(*) FROM {model.name}").fetchone()[0]
    return rows, time.perf_counter() - started
