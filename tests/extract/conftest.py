"""Shared fixtures for the extract tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from cartfhir.extract import create_tables

from .cli_site import patient
from .stub_server import FakeFhir, serve


@pytest.fixture()
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB file with the raw tables, closed after the test."""
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    create_tables(con)
    yield con
    con.close()


@pytest.fixture()
def hostile() -> Iterator[FakeFhir]:
    """Patients p1..p3 served over real HTTP on loopback (``fake.base`` is the URL).

    Tests add ``fake.faults`` to make the server lie or misbehave.
    """
    fake = FakeFhir(resources=[patient("p1"), patient("p2"), patient("p3")])
    server = serve(fake)
    yield fake
    server.shutdown()
