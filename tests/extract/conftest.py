"""Shared fixtures for the extract tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from cartfhir.extract import create_tables


@pytest.fixture()
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB file with the raw tables, closed after the test."""
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    create_tables(con)
    yield con
    con.close()
