"""Fixtures shared by every test package; the builders they bind live in tests/testbed.py.

The rule: functions are imported from plain modules (``tests.testbed``, a package's own
helpers); a conftest.py only defines fixtures and is never imported.
"""

from __future__ import annotations

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
