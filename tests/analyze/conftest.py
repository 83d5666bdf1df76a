"""Fixtures of the analysis tests: one real small run, shared by the figure and report tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from cartfhir import api
from cartfhir.config import Config
from tests.testbed import make_config

from .paper_cohort import build

SITES = ["paper", "paper_copy"]  # two sites, so the report has per-site tables


@pytest.fixture(scope="session")
def two_site_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, api.RunResult]:
    """The paper's nine patients at two sites, landed, transformed, validated and analysed."""
    root: Path = tmp_path_factory.mktemp("two_site_run")
    for site in SITES:
        build(root / "data" / site)
    config = make_config(root, SITES)
    result = api.run(config)
    assert result.status == "success"
    return config, result
