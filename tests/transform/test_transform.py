"""The transform builds what cartfhir/build.yaml lists for its stages, in that order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cartfhir import api
from cartfhir import transform as transform_module
from cartfhir.config import Config
from cartfhir.errors import TransformError
from cartfhir.graph import load_graph
from cartfhir.synth import generate
from tests.testbed import make_config

SITES = ["site_a"]


def test_the_transform_walks_the_graph_stages_ref_to_qa(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    generate(tmp_path / "data", patients=2, seed=5, sites=SITES)
    config = make_config(tmp_path, SITES)
    api.extract(config)
    built: list[str] = []
    real = transform_module.build_node

    def spy(con, node, context=None):
        built.append(node.table)
        return real(con, node, context)

    monkeypatch.setattr(transform_module, "build_node", spy)
    result = api.transform(config)
    graph = load_graph()
    expected = [step[0].table for stage in transform_module.STAGES
                for step in graph.steps(stage)]
    assert built == expected
    assert built[0] == "ref.concept" and "raw.patient_key" in built
    assert list(result.tables) == [t for t in expected
                                   if graph.node(t).kind in ("sql", "view")]


def test_a_transform_before_any_extraction_says_to_extract(
        site_config: Callable[..., Config]) -> None:
    config = site_config(SITES)
    with pytest.raises(TransformError, match=r"raw.resources does not exist: run "
                                             r"'cartfhir extract' first"):
        api.transform(config)
