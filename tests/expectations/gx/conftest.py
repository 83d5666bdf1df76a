"""Fixtures of the GX engine tests: no network, and the clean lab table (see lab.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import duckdb
import pytest

from tests.expectations.gx.lab import clean_lab


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """GX must never phone home (analytics, version checks): any internet socket fails the test."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access attempted: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture()
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    con = clean_lab()
    yield con
    con.close()
