"""Fixtures for tests against a real HAPI FHIR JPA server (``servers/hapi``).

``hapi_base_url`` builds the server jar if it is missing or older than its sources,
starts one server per test session on a free loopback port (log under the session's
tmp dir), and stops it at the end, whatever happened. Without ``java`` or ``mvn`` the
tests are skipped, except on CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration import hapi

READY_TIMEOUT = 180  # seconds until GET /fhir/metadata must answer 200


def require_tools() -> None:
    """Skip (or on CI fail) the requesting test when java or mvn is not installed."""
    decision = hapi.unavailable_action(hapi.missing_tools(), os.environ)
    if decision is None:
        return
    action, why = decision
    if action == "fail":
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def hapi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[hapi.HapiServer]:
    require_tools()
    work = tmp_path_factory.mktemp("hapi")
    try:
        jar = hapi.build_jar(work / "build.log")
    except hapi.HapiError as exc:
        pytest.fail(f"could not build the HAPI server: {exc}", pytrace=False)
    try:
        server = hapi.start_server(jar, work, timeout=READY_TIMEOUT)
    except hapi.HapiError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def hapi_base_url(hapi_server: hapi.HapiServer) -> str:
    """``http://127.0.0.1:PORT/fhir`` of the session's HAPI server."""
    return hapi_server.base_url
