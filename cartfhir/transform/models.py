"""The SQL models (harmonized, cohort, qa) in the order cartfhir/build.yaml declares.

Each model is one SELECT in ``models/<schema>/<table>.sql`` with its sidecar
``<table>.yml`` beside it; ``cartfhir.graph.build_node`` materializes it as
``CREATE OR REPLACE TABLE <schema>.<table>`` and a failing model raises TransformError
naming the file, so nothing half-built is mistaken for a result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import duckdb

from cartfhir.graph import Node, build_node, create_macros, load_graph

MODEL_STAGES = ("harmonized", "cohort", "qa")


@dataclass(frozen=True)
class Model:
    node: Node

    @property
    def name(self) -> str:
        return self.node.table


def load_models() -> list[Model]:
    """The models in build order."""
    graph = load_graph()
    return [Model(n) for stage in MODEL_STAGES for n in graph.stage(stage)]


def build_model(con: duckdb.DuckDBPyConnection, model: Model) -> tuple[int, float]:
    """Materialize one model; return (rows, seconds)."""
    started = time.perf_counter()
    rows = build_node(con, model.node)
    return rows, time.perf_counter() - started


__all__ = ["build_model", "create_macros", "load_models"]
