"""Fixtures shared by every test package; the builders they bind live in tests/testbed.py.

``spark`` is the one SparkSession of the whole test run (local[2], see
``cartfhir.spark.session``); under CI=true a Spark that cannot start fails the tests that
need it instead of skipping them.

The rule: functions are imported from plain modules (``tests.testbed``, a package's own
helpers); a conftest.py only defines fixtures and is never imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from cartfhir.config import Config
from tests import testbed


@pytest.fixture()
def site_config(tmp_path: Path) -> Callable[..., Config]:
    """``testbed.make_config`` with tmp_path as root: ``site_config(["site_a"], ...)``."""
    return partial(testbed.make_config, tmp_path)


@pytest.fixture()
def config_file(tmp_path: Path) -> Callable[..., Path]:
    """``testbed.write_config`` with tmp_path as root: the path of tmp_path/config.yaml."""
    return partial(testbed.write_config, tmp_path)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - pyspark is optional
    """The test run's SparkSession: local[2], UI off, 2 shuffle partitions, UTC; its
    warehouse (where a database without a location goes) in the run's temp folder, never
    in the checkout."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("pyspark is not installed (make test installs it): pip install -e '.[spark]'")
    from cartfhir.spark.session import get_spark

    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = get_spark("local[2]", {"spark.driver.memory": "1g",
                                     "spark.sql.warehouse.dir": str(warehouse)},
                        app_name="cartfhir-tests")
    yield session
    session.stop()
